"""`make demo` runs the whole pipeline on the embedded default data, twice."""

import json
import os
import subprocess
import sys

import pytest


def run_demo(repo_root, out):
    env = dict(os.environ, PY=sys.executable, OUT=str(out))
    return subprocess.run(
        ["bash", "scripts/demo.sh"],
        cwd=repo_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )


@pytest.mark.slow
def test_demo_runs_end_to_end_and_again(repo_root, tmp_path):
    out = tmp_path / "demo"
    res = run_demo(repo_root, out)
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

    # the terminal shows progress and pointers; the tools' own output is in the log
    log = (out / "demo.log").read_text(encoding="utf-8")
    assert "global_step:" in log and "global_step:" not in res.stdout
    assert "  step  100  loss:" in res.stdout
    assert f'make serve ARGS="--backend paddlex --model-dir {out}/model"' in res.stdout
    assert f"full log:     {out}/demo.log" in res.stdout

    # a second run reuses the finished training and redoes the rest
    again = run_demo(repo_root, out)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "already trained" in again.stdout
    assert sum(1 for _ in (out / "predictions.jsonl").open(encoding="utf-8")) == n_val
    assert (out / "report" / "report.html").is_file()
