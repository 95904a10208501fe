"""Per-dimension output distributions: what the network's outputs for one dimension mean.

Each distribution turns ``P`` raw network outputs per dimension into a normalised distribution over
that dimension's values, scores values (``log_prob``, nats) and draws them from explicit uniforms
(inverse CDF), so two samplers fed the same uniforms draw the same values.

>>> dist = DiscretizedLogistic(n_bins=256, n_components=2)
>>> params = torch.randn(3, dist.n_params)
>>> torch.allclose(dist.bin_log_probs(params).exp().sum(-1), torch.ones(3, dtype=params.dtype))
True
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import torch
import torch.nn.functional as F

__all__ = ["Bernoulli", "DiscretizedLogistic", "OutputDistribution", "distribution_from_spec"]


class OutputDistribution(Protocol):
    """What the network and samplers need from an output distribution."""

    n_params: int
    n_bins: int

    def spec(self) -> dict[str, Any]:
        """JSON description stored in the model card and used to rebuild it."""
        ...

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Map data values to network inputs."""
        ...

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Log-probability of values ``x`` (``(...)``) under ``params`` (``(..., P)``), nats."""
        ...

    def sample(self, params: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Draw values from ``params`` (``(..., P)``) with uniforms ``u`` (``(...)``) in [0, 1)."""
        ...


class Bernoulli:
    """Binary data: one logit per dimension, ``p(x=1) = sigmoid(logit)``."""

    n_params = 1
    n_bins = 2

    def spec(self) -> dict[str, Any]:
        return {"type": "bernoulli"}

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return -F.binary_cross_entropy_with_logits(params[..., 0], x.to(params.dtype), reduction="none")

    def sample(self, params: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return (u.to(params.dtype) < torch.sigmoid(params[..., 0])).to(params.dtype)


class DiscretizedLogistic:
    r"""A mixture of ``C`` logistics discretised onto ``n_bins`` integer levels (PixelCNN++ style).

    Values ``0..n_bins-1`` are mapped to ``[-1, 1]``; bin ``v`` gets the logistic mass between its
    edges, the first and last bins take the tails, so the ``n_bins`` probabilities telescope to 1:
    :math:`p(v) = \sum_c \pi_c [\sigma((v^+ - \mu_c)/s_c) - \sigma((v^- - \mu_c)/s_c)]`.
    Parameters per dimension: ``C`` mixture logits, ``C`` means, ``C`` log-scales.
    """

    def __init__(self, n_bins: int = 256, n_components: int = 5) -> None:
        if n_bins < 2 or n_components < 1:
            raise ValueError("need n_bins >= 2 and n_components >= 1")
        self.n_bins = n_bins
        self.n_components = n_components
        self.n_params = 3 * n_components

    def spec(self) -> dict[str, Any]:
        return {"type": "discretized_logistic", "n_bins": self.n_bins, "n_components": self.n_components}

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        return x * (2.0 / (self.n_bins - 1)) - 1.0

    def _log_mass(self, params: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Log-mass of bins ``v`` (``(..., M)``, integer-valued) under ``params`` (``(..., P)``)."""
        c = self.n_components
        logit_pi = params[..., None, :c]
        mu = params[..., None, c : 2 * c]
        log_s = params[..., None, 2 * c :].clamp(-7.0, 7.0)
        half = 1.0 / (self.n_bins - 1)
        x = (v.to(params.dtype) * (2.0 * half) - 1.0)[..., None]  # (..., M, 1)
        inv_s = torch.exp(-log_s)
        upper = (x + half - mu) * inv_s
        lower = (x - half - mu) * inv_s
        # sigma(upper) - sigma(lower), reflected to the left tail where logsigmoid resolves it well.
        flip = (upper + lower) > 0
        hi = torch.where(flip, -lower, upper)
        lo = torch.where(flip, -upper, lower)
        log_hi = F.logsigmoid(hi)
        gap = (F.logsigmoid(lo) - log_hi).clamp(max=-1e-12)
        log1mexp = torch.where(
            gap > -math.log(2.0), torch.log(-torch.expm1(gap)), torch.log1p(-torch.exp(gap))
        )
        inner = log_hi + log1mexp
        vv = v[..., None]
        log_p = torch.where(
            vv == 0, F.logsigmoid(upper), torch.where(vv == self.n_bins - 1, F.logsigmoid(-lower), inner)
        )
        return torch.logsumexp(log_p + torch.log_softmax(logit_pi, dim=-1), dim=-1)

    def bin_log_probs(self, params: torch.Tensor) -> torch.Tensor:
        """Log-probabilities of every bin, shape ``(..., n_bins)``; they telescope to total mass 1."""
        bins = torch.arange(self.n_bins, device=params.device)
        return self._log_mass(params, bins.expand(*params.shape[:-1], self.n_bins))

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        idx = x.round().long().clamp(0, self.n_bins - 1)
        return self._log_mass(params, idx[..., None])[..., 0]

    def sample(self, params: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        probs = self.bin_log_probs(params).exp()
        cdf = probs.cumsum(-1)
        u = (u.to(params.dtype) * cdf[..., -1]).unsqueeze(-1)
        idx = (cdf <= u).sum(-1).clamp(max=self.n_bins - 1)
        return idx.to(params.dtype)


def distribution_from_spec(spec: dict[str, Any]) -> OutputDistribution:
    """Rebuild a distribution from the ``spec()`` stored in a model card."""
    kind = spec.get("type")
    if kind == "bernoulli":
        return Bernoulli()
    if kind == "discretized_logistic":
        return DiscretizedLogistic(int(spec["n_bins"]), int(spec["n_components"]))
    raise ValueError(f"unknown output distribution {kind!r}")
