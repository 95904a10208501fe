"""The checks and timings behind ``python -m bench.gpu``: the torch runner against the reference
sampler, one seeded request alone and in a crowd, log-prob on a device against the CPU, throughput.

Every check runs the engine with ``backend="torch"`` on the model's device. Identity is asserted in
float64 only (as ``tests/engine/test_engine_exact.py`` does): float32 figures are reported, not asserted.
"""

from __future__ import annotations

import asyncio
import copy
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import numpy as np
import torch

from service.engine import Engine, EngineConfig
from service.made import MADE, MADEConfig, sample_reference, seeded_uniforms

__all__ = [
    "Report",
    "check_crowd",
    "check_exact",
    "check_log_prob",
    "on",
    "random_made",
    "synchronize",
    "throughput",
]

T = TypeVar("T")


class Report:
    """PASS/FAIL lines printed as they come, kept as the Markdown body of the report."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.passed: list[str] = []
        self.failed: list[str] = []

    def section(self, title: str) -> None:
        print(f"\n== {title}", flush=True)
        self.lines += ["", f"## {title}", ""]

    def text(self, line: str) -> None:
        print(line, flush=True)
        self.lines.append(line)

    def check(self, name: str, ok: bool, detail: str) -> bool:
        verdict = "PASS" if ok else "FAIL"
        print(f"{verdict} {name}: {detail}", flush=True)
        self.lines.append(f"- {verdict} {name}: {detail}")
        (self.passed if ok else self.failed).append(name)
        return ok


def synchronize(device: torch.device) -> None:
    """Wait for every queued kernel on ``device`` (nothing to wait for on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_made(seed: int, **config: Any) -> MADE:
    """A float64 MADE (CPU) whose every weight, direct ones included, is random and non-zero."""
    model = MADE(MADEConfig(**{"mask_seed": seed, **config})).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.7)
    return model.eval()


def on(model: MADE, device: torch.device, dtype: torch.dtype) -> MADE:
    """A copy of ``model`` on ``device`` in ``dtype`` (the original is left as it is)."""
    return copy.deepcopy(model).to(device=device, dtype=dtype).eval()


def _device(model: MADE) -> torch.device:
    return model.output_layer.weight.device


def _levels(model: MADE, n: int, seed: int) -> np.ndarray:
    """``(n, D)`` seeded random data values (integer levels of the model's distribution)."""
    return np.random.default_rng(seed).integers(0, model.dist.n_bins, (n, model.data_dim)).astype(np.float64)


@torch.no_grad()
def reference(
    model: MADE, n: int, seed: int, known: np.ndarray | None = None, n_known: int = 0
) -> np.ndarray:
    """What the engine must return for ``seed``: the reference loop on the seed's uniforms, run on
    ``model``'s device (``tests/engine/conftest.py`` does the same on the CPU)."""
    w = model.output_layer.weight
    u = seeded_uniforms(n, model.data_dim, seed)
    kn = None if known is None else torch.as_tensor(known, dtype=w.dtype, device=w.device).repeat(n, 1)
    res = sample_reference(model, uniforms=u, known=kn, n_known=n_known)
    return res.x.cpu().numpy().astype(np.float32)


@torch.no_grad()
def _mixture_log_prob(model: MADE, x: np.ndarray) -> np.ndarray:
    w = model.output_layer.weight
    return model.log_prob(torch.as_tensor(x, dtype=w.dtype, device=w.device)).double().cpu().numpy()


def run_engine(model: MADE, body: Callable[[Engine], Awaitable[T]], **cfg: Any) -> T:
    """Start a torch-runner engine on ``model``'s device, run ``body(engine)``, stop it (fresh loop)."""

    async def go() -> T:
        engine = Engine(model, EngineConfig(**{"backend": "torch", **cfg}))
        await engine.start()
        try:
            return await body(engine)
        finally:
            await engine.stop(1.0)

    return asyncio.run(go())


