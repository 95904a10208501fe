"""Image uploads (issue 16, items 2 to 4): a seeded, bounded mutation fuzz of every allowed format, the
inputs that once broke the decoder, high bit depths, EXIF orientation and the per-request decode budget.

Every decoding failure must be a 415 or 422 ``application/problem+json`` naming the file; never a 5xx.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from service.api import codecs
from service.api.errors import ProblemError
from tests.api.conftest import Api, H, W, assert_problem, png_bytes, serve, settings_for

from .imagefuzz import corpus, mutants, seeds

pytestmark = pytest.mark.anyio

IN_PROCESS_MUTATIONS = 3000  # through the decoder directly (about 1 s)
HTTP_MUTATIONS = 300  # through the whole upload route


def decode_outcome(data: bytes) -> str:
    """``decoded``, or the 4xx status; anything else raised fails the test (it would be a 500)."""
    try:
        codecs.decode_gray(data, 256 * 256, "files[0]")
    except ProblemError as e:
        assert 400 <= e.status < 500 and e.detail.startswith("files[0]: "), e.detail
        return str(e.status)
    return "decoded"


def test_seed_files_decode() -> None:
    files = seeds()
    assert {Image.open(io.BytesIO(d)).format for d in files.values()} == set(codecs.ALLOWED_FORMATS)
    assert all(decode_outcome(d) == "decoded" for d in files.values())


def test_mutation_fuzz_in_process() -> None:
    outcomes = Counter(decode_outcome(data) for _, data in mutants(IN_PROCESS_MUTATIONS, seed=1))
    assert sum(outcomes.values()) == IN_PROCESS_MUTATIONS
    assert set(outcomes) <= {"decoded", "415", "422"}, outcomes
    assert outcomes["422"] > 0 and outcomes["415"] > 0  # the mutants do reach the decoders


async def test_mutation_fuzz_over_http(api: Api) -> None:
    statuses: Counter[int] = Counter()
    for _, data in mutants(HTTP_MUTATIONS, seed=2):
        r = await api.client.post(
            "/log-prob", files=[("files", ("x.png", data, "image/png"))], params={"resize": True}
        )
        statuses[r.status_code] += 1
        if r.status_code != 200:
            assert_problem(r, r.status_code, "files")
    assert set(statuses) <= {200, 415, 422}, statuses


def test_corpus_is_kept() -> None:
    assert len(corpus()) >= 20


@pytest.mark.parametrize("path", corpus(), ids=lambda p: p.stem)
async def test_corpus_replays_as_4xx(api: Api, path: Path) -> None:
    r = await api.client.post("/log-prob", files=[("files", (path.name, path.read_bytes(), "image/png"))])
    assert r.status_code in (415, 422), r.text
    problem = assert_problem(r, r.status_code, "files")
    assert problem["errors"][0]["field"] == "files[0]"


def _png_with(chunk: bytes, base: bytes) -> bytes:
    return base[:33] + chunk + base[33:]  # right after IHDR


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def reported_cases() -> dict[str, bytes]:
    """The malformed files issue 16 names."""
    files = seeds()
    bmp = bytearray(files["rgb.bmp"])
    compression_9 = bytes(bmp[:30]) + struct.pack("<I", 9) + bytes(bmp[34:])
    depth_7 = bytes(bmp[:28]) + struct.pack("<H", 7) + bytes(bmp[30:])
    big = PngImagePlugin.MAX_TEXT_CHUNK + 1024
    return {
        "jpeg header, 11 bytes": files["gray.jpg"][:11],
        "webp cut to 40 bytes": files["rgb.webp"][:40],
        "bmp compression 9": compression_9,
        "bmp bit depth 7": depth_7,
        "png zTXt past the text limit": _png_with(
            _chunk(b"zTXt", b"c\x00\x00" + zlib.compress(b"a" * big)), files["gray.png"]
        ),
        "png iCCP past the limit": _png_with(
            _chunk(b"iCCP", b"p\x00\x00" + zlib.compress(b"\x00" * big)), files["gray.png"]
        ),
    }


@pytest.mark.parametrize("name", sorted(reported_cases()))
async def test_reported_malformed_files(api: Api, name: str) -> None:
    data = reported_cases()[name]
    r = await api.client.post("/log-prob", files=[("files", ("x", data, "application/octet-stream"))])
    if r.status_code != 200:  # Pillow may decode some of them (an ICC profile is only metadata)
        assert r.status_code in (415, 422), r.text
        assert_problem(r, r.status_code, "files")


# --- bit depth and orientation ----------------------------------------------------------------------------


def gray_image(seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W)).astype(np.uint8)


def sixteen_bit_copies(gray: np.ndarray) -> dict[str, bytes]:
    """The same picture stored with 16-bit samples, as tools write them."""
    wide = gray.astype(np.uint16)
    rgb16 = Image.frombytes(
        "RGB", (W, H), np.repeat(wide[..., None] * 257, 3, axis=2).astype(">u2").tobytes(), "raw", "RGB;16B"
    )
    out = {
        "grey x257": png_bytes16(wide * 257),
        "grey <<8": png_bytes16(wide << 8),
        "grey <<8 | noise": png_bytes16((wide << 8) | 0xAB),
    }
    buf = io.BytesIO()
    rgb16.save(buf, format="PNG")
    out["rgb (Pillow keeps the high byte)"] = buf.getvalue()
    return out


def png_bytes16(pixels: np.ndarray) -> bytes:
    img = Image.fromarray(pixels.astype(np.uint16))
    assert img.mode == "I;16"
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_sixteen_bit_grey_keeps_its_levels() -> None:
    gray = gray_image()
    for name, data in sixteen_bit_copies(gray).items():
        assert np.array_equal(codecs.decode_gray(data, 4096, "f"), gray), name
    face = np.full((H, W), 128, dtype=np.uint16) * 257  # mid-gray, not white
    assert codecs.decode_gray(png_bytes16(face), 4096, "f").max() == 128


async def test_sixteen_bit_copy_scores_like_its_original(api: Api) -> None:
    gray = gray_image()
    r = await api.client.post(
        "/log-prob", params={"model": "gray"}, files=[("files", ("a.png", png_bytes(gray), "image/png"))]
    )
    assert r.status_code == 200, r.text
    want = r.json()["log_prob"]
    for name, data in sixteen_bit_copies(gray).items():
        r = await api.client.post(
            "/log-prob", params={"model": "gray"}, files=[("files", ("a.png", data, "image/png"))]
        )
        assert r.status_code == 200, r.text
        assert r.json()["log_prob"] == want, name


def test_wide_modes() -> None:
    """Pillow's 16-bit modes scale by the high byte; 32-bit integer and float pixels are refused (415)."""
    levels = np.array([[0, 1, 127, 128, 255]], dtype=np.uint16)
    for mode, dtype in (("I;16", "=u2"), ("I;16B", ">u2"), ("I;16L", "<u2")):
        img = Image.frombytes(mode, (5, 1), (levels * 257).astype(dtype).tobytes())
        assert np.array_equal(codecs._gray8(img, "f"), levels), mode
    wide = Image.fromarray(levels.astype(np.int32) * 257)
    assert wide.mode == "I"
    assert np.array_equal(codecs._gray8(wide, "f", stored_16bit=True), levels)
    for img in (wide, Image.fromarray(levels.astype(np.float32) / 255)):
        with pytest.raises(ProblemError) as e:
            codecs._gray8(img, "files[2]")
        assert e.value.status == 415 and "files[2]" in e.value.detail


