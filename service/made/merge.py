"""Pool single-mask Bernoulli MADEs that share an ordering into one wider MADE (log-linear pooling).

Given models ``i`` with logits ``a_i,d(x_<d)`` and weights ``w_i``, the pooled model has the logit
``a_d = sum_i w_i a_i,d``, that is, each conditional is the normalised weighted geometric mean

    p(x_d | x_<d)  ∝  prod_i p_i(x_d | x_<d) ** w_i.

Every conditional is normalised on its own and depends only on ``x_<d``, so the joint is an exact,
normalised autoregressive density. It is itself a MADE: the hidden layers are the sources' hidden
units side by side (each keeps its degree, so each keeps its mask row; deeper layers are block
diagonal), the output and direct weights are the sources' scaled by ``w_i``, the output bias is
``sum_i w_i b_i``. One forward pass, one mask. This is not the K-mask mixture of :class:`MADE`:
that averages probabilities of whole vectors; this pools each conditional.

>>> a = MADE(MADEConfig(data_dim=4, hidden=(6,)))
>>> b = MADE(MADEConfig(data_dim=4, hidden=(5,), mask_seed=1))
>>> pooled = pool([a, b], [0.5, 0.5])
>>> pooled.config.hidden
(11,)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .config import MADEConfig
from .network import MADE

__all__ = ["pool"]


def _check_poolable(models: Sequence[MADE]) -> None:
    """Pooling needs one mask each, Bernoulli outputs, one ordering, one activation, one depth."""
    if not models:
        raise ValueError("pooling needs at least one model")
    first = models[0]
    for i, m in enumerate(models):
        where = f"model {i}"
        if m.num_masks != 1:
            raise ValueError(f"{where} has {m.num_masks} masks; pooling takes single-mask models")
        if m.dist.spec()["type"] != "bernoulli":
            raise ValueError(f"{where}: pooling weighs logits, so it needs Bernoulli outputs")
        if m.local_head is not None:
            raise ValueError(f"{where} has a local head; pooling adds up plain MADE layers only")
        if m.data_dim != first.data_dim or not torch.equal(m.input_degrees, first.input_degrees):
            raise ValueError(f"{where} orders the dimensions differently from model 0")
        if m.config.activation != first.config.activation:
            raise ValueError(f"{where} uses {m.config.activation}, model 0 {first.config.activation}")
        if len(m.config.hidden) != len(first.config.hidden):
            raise ValueError(
                f"{where} has {len(m.config.hidden)} hidden layers, model 0 {len(first.config.hidden)}"
            )


@torch.no_grad()
def pool(models: Sequence[MADE], weights: Sequence[float]) -> MADE:
    """One MADE whose logits are ``sum_i weights[i] * logits_i`` (see the module docstring).

    The result has the first model's dtype and device, and widths that add up layer by layer.
    """
    _check_poolable(models)
    if len(weights) != len(models):
        raise ValueError(f"{len(models)} models but {len(weights)} weights")
    first = models[0]
    ref = first.output_layer.weight
    depth = len(first.config.hidden)
    cfg = first.config
    config = MADEConfig(
        data_dim=cfg.data_dim,
        hidden=tuple(sum(m.config.hidden[layer] for m in models) for layer in range(depth)),
        distribution=dict(cfg.distribution),
        activation=cfg.activation,
        direct=any(m.config.direct for m in models),
        ordering=cfg.ordering,
        ordering_seed=cfg.ordering_seed,
    )
    out = MADE(config).to(device=ref.device, dtype=ref.dtype)
    out.input_degrees.copy_(first.input_degrees)
    for layer in range(depth):
        out.hidden_degrees(layer).copy_(torch.cat([m.hidden_degrees(layer) for m in models], dim=1))
        dst = out.hidden_layers[layer]
        dst.weight.zero_()
        row = col = 0
        for m in models:
            src = m.hidden_layers[layer]
            h_out, h_in = src.weight.shape
            # layer 0 reads the shared input (all columns); deeper layers read their own block only
            cols = slice(0, h_in) if layer == 0 else slice(col, col + h_in)
            dst.weight[row : row + h_out, cols] = src.masked_weight(0).to(ref)
            dst.bias[row : row + h_out] = src.bias.to(ref)
            row, col = row + h_out, col + h_in
    out.output_layer.bias.zero_()
    if out.direct_layer is not None:
        out.direct_layer.weight.zero_()
    col = 0
    for m, w in zip(models, weights, strict=True):
        h = m.output_layer.weight.shape[1]
        out.output_layer.weight[:, col : col + h] = w * m.output_layer.masked_weight(0).to(ref)
        out.output_layer.bias += w * m.output_layer.bias.to(ref)
        if m.direct_layer is not None and out.direct_layer is not None:
            out.direct_layer.weight += w * m.direct_layer.masked_weight(0).to(ref)
        col += h
    out.refresh_masks()
    return out.eval()
