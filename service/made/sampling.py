"""Samplers: the reference loop and the cached sampler, both driven by explicit uniforms.

Random numbers: a row uses ``D + 1`` uniforms: ``u[0]`` picks the mixture component, ``u[1 + i]`` draws
the dimension at ordering position ``i``. Any sampler fed the same uniforms must return the same
vectors (tests check it in float64), so a request's seed alone fixes its output.

Completion: rows may come with known values for the first ``n_known`` positions of the (shared)
ordering; those are computed in one batched pass and never redrawn, and the component is drawn from
its posterior given the known part, ``w_k ∝ p_k(x_known)``, which makes the draw an exact sample of
the mixture's conditional.

Temperature (``temperature``, default 1): each dimension is drawn from its tempered conditional
(:mod:`.distributions` defines it once); at ``0`` every dimension takes its most probable value and the
mask is the most probable one too (the posterior's argmax given the known prefix; mask 0 when there is
none, every mask being equally likely; ties to the lowest), so the result does not depend on the
uniforms. ``log_prob`` is always the model's own (temperature 1) log-likelihood of what was drawn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .distributions import check_temperature
from .network import MADE

__all__ = [
    "CachedPlan",
    "SampleResult",
    "build_plan",
    "choose_components",
    "draw_uniforms",
    "final_params",
    "pick_components",
    "prefill",
    "prefix_log_probs",
    "sample_cached",
    "sample_reference",
    "seeded_uniforms",
]


@dataclass
class SampleResult:
    """Drawn vectors ``x`` ``(n, D)``, the component used per row, and ``log_prob`` ``(n,)``: the sum of
    the conditionals ``log p_k(x_d | x_<d)`` used to draw (drawn positions only)."""

    x: torch.Tensor
    components: torch.Tensor
    log_prob: torch.Tensor


def draw_uniforms(n: int, d: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """The ``(n, D + 1)`` float64 uniforms of ``n`` rows, in the layout described above."""
    return torch.rand(n, d + 1, generator=generator, dtype=torch.float64)


def seeded_uniforms(n: int, d: int, seed: int) -> torch.Tensor:
    """The ``(n, D + 1)`` float64 uniforms of a request with ``seed`` (``0 <= seed < 2**64``): numpy's
    PCG64 stream, three times faster than torch's CPU Mersenne Twister and independent of the device.

    >>> seeded_uniforms(2, 3, 7).shape
    torch.Size([2, 4])
    >>> bool((seeded_uniforms(2, 3, 7) == seeded_uniforms(2, 3, 7)).all())
    True
    """
    return torch.from_numpy(np.random.default_rng(seed).random((n, d + 1)))


def _check_known(model: MADE, known: torch.Tensor | None, n_known: int, n: int) -> None:
    if n_known < 0 or n_known > model.data_dim:
        raise ValueError(f"n_known must be in 0..{model.data_dim}")
    if n_known > 0:
        if known is None or known.shape != (n, model.data_dim):
            raise ValueError(f"known must have shape ({n}, {model.data_dim})")
        if not model.shares_ordering():
            raise ValueError("completion needs masks that share one ordering")


@torch.no_grad()
def prefix_log_probs(model: MADE, known: torch.Tensor, n_known: int) -> torch.Tensor:
    """``log p_k(x at positions < n_known)`` per row and mask, ``(n, K)``."""
    order = model.ordering(0)
    prefix = order[:n_known]
    return torch.stack(
        [model.log_prob_per_dim(known, k)[:, prefix].sum(-1) for k in range(model.num_masks)], dim=-1
    )


def pick_components(u: torch.Tensor, log_w: torch.Tensor, greedy: bool = False) -> torch.Tensor:
    """Component per row by inverse CDF on ``u`` ``(n,)`` of ``softmax(log_w)``; ``log_w`` is ``(K,)``
    (shared by every row) or ``(n, K)``. ``greedy`` (temperature 0): the most probable component
    (the first of equals), whatever ``u``."""
    if greedy:
        best = log_w.to(torch.float64).argmax(-1)
        return best.expand(u.shape[0]) if best.ndim == 0 else best
    cdf = torch.softmax(log_w.to(torch.float64), dim=-1).cumsum(-1)
    if cdf.ndim == 1:
        cdf = cdf.expand(u.shape[0], -1)
    k = cdf.shape[-1]
    return (cdf <= (u.to(torch.float64) * cdf[:, -1])[:, None]).sum(-1).clamp(max=k - 1)


@torch.no_grad()
def choose_components(
    model: MADE,
    u: torch.Tensor,
    known: torch.Tensor | None = None,
    n_known: int = 0,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Mixture component per row by inverse CDF on ``u`` ``(n,)``: uniform, or the posterior given
    the known prefix; at ``temperature`` 0 the most probable one (mask 0 without a prefix)."""
    k = model.num_masks
    n = u.shape[0]
    if k == 1 or (temperature == 0 and (n_known == 0 or known is None)):
        return torch.zeros(n, dtype=torch.long, device=u.device)
    if n_known == 0 or known is None:
        return (u * k).long().clamp(max=k - 1)
    return pick_components(u, prefix_log_probs(model, known, n_known), greedy=temperature == 0)


