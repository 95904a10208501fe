"""Load test: a real uvicorn process on loopback, many concurrent clients, then an overload burst.

    python -m bench.loadtest            # ~1 minute: 32 clients for 30 s, then 96 for 8 s
    python -m bench.loadtest --short    # a few seconds (CI runs it as a test)

Phase 1 (steady): ``--clients`` clients loop over a seeded mix of /log-prob, /sample and /complete for
``--duration`` seconds. Each holds at most ``--n-max`` rows, and clients x n-max stays within the
engine's active + queued rows, so every request must succeed: any non-200 or transport error fails
the run. Phase 2 (overload): ``--over-clients`` clients ask for ``--over-n`` rows each, far past the
limit; every answer must be a 200 or a 503 problem with ``Retry-After``, nothing else. The server's
own counters must agree (every 200 is an engine ``ok``, every 503 a ``rejected``: nothing accepted is
lost). Resident memory is read before and after; growth must stay under ``--max-rss-growth-mib``.

The model is a seeded random binary MADE (28 x 28, ``--hidden``) built in a temporary folder, or
``--model-dir``/``--model`` to load a real one. Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from .server import Server, make_model

MIB = 1024 * 1024
OPS = ("log-prob", "sample", "complete")
WEIGHTS = (0.4, 0.35, 0.25)


@dataclass
class Phase:
    """What one phase saw: latencies per operation, statuses, transport errors and bad 503s."""

    name: str
    seconds: float = 0.0
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    bad_503: int = 0  # a 503 without Retry-After or without a problem body

    @property
    def requests(self) -> int:
        return sum(self.statuses.values()) + sum(self.errors.values())

    def summary(self) -> dict[str, Any]:
        every = [x for v in self.latencies.values() for x in v]
        ok = self.statuses.get(200, 0)

        def pct(xs: list[float], q: float) -> float | None:
            return round(float(np.percentile(xs, q)) * 1000, 1) if xs else None

        return {
            "phase": self.name,
            "seconds": round(self.seconds, 2),
            "requests": self.requests,
            "throughput_rps": round(ok / self.seconds, 1) if self.seconds else 0.0,
            "p50_ms": pct(every, 50),
            "p99_ms": pct(every, 99),
            "per_op": {
                op: {"n": len(v), "p50_ms": pct(v, 50), "p99_ms": pct(v, 99)}
                for op, v in self.latencies.items()
            },
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "transport_errors": dict(self.errors),
            "bad_503": self.bad_503,
        }


class Workload:
    """Seeded request bodies: images to score and complete come from the model's own samples."""

    def __init__(self, model: str, pool: list[Any], n_max: int, batch_max: int) -> None:
        self.model = model
        self.pool = pool
        self.n_max = n_max
        self.batch_max = batch_max

    def request(self, rng: np.random.Generator) -> tuple[str, dict[str, Any]]:
        op = OPS[int(rng.choice(len(OPS), p=WEIGHTS))]
        n = int(rng.integers(1, self.n_max + 1))
        seed = int(rng.integers(0, 2**31))
        if op == "log-prob":
            k = int(rng.integers(1, self.batch_max + 1))
            picks = rng.integers(0, len(self.pool), size=k)
            return op, {"model": self.model, "inputs": [self.pool[i] for i in picks]}
        if op == "sample":
            return op, {"model": self.model, "n": n, "seed": seed}
        image = self.pool[int(rng.integers(0, len(self.pool)))]
        return op, {"model": self.model, "inputs": [image], "n": n, "seed": seed}


async def _client(
    http: httpx.AsyncClient,
    phase: Phase,
    stop_at: float,
    rng: np.random.Generator,
    make: Any,
) -> None:
    while time.monotonic() < stop_at:
        op, body = make(rng)
        t0 = time.perf_counter()
        try:
            r = await http.post(f"/{op}", json=body)
        except httpx.HTTPError as e:
            phase.errors[type(e).__name__] += 1
            continue
        phase.latencies[op].append(time.perf_counter() - t0)
        phase.statuses[r.status_code] += 1
        if r.status_code == 503:
            retry = r.headers.get("Retry-After", "")
            if (
                not retry.isdigit()
                or int(retry) < 1
                or "problem+json" not in r.headers.get("content-type", "")
            ):
                phase.bad_503 += 1
            await asyncio.sleep(0.05)  # a polite client would wait Retry-After; keep the pressure on


async def run_phase(url: str, name: str, clients: int, seconds: float, make: Any, seed: int) -> Phase:
    """``clients`` concurrent loops for ``seconds``, one connection each."""
    phase = Phase(name)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits, trust_env=False) as http:
        stop_at = time.monotonic() + seconds
        t0 = time.perf_counter()
        rngs = [np.random.default_rng([seed, i]) for i in range(clients)]
        await asyncio.gather(*(_client(http, phase, stop_at, rngs[i], make) for i in range(clients)))
        phase.seconds = time.perf_counter() - t0
    return phase


