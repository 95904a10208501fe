"""The GPU check: ``python -m bench.gpu`` (or ``make gpu-check``) on a CUDA machine, within 5 minutes.

1. exactness: the torch runner on CUDA against the reference sampler on the same uniforms, in float64
   (seeded random MADEs against the reference on the CPU, the committed models against it on CUDA),
   samples and completions;
2. one seeded request alone and among concurrent ones: identical (float64; float32 reported);
3. log-prob on CUDA against the CPU, float64 and float32 (max absolute difference);
4. throughput of sampling at batch 1, 64, 256 and 1024, and of log-prob, in images/s (float32, as served);
5. the HTTP figures of :mod:`bench.http` against a server started with ``MADE_DEVICE=cuda``.

Each check prints PASS or FAIL; the exit status is 1 if any failed. The report goes to ``bench/GPU.md``
(``--out`` elsewhere). ``--cpu --quick`` runs the same checks on the CPU with small random models and
tiny sizes, HTTP only with ``--http``; the test suite runs it so the check cannot rot. Without
``--cpu`` on a machine without CUDA it exits with status 2.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `python -m service serve` sets it

import torch

from service.made import MADE, load_model

from .gpu_checks import Report, check_crowd, check_exact, check_log_prob, on, random_made, throughput

__all__ = ["main"]

REPO = Path(__file__).resolve().parents[1]
BERN = {"type": "bernoulli"}
LOGI = {"type": "discretized_logistic", "n_bins": 256, "n_components": 2}
# the shapes tests/engine/test_engine_exact.py checks: masks, direct connections, orderings, mixtures
RANDOM_MODELS: dict[str, dict[str, Any]] = {
    "random-bern-3mask-direct": dict(
        data_dim=16, hidden=(24, 20), distribution=BERN, num_masks=3, direct=True
    ),
    "random-logistic-2mask": dict(data_dim=16, hidden=(20, 20), distribution=LOGI, num_masks=2, direct=True),
    "random-bern-3orderings": dict(
        data_dim=16, hidden=(12,), distribution=BERN, num_masks=3, ordering="random", vary_ordering=True
    ),
}
# throughput in quick mode: a small model, as served (float32)
QUICK_SPEED = dict(data_dim=64, hidden=(64,), distribution=BERN, direct=True)


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line (``argv`` None: ``sys.argv``)."""
    p = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.split("\n\n")[0])
    p.add_argument("--cpu", action="store_true", help="run the checks on the CPU (no CUDA needed)")
    p.add_argument("--quick", action="store_true", help="small random models and tiny sizes only")
    p.add_argument(
        "--http",
        action=argparse.BooleanOptionalAction,
        help="run bench.http's cases (default: on with CUDA, off with --cpu)",
    )
    p.add_argument("--models", default="mnist-fast,mnist,faces", help="committed models (not with --quick)")
    p.add_argument("--model-dir", type=Path, default=REPO / "models")
    p.add_argument("--batches", default=None, help="sampling batches (default 1,64,256,1024; quick 1,16,64)")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions per batch (default 3; quick 2)")
    p.add_argument("--http-seconds", type=float, default=5.0, help="length of each hey run")
    p.add_argument("--clients", type=int, default=32, help="concurrent clients of the HTTP cases")
    p.add_argument("--out", type=Path, help="the report (default bench/GPU.md with CUDA, none with --cpu)")
    return p.parse_args(argv)


def pick_device(args: argparse.Namespace) -> torch.device | None:
    """The CPU with ``--cpu``; otherwise the first CUDA device, or None when there is none."""
    if args.cpu:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        return None
    return torch.device("cuda", torch.cuda.current_device())


def committed(args: argparse.Namespace) -> dict[str, MADE]:
    """The committed models named in ``--models``, on the CPU as stored (none in quick mode)."""
    if args.quick:
        return {}
    names = [m for m in args.models.split(",") if m]
    return {name: load_model(args.model_dir / name, verify=False)[0] for name in names}


