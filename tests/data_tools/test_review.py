"""Review sources (needs_review.jsonl, predictions files) and reviewed.jsonl (reviewed wins)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_tools.records import LabelRecord, read_labels
from data_tools.review import (
    ReviewError,
    append_reviewed,
    apply_reviewed,
    load_review_items,
    read_reviewed,
    reviewed_path,
    reviewed_record,
)
from data_tools.schema import load_schema

GOOD = {
    "发票代码": "4400154130",
    "发票号码": "12270242",
    "合计": {"金额": "¥1211.11", "税额": "¥205.89"},
    "价税合计（小写）": "¥1417.00",
}
ASKED = 'OCR:{"发票代码":"","发票号码":"","合计":{},"价税合计（小写）":""}'


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


def test_a_predictions_file_lists_what_needs_a_person(tmp_path: Path) -> None:
    schema = load_schema("vat_invoice")
    swapped = {**GOOD, "发票代码": "12270242", "发票号码": "4400154130"}
    rows = [
        {"id": "ok", "image": "a.jpg", "prompt": ASKED, "prediction": GOOD,
         "confidence": {"leaves": {"发票号码": 0.99}}},
        {"id": "swapped", "image": "b.jpg", "prompt": ASKED, "prediction": swapped},
        {"id": "unsure", "image": "c.jpg", "prompt": ASKED, "prediction": GOOD,
         "confidence": {"leaves": {"发票号码": 0.42, "发票代码": 0.99}}},
        {"id": "broken", "image": "d.jpg", "prompt": ASKED, "prediction": None,
         "parse": {"method": "failed", "error": "no JSON in the output"}},
        {"id": "again", "image": "e.jpg", "prompt": ASKED, "prediction": GOOD,
         "duplicate_of": "ok"},
    ]  # fmt: skip
    src = _write(tmp_path / "predictions.jsonl", rows)
    items = {it.id: it for it in load_review_items(src, schema, threshold=0.9)}
    assert set(items) == {"swapped", "unsure", "broken", "again"}
    assert any("validation invoice_code" in r for r in items["swapped"].reasons)  # computed
    assert items["unsure"].reasons == ["confidence below 0.9: 发票号码"]
    assert items["broken"].reasons == ["parse: no JSON in the output"]
    assert items["again"].reasons == ["duplicate of ok"]
    d = items["swapped"].to_dict()
    code = next(leaf for leaf in d["leaves"] if leaf["label"] == "发票代码")
    assert any(f.startswith("invoice_code:") for f in code["flags"])
    assert items["unsure"].to_dict()["leaves"][1]["confidence"] == 0.42
    assert items["swapped"].image_path == (tmp_path / "b.jpg").resolve()
    assert len(load_review_items(src, schema, threshold=0.3)) == 3  # 0.42 is fine at 0.3


def test_reviewed_record_and_reviewed_wins(tmp_path: Path) -> None:
    schema = load_schema("vat_invoice")
    labels = _write(
        tmp_path / "labels.jsonl",
        [
            {"id": "a", "image": "a.jpg", "fields": {"发票号码": "1"},
             "meta": {"needs_review": True, "qa": {"verdict": "fail"}, "labeler": {"m": 1}}},
            {"id": "b", "image": "b.jpg", "fields": {"发票号码": "2"}},
        ],
    )  # fmt: skip
    _write(tmp_path / "needs_review.jsonl", [{"id": "a", "image": "a.jpg", "reasons": ["qa"]}])
    (item,) = load_review_items(tmp_path / "needs_review.jsonl", schema)
    rec = reviewed_record(item, {"发票号码": "12270242"}, action="edit", schema=schema)
    assert rec.meta["labeler"] == {"m": 1} and "qa" not in rec.meta
    assert rec.meta["reviewed"]["changed"] is True and rec.meta["reviewed"]["reasons"] == ["qa"]
    append_reviewed(reviewed_path(labels), rec)
    out = {r.id: r for r in apply_reviewed(read_labels(labels), tmp_path)}
    assert out["a"].fields == {"发票号码": "12270242"} and not out["a"].meta.get("needs_review")
    assert out["b"].fields == {"发票号码": "2"}
    # a second review of the same id wins over the first
    append_reviewed(reviewed_path(labels), reviewed_record(item, {"发票号码": "3"}, schema=schema))
    assert read_reviewed(reviewed_path(labels))["a"].fields == {"发票号码": "3"}
    with pytest.raises(ReviewError, match="action must be"):
        reviewed_record(item, {}, action="delete")
    with pytest.raises(ReviewError, match=r"fields\.k: values must be strings"):
        reviewed_record(item, {"k": 5})


def test_bad_sources_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ReviewError, match="no such file"):
        load_review_items(tmp_path / "nope.jsonl")
    _write(tmp_path / "needs_review.jsonl", [{"id": "a"}])
    with pytest.raises(ReviewError, match=r"no labels\.jsonl beside it"):
        load_review_items(tmp_path / "needs_review.jsonl")
    bad = tmp_path / "sub" / "reviewed.jsonl"
    bad.parent.mkdir()
    bad.write_text('{"id": "a", "image": "a.jpg", "fields": {}}\nnot json\n{"id": "b"}\n')
    with pytest.raises(ReviewError, match=r"reviewed\.jsonl:2: not valid JSON"):
        read_reviewed(bad)
    rec = LabelRecord("x", "x.jpg", "vat_invoice", {})
    assert rec.to_dict()["id"] == "x"


def test_build_dataset_takes_the_reviewed_record(tmp_path: Path) -> None:
    from PIL import Image

    from data_tools.build_dataset import BuildConfig, build

    for name in ("a.jpg", "b.jpg"):
        Image.new("RGB", (320, 200), "white").save(tmp_path / name)
    labels = _write(
        tmp_path / "labels.jsonl",
        [
            {"id": "a", "image": "a.jpg", "doc_type": "vat_invoice",
             "fields": {"发票号码": "4400154130"}, "meta": {"needs_review": True}},
            {"id": "b", "image": "b.jpg", "doc_type": "vat_invoice",
             "fields": {"发票号码": "12271524"}},
        ],
    )  # fmt: skip
    out = tmp_path / "sft"
    stats = build([labels], out, BuildConfig(val_ratio=0.0))
    assert stats["skipped_needs_review"] == 1  # the labeler's flag keeps "a" out
    _write(tmp_path / "needs_review.jsonl", [{"id": "a", "image": "a.jpg", "reasons": ["qa"]}])
    (item,) = load_review_items(tmp_path / "needs_review.jsonl")
    append_reviewed(reviewed_path(labels), reviewed_record(item, {"发票号码": "12270242"}))
    stats = build([labels], out, BuildConfig(val_ratio=0.0))
    assert stats["skipped_needs_review"] == 0
    text = (out / "train.jsonl").read_text(encoding="utf-8")
    assert "12270242" in text and "4400154130" not in text and "12271524" in text
