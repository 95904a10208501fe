"""Seeded mutation fuzz of image uploads: valid seed files in every allowed format, mutated byte-wise.

Used by ``test_images.py`` (bounded runs) and runnable alone to grow the corpus of inputs that once
broke the decoder::

    python -m tests.reliability.imagefuzz --mutations 20000 --save tests/reliability/corpus
"""

from __future__ import annotations

import argparse
import hashlib
import io
import random
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

CORPUS = Path(__file__).with_name("corpus")
FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")


def seeds() -> dict[str, bytes]:
    """Small valid files: every allowed format, several modes, a PNG with text and ICC chunks."""
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (24, 20)).astype(np.uint8)
    rgb = rng.integers(0, 256, (24, 20, 3)).astype(np.uint8)
    out: dict[str, bytes] = {}

    def save(name: str, img: Image.Image, fmt: str, **kw: object) -> None:
        buf = io.BytesIO()
        img.save(buf, format=fmt, **kw)
        out[name] = buf.getvalue()

    save("gray.png", Image.fromarray(gray), "PNG")
    save("rgba.png", Image.fromarray(rgb).convert("RGBA"), "PNG")
    save("palette.png", Image.fromarray(rgb).convert("P"), "PNG")
    save("gray16.png", Image.fromarray(gray.astype(np.uint16) * 257), "PNG")
    save("gray.jpg", Image.fromarray(gray), "JPEG", quality=80)
    save("rgb-progressive.jpg", Image.fromarray(rgb), "JPEG", progressive=True)
    save("anim.gif", Image.fromarray(gray), "GIF", save_all=True, append_images=[Image.fromarray(255 - gray)])
    save("rgb.webp", Image.fromarray(rgb), "WEBP", quality=70)
    save("lossless.webp", Image.fromarray(rgb), "WEBP", lossless=True)
    save("rgb.bmp", Image.fromarray(rgb), "BMP")
    save("gray.bmp", Image.fromarray(gray), "BMP")
    # A PNG with a compressed text chunk and an ICC profile: the chunks whose inflation Pillow limits.
    png = out["gray.png"]
    extra = _chunk(b"zTXt", b"comment\x00\x00" + zlib.compress(b"x" * 2000)) + _chunk(
        b"iCCP", b"icc\x00\x00" + zlib.compress(b"\x00" * 600)
    )
    out["chunks.png"] = png[:33] + extra + png[33:]
    return out


Mutation = Callable[[random.Random, bytes], bytes]


def _flip(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    return bytes(b)


def _overwrite(rng: random.Random, data: bytes) -> bytes:
    """Bytes in the header (sizes, depths, compression fields) set to extreme values."""
    b = bytearray(data)
    at = rng.randrange(min(len(b), 64))
    value = rng.choice([b"\x00", b"\xff", b"\x7f", b"\x80", b"\x09", b"\x07", b"\xff\xff", b"\x00\x00\x00"])
    b[at : at + len(value)] = value
    return bytes(b)


def _truncate(rng: random.Random, data: bytes) -> bytes:
    return data[: rng.randrange(1, len(data))]


def _insert(rng: random.Random, data: bytes) -> bytes:
    at = rng.randrange(len(data))
    return data[:at] + rng.randbytes(rng.randint(1, 16)) + data[at:]


def _splice(rng: random.Random, data: bytes) -> bytes:
    """A slice repeated or dropped (duplicate chunks, missing markers)."""
    i, j = sorted(rng.randrange(len(data)) for _ in range(2))
    return data[:j] + data[i:j] + data[j:] if rng.random() < 0.5 else data[:i] + data[j:]


MUTATIONS: tuple[Mutation, ...] = (_flip, _overwrite, _truncate, _insert, _splice)


def mutants(count: int, seed: int = 0) -> Iterator[tuple[str, bytes]]:
    """``count`` mutated files, the same ones for the same ``seed``: ``(seed-file name, bytes)``."""
    rng = random.Random(seed)
    files = sorted(seeds().items())
    for _ in range(count):
        name, data = rng.choice(files)
        for _ in range(rng.randint(1, 3)):
            if len(data) < 2:
                break
            data = rng.choice(MUTATIONS)(rng, data) or data[:1]
        yield name, data


def corpus() -> list[Path]:
    return sorted(CORPUS.glob("*.bin"))


def main() -> None:
    """Run the decoder over mutants; save the ones that raise anything but a 4xx problem."""
    from service.api.codecs import decode_gray
    from service.api.errors import ProblemError

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mutations", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", type=Path, help="folder for the inputs that failed")
    parser.add_argument("--per-kind", type=int, default=2, help="inputs kept per (seed file, exception)")
    args = parser.parse_args()
    outcomes: Counter[str] = Counter()
    kept: Counter[tuple[str, str]] = Counter()
    for name, data in mutants(args.mutations, args.seed):
        try:
            decode_gray(data, 256 * 256, "files")
            outcomes["decoded"] += 1
        except ProblemError as e:
            outcomes[str(e.status)] += 1
        except Exception as e:  # what the suite forbids: it would be a 500
            kind = type(e).__name__
            outcomes[f"crash {kind}"] += 1
            if args.save and kept[name, kind] < args.per_kind:
                kept[name, kind] += 1
                digest = hashlib.sha256(data).hexdigest()[:12]
                args.save.mkdir(parents=True, exist_ok=True)
                (args.save / f"{name.replace('.', '-')}-{kind}-{digest}.bin").write_bytes(data)
    print(dict(sorted(outcomes.items())))


if __name__ == "__main__":
    main()
