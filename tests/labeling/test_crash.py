"""Crash safety: the labeler SIGKILLed at random moments, then rerun to completion."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.labeling.conftest import CONFIG, REPO
from tests.support.openai_stub import FaultPlan, OpenAIStub


def _count_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def test_sigkill_many_times_then_resume(invoice_set, tmp_path: Path) -> None:
    inv = invoice_set(90)
    out = tmp_path / "out"
    rng = random.Random(1234)
    # some faults too, so kills also land during retries and backoff
    plan = FaultPlan(rate=0.1, kinds=("429", "500"), seed=3)
    with OpenAIStub(inv.responder, latency_s=0.05, faults=plan) as stub:
        cmd = [
            sys.executable, "-m", "data_tools.label", "--config", str(CONFIG),
            f"images={inv.folder}", f"out_dir={out}", f"client.base_urls=[{stub.base_url}]",
            "concurrency=4", "client.backoff_base_s=0.02", "--no-progress", "--log-level=WARNING",
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        kills, runs = 0, 0
        while kills < 6 and runs < 40:
            runs += 1
            before = _count_lines(out / "labels.jsonl")
            proc = subprocess.Popen(cmd, cwd=REPO, env=env)
            # wait until this run has written something, then kill at a random moment
            deadline = time.monotonic() + 30
            while _count_lines(out / "labels.jsonl") == before and proc.poll() is None:
                assert time.monotonic() < deadline, "the labeler made no progress"
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.4))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.wait(30)
            if proc.returncode == 0:
                break  # finished before we could kill it
        assert kills >= 5, f"only {kills} kills landed in {runs} runs"
        final = subprocess.run(cmd, cwd=REPO, env=env, timeout=120, capture_output=True, text=True)
        assert final.returncode == 0, final.stderr[-2000:]

    raw = (out / "labels.jsonl").read_text(encoding="utf-8")
    assert raw.endswith("\n")
    rows = [json.loads(line) for line in raw.splitlines()]  # no corrupt line
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)) == 90  # exactly one record per image
    assert set(ids) == set(inv.truth)
    for r in rows:
        assert r["fields"] == inv.truth[r["id"]]
    assert _count_lines(out / "failures.jsonl") == 0