def _rel_diff(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Max absolute difference, and max difference relative to ``max(1, |b|)``."""
    diff = np.abs(a - b)
    return float(diff.max()), float((diff / np.maximum(1.0, np.abs(b))).max())


def check_exact(
    report: Report, name: str, model: MADE, ref_model: MADE, samples: list[int], n_known: list[int]
) -> None:
    """Requests run one at a time on ``model`` (float64) equal the reference sampler run on
    ``ref_model`` for the same seeds: ``samples`` holds ``n`` per sample request, ``n_known`` one
    two-row completion of a seeded random image per prefix length (skipped when masks differ in order)."""
    known = _levels(model, 1, 999)[0]
    jobs = [("sample", n, seed, 0) for seed, n in enumerate(samples)]
    if model.shares_ordering():
        jobs += [("complete", 2, 100 + s, k) for s, k in enumerate(n_known)]

    async def body(engine: Engine) -> list[Any]:
        outs = []
        for kind, n, seed, k in jobs:
            if kind == "sample":
                outs.append(await engine.sample(n, seed))
            else:
                outs.append(await engine.complete(known, k, n, seed))
        return outs

    outs = run_engine(model, body)
    where = _device(ref_model).type
    for kind in ("sample", "complete"):
        mine = [(job, out) for job, out in zip(jobs, outs, strict=True) if job[0] == kind]
        if not mine:
            why = "its masks do not share one ordering" if kind == "complete" else "none asked for"
            report.text(f"- {name}: no {kind} requests checked ({why})")
            continue
        rows = bad = 0
        lp_diff = 0.0
        for (_, n, seed, k), out in mine:
            expect = reference(ref_model, n, seed, known if kind == "complete" else None, k)
            rows += n
            bad += int((out.x != expect).any(axis=1).sum())
            lp_diff = max(lp_diff, _rel_diff(out.log_prob, _mixture_log_prob(ref_model, out.x))[1])
        ok = bad == 0 and lp_diff < 1e-10
        what = "samples" if kind == "sample" else f"completions (known prefix {n_known})"
        report.check(
            f"exact {kind} {name}",
            ok,
            f"{len(mine)} requests, {rows} rows of {what}: {rows - bad}/{rows} identical to the reference "
            f"sampler on the {where}; log p vs model.log_prob: max relative difference {lp_diff:.1e}",
        )


def check_crowd(
    report: Report, name: str, model: MADE, crowd: int, max_active_rows: int, asserted: bool = True
) -> None:
    """One seeded sample and one completion, alone and then among ``crowd`` staggered others, with few
    active rows and short chunks so requests queue and join mid-loop; identity asserted if ``asserted``."""
    completes = model.shares_ordering()
    known = _levels(model, 1, 5)[0]
    k = model.data_dim // 2

    async def target(engine: Engine) -> tuple[np.ndarray, np.ndarray | None]:
        a = engine.sample(3, 7)
        b = engine.complete(known, k, 2, 8) if completes else None
        outs = await asyncio.gather(a, *([b] if b is not None else []))
        return outs[0].x, outs[1].x if b is not None else None

    async def body(engine: Engine) -> tuple[Any, Any, Any]:
        alone = await target(engine)
        tasks = []
        for s in range(crowd):
            tasks.append(asyncio.ensure_future(engine.sample(1 + s % 4, 1_000 + s)))
            if s == crowd // 2:
                tasks.append(asyncio.ensure_future(target(engine)))
            await asyncio.sleep(0.0005 * (s % 4))  # arrivals while others are mid-loop
        outs = await asyncio.gather(*tasks)
        return alone, outs, engine.stats()

    alone, outs, stats = run_engine(
        model, body, max_active_rows=max_active_rows, steps_per_chunk=3, chunk_budget_ms=0
    )
    in_crowd = next(o for o in outs if isinstance(o, tuple))
    others = [o.x.tobytes() for o in outs if not isinstance(o, tuple)]
    same = bool(np.array_equal(alone[0], in_crowd[0]))
    if completes:
        same = same and bool(np.array_equal(alone[1], in_crowd[1]))
    dtype = str(model.output_layer.weight.dtype).removeprefix("torch.")
    detail = (
        f"{dtype}, seed 7 (3 samples){' and seed 8 (2 completions)' if completes else ''} alone and "
        f"among {crowd} others ({stats.chunks_run} chunks, at most {max_active_rows} active rows): "
        f"{'identical' if same else 'DIFFERENT'}; the others' draws distinct: {len(set(others)) == crowd}"
    )
    if asserted:
        report.check(f"seeded alone = in a crowd {name}", same and len(set(others)) == crowd, detail)
    else:
        report.text(f"- info {name}: {detail} (not asserted)")


def check_log_prob(report: Report, name: str, model: MADE, device: torch.device, batch: int) -> None:
    """The engine's log-prob on ``device`` against plain ``model.log_prob`` on the CPU, per dtype."""
    x = _levels(model, batch, 3)

    async def body(engine: Engine) -> np.ndarray:
        return (await engine.log_prob(x)).log_prob

    cpu64 = _mixture_log_prob(on(model, torch.device("cpu"), torch.float64), x)
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-4)):
        dev = run_engine(on(model, device, dtype), body)
        cpu = _mixture_log_prob(on(model, torch.device("cpu"), dtype), x)
        abs_d, rel_d = _rel_diff(dev, cpu)
        vs64 = _rel_diff(dev, cpu64)[0]
        label = str(dtype).removeprefix("torch.")
        report.check(
            f"log-prob {name} {label}",
            rel_d <= tol and np.isfinite(dev).all(),
            f"{batch} images, engine on {device.type} against model.log_prob on the CPU: max abs difference "
            f"{abs_d:.2e} nats (relative {rel_d:.1e}, bound {tol:g}); against CPU float64 {vs64:.2e} nats",
        )