def _prepare(
    model: MADE,
    n: int | None,
    uniforms: torch.Tensor | None,
    generator: torch.Generator | None,
    known: torch.Tensor | None,
    n_known: int,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    d = model.data_dim
    if uniforms is None:
        if n is None:
            raise ValueError("give n (with an optional generator) or explicit uniforms")
        uniforms = draw_uniforms(n, d, generator)
    n = uniforms.shape[0]
    if uniforms.shape != (n, d + 1):
        raise ValueError(f"uniforms must have shape (n, {d + 1})")
    _check_known(model, known, n_known, n)
    dtype = model.output_layer.weight.dtype
    device = model.output_layer.weight.device
    uniforms = uniforms.to(device)
    x = torch.zeros(n, d, dtype=dtype, device=device)
    if n_known:
        assert known is not None
        prefix = model.ordering(0)[:n_known]
        x[:, prefix] = known.to(device=device, dtype=dtype)[:, prefix]
    comps = choose_components(model, uniforms[:, 0], x if n_known else None, n_known, temperature)
    return x, uniforms, comps


@torch.no_grad()
def sample_reference(
    model: MADE,
    n: int | None = None,
    *,
    uniforms: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    known: torch.Tensor | None = None,
    n_known: int = 0,
    temperature: float = 1.0,
) -> SampleResult:
    """The straightforward sampler: one full forward pass per drawn dimension."""
    temperature = check_temperature(temperature)
    x, uniforms, comps = _prepare(model, n, uniforms, generator, known, n_known, temperature)
    d = model.data_dim
    lp = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    rows = torch.arange(x.shape[0], device=x.device)
    orders = torch.stack([model.ordering(k) for k in range(model.num_masks)]).to(x.device)
    dims_by_row = orders[comps]  # (n, D): dimension drawn at each position, per row
    for i in range(n_known, d):
        params = model.forward_rows(x, comps)
        dims = dims_by_row[:, i]
        p_i = params[rows, dims]
        v = model.dist.sample(p_i, uniforms[:, 1 + i], temperature)
        x[rows, dims] = v
        lp += model.dist.log_prob(p_i, v).to(torch.float64)
    return SampleResult(x, comps, lp)


@dataclass
class CachedPlan:
    """Mask ``k``'s weights rearranged so units are sorted by degree and outputs by position.

    ``bounds[l][m]`` is the first index of layer ``l``'s units with degree ``>= m`` (``m = 0..D``),
    so the units of degree ``m`` are ``bounds[l][m]:bounds[l][m + 1]``.
    """

    order: torch.Tensor  # (D,) dimension drawn at each position
    weights: list[torch.Tensor]  # hidden layer l: (H_l, H_{l-1}) with layer 0 columns by position
    biases: list[torch.Tensor]
    bounds: list[list[int]]
    out_weight: torch.Tensor  # (D, Q, H_L) rows by position; Q = P parameters + local-head context
    out_bias: torch.Tensor  # (D, Q)
    direct: torch.Tensor | None  # (D, Q, D) by position on both sides
    local: torch.Tensor | None = None  # (D, N) window positions of each position, D where masked


@torch.no_grad()
def final_params(
    model: MADE, plan: CachedPlan, out: torch.Tensor, inp: torch.Tensor, start: int, stop: int
) -> torch.Tensor:
    """Parameters ``(n, stop - start, P)`` of positions ``start..stop-1`` from their final output
    accumulators ``out`` ``(n, D, Q)`` and the inputs by position ``inp`` ``(n, D)``: the accumulators
    themselves, or with the local head's correction (its window precedes each position, so it is final)."""
    o = out[:, start:stop]
    if plan.local is None or model.local_head is None:
        return o
    d, p = inp.shape[1], model.dist.n_params
    index = plan.local[start:stop]  # D where masked: read inp there and zero it (no padded copy per step)
    nb = torch.where(index < d, inp[:, index.clamp(max=d - 1)], 0.0)
    return o[..., :p] + model.local_head(nb, o[..., p:], model.activation, model.dropout)


@torch.no_grad()
def build_plan(model: MADE, k: int = 0) -> CachedPlan:
    """Rearrange mask ``k``'s masked weights for the cached sampler."""
    d, p = model.data_dim, model.n_outputs
    order = model.ordering(k)
    prev_perm = order
    weights, biases, bounds = [], [], []
    for li, layer in enumerate(model.hidden_layers):
        deg = model.hidden_degrees(li)[k]
        perm = torch.argsort(deg, stable=True)
        w = layer.masked_weight(k)[perm][:, prev_perm]
        weights.append(w.contiguous())
        biases.append(layer.bias[perm].clone())
        bounds.append(torch.searchsorted(deg[perm], torch.arange(0, d + 2)).tolist())
        prev_perm = perm
    w_out = model.output_layer.masked_weight(k).view(p, d, -1)[:, order][:, :, prev_perm]
    b_out = model.output_layer.bias.view(p, d)[:, order]
    direct = None
    if model.direct_layer is not None:
        wd = model.direct_layer.masked_weight(k).view(p, d, d)[:, order][:, :, order]
        direct = wd.transpose(0, 1).contiguous()
    local = None
    if model.local_head is not None:
        by_pos = model.local_gather[k][order]  # (D, N) window dimensions of each position, D = masked
        position = model.input_degrees[k] - 1
        local = torch.where(by_pos == d, d, position[by_pos.clamp(max=d - 1)]).contiguous()
    return CachedPlan(
        order,
        weights,
        biases,
        bounds,
        w_out.transpose(0, 1).contiguous(),
        b_out.T.contiguous(),
        direct,
        local,
    )


@torch.no_grad()
def prefill(
    model: MADE, plan: CachedPlan, inp: torch.Tensor, n_known: int
) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """Cached-sampler state after the first ``n_known`` positions, in one masked forward pass.

    ``inp``: network inputs ``(n, D)`` by position, zero from ``n_known`` on. Returns per hidden layer
    the pre-activations ``(n, H_l)`` (partial sums for units of degree ``> n_known``) and activations
    (zero for those units), and the output accumulators ``(n, D, P)`` (final for positions ``<= n_known``).
    """
    act = model.activation
    accs, hs = [], []
    prev = inp
    for w, b, bd in zip(plan.weights, plan.biases, plan.bounds, strict=True):
        acc = b + prev @ w.T
        h = act(acc)
        h[:, bd[n_known + 1] :] = 0  # units of degree > n_known are not final yet
        accs.append(acc)
        hs.append(h)
        prev = h
    out = plan.out_bias + torch.einsum("nh,dph->ndp", prev, plan.out_weight)
    if plan.direct is not None:
        out = out + torch.einsum("ne,dpe->ndp", inp, plan.direct)
    return accs, hs, out


class _CachedState:
    """Accumulators of one group of rows sharing a mask and a position (torch reference of the
    algorithm the engine runs per row)."""

    def __init__(self, model: MADE, plan: CachedPlan, inp: torch.Tensor, n_known: int) -> None:
        self.model, self.plan = model, plan
        self.inp = inp.clone()  # network inputs sorted by position; unknown positions zero
        self.inp[:, n_known:] = 0
        self.acc, self.h, self.out = prefill(model, plan, self.inp, n_known)

    def propagate(self, m: int, v: torch.Tensor) -> None:
        """The input of degree ``m`` (position ``m - 1``) now has network value ``v``: finalise every
        unit of degree ``m`` and add its contribution to the units and outputs above it."""
        plan, act = self.plan, self.model.activation
        self.inp[:, m - 1] = v
        lo_prev, hi_prev = m - 1, m  # layer 0 "units" are the inputs by position
        prev = self.inp
        for li, w in enumerate(plan.weights):
            bd = plan.bounds[li]
            lo, hi = bd[m], bd[m + 1]
            self.acc[li][:, lo:] += prev[:, lo_prev:hi_prev] @ w[lo:, lo_prev:hi_prev].T
            self.h[li][:, lo:hi] = act(self.acc[li][:, lo:hi])
            prev, lo_prev, hi_prev = self.h[li], lo, hi
        self.out[:, m:] += torch.einsum(
            "nh,dph->ndp", prev[:, lo_prev:hi_prev], plan.out_weight[m:, :, lo_prev:hi_prev]
        )
        if plan.direct is not None:
            self.out[:, m:] += v[:, None, None] * plan.direct[m:, :, m - 1]


@torch.no_grad()
def sample_cached(
    model: MADE,
    n: int | None = None,
    *,
    uniforms: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    known: torch.Tensor | None = None,
    n_known: int = 0,
    plans: list[CachedPlan] | None = None,
    temperature: float = 1.0,
) -> SampleResult:
    """The cached sampler: each hidden unit is computed once, as soon as its inputs are final.

    A unit of degree ``m`` depends only on the first ``m`` positions of the ordering; when position
    ``m - 1`` is drawn, units of degree ``m`` are finalised and their contributions added to the
    pre-activation accumulators above. A whole sample costs about one forward pass instead of ``D``.
    """
    temperature = check_temperature(temperature)
    x, uniforms, comps = _prepare(model, n, uniforms, generator, known, n_known, temperature)
    d = model.data_dim
    lp = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    plans = plans or [build_plan(model, k) for k in range(model.num_masks)]
    for k in torch.unique(comps).tolist():
        rows = (comps == k).nonzero()[:, 0]
        plan = plans[k]
        xs = x[rows][:, plan.order]  # by position
        inp = model.dist.preprocess(xs)
        state = _CachedState(model, plan, inp, n_known)
        u = uniforms[rows]
        for i in range(n_known, d):
            p_i = final_params(model, plan, state.out, state.inp, i, i + 1)[:, 0]
            v = model.dist.sample(p_i, u[:, 1 + i], temperature)
            xs[:, i] = v
            lp[rows] += model.dist.log_prob(p_i, v).to(torch.float64)
            if i + 1 < d:
                state.propagate(i + 1, model.dist.preprocess(v))
        out = torch.empty_like(xs)
        out[:, plan.order] = xs
        x[rows] = out
    return SampleResult(x, comps, lp)
