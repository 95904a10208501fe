"""Per-dimension output distributions: what the network's outputs for one dimension mean.

Each distribution turns ``P`` raw network outputs per dimension into a normalised distribution over
that dimension's values, scores values (``log_prob``, nats) and draws them from explicit uniforms
(inverse CDF), so two samplers fed the same uniforms draw the same values.

Sampling temperature ``T`` is defined here once, for every sampler: the reference loop, the cached
sampler, the torch runner and the numba kernels (which mirror these formulas in float64). ``T > 0``
tempers the parameters (Bernoulli logits and mixture logits divided by ``T``, logistic scales
multiplied by ``T``: log-scale ``+ log T``); ``T = 0`` takes :meth:`mode`, the most probable value,
without using the uniform. ``T = 1`` is the model itself. Scores (``log_prob``) are never tempered.

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

__all__ = [
    "MAX_TEMPERATURE",
    "MIN_TEMPERATURE",
    "MODE_TIE_NATS",
    "Bernoulli",
    "DiscretizedLogistic",
    "OutputDistribution",
    "check_temperature",
    "distribution_from_spec",
]

#: Largest accepted temperature: far beyond it every logit is about 0 and every scale huge (uniform noise).
MAX_TEMPERATURE = 100.0
#: Smallest accepted positive temperature. Below it ``logit / T`` and ``1 / (s T)`` approach float32
#: overflow, where the float32 and float64 paths would no longer agree; ``T = 0`` is the exact limit.
MIN_TEMPERATURE = 1e-6
#: Bins whose log-masses are within this many nats of the largest tie for the mode, and the lowest of
#: them is taken: far above the last-bit differences between the reference's and the kernels' arithmetic
#: (a mean exactly on the edge between two bins gives them the same mass), far below any real gap.
MODE_TIE_NATS = 1e-9


def check_temperature(temperature: float) -> float:
    """``temperature`` as a float if it is ``0`` or in ``[MIN_TEMPERATURE, MAX_TEMPERATURE]``, else
    ``ValueError`` naming the range (NaN, infinities, negatives and non-numbers included).

    >>> check_temperature(0), check_temperature(0.5)
    (0.0, 0.5)
    """
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        raise ValueError(f"temperature must be a number, got {temperature!r}")
    t = float(temperature)
    if not (t == 0.0 or MIN_TEMPERATURE <= t <= MAX_TEMPERATURE):  # NaN fails both
        raise ValueError(
            f"temperature must be 0 (the most probable value) or between {MIN_TEMPERATURE:g} and "
            f"{MAX_TEMPERATURE:g}, got {temperature!r}"
        )
    return t


def _temperatures(temperature: float | torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Temperature per row, ``params.shape[:-1]``, in ``params``' dtype and device (a float is shared)."""
    t = torch.as_tensor(temperature, dtype=params.dtype, device=params.device)
    return t.expand(params.shape[:-1])


def _is_one(temperature: float | torch.Tensor) -> bool:
    return isinstance(temperature, int | float) and temperature == 1.0


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

    def sample(
        self, params: torch.Tensor, u: torch.Tensor, temperature: float | torch.Tensor = 1.0
    ) -> torch.Tensor:
        """Draw values from ``params`` (``(..., P)``) with uniforms ``u`` (``(...)``) in [0, 1), at
        ``temperature`` (a float, or one per row ``(...)``; ``0``: :meth:`mode`, ``u`` unused)."""
        ...

    def mode(self, params: torch.Tensor) -> torch.Tensor:
        """The most probable value under ``params`` (``(..., P)``); ties go to the lowest value."""
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

    def logit(self, params: torch.Tensor, temperature: float | torch.Tensor = 1.0) -> torch.Tensor:
        """The logit at temperature ``T > 0``: ``logit / T``, so ``p_T(1) = sigmoid(logit / T)``
        (``p_T(1) / p_T(0) = (p(1) / p(0))^(1/T)``: the model's odds sharpened or flattened)."""
        if _is_one(temperature):
            return params[..., 0]
        return params[..., 0] / _temperatures(temperature, params)

    def mode(self, params: torch.Tensor) -> torch.Tensor:
        """1 where ``p(1) >= 1/2`` (``logit >= 0``; an exact tie gives 1), else 0."""
        return (params[..., 0] >= 0).to(params.dtype)

    def sample(
        self, params: torch.Tensor, u: torch.Tensor, temperature: float | torch.Tensor = 1.0
    ) -> torch.Tensor:
        if _is_one(temperature):
            return (u.to(params.dtype) < torch.sigmoid(params[..., 0])).to(params.dtype)
        t = _temperatures(temperature, params)
        greedy = t == 0
        logit = self.logit(params, torch.where(greedy, torch.ones_like(t), t))
        drawn = (u.to(params.dtype) < torch.sigmoid(logit)).to(params.dtype)
        return torch.where(greedy, self.mode(params), drawn)


