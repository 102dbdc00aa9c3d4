"""A mutation corpus of image headers: whatever the bytes, preparing an image either works
or raises `ImageError` (the service's 400/413), quickly, never anything else."""

from __future__ import annotations

import base64
import io
import random
import struct
import time
import zlib

import httpx
import pytest
from PIL import Image

from inference.imaging import DEFAULT_FORMATS, ImageError, ImageOptions, prepare_image
from tests.hostile.servers import make_service, serving

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow on corrupt data

OPTIONS = ImageOptions(min_pixels=784, max_pixels=28 * 28 * 64, max_image_pixels=4_000_000)
# formats Pillow reads whose headers the issue found crashing the service; allowed here
# explicitly to show the decoder's failures are caught even when an operator enables them
EXTRA = ("PPM", "XBM", "IM", "SGI", "BLP", "TGA", "PCX", "ICO", "DDS", "QOI")
EVERY = ImageOptions(
    min_pixels=784, max_pixels=28 * 28 * 64, max_image_pixels=4_000_000,
    formats=DEFAULT_FORMATS + EXTRA,
)  # fmt: skip


def sample(fmt: str) -> bytes:
    im = Image.new("RGB", (96, 64), (200, 120, 40))
    for x in range(0, 96, 8):
        im.putpixel((x, x % 64), (0, 0, 0))
    buf = io.BytesIO()
    if fmt in ("XBM",):
        im = im.convert("1")
    if fmt == "BLP":
        im = im.convert("P")
    if fmt == "ICO":
        im = im.resize((32, 32))
    im.save(buf, format=fmt)
    return buf.getvalue()