def engine_outcomes(url: str) -> Counter[str]:
    """``made_engine_requests_total`` by outcome, summed over models and kinds."""
    text = httpx.get(f"{url}/metrics", timeout=10, trust_env=False).text
    out: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        if family.name == "made_engine_requests":
            for s in family.samples:
                if s.name.endswith("_total"):
                    out[s.labels["outcome"]] += int(s.value)
    return out


@dataclass
class Config:
    clients: int = 32
    duration: float = 30.0
    n_max: int = 4
    batch_max: int = 8
    over_clients: int = 96
    over_n: int = 32
    over_duration: float = 8.0
    hidden: int = 500
    max_rss_growth_mib: float = 64.0
    model_dir: Path | None = None
    model: str = "loadtest"
    seed: int = 0

    @classmethod
    def short(cls) -> Config:
        return cls(clients=8, duration=3.0, over_clients=24, over_n=16, over_duration=2.0, hidden=64)


def server_env(cfg: Config) -> dict[str, Any]:
    """Engine limits that put the steady phase just inside capacity and the burst far past it."""
    steady_rows = cfg.clients * cfg.n_max
    active = max(8, steady_rows // 2)
    queued = steady_rows - active
    return {
        "MADE_DEFAULT_MODEL": cfg.model,
        "MADE_MAX_ACTIVE_ROWS": active,
        "MADE_MAX_QUEUED_ROWS": queued,
        "MADE_MAX_SAMPLES_PER_REQUEST": min(cfg.over_n, active + queued),
        "MADE_MAX_INPUTS_PER_REQUEST": max(cfg.batch_max, 8),
        "MADE_SHUTDOWN_GRACE_S": 30,
    }


async def _pool(url: str, model: str, size: int) -> list[Any]:
    async with httpx.AsyncClient(base_url=url, timeout=120, trust_env=False) as http:
        r = await http.post("/sample", json={"model": model, "n": size, "seed": 1})
        r.raise_for_status()
        return r.json()["images"]


def run(cfg: Config, workdir: Path) -> dict[str, Any]:
    """Start the server, run both phases, stop it; returns every figure and the list of failed checks."""
    if cfg.model_dir is None:
        make_model(workdir / "models" / cfg.model, (28, 28), (cfg.hidden,), seed=cfg.seed)
        model_dir = workdir / "models"
    else:
        model_dir = cfg.model_dir
    env = server_env(cfg)
    server = Server(model_dir, workdir / "server.log", env)
    t_start = time.perf_counter()
    with server:
        started_s = time.perf_counter() - t_start
        pool = asyncio.run(_pool(server.url, cfg.model, min(16, int(env["MADE_MAX_SAMPLES_PER_REQUEST"]))))
        work = Workload(cfg.model, pool, cfg.n_max, cfg.batch_max)
        asyncio.run(run_phase(server.url, "warm-up", 4, 1.0, work.request, cfg.seed + 1))
        before = engine_outcomes(server.url)
        rss_before = server.rss_bytes()
        steady = asyncio.run(
            run_phase(server.url, "steady", cfg.clients, cfg.duration, work.request, cfg.seed)
        )
        rss_after = server.rss_bytes()
        after_steady = engine_outcomes(server.url)

        def burst(rng: np.random.Generator) -> tuple[str, dict[str, Any]]:
            op = "sample" if rng.random() < 0.6 else "complete"
            body: dict[str, Any] = {"model": cfg.model, "n": cfg.over_n, "seed": int(rng.integers(0, 2**31))}
            if op == "complete":
                body["inputs"] = [pool[int(rng.integers(0, len(pool)))]]
            return op, body

        over = asyncio.run(
            run_phase(server.url, "overload", cfg.over_clients, cfg.over_duration, burst, cfg.seed)
        )
        after_over = engine_outcomes(server.url)
        rss_end = server.rss_bytes()
        exit_code = server.terminate()
    log_lines = server.log().splitlines()
    not_json = sum(1 for line in log_lines if not _is_json(line))
    steady_engine = after_steady - before
    over_engine = after_over - after_steady
    result: dict[str, Any] = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in cfg.__dict__.items()},
        "server_env": env,
        "startup_s": round(started_s, 2),
        "steady": steady.summary(),
        "overload": over.summary(),
        "engine_outcomes": {"steady": dict(steady_engine), "overload": dict(over_engine)},
        "rss_mib": {
            "before": round(rss_before / MIB, 1),
            "after_steady": round(rss_after / MIB, 1),
            "after_overload": round(rss_end / MIB, 1),
            "growth_steady": round((rss_after - rss_before) / MIB, 1),
        },
        "exit_code": exit_code,
        "shutdown_complete": "Application shutdown complete" in server.log(),
        "log_lines": len(log_lines),
        "log_lines_not_json": not_json,
    }
    result["failures"] = checks(result, steady, over, cfg)
    return result