class DiscretizedLogistic:
    r"""A mixture of ``C`` logistics discretised onto ``n_bins`` integer levels (PixelCNN++ style).

    Values ``0..n_bins-1`` are mapped to ``[-1, 1]``; bin ``v`` gets the logistic mass between its
    edges, the first and last bins take the tails, so the ``n_bins`` probabilities telescope to 1:
    :math:`p(v) = \sum_c \pi_c [\sigma((v^+ - \mu_c)/s_c) - \sigma((v^- - \mu_c)/s_c)]`.
    Parameters per dimension: ``C`` mixture logits, ``C`` means, ``C`` log-scales (clamped to
    ``[-7, 7]``). At temperature ``T > 0`` (:meth:`mixture`) the mixture logits are divided by ``T``
    and every scale is multiplied by ``T`` (log-scale ``+ log T``, after the clamp); ``T = 0`` takes
    :meth:`mode`, the bin of largest mass under the model itself.
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

    def mixture(
        self, params: torch.Tensor, temperature: float | torch.Tensor = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        r"""Mixture logits, means and log-scales (each ``(..., C)``) at temperature ``T > 0``:
        :math:`(\text{logit}_c / T,\ \mu_c,\ \text{clamp}(\log s_c, -7, 7) + \log T)`."""
        c = self.n_components
        logit_pi = params[..., :c]
        mu = params[..., c : 2 * c]
        log_s = params[..., 2 * c :].clamp(-7.0, 7.0)
        if _is_one(temperature):
            return logit_pi, mu, log_s
        t = _temperatures(temperature, params)[..., None]
        return logit_pi / t, mu, log_s + torch.log(t)

    def _log_mass(
        self, params: torch.Tensor, v: torch.Tensor, temperature: float | torch.Tensor = 1.0
    ) -> torch.Tensor:
        """Log-mass of bins ``v`` (``(..., M)``, integer-valued) under ``params`` (``(..., P)``) at
        ``temperature`` (``> 0``)."""
        logit_pi, mu, log_s = (a[..., None, :] for a in self.mixture(params, temperature))
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

    def bin_log_probs(self, params: torch.Tensor, temperature: float | torch.Tensor = 1.0) -> torch.Tensor:
        """Log-probabilities of every bin, shape ``(..., n_bins)``; they telescope to total mass 1."""
        bins = torch.arange(self.n_bins, device=params.device)
        return self._log_mass(params, bins.expand(*params.shape[:-1], self.n_bins), temperature)

    def mode(self, params: torch.Tensor) -> torch.Tensor:
        """The bin of largest mass under the model (:meth:`bin_log_probs` at ``T = 1``): the lowest bin
        whose log-mass is within ``MODE_TIE_NATS`` of the largest, so equal masses (a mean on a bin edge)
        go to the lowest bin whatever the arithmetic's last bits. For one logistic it is the bin nearest
        the mean unless a tail bin holds more; for a mixture it need not be any mean's bin."""
        lp = self.bin_log_probs(params)
        near = lp >= lp.max(-1, keepdim=True).values - MODE_TIE_NATS
        return near.to(torch.int8).argmax(-1).to(params.dtype)  # the first of the maxima

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        idx = x.round().long().clamp(0, self.n_bins - 1)
        return self._log_mass(params, idx[..., None])[..., 0]

    def sample(
        self, params: torch.Tensor, u: torch.Tensor, temperature: float | torch.Tensor = 1.0
    ) -> torch.Tensor:
        greedy = None
        if not _is_one(temperature):
            t = _temperatures(temperature, params)
            greedy = t == 0
            temperature = torch.where(greedy, torch.ones_like(t), t)
        probs = self.bin_log_probs(params, temperature).exp()
        cdf = probs.cumsum(-1)
        u = (u.to(params.dtype) * cdf[..., -1]).unsqueeze(-1)
        idx = (cdf <= u).sum(-1).clamp(max=self.n_bins - 1).to(params.dtype)
        if greedy is not None and bool(greedy.any()):
            idx = torch.where(greedy, self.mode(params), idx)
        return idx


def distribution_from_spec(spec: dict[str, Any]) -> OutputDistribution:
    """Rebuild a distribution from the ``spec()`` stored in a model card."""
    kind = spec.get("type")
    if kind == "bernoulli":
        return Bernoulli()
    if kind == "discretized_logistic":
        return DiscretizedLogistic(int(spec["n_bins"]), int(spec["n_components"]))
    raise ValueError(f"unknown output distribution {kind!r}")
