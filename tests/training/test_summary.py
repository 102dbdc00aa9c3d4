"""training.summary: loss curve and throughput from TensorBoard logs, text/JSON/PNG."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training import summary


def write_events(log_dir: Path, losses: list[float], logging_steps: int = 1) -> None:
    from training.pf_compat import ScalarSummaryWriter  # what the CPU route logs with

    writer = ScalarSummaryWriter(log_dir=str(log_dir))
    for i, loss in enumerate(losses, 1):
        step = i * logging_steps
        writer.add_scalar("train/loss", loss, step)
        writer.add_scalar("train/learning_rate", 1e-3 / i, step)
        writer.add_scalar("train/interval_runtime", 0.5 * logging_steps, step)
        writer.add_scalar("train/interval_tokens_per_second_per_device", 1000.0, step)
        writer.add_scalar("train/cpu_used_memory", 1.0 + i / 100, step)
    writer.close()


def test_summary_json_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    losses = [5.0 - 0.1 * i for i in range(20)]
    write_events(tmp_path / "tensorboard", losses, logging_steps=2)
    assert summary.main([str(tmp_path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["steps"] == 40
    assert data["first_loss"] == pytest.approx(5.0)
    assert data["last_loss"] == pytest.approx(3.1)
    assert data["first_loss_avg"] == pytest.approx(4.95)  # mean of the first 2 of 20
    assert data["s_per_step"] == pytest.approx(0.5)  # 1.0 s per interval of 2 steps
    assert data["tokens_per_s"] == pytest.approx(1000.0)
    assert data["memory"]["train/cpu_used_memory"] == pytest.approx(1.2)
    png = Path(data["png"])
    assert png == tmp_path / "summary" / "loss.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_summary_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_events(tmp_path / "tb", [3.0, 2.0, 1.0])
    assert summary.main([str(tmp_path), "--png", str(tmp_path / "p.png")]) == 0
    out = capsys.readouterr().out
    assert "steps:       3" in out
    assert "first 3.0000  last 1.0000" in out
    assert "loss curve:  1:3.000  2:2.000  3:1.000" in out
    assert (tmp_path / "p.png").is_file()


def test_resumed_run_keeps_the_latest_value_per_step(tmp_path: Path) -> None:
    write_events(tmp_path / "tb" / "a", [4.0, 3.0, 2.0])
    import os
    import time

    time.sleep(0.01)
    write_events(tmp_path / "tb" / "b", [9.0, 1.5])  # steps 1-2 again, written later
    for f in (tmp_path / "tb" / "b").iterdir():
        os.utime(f, (time.time() + 5, time.time() + 5))
    s = summary.summarize(tmp_path)
    assert s.loss_curve == [(1, 9.0), (2, 1.5), (3, 2.0)]


def test_no_logs_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert summary.main([str(tmp_path)]) == 1
    assert "report_to: tensorboard" in capsys.readouterr().err