def mutations(data: bytes, seed: int, n: int = 40) -> list[bytes]:
    rng = random.Random(seed)
    out = [data[:k] for k in sorted({1, 4, 8, 12, 16, 24, 32, 64, len(data) // 2, len(data) - 1})]
    for _ in range(n):
        b = bytearray(data)
        span = min(len(b), 64) if rng.random() < 0.75 else len(b)
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(span)
            b[i] = rng.choice((0x00, 0xFF, 0x7F, 0x80, rng.randrange(256)))
        out.append(bytes(b))
    # a 32-bit field in the header set to a huge value (dimensions, offsets, sizes)
    for off in range(0, min(len(data) - 4, 40), 2):
        b = bytearray(data)
        b[off : off + 4] = struct.pack(">I", 0x7FFF_FFF0)
        out.append(bytes(b))
    return out


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def special_cases() -> list[tuple[str, bytes]]:
    png = sample("PNG")
    big = zlib.compress(b"a" * 3_000_000)
    cases = [
        ("png zTXt bomb", png[:33] + _chunk(b"zTXt", b"k\x00\x00" + big) + png[33:]),
        ("png iCCP bomb", png[:33] + _chunk(b"iCCP", b"p\x00\x00" + big) + png[33:]),
        ("png iTXt bomb", png[:33] + _chunk(b"iTXt", b"k\x00\x01\x00\x00\x00" + big) + png[33:]),
        ("ppm huge", b"P6\n99999 99999\n255\n" + b"\x00" * 100),
        ("ppm negative", b"P6\n-5 10\n255\n" + b"\x00" * 100),
        ("ppm maxval 0", b"P6\n4 4\n0\n" + b"\x00" * 48),
        ("ppm maxval huge", b"P6\n4 4\n99999999\n" + b"\x00" * 48),
        ("pgm comment loop", b"P5\n" + b"#" * 5000 + b"\n4 4\n255\n"),
        ("xbm huge", b"#define x_width 99999\n#define x_height 99999\nstatic char x_bits[] = {"),
        ("xbm garbage", b"#define x_width 8\n#define x_height 8\nstatic char x_bits[] = {0xzz,"),
        (
            "im header",
            b"Image type: RGB image\r\nImage size (x*y): 99999*99999\r\n\x1a" + b"\x00" * 600,
        ),
        ("im bad lut", b"Image type: P image\r\nImage size (x*y): 4*4\r\nLut: 1\r\n\x1a"),
        ("sgi huge", struct.pack(">hbbHHHH", 474, 0, 1, 3, 65535, 65535, 3) + b"\x00" * 600),
        ("sgi rle bad", struct.pack(">hbbHHHH", 474, 1, 1, 3, 4, 4, 3) + b"\xff" * 600),
        ("blp header", b"BLP2" + struct.pack("<IBBBBII", 1, 2, 8, 7, 0, 4096, 4096) + b"\x00" * 64),
        ("blp1", b"BLP1" + struct.pack("<IIIIII", 0, 8, 65535, 65535, 4, 0) + b"\x00" * 64),
        ("gif huge screen", b"GIF89a" + struct.pack("<HH", 65535, 65535) + b"\x00\x00\x00,"),
        ("bmp negative", b"BM" + b"\x00" * 12 + struct.pack("<IiiHH", 40, -5, -99999, 1, 24)),
        ("tiff loop ifd", b"II*\x00\x08\x00\x00\x00\x01\x00" + b"\x00" * 10 + b"\x08\x00\x00\x00"),
        ("jpeg only soi", b"\xff\xd8\xff"),
        ("webp riff lie", b"RIFF\xff\xff\xff\xffWEBPVP8 " + b"\x00" * 20),
        ("eps", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"),
        ("empty", b""),
        ("nul", b"\x00" * 1000),
    ]
    return cases


def _prepare_or_image_error(data: bytes, options: ImageOptions, name: str) -> str:
    t0 = time.perf_counter()
    try:
        prepare_image(data, options)
        outcome = "ok"
    except ImageError:
        outcome = "image_error"
    except Exception as e:  # pragma: no cover - this is what the test forbids
        pytest.fail(f"{name}: {type(e).__name__}: {e}")
    elapsed = time.perf_counter() - t0
    assert elapsed < 3.0, f"{name}: {elapsed:.1f} s"
    return outcome


@pytest.mark.parametrize("fmt", DEFAULT_FORMATS + EXTRA)
def test_mutated_headers_prepare_or_raise_image_error(fmt: str) -> None:
    options = OPTIONS if fmt in DEFAULT_FORMATS else EVERY
    data = sample(fmt)
    assert _prepare_or_image_error(data, options, f"{fmt} clean") == "ok"
    if fmt not in DEFAULT_FORMATS:  # refused by the default allowlist
        assert _prepare_or_image_error(data, OPTIONS, f"{fmt} default") == "image_error"
    outcomes = [
        _prepare_or_image_error(m, options, f"{fmt} mutation {i}")
        for i, m in enumerate(mutations(data, seed=zlib.crc32(fmt.encode())))
    ]
    assert "image_error" in outcomes  # the corpus does hit the error paths


@pytest.mark.parametrize(("name", "data"), special_cases(), ids=[c[0] for c in special_cases()])
def test_known_hostile_headers(name: str, data: bytes) -> None:
    for options in (OPTIONS, EVERY):
        _prepare_or_image_error(data, options, name)


def test_the_service_answers_the_corpus_with_4xx_on_one_connection() -> None:
    app, _ = make_service(image={**OPTIONS.__dict__, "formats": list(OPTIONS.formats)})
    bodies = [data for _, data in special_cases()]
    for fmt in DEFAULT_FORMATS:
        bodies += mutations(sample(fmt), seed=7, n=6)[::3]
    statuses = []
    with serving(app) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        for data in bodies:
            r = c.post(
                "/v1/extract",
                files={"image": ("x.bin", data, "application/octet-stream")},
                data={"fields": "发票号码"},
            )
            statuses.append(r.status_code)
            assert r.status_code == 200 or 400 <= r.status_code < 500, r.text[:300]
        assert c.get("/health").json()["status"] == "ok"
    assert app.guard.opened_total == 1
    assert statuses.count(400) + statuses.count(413) >= len(special_cases()) - 1


def test_remote_url_fetch_has_a_total_deadline() -> None:
    """A server dripping one byte every 0.2 s cannot stretch a 1 s fetch."""
    import asyncio

    from inference.serving.inputs import InputRejected, download

    async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n")
        try:
            for _ in range(1000):
                writer.write(b"x")
                await writer.drain()
                await asyncio.sleep(0.2)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def scenario() -> tuple[float, str]:
        server = await asyncio.start_server(drip, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        t0 = time.perf_counter()
        try:
            await download(f"http://127.0.0.1:{port}/a.png", 1.0, 10_000)
        except InputRejected as e:
            return time.perf_counter() - t0, e.code
        finally:
            server.close()
        return time.perf_counter() - t0, "no error"

    elapsed, code = asyncio.run(scenario())
    assert code == "image_url_timeout" and elapsed < 2.0


def test_base64_variants() -> None:
    from inference.serving.inputs import InputRejected, decode_base64, decode_data_url

    raw = bytes(range(256)) * 3
    b64 = base64.b64encode(raw).decode()
    assert decode_base64(b64) == raw
    assert decode_base64("\n".join(b64[i : i + 76] for i in range(0, len(b64), 76))) == raw
    assert decode_base64(base64.urlsafe_b64encode(raw).decode().rstrip("=")) == raw
    assert decode_data_url("data:image/png;base64," + b64) == raw
    assert decode_data_url("data:application/octet-stream,%89PNG%FF%00") == b"\x89PNG\xff\x00"
    for bad in ("!!", "ключ", "YQ=x"):
        with pytest.raises(InputRejected):
            decode_base64(bad)
