"""Predictions join gold by record id (image path only for old files, never the stem);
systems are named from their rows; a prediction past the scorer's limits is refused alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_tools.predictions import PredictionRow
from data_tools.records import LabelRecord, write_labels
from eval.loaders import Limits, read_gold, read_prediction_file
from eval.score import main
from tests.eval.strategies import JSON_VALUES


def _write(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


def _row(doc_id: str, image: str, system: str, answer: dict | str) -> dict:
    raw = answer if isinstance(answer, str) else json.dumps(answer, ensure_ascii=False)
    return PredictionRow(
        id=doc_id, image=image, system=system, prompt="OCR:{}", raw_output=raw,
        prediction=None, parse={"method": "strict"}, latency_s=1.0,
    ).to_dict()  # fmt: skip


@pytest.fixture()
def gold(tmp_path: Path) -> Path:
    """Two images with one stem (inv.jpg) in two folders, and a third document."""
    for folder in ("a", "b", "c"):
        (tmp_path / folder).mkdir()
    path = tmp_path / "labels.jsonl"
    write_labels(
        path,
        [
            LabelRecord("A", "a/inv.jpg", "vat_invoice", {"发票号码": "111"}),
            LabelRecord("B", "b/inv.jpg", "vat_invoice", {"发票号码": "222"}),
            LabelRecord("C", "c/other.jpg", "vat_invoice", {"发票号码": "333"}),
        ],
    )
    return path


def test_rows_join_gold_by_id_not_by_stem(gold: Path) -> None:
    root = gold.parent
    rows = [  # the images are swapped on purpose: the id decides, not the path
        _row("A", str(root / "b" / "inv.jpg"), "vlm", {"发票号码": "111"}),
        _row("B", str(root / "a" / "inv.jpg"), "vlm", {"发票号码": "222"}),
    ]
    pf = read_prediction_file(_write(root / "p.jsonl", rows), read_gold(gold))
    by_id = {s.id: s for s in pf.samples}
    assert by_id["A"].value == {"发票号码": "111"} and by_id["A"].gold == {"发票号码": "111"}
    assert by_id["B"].value == {"发票号码": "222"} and by_id["B"].gold == {"发票号码": "222"}
    assert by_id["C"].method == "missing"
    assert pf.by_image == 0 and pf.system == "vlm"


def test_old_rows_without_ids_join_by_image_path_and_say_so(
    gold: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = gold.parent
    rows = [  # written before predict kept ids: the id was the image stem, the same twice
        {"id": "inv", "image": str(root / "a" / "inv.jpg"), "raw_output": '{"发票号码": "111"}'},
        {"id": "inv", "image": str(root / "b" / "inv.jpg"), "raw_output": '{"发票号码": "999"}'},
    ]
    pf = read_prediction_file(_write(root / "old.jsonl", rows), read_gold(gold))
    by_id = {s.id: s for s in pf.samples}
    assert by_id["A"].value == {"发票号码": "111"}  # one stem, two folders: two documents
    assert by_id["B"].value == {"发票号码": "999"}
    assert by_id["C"].method == "missing"
    assert pf.by_image == 2
    assert "joined to gold by image path" in caplog.text


def test_two_files_named_predictions_jsonl_score_without_name(gold: Path, tmp_path: Path) -> None:
    root = gold.parent
    perfect = [_row(d, "", "finetuned", {"发票号码": v}) for d, v in
               (("A", "111"), ("B", "222"), ("C", "333"))]  # fmt: skip
    noisy = [_row(d, "", "base", {"发票号码": v}) for d, v in
             (("A", "111"), ("B", "000"), ("C", "333"))]  # fmt: skip
    p1 = _write(root / "runs" / "one" / "predictions.jsonl", perfect)
    p2 = _write(root / "runs" / "two" / "predictions.jsonl", noisy)
    out = tmp_path / "report"
    args = ["--gold", str(gold), "--pred", str(p1), "--pred", str(p2), "--out-dir", str(out),
            "--bootstrap", "0", "--workers", "1", "--schema", "none"]  # fmt: skip
    assert main(args) == 0
    systems = json.loads((out / "metrics.json").read_text("utf-8"))["systems"]
    assert list(systems) == ["finetuned", "base"]
    assert systems["finetuned"]["overall"]["f1"] == 1.0
    assert systems["base"]["overall"]["f1"] == pytest.approx(2 / 3)
    # the same system in both files: the folder tells them apart
    p3 = _write(root / "runs" / "three" / "predictions.jsonl", perfect)
    assert main([*args[:4], "--pred", str(p3), *args[6:]]) == 0
    systems = json.loads((out / "metrics.json").read_text("utf-8"))["systems"]
    assert list(systems) == ["finetuned (one)", "finetuned (three)"]
    # --name still overrides
    assert main([*args, "--name", "X", "--name", "Y"]) == 0
    assert list(json.loads((out / "metrics.json").read_text("utf-8"))["systems"]) == ["X", "Y"]


def test_limits_refuse_one_sample_and_score_the_others(
    gold: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = gold.parent
    deep: object = "x"
    for _ in range(80):
        deep = [deep]
    rows = [
        _row("A", "", "vlm", {"发票号码": "111"}),
        _row("B", "", "vlm", {"发票号码": "222", "x": [str(i) for i in range(50)]}),
        # an already-parsed prediction (no raw text: the parser's own depth bound never ran)
        {**_row("C", "", "vlm", ""), "prediction": {"发票号码": deep}},
    ]
    p = _write(root / "p.jsonl", rows)
    pf = read_prediction_file(p, read_gold(gold), Limits(max_leaves=40, max_depth=64))
    by_id = {s.id: s for s in pf.samples}
    assert by_id["A"].method == "strict" and by_id["A"].error is None
    assert by_id["B"].method == "refused" and "max_leaves=40" in by_id["B"].error
    assert by_id["C"].method == "refused" and "max_depth=64" in by_id["C"].error
    assert by_id["B"].value is None
    assert "sample B refused" in caplog.text

    out = tmp_path / "r"
    long_raw = _row("A", "", "vlm", "x" * 2000)
    _write(root / "q.jsonl", [long_raw, *rows[1:]])
    rc = main(["--gold", str(gold), "--pred", str(root / "q.jsonl"), "--out-dir", str(out),
               "--bootstrap", "0", "--workers", "1", "--schema", "none",
               "max_output_chars=1000", "max_leaves=40"])  # fmt: skip
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text("utf-8"))
    s = m["systems"]["vlm"]
    assert s["json_health"]["refused"] == 3
    assert {r["id"] for r in s["refused"]} == {"A", "B", "C"}
    assert "max_output_chars=1,000" in next(r for r in s["refused"] if r["id"] == "A")["error"]
    assert s["overall"]["json_refused_rate"] == 1.0
    assert m["settings"]["limits"]["max_leaves"] == 40
    # a limit that is not a setting: a clear error naming the nearest key
    rc = main(["--gold", str(gold), "--pred", str(p), "--out-dir", str(out), "max_leaf=3"])
    assert rc == 2 and "max_leaves" in caplog.text


@settings(max_examples=300, deadline=None)
@given(value=JSON_VALUES, depth=st.integers(0, 4), leaves=st.integers(0, 6))
def test_limits_trust_a_measured_size_only_to_accept(
    value: object, depth: int, leaves: int
) -> None:
    """Given the parser's whole (depth, leaves), a value within both limits is accepted
    without a walk; any other gets the walk, so the message is the one it always was."""
    from data_tools.parsing import json_size

    limits = Limits(max_depth=depth, max_leaves=leaves)
    assert limits.check_value(value, json_size(value)) == limits.check_value(value)
