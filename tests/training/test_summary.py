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


def test_erniekit_tag_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """ERNIEKit's own tags (its log line: loss ... max_mem_allocated_gb, global_runtime,
    tokens_per_sec_per_card): s/step, tokens/s and memory all come out."""
    from training.pf_compat import ScalarSummaryWriter

    writer = ScalarSummaryWriter(log_dir=str(tmp_path / "tensorboard"))
    for step in range(1, 11):
        writer.add_scalar("mm_train/loss", 3.0 - 0.2 * step, step)
        writer.add_scalar("train/learning_rate", 5e-6, step)
        writer.add_scalar("train/global_runtime", 2.5, step)
        writer.add_scalar("train/global_steps_per_second", 0.4, step)
        writer.add_scalar("train/tokens_per_sec_per_card", 4980.7, step)
        writer.add_scalar("train/max_mem_allocated_gb", 19.0 + step / 10, step)
        writer.add_scalar("train/mem_reserved_gb", 33.9, step)
    writer.close()
    s = summary.summarize(tmp_path)
    assert s.steps == 10 and s.first_loss == pytest.approx(2.8)
    assert s.s_per_step == pytest.approx(2.5)
    assert s.tokens_per_s == pytest.approx(4980.7)
    assert s.memory == {
        "train/max_mem_allocated_gb": pytest.approx(20.0),
        "train/mem_reserved_gb": pytest.approx(33.9),
    }
    assert s.tags["loss"] == "mm_train/loss" and s.missing == []
    assert summary.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "s/step:      2.5000" in out and "tokens/s:    4981 per device" in out
    assert "max_mem_allocated_gb max 20.00" in out


def test_missing_quantities_are_said(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from training.pf_compat import ScalarSummaryWriter

    writer = ScalarSummaryWriter(log_dir=str(tmp_path / "tb"))
    for step in range(1, 4):
        writer.add_scalar("train/loss", 2.0 / step, step)
    writer.close()
    s = summary.summarize(tmp_path)
    assert s.missing == ["s_per_step", "tokens_per_s", "memory", "learning_rate"]
    assert summary.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "s/step:      (not logged)" in out and "memory:      (not logged)" in out
    assert "not logged:  s_per_step, tokens_per_s, memory, learning_rate" in out
