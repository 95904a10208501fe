"""Per-request preparation shared by every runner: uniforms, mixture components and prefill states.

A request with seed ``s`` draws ``seeded_uniforms(n, D, s)``; ``u[:, 0]`` picks
each row's mask. A completion runs one forward pass per mask over its known prefix (a single row: all
``n`` rows share the prefix), which gives both the cached-sampler state the rows start from and
``log p_k(prefix)`` for every ``k``, hence the component posterior ``w_k ∝ p_k(prefix)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from service.made import (
    MADE,
    CachedPlan,
    check_temperature,
    choose_components,
    final_params,
    pick_components,
    prefill,
    seeded_uniforms,
)

from . import pcg64

__all__ = ["Prepared", "RowInit", "initial_state", "prepare_request"]


@dataclass
class RowInit:
    """The cached-sampler state of one row that starts at position ``start`` under one mask.

    Tensors are in the model's dtype, ordered by position (inputs, outputs) and by degree (units).
    """

    inp: torch.Tensor  # (D,) network inputs; zero from ``start`` on
    xs: torch.Tensor  # (D,) data values; zero from ``start`` on
    acc: list[torch.Tensor]  # per hidden layer (H_l,) pre-activations (partial for non-final units)
    h: list[torch.Tensor]  # per hidden layer (H_l,) activations of final units, zero elsewhere
    out: torch.Tensor  # (D, P) output accumulators; final for positions <= start
    lp: float  # log p_k(x at positions < start)
    flat: tuple[np.ndarray, ...] | None = field(default=None, repr=False)  # a runner's cached copy


@dataclass
class Prepared:
    """Everything a runner needs to admit a request's rows."""

    uniforms: np.ndarray  # (n, D + 1) float64
    comps: np.ndarray  # (n,) int64 mask index per row
    start: int  # first position drawn (n_known)
    init: dict[int, RowInit]  # per mask used
    temperature: float = 1.0  # sampling temperature of every row (0: the most probable values)


@torch.no_grad()
def initial_state(model: MADE, plan: CachedPlan, xs: torch.Tensor, start: int) -> RowInit:
    """One row's start state: :func:`service.made.prefill` over the first ``start`` positions of ``xs``
    (data values by position, ``(D,)``), plus ``log p_k`` of that prefix."""
    xs = xs.clone()
    xs[start:] = 0
    inp = model.dist.preprocess(xs)
    inp[start:] = 0
    accs, hs, outs = prefill(model, plan, inp[None], start)
    acc, h, out = [a[0] for a in accs], [a[0] for a in hs], outs[0]
    lp = 0.0
    if start:
        params = final_params(model, plan, out[None], inp[None], 0, start)[0]
        lp = float(model.dist.log_prob(params, xs[:start]).to(torch.float64).sum())
    return RowInit(inp, xs, acc, h, out, lp)


def prepare_request(
    model: MADE,
    plans: list[CachedPlan],
    base: list[RowInit],
    n: int,
    seed: int,
    known: np.ndarray | None,
    n_known: int,
    temperature: float = 1.0,
) -> Prepared:
    """Uniforms, components and start states of a request (``base``: each mask's empty-prefix state).
    At ``temperature`` 0 the components are the most probable ones (see :mod:`service.made.sampling`)."""
    temperature = check_temperature(temperature)
    if model.num_masks == 1 and (n_known == 0 or known is None):
        # the common case, compiled (no torch calls, grad-mode switches or generator objects per
        # request): the same numbers as seeded_uniforms, every row on mask 0
        u = pcg64.seeded_uniforms(seed, n, model.data_dim + 1)
        return Prepared(u, np.zeros(n, dtype=np.int64), 0, {0: base[0]}, temperature)
    with torch.no_grad():
        prep = _prepare_with_torch(
            model, plans, base, seeded_uniforms(n, model.data_dim, seed), known, n_known, temperature
        )
    prep.temperature = temperature
    return prep


def _prepare_with_torch(
    model: MADE,
    plans: list[CachedPlan],
    base: list[RowInit],
    u: torch.Tensor,
    known: np.ndarray | None,
    n_known: int,
    temperature: float,
) -> Prepared:
    """Mixtures (components drawn from ``u[:, 0]``) and completions (prefill of the known prefix)."""
    n, k_masks = u.shape[0], model.num_masks
    if n_known == 0 or known is None:
        comps = choose_components(model, u[:, 0], temperature=temperature)
        used = sorted(set(comps.tolist()))
        return Prepared(u.numpy(), comps.numpy().astype(np.int64), 0, {k: base[k] for k in used})
    dtype = model.output_layer.weight.dtype
    device = model.output_layer.weight.device
    known_t = torch.as_tensor(known, dtype=dtype, device=device)
    init = {}
    for k in range(k_masks):
        init[k] = initial_state(model, plans[k], known_t[plans[k].order], n_known)
    if k_masks == 1:
        comps = torch.zeros(n, dtype=torch.long)
    else:
        # the posterior over masks given the prefix
        comps = pick_components(
            u[:, 0],
            torch.tensor([init[k].lp for k in range(k_masks)], dtype=torch.float64),
            greedy=temperature == 0,
        )
    used = sorted(set(comps.tolist()))
    return Prepared(u.numpy(), comps.numpy().astype(np.int64), n_known, {k: init[k] for k in used})
