"""Matching predictions to gold documents."""

import json

from data_tools.records import LabelRecord, write_labels
from eval.loaders import read_gold, read_predictions


def test_predictions_from_sft_files_match_gold_by_image(tmp_path):
    (tmp_path / "img").mkdir()
    write_labels(
        tmp_path / "gold.jsonl",
        [
            LabelRecord("doc-a", "img/a.png", "vat_invoice", {"发票号码": "1"}),
            LabelRecord("doc-b", "img/b.png", "vat_invoice", {"发票号码": "2"}),
        ],
    )
    rows = [
        # predict.py names SFT-file predictions after the image stem, not the label id
        {"id": "a", "image": str(tmp_path / "img" / "a.png"), "prompt": 'OCR:{"发票号码":""}',
         "raw_output": '{"发票号码": "1"}'},
        {"id": "zzz", "image": str(tmp_path / "img" / "nowhere.png"), "prompt": "OCR:{}",
         "raw_output": "{}"},
    ]  # fmt: skip
    pred = tmp_path / "pred.jsonl"
    pred.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    samples = read_predictions(pred, read_gold(tmp_path / "gold.jsonl"))
    by_id = {s.id: s for s in samples}
    assert set(by_id) == {"doc-a", "doc-b"}
    assert by_id["doc-a"].gold == {"发票号码": "1"} and by_id["doc-a"].value == {"发票号码": "1"}
    assert by_id["doc-b"].method == "missing"  # no prediction: scored as {}, not dropped
