"""`make demo` runs the whole pipeline on the embedded default data."""

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_runs_end_to_end(repo_root, tmp_path):
    out = tmp_path / "demo"
    env = dict(os.environ, PY=sys.executable, OUT=str(out))
    res = subprocess.run(
        ["bash", "scripts/demo.sh"],
        cwd=repo_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    # every stage left its file for the next one
    for rel in (
        "data/labels.jsonl",
        "data/labels.qa.jsonl",
        "data/sft/train.jsonl",
        "data/sft/val.labels.jsonl",
        "train/summary/loss.png",
        "model/model.safetensors",
        "model/inference.yml",
        "predictions.jsonl",
        "predictions.xlsx",
        "report/report.html",
    ):
        assert (out / rel).is_file(), rel
    metrics = json.loads((out / "report" / "metrics.json").read_text(encoding="utf-8"))
    assert "tiny-paddleocr-vl" in metrics["systems"]
    n_val = sum(1 for _ in (out / "data" / "sft" / "val.jsonl").open(encoding="utf-8"))
    n_pred = sum(1 for _ in (out / "predictions.jsonl").open(encoding="utf-8"))
    assert n_pred == n_val > 0