def _is_json(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def checks(result: dict[str, Any], steady: Phase, over: Phase, cfg: Config) -> list[str]:
    """Every promise the load test checks; an empty list means all held."""
    fail = []
    if not steady.statuses.get(200):
        fail.append("steady: no request succeeded")
    if set(steady.statuses) - {200} or steady.errors:
        fail.append(f"steady: errors below the queue limit: {dict(steady.statuses)} {dict(steady.errors)}")
    if set(over.statuses) - {200, 503} or over.errors:
        fail.append(f"overload: answers other than 200/503: {dict(over.statuses)} {dict(over.errors)}")
    if not over.statuses.get(503):
        fail.append("overload: the burst never reached the limit (no 503)")
    if over.bad_503:
        fail.append(f"overload: {over.bad_503} 503 answers without Retry-After or problem body")
    eng = result["engine_outcomes"]["overload"]
    # every 200 came out of the engine as ok; every 503 was refused at admission (never accepted)
    if eng.get("ok", 0) != over.statuses.get(200, 0) or eng.get("rejected", 0) != over.statuses.get(503, 0):
        fail.append(f"overload: engine outcomes {eng} do not match the answers {dict(over.statuses)}")
    lost = {k: v for k, v in eng.items() if k not in ("ok", "rejected")}
    lost.update({k: v for k, v in result["engine_outcomes"]["steady"].items() if k != "ok"})
    if lost:
        fail.append(f"requests failed inside the engine: {lost}")
    if result["rss_mib"]["growth_steady"] > cfg.max_rss_growth_mib:
        fail.append(f"resident memory grew {result['rss_mib']['growth_steady']} MiB in the steady phase")
    # uvicorn drains, runs the shutdown, then re-raises the SIGTERM it caught: -15 is a clean stop
    if result["exit_code"] not in (0, -signal.SIGTERM) or not result["shutdown_complete"]:
        fail.append(f"server did not stop cleanly on SIGTERM (exit code {result['exit_code']})")
    if result["log_lines_not_json"]:
        fail.append(f"{result['log_lines_not_json']} server log lines are not JSON")
    return fail


def print_report(result: dict[str, Any]) -> None:
    print(f"server start-up {result['startup_s']} s; engine limits {result['server_env']}")
    print(f"{'phase':<9} {'reqs':>6} {'ok/s':>7} {'p50 ms':>8} {'p99 ms':>8}  statuses / transport errors")
    for key in ("steady", "overload"):
        s = result[key]
        print(
            f"{s['phase']:<9} {s['requests']:>6} {s['throughput_rps']:>7} {s['p50_ms']!s:>8} {s['p99_ms']!s:>8}  "
            f"{s['statuses']} {s['transport_errors'] or ''}"
        )
        for op, v in s["per_op"].items():
            print(f"  {op:<9} {v['n']:>5} reqs  p50 {v['p50_ms']} ms  p99 {v['p99_ms']} ms")
    print(f"engine outcomes: {result['engine_outcomes']}")
    r = result["rss_mib"]
    print(
        f"resident memory: {r['before']} MiB before, {r['after_steady']} after steady "
        f"({r['growth_steady']:+} MiB), {r['after_overload']} after overload"
    )
    print(
        f"SIGTERM exit code {result['exit_code']}; {result['log_lines']} log lines, all JSON: "
        f"{result['log_lines_not_json'] == 0}"
    )
    print(
        "checks: "
        + ("all passed" if not result["failures"] else "FAILED\n  " + "\n  ".join(result["failures"]))
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.loadtest", description=__doc__.split("\n\n")[0])
    d = Config()
    p.add_argument("--short", action="store_true", help="a few seconds, small model (the CI form)")
    p.add_argument("--clients", type=int, help=f"steady-phase clients (default {d.clients})")
    p.add_argument("--duration", type=float, help=f"steady-phase seconds (default {d.duration})")
    p.add_argument("--over-clients", type=int, help=f"overload clients (default {d.over_clients})")
    p.add_argument("--over-duration", type=float, help=f"overload seconds (default {d.over_duration})")
    p.add_argument("--hidden", type=int, help=f"hidden units of the random model (default {d.hidden})")
    p.add_argument("--model-dir", type=Path, help="serve this model repository instead of a random model")
    p.add_argument("--model", help="model name (with --model-dir)")
    p.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    args = p.parse_args(argv)
    cfg = Config.short() if args.short else Config()
    for name in ("clients", "duration", "over_clients", "over_duration", "hidden", "model_dir", "model"):
        value = getattr(args, name)
        if value is not None:
            setattr(cfg, name, value)
    with tempfile.TemporaryDirectory(prefix="made-loadtest-") as tmp:
        result = run(cfg, Path(tmp))
    print_report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
