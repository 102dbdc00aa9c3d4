"""Text-line mode: detection → perspective crops → two VLM reads → PaddleOCR rec labels."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from data_tools import label_lines as ll
from data_tools.label_lines import LinesConfig, crop_line, label_lines
from tests.support.openai_stub import FaultPlan, OpenAIStub, request_images, request_text

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "label" / "text_lines.yaml"

# Solid colour bars stand in for text lines; the fake VLM "reads" a crop as its colour.
BARS = {
    "red": ((200, 30, 30), [(20, 20), (220, 20), (220, 50), (20, 50)]),
    "green": ((30, 200, 30), [(30, 80), (230, 95), (228, 125), (28, 110)]),  # tilted
    "blue": ((30, 30, 200), [(260, 20), (290, 20), (290, 160), (260, 160)]),  # vertical
    "gray": ((128, 128, 128), [(20, 140), (200, 140), (200, 170), (20, 170)]),
}


def _make_page(path: Path) -> None:
    im = Image.new("RGB", (320, 200), "white")
    d = ImageDraw.Draw(im)
    for color, poly in BARS.values():
        d.polygon(poly, fill=color)
    im.save(path)


def fake_detector(img: np.ndarray) -> list:
    return [([(float(x), float(y)) for x, y in poly], 0.9) for _, poly in BARS.values()] + [
        ([(0, 190), (50, 190), (50, 199), (0, 199)], 0.2)  # below min_det_score
    ]


def _colour_name(body: dict) -> str:
    with Image.open(io.BytesIO(request_images(body)[0])) as im:
        mean = np.asarray(im.convert("RGB"), dtype=float).reshape(-1, 3).mean(axis=0)
    return min(BARS, key=lambda k: float(np.abs(mean - np.array(BARS[k][0])).sum()))


def reader(body: dict) -> str:
    name = _colour_name(body)
    english = "Transcribe" in request_text(body)
    if name == "gray":
        return "" if english else "  "  # an empty line
    if name == "green" and english:
        return "GREEN LINE?"  # the two reads disagree
    return f'"{name.upper()} LINE"' if english else f"{name.upper()} LINE"


def _cfg(stub: OpenAIStub, images: Path, out: Path, *extra: str) -> LinesConfig:
    return LinesConfig.from_yaml(
        CONFIG,
        [
            f"images={images}",
            f"out_dir={out}",
            f"client.base_urls=[{stub.base_url}]",
            "client.backoff_base_s=0.01",
            "progress=false",
            *extra,
        ],
    )


def test_crop_line_is_upright_and_sized() -> None:
    img = np.zeros((200, 320, 3), dtype=np.uint8)
    tilted = crop_line(img, BARS["green"][1])
    assert tilted.shape[1] > tilted.shape[0]
    assert abs(tilted.shape[1] - 201) <= 2 and abs(tilted.shape[0] - 30) <= 2
    vertical = crop_line(img, BARS["blue"][1])
    assert vertical.shape[:2] == (30, 140)  # turned to lie horizontal
    shuffled = [BARS["red"][1][i] for i in (2, 0, 3, 1)]
    assert crop_line(img, shuffled).shape[:2] == (30, 200)


def test_clean_read_and_agreement() -> None:
    assert ll.clean_read('"发票号码 12270242"\n') == "发票号码 12270242"
    assert ll.clean_read("```\nABC\n```") == "ABC"
    assert ll.clean_read("一行\n两行") == "一行 两行"
    assert ll.reads_agree("小米 红米", "小米红米")
    assert not ll.reads_agree("", "")


def test_lines_labeled_agreeing_reads_only(tmp_path: Path) -> None:
    images = tmp_path / "pages"
    images.mkdir()
    for name in ("p1", "p2"):
        _make_page(images / f"{name}.png")
    out = tmp_path / "out"
    with OpenAIStub(reader) as stub:
        s = asyncio.run(label_lines(_cfg(stub, images, out), detector=fake_detector))
        assert len(stub.requests) == 2 * 4 * 2  # pages x lines x reads
    c = s.counters
    assert (s.ok, c["lines"], c["agreed"], c["disagreed"], c["empty"]) == (2, 8, 4, 2, 2)
    assert c["calls"] == 16 and s.exit_code == 0
    gt = (out / "rec_gt.txt").read_text(encoding="utf-8").splitlines()
    assert sorted(gt) == sorted(
        f"crops/{p}/{n:04d}.jpg\t{t}"
        for p in ("p1", "p2")
        for n, t in ((0, "RED LINE"), (1, "BLUE LINE"))  # numbered in reading order
    )
    for line in gt:
        crop = out / line.split("\t")[0]
        with Image.open(crop) as im:
            assert im.width > im.height
    dis = [json.loads(x) for x in (out / "lines_disagree.jsonl").read_text().splitlines()]
    assert {d["reads"][1] for d in dis} == {"GREEN LINE?"}
    done = [json.loads(x) for x in (out / "lines_done.jsonl").read_text().splitlines()]
    assert [d["agreed"] for d in done] == [2, 2]
    summary = json.loads((out / "lines_summary.json").read_text())
    assert summary["summary"]["ok"] == 2 and summary["summary"]["counters"]["agreed"] == 4
    assert summary["config"]["client"]["base_urls"] == [stub.base_url]


def test_resume_after_a_crash_mid_image(tmp_path: Path) -> None:
    images = tmp_path / "pages"
    images.mkdir()
    for name in ("p1", "p2", "p3"):
        _make_page(images / f"{name}.png")
    out = tmp_path / "out"
    with OpenAIStub(reader) as stub:
        asyncio.run(label_lines(_cfg(stub, images, out), detector=fake_detector))
        # a crash after p3's labels were appended but before its done line, plus a torn line
        done = (out / "lines_done.jsonl").read_text().splitlines(keepends=True)
        lost = json.loads(done[-1])["id"]
        (out / "lines_done.jsonl").write_text("".join(done[:-1]) + '{"id": "p', encoding="utf-8")
        with (out / "rec_gt.txt").open("a", encoding="utf-8") as fh:
            fh.write(f"crops/{lost}/0000.jpg\tRED LI")
        n = len(stub.requests)
        s = asyncio.run(label_lines(_cfg(stub, images, out), detector=fake_detector))
        assert (s.done_before, s.todo, len(stub.requests) - n) == (2, 1, 8)
    gt = (out / "rec_gt.txt").read_text(encoding="utf-8").splitlines()
    assert len(gt) == len(set(gt)) == 6
    assert all(line.endswith(("RED LINE", "BLUE LINE")) for line in gt)
    assert len((out / "lines_done.jsonl").read_text().splitlines()) == 3
    assert len((out / "lines_disagree.jsonl").read_text().splitlines()) == 3


def test_failed_reads_fail_the_image_and_retry_later(tmp_path: Path) -> None:
    images = tmp_path / "pages"
    images.mkdir()
    _make_page(images / "p1.png")
    (images / "bad.png").write_bytes(b"nope")
    out = tmp_path / "out"
    plan = FaultPlan(rate=1.0, kinds=("500",))
    with OpenAIStub(reader, faults=plan) as stub:
        s = asyncio.run(
            label_lines(_cfg(stub, images, out, "client.max_attempts=2"), detector=fake_detector)
        )
    assert (s.ok, s.failed, s.exit_code) == (0, 2, 1)
    fails = {
        row["id"]: row
        for row in map(json.loads, (out / "lines_failures.jsonl").read_text().splitlines())
    }
    assert fails["bad"]["stage"] == "detection" and "does not decode" in fails["bad"]["reason"]
    assert fails["p1"]["stage"] == "read" and "HTTP 500" in fails["p1"]["reason"]
    assert fails["p1"]["image"] == str(images / "p1.png")
    assert not (out / "rec_gt.txt").exists() and not (out / "lines_done.jsonl").exists()
    with OpenAIStub(reader) as stub:
        s = asyncio.run(label_lines(_cfg(stub, images, out), detector=fake_detector))
        assert (s.todo, s.failed_before, s.exit_code, len(stub.requests)) == (0, 2, 1, 0)
        s = asyncio.run(
            label_lines(_cfg(stub, images, out, "retry_failed=true"), detector=fake_detector)
        )
    assert (s.ok, s.failed, s.exit_code) == (1, 1, 1)
    assert len((out / "rec_gt.txt").read_text().splitlines()) == 2


@pytest.mark.slow
def test_real_ppocr_detection_end_to_end(tmp_path: Path) -> None:
    """PP-OCRv6 small (offline ONNX) finds printed lines; the CLI writes rec labels."""
    images = tmp_path / "pages"
    images.mkdir()
    texts = ["INVOICE NO 12270242", "TOTAL AMOUNT 3495.00", "SELLER GUANGZHOU JD"]
    im = Image.new("RGB", (900, 400), "white")
    d = ImageDraw.Draw(im)
    font = ImageFont.load_default(size=40)
    for i, t in enumerate(texts):
        d.text((40, 40 + 110 * i), t, fill="black", font=font)
    im.save(images / "page.png")

    def by_position(body: dict) -> str:  # any function of the crop: both reads agree
        with Image.open(io.BytesIO(request_images(body)[0])) as c:
            return f"LINE {c.width // 40}"

    out = tmp_path / "out"
    with OpenAIStub(by_position) as stub:
        rc = ll.main(
            ["--config", str(CONFIG), f"images={images}", f"out_dir={out}",
             f"client.base_urls=[{stub.base_url}]", "--no-progress"]
        )  # fmt: skip
        assert rc == 0
        assert len(stub.requests) == 2 * len(texts)
    gt = (out / "rec_gt.txt").read_text(encoding="utf-8").splitlines()
    assert len(gt) == len(texts)
    assert [g.split("\t")[0] for g in gt] == [f"crops/page/{n:04d}.jpg" for n in range(3)]
    for g in gt:
        with Image.open(out / g.split("\t")[0]) as c:
            assert c.width > 5 * c.height  # a whole printed line, upright


def test_wrong_key_stops_text_line_mode(tmp_path: Path) -> None:
    images = tmp_path / "pages"
    images.mkdir()
    _make_page(images / "p1.png")
    out = tmp_path / "out"
    with OpenAIStub(reader, faults=FaultPlan(api_key="sk-right")) as stub:
        s = asyncio.run(label_lines(_cfg(stub, images, out), detector=fake_detector))
        assert s.exit_code == 3 and "401" in (s.fatal or "")
        assert len(stub.requests) == 0  # the preflight stopped it
    assert not (out / "lines_done.jsonl").exists()
    assert not (out / "lines_failures.jsonl").exists()  # a fatal error blames no image


def _cli(stub: OpenAIStub, images: Path, out: Path, *extra: str) -> int:
    return ll.main(
        ["--config", str(CONFIG), f"images={images}", f"out_dir={out}",
         f"client.base_urls=[{stub.base_url}]", "client.backoff_base_s=0.01",
         "client.max_attempts=2", "--no-progress", *extra]
    )  # fmt: skip


def test_cli_exit_codes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ll, "PPOCRLineDetector", lambda **kw: fake_detector)
    images = tmp_path / "pages"
    images.mkdir()
    _make_page(images / "p1.png")
    out = tmp_path / "out"
    with OpenAIStub(reader) as stub:
        assert _cli(stub, images, out, "image_worker=3") == 2  # unknown key: nothing run
        assert not out.exists() and len(stub.requests) == 0
        assert _cli(stub, tmp_path / "nowhere", out) == 2
    with OpenAIStub(reader, faults=FaultPlan(rate=1.0, kinds=("500",))) as stub:
        assert _cli(stub, images, out) == 1
    with OpenAIStub(reader, faults=FaultPlan(api_key="sk-right")) as stub:
        assert _cli(stub, images, out, "--retry-failed") == 3
    with OpenAIStub(reader) as stub:
        assert _cli(stub, images, out) == 1  # still listed as failed, not retried
        assert len(stub.requests) == 0
        assert _cli(stub, images, out, "--retry-failed") == 0
        assert _cli(stub, images, out) == 0  # done: a rerun does nothing
        assert len(stub.requests) == 8


def test_a_detector_that_does_not_load_is_bad_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(**kw: object) -> None:
        raise TypeError(f"unexpected keyword {next(iter(kw))!r}")

    monkeypatch.setattr(ll, "PPOCRLineDetector", broken)
    images = tmp_path / "pages"
    images.mkdir()
    _make_page(images / "p1.png")
    out = tmp_path / "out"
    with OpenAIStub(reader) as stub:
        assert _cli(stub, images, out, "det={limit_side: 960}") == 2
        assert len(stub.requests) == 0
    summary = json.loads((out / "lines_summary.json").read_text())["summary"]
    assert summary["exit_code"] == 2 and "limit_side" in summary["fatal"]
    assert not (out / "lines_failures.jsonl").exists()  # no image is blamed


def test_secrets_stay_out_of_summary_failures_and_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """user:pw@ in the URL, a custom header and the key, quoted back by a hostile server in its
    error messages, appear neither in lines_summary.json, lines_failures.jsonl nor the log."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="httpx")  # its request lines name the URL
    images = tmp_path / "pages"
    images.mkdir()
    _make_page(images / "p1.png")
    out = tmp_path / "out"
    basic = base64.b64encode(b"labeluser:s3cr3t-pw").decode()
    secrets = ["labeluser", "s3cr3t-pw", basic, "sk-secret-key-123", "tenant-secret-456"]
    header = "client.headers={X-Tenant: tenant-secret-456}"
    # 1. every read answered 500 quoting the headers: the image fails, its reason is written
    plan = FaultPlan(rate=1.0, kinds=("500",), echo_headers=True)
    with OpenAIStub(reader, faults=plan) as stub:
        url = stub.base_url.replace("://", "://labeluser:s3cr3t-pw@")
        cfg = _cfg(stub, images, out, f"client.base_urls=[{url}]", header, "client.max_attempts=2")
        s = asyncio.run(label_lines(cfg, detector=fake_detector))
        assert s.failed == 1
        sent = stub.requests[0].headers
        assert sent["x-tenant"] == "tenant-secret-456"  # the secrets did travel
        assert "authorization" in sent  # Basic, from the URL's userinfo
    failures = (out / "lines_failures.jsonl").read_text()
    assert "HTTP 500 (request headers: authorization: Basic ***; x-tenant: ***" in failures
    written = failures + (out / "lines_summary.json").read_text()
    # 2. the key rejected by the preflight, the 401 quoting it: the run stops (exit 3)
    plan = FaultPlan(api_key="sk-right", echo_headers=True)
    with OpenAIStub(reader, faults=plan) as stub:
        cfg = _cfg(
            stub, images, out, "client.api_key=sk-secret-key-123", header, "retry_failed=true"
        )
        s = asyncio.run(label_lines(cfg, detector=fake_detector))
    assert s.exit_code == 3 and "authorization: ***; x-tenant: ***" in (s.fatal or "")
    summary = (out / "lines_summary.json").read_text()
    assert "HTTP 401 (request headers: authorization: ***" in summary
    written += summary + caplog.text
    for secret in secrets:
        assert secret not in written
