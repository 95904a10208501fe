"""Post-hoc temperature for Bernoulli MADEs, fitted on validation data and folded into the weights.

An overfitted model is overconfident: its logits ``a_d`` are too large. One scalar ``T`` fitted by
minimising the validation NLL of ``sigmoid(a_d / T)`` corrects that (temperature scaling, Guo et al.
2017). The NLL is convex in ``beta = 1/T`` (a sum of softplus terms linear in ``beta``), so a
golden-section search finds the minimum. The test split is never looked at.

The same idea weighs several models pooled into one (:func:`service.made.merge.pool`): the pooled
logit ``sum_i w_i a_i`` makes the validation NLL a logistic regression in ``w`` without intercept,
convex, so Newton's method finds the weights (a temperature included: they need not sum to 1).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from ..made import MADE

__all__ = ["calibrate", "fit_pool_weights", "fit_temperature"]

_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


@torch.no_grad()
def _logits(model: MADE, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    w = model.output_layer.weight
    return torch.cat(
        [
            model(x[i : i + batch_size].to(w.device, w.dtype), 0)[..., 0]
            for i in range(0, x.shape[0], batch_size)
        ]
    )


def _check_calibratable(model: MADE) -> None:
    """One scalar tempers Bernoulli logits; a logistic mixture or a K-mask mixture is not its job."""
    if model.dist.spec()["type"] != "bernoulli" or model.num_masks != 1:
        raise ValueError("temperature calibration needs a single-mask MADE with Bernoulli outputs")


def _nll(logits: torch.Tensor, x: torch.Tensor, beta: float) -> float:
    """Mean NLL per example (nats) of ``x`` under ``sigmoid(beta * logits)``."""
    target = x.to(logits.device, logits.dtype)
    return float(F.binary_cross_entropy_with_logits(beta * logits, target, reduction="sum")) / x.shape[0]


def fit_temperature(
    model: MADE, x: torch.Tensor, lo: float = 0.25, hi: float = 4.0, tol: float = 1e-5, batch_size: int = 1000
) -> float:
    """The ``T`` in ``[lo, hi]`` that minimises the mean NLL of ``x`` under ``sigmoid(a / T)``.

    Only for Bernoulli outputs and one mask.
    """
    _check_calibratable(model)
    return _fit(_logits(model, x, batch_size).double(), x, lo, hi, tol)


def _fit(logits: torch.Tensor, x: torch.Tensor, lo: float, hi: float, tol: float) -> float:
    """Golden-section search for the best ``T`` given the logits of ``x``."""
    a, b = 1.0 / hi, 1.0 / lo  # search over beta = 1/T, where the NLL is convex
    c, d = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
    fc, fd = _nll(logits, x, c), _nll(logits, x, d)
    while b - a > tol:
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - _GOLDEN * (b - a)
            fc = _nll(logits, x, c)
        else:
            a, c, fc = c, d, fd
            d = a + _GOLDEN * (b - a)
            fd = _nll(logits, x, d)
    return 2.0 / (a + b)


def calibrate(model: MADE, x: torch.Tensor, batch_size: int = 1000) -> dict[str, Any]:
    """Fit ``T`` on ``x`` and fold ``1/T`` into the output layer; returns what the model card records."""
    _check_calibratable(model)
    logits = _logits(model, x, batch_size).double()  # one forward pass serves the fit and both figures
    t = _fit(logits, x, 0.25, 4.0, 1e-5)
    model.scale_outputs_(1.0 / t)
    return {
        "temperature": round(t, 5),
        "fitted_on": f"validation split ({x.shape[0]} rows)",
        "valid_nll_before": round(_nll(logits, x, 1.0), 4),
        "valid_nll_after": round(_nll(logits, x, 1.0 / t), 4),
    }


def fit_pool_weights(
    models: list[MADE], x: torch.Tensor, batch_size: int = 1000, tol: float = 1e-10, max_iter: int = 50
) -> tuple[list[float], dict[str, Any]]:
    """Weights ``w`` minimising the mean NLL of ``x`` under ``sigmoid(sum_i w_i a_i)``; and a record.

    Newton steps on the convex objective, halved until the NLL drops; starts from equal weights
    summing to 1. The record holds each model's NLL of ``x``, the equal-weight pool's, and the fitted one's.
    """
    for m in models:
        _check_calibratable(m)
    a = torch.stack([_logits(m, x, batch_size).double() for m in models])  # (N, B, D)
    target = x.to(a.device, torch.float64)
    n, rows = a.shape[0], x.shape[0]

    def nll(w: torch.Tensor) -> float:
        z = torch.einsum("i,ibd->bd", w, a)
        return float(F.binary_cross_entropy_with_logits(z, target, reduction="sum")) / rows

    w = torch.full((n,), 1.0 / n, dtype=torch.float64, device=a.device)
    f = equal = nll(w)
    for _ in range(max_iter):
        p = torch.sigmoid(torch.einsum("i,ibd->bd", w, a))
        grad = torch.einsum("bd,ibd->i", p - target, a)
        hess = torch.einsum("bd,ibd,jbd->ij", p * (1 - p), a, a)
        step = torch.linalg.solve(hess, grad)
        t, f_new = 1.0, nll(w - step)
        while f_new > f and t > 1e-8:  # halve the step until the NLL drops
            t /= 2
            f_new = nll(w - t * step)
        if f_new > f:
            break
        w, gain, f = w - t * step, f - f_new, f_new
        if gain < tol:
            break
    record = {
        "fitted_on": f"validation split ({rows} rows)",
        "valid_nll_sources": [round(nll(torch.eye(n, dtype=torch.float64)[i]), 4) for i in range(n)],
        "valid_nll_equal_weights": round(equal, 4),
        "valid_nll_after": round(f, 4),
    }
    return [float(v) for v in w], record
