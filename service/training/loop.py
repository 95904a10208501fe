"""The training loop: Adam on the mean negative log-likelihood, K masks cycled per minibatch, validation
NLL every epoch, early stopping with patience, and a resumable state file written every epoch.

With ``ema > 0`` an exponential moving average of the weights, ``w_ema <- ema * w_ema + (1 - ema) * w``
after every step, is what gets validated, selected and exported: it removes most of the minibatch
noise that a constant learning rate leaves in the weights.

Mask ``k = step % K`` is used for minibatch ``step``, so every mask is trained equally and the K-mask
mixture ``log p(x) = logsumexp_k log p_k(x) - log K`` is what the ensemble evaluates.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..made import MADE

__all__ = ["STATE_FILE", "TrainConfig", "TrainResult", "mean_nll", "train"]

STATE_FILE = "train.state.pt"


@dataclass
class TrainConfig:
    """Optimisation settings (the architecture lives in :class:`~service.made.MADEConfig`)."""

    epochs: int = 100
    batch_size: int = 100
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_schedule: Literal["constant", "cosine", "plateau"] = "constant"
    plateau_factor: float = 0.5
    plateau_patience: int = 3
    min_lr: float = 1e-5
    patience: int = 10
    select: Literal["mask0", "ensemble"] = "mask0"
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    eval_batch_size: int = 1000
    grad_clip: float | None = None
    hflip: bool = False
    shift: int = 0
    dropout: float = 0.0
    head_dropout: float | None = None  # the local head's rate; None: the same as ``dropout``
    dropout_until: int | None = None  # epochs after this one train without dropout (a dropout-free tail)
    ema: float = 0.0
    image_shape: tuple[int, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    """The best model (by validation NLL) and what happened on the way there."""

    model: MADE
    epochs_run: int
    best_epoch: int
    best_valid_nll: float
    history: list[dict[str, float]] = field(default_factory=list)
    wall_time_s: float = 0.0
    stopped_early: bool = False


@torch.no_grad()
def mean_nll(model: MADE, x: torch.Tensor, k: int | None = 0, batch_size: int = 1000) -> float:
    """Mean ``-log p(x)`` in nats over the rows of ``x``: mask ``k``, or the K-mask mixture if ``None``."""
    was_training = model.training
    model.eval()
    device = model.output_layer.weight.device
    total = 0.0
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size].to(device)
        total += float(-model.log_prob(xb, k).double().sum())
    model.train(was_training)
    return total / x.shape[0]


def _random_hflip(x: torch.Tensor, shape: tuple[int, int] | None, gen: torch.Generator) -> torch.Tensor:
    """Mirror a random half of the rows left-right (augmentation for roughly symmetric images)."""
    if shape is None:
        raise ValueError("hflip needs the image shape")
    flip = (torch.rand(x.shape[0], generator=gen) < 0.5).to(x.device)
    mirrored = x.view(-1, *shape).flip(-1).reshape(x.shape)
    return torch.where(flip[:, None], mirrored, x)


def _random_shift(
    x: torch.Tensor, shape: tuple[int, int] | None, limit: int, gen: torch.Generator
) -> torch.Tensor:
    """Move each row's image by a random ``(dy, dx)`` in ``[-limit, limit]^2``, repeating the edge pixels
    (augmentation: nearby faces are the same face a pixel off)."""
    if shape is None:
        raise ValueError("shift needs the image shape")
    h, w = shape
    padded = F.pad(x.view(-1, 1, h, w), (limit,) * 4, mode="replicate")[:, 0]
    dy, dx = torch.randint(0, 2 * limit + 1, (2, x.shape[0]), generator=gen).tolist()
    rows = [padded[i, a : a + h, b : b + w] for i, (a, b) in enumerate(zip(dy, dx, strict=True))]
    return torch.stack(rows).reshape(x.shape)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig) -> Any:
    if cfg.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.epochs, 1), eta_min=cfg.min_lr)
    if cfg.lr_schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, factor=cfg.plateau_factor, patience=cfg.plateau_patience, min_lr=cfg.min_lr
        )
    return None


def _make_ema(model: MADE, decay: float) -> torch.optim.swa_utils.AveragedModel | None:
    """An exponential moving average of ``model``'s parameters (buffers, i.e. degrees, are copied)."""
    if decay <= 0.0:
        return None
    return torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(decay)
    )


