"""Engine benchmarks (figures, not tests): ``python -m bench.engine`` or ``make bench``.

Every figure is printed with its ratio to a baseline measured in the same run, on the same machine:
the reference sampler (one full forward pass per drawn dimension) and plain ``model.log_prob``, each
run with 1 and with the default number of torch threads, keeping the faster (the fairer baseline). The
reference loop costs the same per step whatever the step, so by default it is timed over its last
``--ref-steps`` dimensions (a completion whose known prefix covers the rest) and scaled to the full
loop; ``--full-reference`` runs it whole.

Models: a fixed random 2x500 MADE on 784 dims (seeded), and any folder under ``models/`` named in
``--models`` (default ``mnist``, ``mnist-4k``, ``mnist-fast`` and ``faces``) when present. ``--out FILE`` also
writes the table as Markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `python -m service serve` sets it

import numpy as np
import torch

from service.engine import Engine, EngineConfig
from service.made import MADE, MADEConfig, load_model, sample_reference

ROWS: list[tuple[str, str, str, str]] = []  # (model, figure, value, baseline / ratio)
LOAD = os.getloadavg()
BACKEND = ["auto"]  # the backend the engines resolved to (set by the first engine)


def report(model: str, figure: str, value: str, versus: str) -> None:
    ROWS.append((model, figure, value, versus))
    print(f"{model:>12} | {figure:<52} | {value:>18} | {versus}", flush=True)


def random_model() -> MADE:
    torch.manual_seed(0)
    return MADE(MADEConfig(data_dim=784, hidden=(500, 500), mask_seed=0)).eval()


def best_threads(fn: Callable[[], float], pick: Callable[[float, float], float]) -> float:
    """Run a torch baseline with 1 and with the default number of intra-op threads, keep the better
    figure (on a busy 2-core machine one thread is often faster), restore the setting."""
    default = torch.get_num_threads()
    results = []
    for n in sorted({1, default}):
        torch.set_num_threads(n)
        results.append(fn())
    torch.set_num_threads(default)
    return pick(*results) if len(results) == 2 else results[0]


def reference_seconds(model: MADE, n: int, steps: int, n_known: int, full: bool) -> float:
    """Seconds the reference loop takes to draw positions ``n_known..D-1`` of ``n`` rows (best of 1
    and the default number of torch threads)."""
    return best_threads(lambda: _reference_seconds(model, n, steps, n_known, full), min)


def log_prob_rate(model: MADE, batch: int, reps: int = 2) -> float:
    """Images per second of plain ``model.log_prob`` (all masks) at ``batch``, best thread setting."""
    return best_threads(lambda: _log_prob_rate(model, batch, reps), max)


@torch.no_grad()
def _reference_seconds(model: MADE, n: int, steps: int, n_known: int, full: bool) -> float:
    d = model.data_dim
    todo = d - n_known
    timed = todo if full else min(steps, todo)
    known = torch.zeros(n, d, dtype=model.output_layer.weight.dtype)
    t0 = time.perf_counter()
    sample_reference(model, n, known=known, n_known=d - timed, generator=torch.Generator().manual_seed(0))
    return (time.perf_counter() - t0) * todo / timed


@torch.no_grad()
def _log_prob_rate(model: MADE, batch: int, reps: int) -> float:
    x = torch.randint(0, model.dist.n_bins, (batch, model.data_dim)).to(model.output_layer.weight.dtype)
    model.log_prob(x)
    best = min(_timed(lambda: model.log_prob(x)) for _ in range(reps))
    return batch / best


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


async def _atimed(coro: Awaitable[object]) -> float:
    t0 = time.perf_counter()
    await coro
    return time.perf_counter() - t0


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


async def bench_binary(name: str, model: MADE, args: argparse.Namespace) -> None:
    d = model.data_dim
    engine = Engine(model, EngineConfig(backend=args.backend), name)
    BACKEND[0] = engine.backend
    await engine.start()
    try:
        # 1. throughput, one request of 256 unconditional samples; measured alternately with plain
        # log-prob at the same batch so both see the same machine load (medians of --reps pairs)
        for s in range(3):  # warm: compiled kernels, slot arrays, the chunk cost estimate
            await engine.sample(256, 1_000 + s)
        pairs = [
            (await _atimed(engine.sample(256, s)), 256 / log_prob_rate(model, 256, 1))
            for s in range(args.reps)
        ]
        t, t_lp = statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)
        rate, lp_rate = 256 / t, 256 / t_lp
        ref = reference_seconds(model, 256, args.ref_steps, 0, args.full_reference)
        report(
            name,
            f"sampling throughput, batch 256, D={d}",
            f"{rate:,.0f} samples/s",
            f"{rate * ref / 256:,.0f}x reference loop ({256 / ref:,.1f} samples/s)",
        )
        report(
            name,
            "  same, vs log-prob throughput at batch 256",
            f"{rate / lp_rate:.0%}",
            f"plain model.log_prob {lp_rate:,.0f} images/s",
        )
        # 2. one request for one sample, alone
        lat = [await _atimed(engine.sample(1, s)) for s in range(args.single)]
        ref1 = reference_seconds(model, 1, args.ref_steps, 0, args.full_reference)
        p50 = pct(lat, 50)
        report(
            name,
            f"one sample alone: p50 latency ({args.single} requests)",
            f"{p50 * 1e3:.3f} ms",
            f"{ref1 / p50:,.0f}x faster than reference loop ({ref1 * 1e3:,.1f} ms); p99 {pct(lat, 99) * 1e3:.3f} ms",
        )
        # 3. 64 concurrent callers x 1 sample vs one request of 64
        one_req, totals, each = [], [], []
        for r in range(args.rounds):
            one_req.append(await _atimed(engine.sample(64, 10_000 + r)))

            async def caller(s: int) -> float:
                return await _atimed(engine.sample(1, s))

            t0 = time.perf_counter()
            lats = await asyncio.gather(*(caller(20_000 + 64 * r + i) for i in range(64)))
            totals.append(time.perf_counter() - t0)
            each.extend(lats)
        t_one, t_many = statistics.median(one_req), statistics.median(totals)
        report(
            name,
            "64 concurrent callers x 1 sample: total time",
            f"{t_many * 1e3:.2f} ms",
            f"{t_many / t_one:.2f}x one request of 64 ({t_one * 1e3:.2f} ms)",
        )
        report(
            name,
            "  per-caller latency p50 / p99",
            f"{pct(each, 50) * 1e3:.2f} / {pct(each, 99) * 1e3:.2f} ms",
            f"{args.rounds} rounds",
        )
        # 5. log-prob at batch 1024 through the engine
        x = np.random.default_rng(0).integers(0, 2, (1024, d)).astype(np.float32)
        await engine.log_prob(x)
        t = min([await _atimed(engine.log_prob(x)) for _ in range(args.reps)])
        base = log_prob_rate(model, 1024)
        report(
            name,
            "log-prob through the engine, batch 1024",
            f"{1024 / t:,.0f} images/s",
            f"{1024 / t / base:.0%} of plain model.log_prob ({base:,.0f} images/s)",
        )
    finally:
        await engine.stop(1.0)


async def bench_faces(name: str, model: MADE, args: argparse.Namespace) -> None:
    d = model.data_dim
    half = d // 2
    data = Path("../shared/data/olivetti_faces.npz")
    engine = Engine(model, EngineConfig(backend=args.backend), name)
    BACKEND[0] = engine.backend
    await engine.start()
    try:
        if data.is_file():
            face = np.load(data)["images"][9].reshape(-1).astype(np.float64)
            source = "held-out face 9"
        else:
            face = (await engine.sample(1, 0)).x[0].astype(np.float64)
            source = "a model sample"
        await engine.complete(face, half, 1, 0)
        for n in (1, 16):
            t = statistics.median(
                [await _atimed(engine.complete(face, half, n, s)) for s in range(args.reps)]
            )
            ref = reference_seconds(model, n, args.ref_steps, half, args.full_reference)
            report(
                name,
                f"bottom-half completion ({half} steps), n={n}, {source}",
                f"{t * 1e3:,.1f} ms",
                f"{ref / t:,.0f}x reference loop on the same {n} ({ref:,.2f} s)",
            )
        x = np.random.default_rng(0).integers(0, 256, (256, d)).astype(np.float32)
        await engine.log_prob(x)
        t = min([await _atimed(engine.log_prob(x)) for _ in range(args.reps)])
        base = log_prob_rate(model, 256)
        report(
            name,
            "log-prob through the engine, batch 256",
            f"{256 / t:,.0f} images/s",
            f"{256 / t / base:.0%} of plain model.log_prob ({base:,.0f} images/s)",
        )
    finally:
        await engine.stop(1.0)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


NOTES = """
Notes
- Reference loop: `service.made.sample_reference`, one full forward pass of the batch per drawn dimension,
  timed over its last `--ref-steps` dimensions (each costs the same) and scaled to the whole loop.
