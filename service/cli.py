"""made: the command line of the MADE service.

serve, train, eval and export hand over to the server's and the training package's own commands
(they need made-service[server] and made-service[train]). models, sample, complete and log-prob talk to
a running server (--url host:port, or MADE_URL) or, without one, load the model repository in-process
(--model-dir, or MADE_MODEL_DIR; needs made-service[server]) and run the same code locally: a seed
gives the same images either way.

examples:
  made serve --port 8000
  made sample --n 16 -o grid.png --seed 1
  made sample --n 16 -o sharp.png --temperature 0.5
  made complete face.png -o out.png --model faces --n 4 --temperature 0.8
  made log-prob digits/*.png --heatmap maps/
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from tqdm import tqdm

from service.client import ApiError, AsyncMadeClient, MadeClientError, ModelInfo
from service.client.images import save_grid
from service.extras import MissingExtraError, require

__all__ = ["main"]

_HANDED_OVER = {
    "serve": "run the HTTP service (python -m service serve; every MADE_* setting applies)",
    "train": "train a MADE and export it as a model folder (python -m service.training train)",
    "eval": "held-out NLL of a model folder (python -m service.training eval)",
    "export": "export a training run as a model folder (python -m service.training export)",
}
_SEED_MOD = 2**63
_IN_FLIGHT = 4  # sample chunks sent at once: the server batches them into shared steps


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("where the model runs")
    g.add_argument(
        "--url",
        default=os.environ.get("MADE_URL"),
        help="server URL, http://host:port or host:port (default MADE_URL); none: in-process",
    )
    g.add_argument(
        "--api-key", default=os.environ.get("MADE_API_KEY"), help="X-API-Key (default MADE_API_KEY)"
    )
    g.add_argument("--model", help="model name (default: the server's default model)")
    g.add_argument("--model-dir", help="in-process: model repository (default MADE_MODEL_DIR or models)")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], help="in-process: MADE_DEVICE")
    g.add_argument("--verify", action="store_true", help="in-process: check the masks at load (slower)")
    g.add_argument("--timeout", type=float, default=600.0, help="seconds per request (default 600)")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bars or summaries")
    return p


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _temperature(text: str) -> float:
    """A finite number >= 0 (the server checks its range, 0 or 1e-06 to 100, and says so)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not value >= 0 or value == float("inf"):  # NaN fails >= 0
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


_TEMPERATURE_HELP = (
    "sampling temperature (default 1): below 1 sharper, above 1 more varied; 0 the most probable value "
    "of each pixel, whatever the seed (log p stays the model's own)"
)
_MAX_SCALE = 16  # the API's bound on scale (service.api.schemas.MAX_PNG_SCALE)


def _scale(text: str) -> int:
    value = _positive(text)
    if value > _MAX_SCALE:
        raise argparse.ArgumentTypeError(f"must be <= {_MAX_SCALE}, got {value}")
    return value


def _scale_option(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--scale",
        type=_scale,
        default=1,
        help=f"draw each pixel of the {what} as a SCALE x SCALE block (default 1, at most 16)",
    )


def _upload_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--threshold", type=int, help="binary models: gray level counted as 1 (server default 128)"
    )
    p.add_argument("--invert", action="store_true", help="invert gray levels first (dark ink on white)")
    p.add_argument("--resize", action="store_true", help="fit images of another size to the model's")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="made", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, text in _HANDED_OVER.items():
        sub.add_parser(name, help=text, add_help=False)  # parsed by the command it hands over to
    common = [_common()]
    m = sub.add_parser("models", parents=common, help="list the served models")
    m.add_argument("--json", action="store_true", help="print the cards as JSON")
    s = sub.add_parser("sample", parents=common, help="draw samples into a PNG grid")
    s.add_argument("--n", type=_positive, default=16, help="number of samples (default 16)")
    s.add_argument("--seed", type=int, help="random seed (printed when omitted); chunk i uses seed+i")
    s.add_argument("--temperature", type=_temperature, help=_TEMPERATURE_HELP)
    s.add_argument("-o", "--output", default="samples.png", help="grid image (default samples.png)")
    s.add_argument("--columns", type=_positive, help="grid width (default: about square)")
    s.add_argument("--batch", type=_positive, default=16, help="samples per request (default 16)")
    s.add_argument("--json", metavar="PATH", help="also write the images, log p and seeds as JSON")
    _scale_option(s, "grid")
    c = sub.add_parser("complete", parents=common, help="complete the bottom of images")
    c.add_argument("images", nargs="+", type=Path, help="image files (PNG, JPEG, BMP, GIF, WebP)")
    c.add_argument(
        "-o", "--output", help="PNG for one image, a folder for several (default: IMAGE-completions.png)"
    )
    c.add_argument("--n", type=_positive, default=4, help="completions per image (default 4)")
    c.add_argument("--seed", type=int, help="random seed (printed when omitted)")
    c.add_argument("--temperature", type=_temperature, help=_TEMPERATURE_HELP)
    c.add_argument("--known-rows", type=int, help="rows kept from the top (default: half)")
    c.add_argument(
        "--json", metavar="PATH", help="also write the completions as JSON (one more request each, same seed)"
    )
    _scale_option(c, "output")
    _upload_options(c)
    lp = sub.add_parser("log-prob", parents=common, help="exact log-likelihood of image files")
    lp.add_argument("images", nargs="+", type=Path, help="image files")
    lp.add_argument("--batch", type=_positive, default=16, help="images per request (default 16)")
    lp.add_argument("--heatmap", metavar="DIR", type=Path, help="write per-pixel surprise maps here")
    lp.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    _scale_option(lp, "heat maps")
    _upload_options(lp)
    return parser