def _rng_state(shuffle_gen: torch.Generator) -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "shuffle": shuffle_gen.get_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], shuffle_gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    shuffle_gen.set_state(state["shuffle"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _valid_metric(model: MADE, valid: torch.Tensor, cfg: TrainConfig) -> dict[str, float]:
    out = {"valid_nll": mean_nll(model, valid, 0, cfg.eval_batch_size)}
    if cfg.select == "ensemble" and model.num_masks > 1:
        out["valid_nll_ensemble"] = mean_nll(model, valid, None, cfg.eval_batch_size)
    return out


def train(
    model: MADE,
    train_x: torch.Tensor,
    valid_x: torch.Tensor,
    cfg: TrainConfig,
    run_dir: str | Path,
    resume: bool = False,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train ``model`` in place; returns the best weights by validation NLL (mask 0 or the ensemble).

    Writes ``run_dir/train.state.pt`` after every epoch (model, optimiser, scheduler, RNG states,
    best-so-far), so ``resume=True`` continues exactly where an interrupted run stopped.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    state_path = run_dir / STATE_FILE
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    _seed_everything(cfg.seed)
    if not 0.0 <= cfg.ema < 1.0:
        raise ValueError(f"ema must be in [0, 1), got {cfg.ema}")
    if cfg.dropout_until is not None and cfg.dropout_until < 0:
        raise ValueError(f"dropout_until must be >= 0, got {cfg.dropout_until}")
    if cfg.shift < 0:
        raise ValueError(f"shift must be >= 0, got {cfg.shift}")
    model.to(device).train()
    train_x = train_x.to(device)
    ema = _make_ema(model, cfg.ema)
    # the fused kernel does Adam's update in one pass over each tensor: 1.25-1.31x per step for a
    # 4000-unit MNIST model on 2 CPU threads (bench/train_step.py), where the for-loop version spent
    # about a third of the step in sqrt/div
    fused = device.type in ("cpu", "cuda")
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
    sched = _make_scheduler(opt, cfg)
    shuffle_gen = torch.Generator().manual_seed(cfg.seed)
    select_key = "valid_nll_ensemble" if cfg.select == "ensemble" and model.num_masks > 1 else "valid_nll"

    epoch, step, elapsed = 0, 0, 0.0
    best_nll, best_epoch, bad_epochs = math.inf, 0, 0
    best_state = copy.deepcopy(model.state_dict())
    history: list[dict[str, float]] = []
    if resume and state_path.is_file():
        # Our own file, written below; weights_only=False because it holds RNG and optimiser state.
        st = torch.load(state_path, map_location=device, weights_only=False)
        if st["made_config"] != model.config.to_dict():
            raise ValueError(f"{state_path}: saved for a different architecture; start a fresh run dir")
        model.load_state_dict(st["model"])
        if ema is not None:
            if st.get("ema") is None:
                raise ValueError(f"{state_path}: saved without --ema; start a fresh run dir")
            ema.load_state_dict(st["ema"])
        opt.load_state_dict(st["optimizer"])
        if sched is not None and st.get("scheduler") is not None:
            sched.load_state_dict(st["scheduler"])
        epoch, step, elapsed = st["epoch"], st["step"], st["elapsed"]
        best_nll, best_epoch, bad_epochs = st["best_nll"], st["best_epoch"], st["bad_epochs"]
        best_state, history = st["best_state"], st["history"]
        _set_rng_state(st["rng"], shuffle_gen)
        tqdm.write(f"resumed from {state_path} at epoch {epoch} (best {best_nll:.3f} at epoch {best_epoch})")
        if bad_epochs >= st["train_config"]["patience"]:
            # the run had stopped itself: continuing it (say, with less dropout) restarts the count,
            # while a run interrupted before its stop goes on exactly as if it never was
            bad_epochs = 0
            tqdm.write("it had stopped early; patience counts afresh from here")

    n = train_x.shape[0]
    k_masks = model.num_masks
    stopped_early = bad_epochs >= cfg.patience
    while epoch < cfg.epochs and not stopped_early:
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=shuffle_gen).to(device)
        total, seen = 0.0, 0
        tail = cfg.dropout_until is not None and epoch >= cfg.dropout_until
        dropout = 0.0 if tail else cfg.dropout
        head_dropout = 0.0 if tail else cfg.head_dropout  # None: the same as dropout
        # the model's own dropout: zeroing hidden units keeps it autoregressive
        model.set_dropout(dropout, head_dropout)
        n_batches = math.ceil(n / cfg.batch_size)
        bar = tqdm(
            range(n_batches), desc=f"epoch {epoch + 1}", leave=False, disable=not progress, mininterval=2
        )
        for b in bar:
            xb = train_x[perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]]
            if cfg.hflip:
                xb = _random_hflip(xb, cfg.image_shape, shuffle_gen)
            if cfg.shift:
                xb = _random_shift(xb, cfg.image_shape, cfg.shift, shuffle_gen)
            loss = -model.log_prob(xb, step % k_masks).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            if ema is not None:
                ema.update_parameters(model)
            step += 1
            total += loss.item() * xb.shape[0]
            seen += xb.shape[0]
            if b % 50 == 0:
                bar.set_postfix(nll=f"{total / seen:.2f}")
        bar.close()
        epoch += 1
        evaluated = model if ema is None else ema.module
        row = {"epoch": float(epoch), "train_nll": total / seen, **_valid_metric(evaluated, valid_x, cfg)}
        row["lr"] = opt.param_groups[0]["lr"]
        # --dropout-until, or a resumed run (the card's changed_on_resume), may change it
        row["dropout"] = dropout
        if not math.isfinite(row["train_nll"]):
            raise FloatingPointError(f"training diverged at epoch {epoch} (lower --lr or set --grad-clip)")
        metric = row[select_key]
        if metric < best_nll - 1e-6:
            best_nll, best_epoch, bad_epochs = metric, epoch, 0
            best_state = copy.deepcopy(evaluated.state_dict())
        else:
            bad_epochs += 1
        if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            sched.step(metric)
        elif sched is not None:
            sched.step()
        elapsed += time.perf_counter() - t0
        row["time_s"] = elapsed
        history.append(row)
        stopped_early = bad_epochs >= cfg.patience
        torch.save(
            {
                "made_config": model.config.to_dict(),
                "train_config": cfg.to_dict(),
                "model": model.state_dict(),
                "ema": ema.state_dict() if ema is not None else None,
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict() if sched is not None else None,
                "epoch": epoch,
                "step": step,
                "elapsed": elapsed,
                "best_nll": best_nll,
                "best_epoch": best_epoch,
                "bad_epochs": bad_epochs,
                "best_state": best_state,
                "history": history,
                "rng": _rng_state(shuffle_gen),
            },
            state_path.with_suffix(".tmp"),
        )
        state_path.with_suffix(".tmp").replace(state_path)
        extra = f" ens {row['valid_nll_ensemble']:.3f}" if "valid_nll_ensemble" in row else ""
        tqdm.write(
            f"epoch {epoch:4d} train {row['train_nll']:.3f} valid {row['valid_nll']:.3f}{extra} "
            f"lr {row['lr']:.2e} best {best_nll:.3f}@{best_epoch} {elapsed:.0f}s"
        )
        if on_epoch is not None:
            on_epoch(row)

    model.load_state_dict(best_state)
    model.eval()
    return TrainResult(model, epoch, best_epoch, best_nll, history, elapsed, stopped_early)
