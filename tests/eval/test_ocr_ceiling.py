"""The OCR ceiling (eval.ocr_ceiling): value look-ups in OCR text, and the command that
reads gold + the OCR cache (missing images listed, identities chosen explicitly)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_tools.ppocr import OcrLine
from data_tools.records import LabelRecord
from data_tools.schema import load_schema
from eval.ocr_ceiling import OcrText, main, ocr_ceiling, value_in_ocr
from inference.ocr_cache import OcrCache, image_sha256


def _lines(*texts: str) -> list[OcrLine]:
    return [OcrLine(t, 1.0, (0.0, 20.0 * i, 10.0, 20.0 * i + 10)) for i, t in enumerate(texts)]


def _ocr(*texts: str) -> OcrText:
    return OcrText.from_lines(_lines(*texts))


def test_value_in_ocr() -> None:
    ocr = _ocr(
        "价税合计(大写)  叁仟肆佰玖拾伍圆整  (小写)  ￥3495.00",
        "开票日期：  2016年06月12日",
        "小米红米3全网通版时尚金色  红米3  个  5  597.43589744  2987.18  17%  507.82",
        "移动联通电信4G手机双卡双待",
        "名  称：  深圳市购机汇网络有限公司",
    )
    assert value_in_ocr("¥3495.00", "amount", ocr)  # full-width ￥, typed match
    assert value_in_ocr("3,495", "amount", ocr)
    assert value_in_ocr("2016-06-12", "date", ocr)
    assert value_in_ocr("0.17", "percent", ocr)
    assert value_in_ocr("叁仟肆佰玖拾伍圆整", "amount_in_words", ocr)
    assert value_in_ocr("深圳市购机汇网络有限公司", "text", ocr)
    # a name wrapped over two printed lines: every piece inside one OCR line
    assert value_in_ocr("小米 红米 3 全网通版 时尚金色 移动联通电信4G手机 双卡双待", "text", ocr)
    assert not value_in_ocr("深圳市龙华新区", "text", ocr)
    assert not value_in_ocr("¥1417.00", "amount", ocr)
    # a piece split across two OCR lines is not "inside one line"
    assert not value_in_ocr("红米3全网通版 电信4G手机双卡双待X", "text", ocr)


def test_ocr_ceiling_counts_per_field() -> None:
    schema = load_schema("vat_invoice")
    rec = LabelRecord(
        "d1",
        "d1.jpg",
        "vat_invoice",
        {
            "发票号码": "12271524",
            "价税合计（小写）": "¥3495.00",
            "购买方": {"名称": "深圳市购机汇网络有限公司", "地址、电话": ""},
            "货物或应税劳务、服务": [{"金额": "2987.18"}, {"金额": "-1776.07"}],
        },
    )
    lines = _lines("No 12271524", "(小写)￥3495.00", "名称:深圳市购机汇网络有限公司", "2987.18")
    report = ocr_ceiling([(rec, lines)], schema)
    assert report["n_docs"] == 1
    assert report["overall"] == {"n": 5, "found": 4, "share": 0.8}  # the empty 地址 is not a value
    assert report["per_field"]["货物或应税劳务、服务[].金额"] == {
        "type": "amount", "n": 2, "found": 1, "share": 0.5,
    }  # fmt: skip
    assert report["not_found"] == {
        "d1": [{"field": "货物或应税劳务、服务[].金额", "gold": "-1776.07"}]
    }


def _image(path: Path, payload: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)  # the cache keys on the bytes' sha256; no decoding happens
    return path


@pytest.fixture()
def corpus(tmp_path: Path) -> dict[str, Path]:
    gold = tmp_path / "labels.jsonl"
    img_a = _image(tmp_path / "a" / "inv.jpg", b"image a")
    img_b = _image(tmp_path / "b" / "inv.jpg", b"image b")  # same stem, other folder
    _image(tmp_path / "c" / "inv.jpg", b"image c")  # never OCR'd
    rows = [
        {"id": "A", "image": "a/inv.jpg", "doc_type": "vat_invoice",
         "fields": {"发票号码": "12271524", "价税合计（小写）": "¥3495.00"}},
        {"id": "B", "image": "b/inv.jpg", "doc_type": "vat_invoice",
         "fields": {"发票号码": "12270242", "价税合计（小写）": "¥1417.00"}},
        {"id": "C", "image": "c/inv.jpg", "doc_type": "vat_invoice", "fields": {"发票号码": "1"}},
        {"id": "D", "image": "d/gone.jpg", "doc_type": "vat_invoice", "fields": {"发票号码": "2"}},
        {"id": "E", "image": "a/inv.jpg", "doc_type": "vat_invoice", "fields": {}},  # unlabelled
    ]  # fmt: skip
    gold.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    cache_root = tmp_path / "ocr_cache"
    cache = OcrCache(cache_root, {"preset": "small-onnx", "options": {}, "version": 1})
    cache.put(image_sha256(img_a), _lines("No 12271524", "￥3495.00"), 1.5)
    cache.put(image_sha256(img_b), _lines("No 12270242"), 1.2)
    return {"gold": gold, "cache": cache_root, "out": tmp_path / "out" / "ocr_ceiling"}


def test_command_reads_the_cache_and_lists_uncached_images(corpus: dict[str, Path]) -> None:
    rc = main([
        "--gold", str(corpus["gold"]), "--ocr-cache", str(corpus["cache"]),
        "--out", str(corpus["out"]),
    ])  # fmt: skip
    assert rc == 0
    report = json.loads(corpus["out"].with_suffix(".json").read_text("utf-8"))
    assert report["n_docs"] == 2
    assert report["overall"] == {"n": 4, "found": 3, "share": 0.75}
    assert report["not_found"] == {"B": [{"field": "价税合计（小写）", "gold": "¥1417.00"}]}
    assert report["ocr_identity"].startswith("small-onnx-")
    assert report["ocr_config"]["preset"] == "small-onnx"
    uncached = {u["id"]: u["reason"] for u in report["uncached"]}
    assert set(uncached) == {"C", "D"}
    assert uncached["C"].startswith("not in the OCR cache")
    assert uncached["D"].startswith("unreadable")
    md = corpus["out"].with_suffix(".md").read_text("utf-8")
    assert "3/4 = 0.750" in md and "## Documents without cached OCR" in md and "`D`" in md


def test_several_identities_need_a_choice(
    corpus: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    other = OcrCache(corpus["cache"], {"preset": "server", "options": {}, "version": 1})
    other.put(image_sha256(corpus["gold"].parent / "a" / "inv.jpg"), _lines("nothing"), 3.0)
    args = ["--gold", str(corpus["gold"]), "--ocr-cache", str(corpus["cache"]),
            "--out", str(corpus["out"])]  # fmt: skip
    assert main(args) == 2
    assert "2 OCR identities match" in caplog.text and "--ocr-config" in caplog.text
    assert not corpus["out"].with_suffix(".json").exists()  # nothing half-written
    assert main([*args, "--ocr-config", "server"]) == 0
    report = json.loads(corpus["out"].with_suffix(".json").read_text("utf-8"))
    assert report["ocr_config"]["preset"] == "server"
    assert report["n_docs"] == 1 and report["overall"]["found"] == 0
    assert main([*args, "--ocr-config", "nope"]) == 2
    assert "no OCR identity 'nope'" in caplog.text


def test_empty_cache_is_a_clear_error(
    corpus: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rc = main(["--gold", str(corpus["gold"]), "--ocr-cache", str(tmp_path / "none"),
               "--out", str(corpus["out"])])  # fmt: skip
    assert rc == 2
    assert "no OCR cache entries" in caplog.text


def test_run_ocr_fills_the_cache_first(tmp_path: Path) -> None:
    """--run-ocr: the backend's OCR stage fills the cache (a fake engine here; the real
    PP-OCRv6 run is tests/inference/test_baseline_ocr.py), then the ceiling reads it."""
    from PIL import Image

    from eval.ocr_ceiling import run

    for name in ("a", "b"):
        Image.new("RGB", (64, 48), "white" if name == "a" else "gray").save(
            tmp_path / f"{name}.png"
        )
    gold = tmp_path / "labels.jsonl"
    rows = [
        {"id": "A", "image": "a.png", "doc_type": "vat_invoice", "fields": {"发票号码": "111"}},
        {"id": "B", "image": "b.png", "doc_type": "vat_invoice", "fields": {"发票号码": "222"}},
        {"id": "C", "image": "gone.png", "doc_type": "vat_invoice", "fields": {"发票号码": "3"}},
    ]
    gold.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    calls: list[tuple[int, int]] = []

    def engine(image: object) -> list[OcrLine]:
        calls.append(image.size)  # type: ignore[attr-defined]
        return _lines("No 111")

    cache = tmp_path / "cache"
    report = run(gold, cache, tmp_path / "out", ocr_preset="small-onnx", engine=engine)
    assert len(calls) == 2 and report["n_docs"] == 2
    assert report["overall"] == {"n": 2, "found": 1, "share": 0.5}
    assert [u["id"] for u in report["uncached"]] == ["C"]
    again = run(gold, cache, tmp_path / "out", ocr_preset="small-onnx", engine=engine)
    assert len(calls) == 2 and again["overall"] == report["overall"]  # all from the cache