@asynccontextmanager
async def connect(args: argparse.Namespace) -> AsyncIterator[AsyncMadeClient]:
    """A client for ``--url``, or one wired to an in-process app over ``--model-dir``."""
    if args.url:
        async with AsyncMadeClient(args.url, api_key=args.api_key, timeout=args.timeout) as client:
            yield client
        return
    require("server", "running the models in-process (without --url)")
    from service.client.local import local_client

    overrides: dict[str, Any] = {"verify_on_load": args.verify, "log_json": False}
    if args.device:
        overrides["device"] = args.device
    if not args.quiet:
        where = args.model_dir or os.environ.get("MADE_MODEL_DIR", "models")
        print(f"loading models from {where} (in-process; give --url to use a server)", file=sys.stderr)
    async with local_client(args.model_dir, timeout=args.timeout, **overrides) as client:
        yield client


async def pick_model(client: AsyncMadeClient, name: str | None) -> ModelInfo:
    """The named model; else the default; else the only one served."""
    listing = await client.models()
    by_name = {m.name: m for m in listing.models}
    if name is None and listing.default_model not in by_name and len(by_name) == 1:
        name = next(iter(by_name))
    key = name or listing.default_model
    if key not in by_name:
        raise MadeClientError(
            f"model {key!r} is not served; choose --model from: {', '.join(by_name) or 'none'}"
        )
    return by_name[key]


def _bar(args: argparse.Namespace, total: int, unit: str) -> tqdm:
    return tqdm(total=total, unit=unit, disable=True if args.quiet else None, file=sys.stderr, leave=False)