def exactness(report: Report, device: torch.device, models: dict[str, MADE]) -> None:
    """Section 1: random MADEs (reference on the CPU) and the committed models (reference on the device)."""
    report.section("1. Exactness: the torch runner against the reference sampler (float64)")
    for name, cfg in RANDOM_MODELS.items():
        model = random_made(0, **cfg)  # float64 on the CPU: the reference runs there, as in the tests
        check_exact(report, name, on(model, device, torch.float64), model, [1, 2, 3, 1], [1, 5, 8, 15])
    for name, model in models.items():  # big: the reference (one full pass per dimension) runs on the device
        m64, d = on(model, device, torch.float64), model.data_dim
        if device.type == "cuda":
            check_exact(report, name, m64, m64, [4], [d // 2])
        else:
            report.text(f"- {name}: on the CPU the reference loop over all {d} dimensions takes minutes")
            check_exact(report, name, m64, m64, [], [d - 32])


def crowd(report: Report, device: torch.device, models: dict[str, MADE], quick: bool) -> None:
    """Section 2: a random mixture and mnist-fast; identity asserted in float64, float32 reported."""
    report.section("2. A seeded request alone and among concurrent ones")
    cases = {"random-logistic-2mask": random_made(1, **RANDOM_MODELS["random-logistic-2mask"])}
    if "mnist-fast" in models:
        cases["mnist-fast"] = models["mnist-fast"]
    for name, model in cases.items():
        n, rows = (40, 5) if quick or name.startswith("random") else (64, 32)
        check_crowd(report, name, on(model, device, torch.float64), n, rows)
        check_crowd(report, name, on(model, device, torch.float32), n, rows, asserted=False)


def log_prob(report: Report, device: torch.device, models: dict[str, MADE], quick: bool) -> None:
    """Section 3: a random mixture and every committed model, float64 and float32."""
    report.section(f"3. Log-prob on {device.type} against the CPU")
    cases = {"random-bern-3mask-direct": random_made(2, **RANDOM_MODELS["random-bern-3mask-direct"])}
    cases |= models
    for name, model in cases.items():
        check_log_prob(report, name, model, device, 16 if quick else 256)


def speed(report: Report, device: torch.device, models: dict[str, MADE], args: argparse.Namespace) -> None:
    """Section 4: the committed models (a small random one in quick mode) as served, in float32."""
    report.section(f"4. Throughput on {device.type} (float32, one request at a time, images/s)")
    batches = [int(b) for b in (args.batches or ("1,16,64" if args.quick else "1,64,256,1024")).split(",")]
    reps = args.reps or (2 if args.quick else 3)
    cases = models or {"random-64d": random_made(3, **QUICK_SPEED)}
    report.text("| model | batch | sample images/s | ms per sample request | log-prob images/s |")
    report.text("| --- | --- | --- | --- | --- |")
    rows = 0
    for name, model in cases.items():
        for b, rate, ms, lp_rate in throughput(on(model, device, torch.float32), batches, reps):
            report.text(f"| {name} | {b} | {rate:,.1f} | {ms:,.2f} | {lp_rate:,.0f} |")
            rows += 1
    report.text("")
    report.check(
        "throughput", rows == len(batches) * len(cases), f"{rows} figures, medians of {reps} timed requests"
    )


def http(report: Report, device: torch.device, args: argparse.Namespace) -> None:
    """Section 5: :func:`bench.http.measure` with its server on this check's device."""
    report.section(f"5. HTTP: bench.http's cases, server on {device.type}")
    if not args.http:
        report.text("Skipped (`--http` runs them).")
        return
    from . import http as bench_http

    ns = argparse.Namespace(
        model_dir=args.model_dir, fast_model="mnist-fast", clients=args.clients, seconds=args.http_seconds
    )
    ns.only = None
    try:
        rows = bench_http.measure(ns, server_env={"MADE_DEVICE": device.type})
    except (Exception, SystemExit) as e:  # measure exits on a non-200 answer
        report.check("http", False, f"bench.http.measure failed: {e}")
        return
    report.text(bench_http.HEADER)
    for case, f, s in rows:
        report.text(bench_http.table_line(case, f, s))
    report.text("")
    report.check("http", bool(rows), f"{len(rows)} cases, every answer 200, {args.http_seconds:g} s per run")


def machine(device: torch.device) -> str:
    """The device, torch and CPU, in one line."""
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in ln
        ),
        "unknown CPU",
    )
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        gpu = f"{props.name} ({props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda})"
    else:
        gpu = "no GPU (CPU mode)"
    return f"{gpu}; torch {torch.__version__}; {cpu}, {os.cpu_count()} CPUs"


def main(argv: list[str] | None = None) -> int:
    """Run every section, write the report; 0 if all passed, 1 if any failed, 2 without CUDA or ``--cpu``."""
    args = parse(argv)
    device = pick_device(args)
    if device is None:
        print(
            "bench.gpu: no CUDA device here (torch.cuda.is_available() is False); add --cpu for the CPU mode",
            file=sys.stderr,
        )
        return 2
    if args.http is None:
        args.http = device.type == "cuda"
    out = args.out or (REPO / "bench" / "GPU.md" if device.type == "cuda" else None)
    t0 = time.monotonic()
    report = Report()
    with torch.no_grad():
        models = committed(args)
        sections: list[tuple[str, Callable[[], None]]] = [
            ("exactness", lambda: exactness(report, device, models)),
            ("crowd", lambda: crowd(report, device, models, args.quick)),
            ("log-prob", lambda: log_prob(report, device, models, args.quick)),
            ("throughput", lambda: speed(report, device, models, args)),
            ("http", lambda: http(report, device, args)),
        ]
        for name, run in sections:
            try:
                run()
            except Exception as e:  # that section fails; the others still run, the report is written
                traceback.print_exc()
                report.check(f"{name} section", False, f"raised {type(e).__name__}: {e}")
    took = time.monotonic() - t0
    if device.type == "cuda":
        report.section("Duration")
        report.check("within 5 minutes", took <= 300, f"{took:.0f} s in all")
    verdict = f"{len(report.passed)} checks passed, {len(report.failed)} failed" + (
        f" ({', '.join(report.failed)})" if report.failed else ""
    )
    print(f"\n{verdict}; {took:.0f} s")
    if out is not None:
        head = [
            f"# GPU check{' (CPU mode)' if device.type == 'cpu' else ''}: the engine on {device.type}",
            "",
            f"- date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
            f"- machine: {machine(device)}",
            f"- command: `python -m bench.gpu {' '.join(sys.argv[1:] if argv is None else argv)}`",
            f"- result: {verdict}, in {took:.0f} s",
        ]
        out.write_text("\n".join(head + report.lines) + "\n")
        print(f"report written to {out}")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
