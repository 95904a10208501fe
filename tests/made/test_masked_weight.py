"""The masked weight kept for forward passes without autograd when serving: off by default, the same
numbers as ``W * M``, a fresh product whenever the weight or the masks change, never kept when
gradients flow."""

from __future__ import annotations

import torch

from .conftest import BERN, make_model


def product(layer: torch.nn.Module, k: int) -> torch.Tensor:
    return layer.weight.detach() * layer.masks[k].to(layer.weight.dtype)


def test_kept_without_grad_and_renewed_when_the_weight_or_masks_change():
    model = make_model(0, distribution=BERN, hidden=(12,), num_masks=2, data_dim=8)
    layer = model.hidden_layers[0]
    with torch.no_grad():
        assert layer.masked_weight(1) is not layer.masked_weight(1)  # off unless asked (training)
        model.keep_masked_weights()
        first = layer.masked_weight(1)
        assert layer.masked_weight(1) is first  # kept
        assert torch.equal(first, product(layer, 1)) and torch.equal(
            layer.masked_weight(0), product(layer, 0)
        )
        layer.weight.add_(1.0)  # an optimiser step: in place, a new version
        assert torch.equal(layer.masked_weight(1), product(layer, 1))
        model.load_state_dict({k: v + 1 for k, v in model.state_dict().items()})
        assert torch.equal(layer.masked_weight(1), product(layer, 1))
        model.double()  # new storage
        assert layer.masked_weight(1).dtype == torch.float64
        assert torch.equal(layer.masked_weight(1), product(layer, 1))


def test_with_grad_every_call_builds_the_product_in_the_graph():
    model = make_model(0, distribution=BERN, hidden=(12,), data_dim=8)
    model.keep_masked_weights()
    layer = model.hidden_layers[0]
    w = layer.masked_weight(0)
    assert w.grad_fn is not None and layer.masked_weight(0) is not w
    w.sum().backward()
    assert torch.equal(layer.weight.grad, layer.masks[0].to(layer.weight.dtype))