def _timed_sample(engine: Engine, device: torch.device, n: int, seed: int) -> Awaitable[float]:
    async def go() -> float:
        synchronize(device)
        t0 = time.perf_counter()
        out = await engine.sample(n, seed)
        synchronize(device)
        if out.x.shape != (n, engine.model.data_dim) or not np.isfinite(out.log_prob).all():
            raise RuntimeError(f"sample({n}) returned shape {out.x.shape} or a non-finite log p")
        return time.perf_counter() - t0

    return go()


def _timed_log_prob(engine: Engine, device: torch.device, x: np.ndarray) -> Awaitable[float]:
    async def go() -> float:
        synchronize(device)
        t0 = time.perf_counter()
        out = await engine.log_prob(x)
        synchronize(device)
        if not np.isfinite(out.log_prob).all():
            raise RuntimeError("log-prob returned a non-finite value")
        return time.perf_counter() - t0

    return go()


def throughput(model: MADE, batches: list[int], reps: int) -> list[tuple[int, float, float, float]]:
    """Per batch: images/s of one ``sample(batch)`` request and its ms, and log-prob images/s (medians
    of ``reps`` after one warm-up each; the device is synchronised around every timing)."""
    device = _device(model)

    async def body(engine: Engine) -> list[tuple[int, float, float, float]]:
        rows = []
        for b in batches:
            x = _levels(model, b, b)
            await _timed_sample(engine, device, b, 0)
            await _timed_log_prob(engine, device, x)
            t_s = statistics.median([await _timed_sample(engine, device, b, 1 + r) for r in range(reps)])
            t_lp = statistics.median([await _timed_log_prob(engine, device, x) for _ in range(reps)])
            rows.append((b, b / t_s, t_s * 1e3, b / t_lp))
        return rows

    return run_engine(model, body, max_active_rows=max(1024, max(batches)))