def test_exif_orientation_is_applied() -> None:
    shown = gray_image(4)  # what the camera meant: H x W
    stored = np.rot90(shown, k=1)  # orientation 6: stored turned a quarter left, shown turned right
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(stored)).save(buf, format="PNG", exif=exif.tobytes())
    assert np.array_equal(codecs.decode_gray(buf.getvalue(), 4096, "f"), shown)


# --- the cost of decoding ---------------------------------------------------------------------------------


async def test_decoded_pixels_are_capped_per_request(model_repo: Path) -> None:
    side = 64  # 4096 pixels each, the per-image limit of the test settings
    png = png_bytes(np.zeros((side, side), dtype=np.uint8))
    jpeg = png_bytes(np.zeros((side, side), dtype=np.uint8), "JPEG")
    async with serve(settings_for(model_repo, max_decoded_pixels=6000)) as a:
        files = [("files", (f"{i}.png", png, "image/png")) for i in range(2)]
        r = await a.client.post("/log-prob", files=files, params={"resize": True})
        problem = assert_problem(r, 422, "files[1]", "MADE_MAX_DECODED_PIXELS", "6000")
        assert problem["errors"][0]["field"] == "files[1]"
        # JPEGs to be resized decode at a reduced DCT scale (64 -> 8): three fit the same budget.
        files = [("files", (f"{i}.jpg", jpeg, "image/jpeg")) for i in range(3)]
        r = await a.client.post("/log-prob", files=files, params={"resize": True})
        assert r.status_code == 200, r.text


def test_budget_counts_reduced_jpeg_pixels() -> None:
    big = np.random.default_rng(5).integers(0, 256, (1024, 768)).astype(np.uint8)
    jpeg = png_bytes(big, "JPEG")
    budget = codecs.PixelBudget(10**7)
    gray = codecs.decode_gray(jpeg, 2**21, "f", fit=(28, 28), budget=budget)
    assert gray.shape == (128, 96) and budget.used == 128 * 96  # 1/8 scale, still above 28 x 28
    assert codecs.resize_gray(gray, (28, 28)).shape == (28, 28)


def test_reduced_resize_matches_plain_lanczos() -> None:
    """Reducing first (``reducing_gap``) changes the result by at most a level or two on average."""
    x = np.linspace(0, 255, 600)
    img = (np.add.outer(x[:500] * 0.5, x * 0.5)).astype(np.uint8)
    plain = np.asarray(Image.fromarray(img).resize((28, 28), Image.Resampling.LANCZOS), dtype=np.float64)
    assert np.abs(codecs.resize_gray(img, (28, 28)) - plain).mean() < 2.0