- Baselines (reference loop, plain `model.log_prob`) run with 1 and with the default number of torch
  threads; the faster counts. Throughput and its log-prob baseline are measured alternately (medians).
- "one sample alone": sequential requests, each awaited before the next, through `Engine.sample`.
- "64 concurrent callers": `asyncio.gather` of 64 `sample(1)` calls vs one `sample(64)`, medians of rounds.
- Engine defaults (`EngineConfig()`, backend from `--backend`): float32 model, blocks of 16 rows. The
  stream backend's kernel threads advance every active row without the GIL; the chunked numba loop's
  chunk runs until its first row finishes, within a 50 ms compute budget, and is preempted by arrivals
  (chunks estimated under 1 ms run on the event-loop thread). Three 256-sample requests warm the
  engine first.
"""


def write_markdown(path: Path, argv: str) -> None:
    lines = [
        "# Engine benchmark results",
        "",
        f"- date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: {cpu_name()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), backend {BACKEND[0]}",
        f"- command: `{argv}`",
        f"- load average (1 min) at start / end: {LOAD[0]:.2f} / {os.getloadavg()[0]:.2f} "
        "(other jobs share the machine; figures move with it)",
        "",
        "| model | figure | value | baseline (same run) |",
        "| --- | --- | --- | --- |",
        *(f"| {m} | {f.strip()} | {v} | {b} |" for m, f, v, b in ROWS),
        NOTES,
    ]
    path.write_text("\n".join(lines))


async def run(args: argparse.Namespace) -> None:
    wanted = args.models.split(",")
    if "random" in wanted:
        await bench_binary("random-2x500", random_model(), args)
    for name in [m for m in wanted if m != "random"]:
        folder = Path(name) if "/" in name else Path("models") / name  # a path: say, an older checkpoint
        if not (folder / "model.safetensors").is_file():
            print(f"({folder} absent: skipped)")
            continue
        model, _ = load_model(folder, verify=False)
        if model.dist.n_bins > 2:  # gray levels: the faces completion benchmark
            await bench_faces(name, model, args)
        else:
            await bench_binary(name, model, args)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=5, help="repetitions of each throughput figure")
    p.add_argument("--single", type=int, default=300, help="sequential one-sample requests")
    p.add_argument("--rounds", type=int, default=10, help="rounds of 64 concurrent callers")
    p.add_argument("--ref-steps", type=int, default=48, help="reference-loop steps timed before scaling")
    p.add_argument("--full-reference", action="store_true", help="time the whole reference loop")
    p.add_argument(
        "--models",
        default="random,mnist,mnist-4k,mnist-fast,faces",
        help="'random', folders under models/, or paths to model folders (with a '/')",
    )
    p.add_argument("--backend", default="auto", help="engine backend: auto, stream, numba or torch")
    p.add_argument("--out", type=Path, help="also write the figures as Markdown here")
    args = p.parse_args()
    torch.set_grad_enabled(False)
    asyncio.run(run(args))
    if args.out:
        write_markdown(args.out, "python -m bench.engine " + " ".join(os.sys.argv[1:]))


if __name__ == "__main__":
    main()
