"""End to end: `paddleocr doc_parser` with a custom prompt on the tiny model.

With the patch (on a copy of paddlex put first on PYTHONPATH) the prompt reaches the
model exactly; with the installed, unpatched paddlex it is refused. A probe
(`prompt_probe/sitecustomize.py`) records what the PaddleOCR-VL processor hands to the model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = Path(__file__).parent / "prompt_probe"
PROMPT = 'OCR:{"发票号码":""}'


def _doc_parser(
    image: Path, model_dir: Path, log: Path, pythonpath: list[Path]
) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-c",
        "import sys; from paddleocr.__main__ import console_entry; sys.argv[0] = 'paddleocr'; "
        "console_entry()",
        "doc_parser",
        "-i", str(image),
        "--pipeline_version", "v1",
        "--vl_rec_model_name", "PaddleOCR-VL-0.9B",
        "--vl_rec_model_dir", str(model_dir),
        "--use_layout_detection", "False",
        "--use_doc_orientation_classify", "False",
        "--use_doc_unwarping", "False",
        "--prompt_label", PROMPT,
        "--max_new_tokens", "8",
        "--device", "cpu",
    ]  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(str(p) for p in pythonpath),
        "PROMPT_PROBE_LOG": str(log),
        "PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK": "True",
    }
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def _probe_rows(log: Path) -> list[dict]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]


@pytest.mark.slow
def test_custom_prompt_reaches_the_model_with_the_patch(
    patched_paddlex: Path, tiny_model_dir: Path, test_images: list[Path], tmp_path: Path
) -> None:
    log = tmp_path / "probe.jsonl"
    r = _doc_parser(test_images[0], tiny_model_dir, log, [PROBE, patched_paddlex])
    assert r.returncode == 0, r.stderr[-3000:]
    rows = _probe_rows(log)
    assert len(rows) == 1, rows
    assert rows[0]["query"] == PROMPT  # not "OCR:", not lower-cased
    assert rows[0]["template"].endswith(f"<|IMAGE_END|>{PROMPT}\nAssistant: ")
    assert rows[0]["decoded"].endswith(f"<|IMAGE_END|>{PROMPT}\nAssistant: ")
    # PaddleX's own result carries the prompt as the block label (case kept)
    assert f"'block_label': '{PROMPT}'" in r.stdout + r.stderr


@pytest.mark.slow
def test_custom_prompt_is_refused_without_the_patch(
    tiny_model_dir: Path, test_images: list[Path], tmp_path: Path
) -> None:
    log = tmp_path / "probe.jsonl"
    r = _doc_parser(test_images[0], tiny_model_dir, log, [PROBE])
    assert r.returncode != 0
    assert "prompt_label" in r.stderr and "AssertionError" in r.stderr
    assert _probe_rows(log) == []  # nothing reached the model