def _say(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        print(text)


async def cmd_models(args: argparse.Namespace) -> int:
    async with connect(args) as client:
        listing = await client.models()
    if args.json:
        print(listing.model_dump_json(indent=2))
        return 0
    for m in listing.models:
        shape = "x".join(map(str, m.shape)) if m.shape else f"{m.data_dim}-vector"
        star = "*" if m.name == listing.default_model else " "
        print(f"{star} {m.name:16s} {shape:>10s}  values {m.value_range[0]}..{m.value_range[1]}  {m.device}")
        if m.description:
            print(f"    {m.description}")
    for name, why in listing.failed.items():
        print(f"! {name}: {why}")
    return 0


async def cmd_sample(args: argparse.Namespace) -> int:
    seed = secrets.randbelow(2**53) if args.seed is None else args.seed
    chunks = [min(args.batch, args.n - i) for i in range(0, args.n, args.batch)]
    async with connect(args) as client:
        info = await pick_model(client, args.model)
        gate = asyncio.Semaphore(_IN_FLIGHT)
        with _bar(args, args.n, "img") as bar:

            async def one(i: int, n: int) -> Any:
                async with gate:
                    out = await client.sample(
                        n, model=info.name, seed=(seed + i) % _SEED_MOD, temperature=args.temperature
                    )
                bar.update(n)
                return out

            parts = await asyncio.gather(*(one(i, n) for i, n in enumerate(chunks)))
    images = np.concatenate([p.array() for p in parts])
    log_prob = [v for p in parts for v in p.log_prob]
    save_grid(args.output, images, info.value_range, args.columns, args.scale)
    if args.json:
        body = {
            "model": info.name,
            "seeds": [p.seed for p in parts],
            "images": images.tolist(),
            "log_prob": log_prob,
        }
        Path(args.json).write_text(json.dumps(body))
    _say(
        args,
        f"{args.output}: {args.n} samples of {info.name}, seed {seed}, mean log p {np.mean(log_prob):.2f} nats",
    )
    return 0


def _completion_paths(args: argparse.Namespace) -> list[Path]:
    if args.output is None:
        return [Path(f"{p.stem}-completions.png") for p in args.images]
    out = Path(args.output)
    if len(args.images) == 1 and not out.is_dir():
        return [out]
    out.mkdir(parents=True, exist_ok=True)
    return [out / f"{p.stem}-completions.png" for p in args.images]


async def cmd_complete(args: argparse.Namespace) -> int:
    seed = secrets.randbelow(2**53) if args.seed is None else args.seed
    outputs = _completion_paths(args)
    options = {"threshold": args.threshold, "invert": args.invert, "resize": args.resize}
    results = []
    async with connect(args) as client:
        info = await pick_model(client, args.model)
        with _bar(args, len(args.images), "img") as bar:
            for image, out in zip(args.images, outputs, strict=True):
                kw = {
                    "n": args.n,
                    "model": info.name,
                    "seed": seed,
                    "temperature": args.temperature,
                    "known_rows": args.known_rows,
                    **options,
                }
                png = await client.complete_png(image, scale=args.scale, **kw)
                png.save(out)
                if args.json:
                    results.append({"image": str(image), **(await client.complete(image, **kw)).model_dump()})
                bar.update(1)
                _say(
                    args,
                    f"{image} -> {out}: {args.n} completions ({info.name}, seed {seed}, top {png.known_rows} rows kept)",
                )
    if args.json:
        Path(args.json).write_text(json.dumps(results))
    return 0


async def cmd_log_prob(args: argparse.Namespace) -> int:
    options = {"threshold": args.threshold, "invert": args.invert, "resize": args.resize}
    rows: list[tuple[Path, float, float]] = []
    async with connect(args) as client:
        info = await pick_model(client, args.model)
        with _bar(args, len(args.images), "img") as bar:
            for i in range(0, len(args.images), args.batch):
                batch = args.images[i : i + args.batch]
                out = await client.log_prob(batch, model=info.name, **options)
                rows += zip(batch, out.log_prob, out.bits_per_dim, strict=True)
                bar.update(len(batch))
        if args.heatmap:
            args.heatmap.mkdir(parents=True, exist_ok=True)
            with _bar(args, len(args.images), "map") as bar:
                for image in args.images:
                    heat = await client.heatmap(image, model=info.name, scale=args.scale, **options)
                    heat.save(args.heatmap / f"{image.stem}-heatmap.png")
                    bar.update(1)
    if args.json:
        for path, lp, bpd in rows:
            print(json.dumps({"file": str(path), "model": info.name, "log_prob": lp, "bits_per_dim": bpd}))
        return 0
    width = max(len(str(p)) for p, _, _ in rows)
    print(f"{'file':{width}s}  {'log p (nats)':>14s}  {'bits/dim':>9s}   model {info.name}")
    for path, lp, bpd in rows:
        print(f"{path!s:{width}s}  {lp:14.3f}  {bpd:9.4f}")
    return 0


_COMMANDS = {"models": cmd_models, "sample": cmd_sample, "complete": cmd_complete, "log-prob": cmd_log_prob}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``made`` console script."""
    args_in = list(sys.argv[1:] if argv is None else argv)
    try:
        if args_in and args_in[0] == "serve":
            require("server", "made serve")
            from service.__main__ import main as serve_main

            return serve_main(args_in)
        if args_in and args_in[0] in ("train", "eval", "export"):
            require("train", f"made {args_in[0]}")
            from service.training.cli import main as training_main

            return training_main(args_in)
    except MissingExtraError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args = build_parser().parse_args(args_in)
    try:
        return asyncio.run(_COMMANDS[args.command](args))
    except ApiError as e:
        print(f"error: {e}", file=sys.stderr)
        for err in e.errors:
            print(f"  {err.get('field')}: {err.get('message')}", file=sys.stderr)
        return 1
    except httpx.TransportError as e:
        print(f"error: cannot reach {args.url}: {e}", file=sys.stderr)
        return 1
    except MissingExtraError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (MadeClientError, OSError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
