"""The MADE network: masked linear layers, K masks, exact mixture ensembling. No I/O here.

Masks are derived from stored degrees (``input_degrees``, ``hidden_degrees[k][l]``), so a checkpoint
holds degrees, not masks. For mask ``k`` the outputs for dimension ``d`` depend only on inputs of
smaller degree, so ``log p_k(x) = sum_d log p_k(x_d | x_<d)``. The ensemble over K masks is the
mixture ``log p(x) = logsumexp_k log p_k(x) - log K``.

>>> cfg = MADEConfig(data_dim=4, hidden=(8,), num_masks=2)
>>> model = MADE(cfg)
>>> x = torch.tensor([[0.0, 1.0, 1.0, 0.0]])
>>> model.log_prob(x).shape
torch.Size([1])
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .config import ACTIVATIONS, MADEConfig
from .distributions import OutputDistribution, distribution_from_spec
from .local import LocalHead, gather_index, local_mask, window_index
from .masks import draw_hidden_degrees, hidden_mask, input_degrees, make_ordering, output_mask

__all__ = ["MADE", "MaskedLinear"]


def _refresh_after_load(module: nn.Module, incompatible_keys: object) -> None:
    """``load_state_dict`` post-hook of :class:`MADE`: loaded degrees mean new masks."""
    module.refresh_masks()  # type: ignore[operator]


class MaskedLinear(nn.Linear):
    """``y = x (W * M)^T + b`` with a fixed 0/1 mask per ensemble member: ``mask[k]`` is ``(out, in)``."""

    def __init__(self, in_features: int, out_features: int, masks: torch.Tensor, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.register_buffer("masks", masks.to(torch.bool), persistent=False)
        self.keep_masked = False  # keep W * M_k between forward passes without autograd (serving)
        self._masked: dict[int, tuple[torch.Tensor, torch.Tensor, tuple[int, ...], torch.Tensor]] = {}

    def forward(self, x: torch.Tensor, k: int = 0) -> torch.Tensor:  # type: ignore[override]
        return F.linear(x, self.masked_weight(k), self.bias)

    def masked_weight(self, k: int) -> torch.Tensor:
        """The effective weight ``W * M_k``. With ``keep_masked`` (set by :meth:`MADE.keep_masked_weights`
        for serving) and no autograd, the product is kept until the weight or the masks change (another
        tensor, or an in-place write), so a served forward pass costs its matmuls alone (measured for
        ``mnist-fast``: the product and the mask's cast were most of a log-prob batch)."""
        w, m = self.weight, self.masks
        if not self.keep_masked or (torch.is_grad_enabled() and w.requires_grad):
            return w * m[k].to(w.dtype)
        stamp = (w._version, m._version, w.data_ptr(), m.data_ptr())
        hit = self._masked.get(k)
        if hit is None or hit[0] is not w or hit[1] is not m or hit[2] != stamp:
            hit = (w, m, stamp, w * m[k].to(w.dtype))
            self._masked[k] = hit
        return hit[3]

    def forward_units(self, x: torch.Tensor, k: int, units: torch.Tensor) -> torch.Tensor:
        """Only output units ``units`` of :meth:`forward`: ``x (W * M)[units]^T + b[units]``."""
        w = self.weight[units] * self.masks[k][units].to(self.weight.dtype)
        return F.linear(x, w, None if self.bias is None else self.bias[units])


class MADE(nn.Module):
    """Masked autoencoder for distribution estimation with K masks, optional direct connections and an
    optional local head; dropout (set by training) acts on the MADE's hidden units (``dropout``) and on
    the local head's (``head_dropout``)."""

    def __init__(self, config: MADEConfig) -> None:
        super().__init__()
        self.config = config
        self.dist: OutputDistribution = distribution_from_spec(config.distribution)
        self.dropout = nn.Dropout(0.0)
        self.head_dropout = nn.Dropout(0.0)
        d, k_masks = config.data_dim, config.num_masks

        orders = []
        for k in range(k_masks):
            if config.vary_ordering and k > 0:
                seed = config.ordering_seed * 1_000_003 + k
                orders.append(make_ordering("random", d, seed))
            else:
                orders.append(make_ordering(config.ordering, d, config.ordering_seed))
        in_deg = torch.stack([input_degrees(o) for o in orders])  # (K, D)
        self.register_buffer("input_degrees", in_deg)
        for layer, deg in enumerate(self._draw_hidden_degrees()):
            self.register_buffer(f"hidden_degrees_{layer}", deg)
        self.local_head: LocalHead | None = None
        if config.has_local:
            assert config.image_shape is not None
            index = window_index(
                config.image_shape, config.local_rows, config.local_cols, config.local_mirror
            )
            self.register_buffer("local_index", index, persistent=False)
            self.local_head = LocalHead(
                index.shape[1], config.local_context, config.local_hidden, self.dist.n_params
            )
        self._build_layers()
        # the masks derive from the degree buffers, so every state-dict load (checkpoint, resume,
        # best-so-far weights, a moving average) rebuilds them
        self.register_load_state_dict_post_hook(_refresh_after_load)

    # --- structure ------------------------------------------------------------------------------
    @property
    def data_dim(self) -> int:
        return self.config.data_dim

    @property
    def num_masks(self) -> int:
        return self.config.num_masks

    def hidden_degrees(self, layer: int) -> torch.Tensor:
        """Degrees of hidden layer ``layer`` for every mask, ``(K, H_layer)``."""
        return getattr(self, f"hidden_degrees_{layer}")

    def ordering(self, k: int = 0) -> torch.Tensor:
        """``ordering(k)[i]`` is the dimension drawn at position ``i`` by mask ``k``."""
        return torch.argsort(self.input_degrees[k])

    def shares_ordering(self) -> bool:
        """True when every mask uses the same ordering (exact prefix conditioning for all)."""
        return bool((self.input_degrees == self.input_degrees[:1]).all())

    @property
    def n_outputs(self) -> int:
        """Masked outputs per dimension: the ``P`` parameters, then the local head's ``C`` context values."""
        return self.dist.n_params + self.config.local_context

    def output_degrees(self) -> torch.Tensor:
        """Degree of each output unit, ``(K, Q*D)``; unit ``q*D + d`` is output ``q`` of dim ``d``."""
        return self.input_degrees.repeat(1, self.n_outputs)

    def _build_layers(self) -> None:
        cfg = self.config
        k_masks = cfg.num_masks
        degs = [self.input_degrees, *[self.hidden_degrees(i) for i in range(len(cfg.hidden))]]
        sizes = [cfg.data_dim, *cfg.hidden]
        layers = []
        for i in range(len(cfg.hidden)):
            masks = torch.stack([hidden_mask(degs[i + 1][k], degs[i][k]) for k in range(k_masks)])
            layers.append(MaskedLinear(sizes[i], sizes[i + 1], masks))
        self.hidden_layers = nn.ModuleList(layers)
        out_deg = self.output_degrees()
        out_masks = torch.stack([output_mask(out_deg[k], degs[-1][k]) for k in range(k_masks)])
        self.output_layer = MaskedLinear(sizes[-1], cfg.data_dim * self.n_outputs, out_masks)
        self.direct_layer: MaskedLinear | None = None
        if cfg.direct:
            dm = torch.stack([output_mask(out_deg[k], degs[0][k]) for k in range(k_masks)])
            self.direct_layer = MaskedLinear(cfg.data_dim, cfg.data_dim * self.n_outputs, dm, bias=False)
            nn.init.zeros_(self.direct_layer.weight)
        self._refresh_local()

    def redraw_hidden_degrees(self, weights: torch.Tensor) -> None:
        """Redraw every mask's hidden degrees with per-degree ``weights`` (see ``draw_hidden_degrees``),
        seeded by ``mask_seed`` as at construction, and rebuild the masks. Call before training: the
        degrees are saved with the weights, so a loaded model keeps them."""
        for layer, deg in enumerate(self._draw_hidden_degrees(weights)):
            self.hidden_degrees(layer).copy_(deg)
        self.refresh_masks()

    def _draw_hidden_degrees(self, weights: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Per hidden layer, the ``(K, H_l)`` degrees of every mask, drawn from ``mask_seed``."""
        cfg = self.config
        gen = torch.Generator().manual_seed(cfg.mask_seed)
        per_mask = [draw_hidden_degrees(cfg.data_dim, cfg.hidden, gen, weights) for _ in range(cfg.num_masks)]
        return [torch.stack([deg[layer] for deg in per_mask]) for layer in range(len(cfg.hidden))]

    def refresh_masks(self) -> None:
        """Recompute every mask from the degree buffers (done after every ``load_state_dict``)."""
        k_masks = self.num_masks
        degs = [self.input_degrees, *[self.hidden_degrees(i) for i in range(len(self.config.hidden))]]
        for i, layer in enumerate(self.hidden_layers):
            layer.masks = torch.stack([hidden_mask(degs[i + 1][k], degs[i][k]) for k in range(k_masks)])
        out_deg = self.output_degrees()
        self.output_layer.masks = torch.stack([output_mask(out_deg[k], degs[-1][k]) for k in range(k_masks)])
        if self.direct_layer is not None:
            self.direct_layer.masks = torch.stack(
                [output_mask(out_deg[k], degs[0][k]) for k in range(k_masks)]
            )
        self._refresh_local()

    def _refresh_local(self) -> None:
        """The local head's per-mask gather index ``(K, D, N)``: the window, with what the mask (from the
        input degrees) drops pointed at a zero column at index ``D``."""
        if self.local_head is None:
            return
        masks = torch.stack([local_mask(self.local_index, deg) for deg in self.input_degrees])
        gather = gather_index(self.local_index.expand_as(masks), masks, self.data_dim)
        self.register_buffer("local_gather", gather, persistent=False)

    @torch.no_grad()
    def scale_outputs_(self, factor: float) -> None:
        """Multiply every output parameter by ``factor`` (output weights and bias, direct weights).

        For Bernoulli outputs the parameter is the logit ``a_d``, so ``factor = 1/T`` tempers every
        conditional to ``sigmoid(a_d / T)``; each stays normalised and autoregressive.
        """
        if self.local_head is not None:
            raise ValueError("scaling the outputs of a model with a local head is not supported")
        self.output_layer.weight.mul_(factor)
        self.output_layer.bias.mul_(factor)
        if self.direct_layer is not None:
            self.direct_layer.weight.mul_(factor)

    @property
    def activation(self) -> Any:
        return ACTIVATIONS[self.config.activation]

    # --- evaluation -----------------------------------------------------------------------------
    def keep_masked_weights(self, on: bool = True) -> None:
        """Keep each masked layer's ``W * M_k`` between forward passes without autograd (serving: the
        engine turns this on; training leaves it off). A changed weight or mask is noticed either way."""
        for layer in self.modules():
            if isinstance(layer, MaskedLinear):
                layer.keep_masked = on
                layer._masked.clear()

    def set_dropout(self, rate: float, head_rate: float | None = None) -> None:
        """Dropout rate on the MADE's hidden units, and on the local head's (``head_rate``, by default the
        same), in training mode; eval ignores both."""
        head = rate if head_rate is None else head_rate
        if not (0.0 <= rate < 1.0 and 0.0 <= head < 1.0):
            raise ValueError(f"dropout rates must be in [0, 1), got {rate} and {head} (head)")
        self.dropout.p = float(rate)
        self.head_dropout.p = float(head)

    def forward(self, x: torch.Tensor, k: int = 0) -> torch.Tensor:
        """Distribution parameters ``(B, D, P)`` for data ``x`` ``(B, D)`` under mask ``k``."""
        return self.forward_inputs(self.dist.preprocess(x.to(self.output_layer.weight.dtype)), k)

    def forward_inputs(self, inp: torch.Tensor, k: int = 0, dims: torch.Tensor | None = None) -> torch.Tensor:
        """The one forward pass: parameters ``(B, D, P)`` from network inputs ``inp`` (preprocessed data),
        or ``(B, len(dims), P)`` for dimensions ``dims`` only (the same computation, less of it).

        Training (dropout in train mode), evaluation, the samplers' reference and the autograd
        Jacobian check (a chunk of ``dims`` at a time) all run this.
        """
        h = inp
        for layer in self.hidden_layers:
            h = self.dropout(self.activation(layer(h, k)))
        q, d = self.n_outputs, self.data_dim
        if dims is None:
            out = self.output_layer(h, k)
            if self.direct_layer is not None:
                out = out + self.direct_layer(inp, k)
        else:  # output unit q*D + d is output q of dimension d
            units = (torch.arange(q, device=dims.device)[:, None] * d + dims[None, :]).reshape(-1)
            out = self.output_layer.forward_units(h, k, units)
            if self.direct_layer is not None:
                out = out + self.direct_layer.forward_units(inp, k, units)
        out = out.view(inp.shape[0], q, -1).transpose(1, 2)
        if self.local_head is None:
            return out
        p = self.dist.n_params
        return out[..., :p] + self.local_head(
            self.neighbours(inp, k, dims), out[..., p:], self.activation, self.head_dropout
        )

    def neighbours(self, inp: torch.Tensor, k: int = 0, dims: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, D, N)`` network inputs of each dimension's window under mask ``k`` (zero where masked);
        ``(B, len(dims), N)`` for dimensions ``dims`` only."""
        padded = torch.cat([inp, inp.new_zeros(inp.shape[0], 1)], dim=1)
        gather = self.local_gather[k] if dims is None else self.local_gather[k][dims]
        return padded[:, gather]

    def forward_rows(self, x: torch.Tensor, ks: torch.Tensor) -> torch.Tensor:
        """Parameters when each row ``b`` uses its own mask ``ks[b]`` (rows grouped per mask)."""
        out = torch.empty(
            x.shape[0],
            self.data_dim,
            self.dist.n_params,
            dtype=self.output_layer.weight.dtype,
            device=x.device,
        )
        for k in torch.unique(ks).tolist():
            rows = ks == k
            out[rows] = self(x[rows], int(k))
        return out

    def log_prob_per_dim(self, x: torch.Tensor, k: int = 0) -> torch.Tensor:
        """``log p_k(x_d | x_<d)`` for every dimension, ``(B, D)`` nats."""
        return self.dist.log_prob(self(x, k), x)

    def component_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """``log p_k(x)`` for every mask, ``(B, K)``."""
        return torch.stack([self.log_prob_per_dim(x, k).sum(-1) for k in range(self.num_masks)], dim=-1)

    def log_prob(self, x: torch.Tensor, k: int | None = None) -> torch.Tensor:
        """Exact log-likelihood (nats): one mask if ``k`` is given, else the K-mask mixture."""
        if k is not None:
            return self.log_prob_per_dim(x, k).sum(-1)
        comp = self.component_log_probs(x)
        return torch.logsumexp(comp, dim=-1) - math.log(self.num_masks)

    def bits_per_dim(self, x: torch.Tensor, k: int | None = None) -> torch.Tensor:
        """Negative log-likelihood in bits per dimension, ``-log p(x) / (D ln 2)`` (mixture if ``k`` is None).

        >>> model = MADE(MADEConfig(data_dim=4, hidden=(8,)))
        >>> bool(model.bits_per_dim(torch.zeros(2, 4)).gt(0).all())
        True
        """
        return -self.log_prob(x, k) / (self.data_dim * math.log(2.0))

    def ensemble_log_prob_per_dim(self, x: torch.Tensor) -> torch.Tensor:
        """Mixture conditionals ``log p(x_d | x_<d)``, ``(B, D)``, which sum to :meth:`log_prob`.

        With a shared ordering the mixture's conditional is
        ``logsumexp_k [c_k(<=d)] - logsumexp_k [c_k(<d)]`` where ``c_k`` are cumulative component
        log-likelihoods along the ordering. Undefined when masks order the dimensions differently.
        """
        if self.num_masks == 1:
            return self.log_prob_per_dim(x, 0)
        if not self.shares_ordering():
            raise ValueError("per-dimension conditionals of a mixture need a shared ordering")
        order = self.ordering(0)
        per = torch.stack([self.log_prob_per_dim(x, k)[:, order] for k in range(self.num_masks)], -1)
        cum = per.cumsum(1)  # (B, D, K) along the ordering
        mix = torch.logsumexp(cum, dim=-1) - math.log(self.num_masks)
        cond = torch.diff(mix, dim=1, prepend=torch.zeros_like(mix[:, :1]))
        out = torch.empty_like(cond)
        out[:, order] = cond
        return out
