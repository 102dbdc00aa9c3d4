"""End to end on CPU: `make train CONFIG=configs/train/cpu_tiny.yaml`, then resume, summary
and export, and the exported dir predicts in PaddleX."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from training import export
from training.preflight import checkpoints
from training.summary import summarize

pytestmark = pytest.mark.slow


def train(repo_root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable,
        "-m",
        "training.train",
        "--config",
        str(repo_root / "configs/train/cpu_tiny.yaml"),
        *args,
    ]
    return subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=900)


def test_cpu_tiny_trains_resumes_and_exports(
    repo_root: Path,
    tiny_model_dir: Path,
    tmp_path: Path,
    paddlex_tiny,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run_dir, data_root = tmp_path / "run", tmp_path / "data"
    paths = [f"run_dir={run_dir}", f"data_root={data_root}", f"model_dir={tiny_model_dir}"]

    done = train(repo_root, *paths)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    # the dataset came from the dataset builder, in PaddleFormers format
    stats = json.loads((data_root / "sft" / "stats.json").read_text(encoding="utf-8"))
    assert stats["format"] == "paddleformers" and stats["records"]["train"] > 40
    record = json.loads((run_dir / "launch" / "run.json").read_text(encoding="utf-8"))
    assert record["status"] == "finished"
    steps = json.loads((run_dir / "checkpoints" / "trainer_state.json").read_text())["global_step"]
    assert steps >= 100

    s = summarize(run_dir)
    assert s.steps == steps
    assert s.last_loss_avg < 0.5 * s.first_loss_avg, (s.first_loss_avg, s.last_loss_avg)
    assert s.first_loss_avg - s.last_loss_avg > 2.0
    assert s.s_per_step is not None and s.s_per_step < 2.0
    saved = checkpoints(run_dir / "checkpoints")
    assert saved and saved[-1].name == "checkpoint-100"
    assert (saved[-1] / "model-00001-of-00001.safetensors").is_file()

    # starting again over existing checkpoints needs --resume
    refused = train(repo_root, *paths)
    assert refused.returncode == 1 and "pass --resume" in refused.stderr + refused.stdout
    resumed = train(repo_root, *paths, "--resume", f"max_steps={steps + 6}")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "Starting training from resume_from_checkpoint" in resumed.stdout
    assert f"global_step: {steps + 6}," in resumed.stdout
    assert "global_step: 100," not in resumed.stdout, "resumed after checkpoint-100"
    assert summarize(run_dir).steps == steps + 6

    out = tmp_path / "model"
    assert (
        export.main(
            [
                "--ckpt",
                str(run_dir / "checkpoints"),
                "--base-model",
                str(tiny_model_dir),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert f"PaddleX loaded {out} and predicted" in printed
    assert (out / "model.safetensors").is_file() and not (
        out / "model.safetensors.index.json"
    ).exists()
    assert (out / "chat_template.jinja").read_text() == (
        tiny_model_dir / "chat_template.jinja"
    ).read_text()
