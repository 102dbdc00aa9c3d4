"""benchmarks/gpu_throughput.py --tiny --device cpu: the GPU benchmark's code, on the tiny
model, one JSON line per measurement."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TORCH_PY = REPO / ".venv-torch" / "bin" / "python"


@pytest.mark.slow
@pytest.mark.skipif(not TORCH_PY.exists(), reason="no .venv-torch (make setup-torch)")
def test_tiny_cpu_run_measures_extraction_and_sft(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    r = subprocess.run(
        [
            str(TORCH_PY),
            str(REPO / "benchmarks" / "gpu_throughput.py"),
            "--tiny",
            "--device",
            "cpu",
            "--batches",
            "1,2",
            "--new-tokens",
            "4",
            "--sft-steps",
            "1",
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    printed = [json.loads(ln) for ln in r.stdout.splitlines() if ln.startswith('{"model"')]
    saved = [json.loads(ln) for ln in out.read_text(encoding="utf-8").splitlines()]
    assert printed == saved
    extract = [d for d in saved if d["measure"] == "extract"]
    assert [d["batch"] for d in extract] == [1, 2]
    for d in extract:
        assert "error" not in d, d
        assert d["generated_per_image"] == 4  # a fixed output length
        assert d["images_per_s"] > 0 and d["generated_tokens_per_s"] > 0
        assert 0 < d["visual_tokens_per_image"] <= 64  # the tiny model's pixel bound
        assert d["image"] in {"synthetic invoice 2104x1560", "blank page 2104x1560"}
    (sft,) = [d for d in saved if d["measure"] == "sft_step"]
    assert "error" not in sft, sft
    assert (
        sft["tokens_per_step"]
        == sft["batch"] * sft["tokens_per_sample"]
        <= 512 + sft["tokens_per_sample"]
    )
    assert sft["s_per_step"] > 0 and sft["tokens_per_s"] > 0 and sft["steps_timed"] == 1


def test_refuses_cuda_without_a_gpu() -> None:
    if not TORCH_PY.exists():
        pytest.skip("no .venv-torch")
    r = subprocess.run(
        [str(TORCH_PY), "-c", "import torch; print(torch.cuda.is_available())"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if r.stdout.strip() == "True":
        pytest.skip("this machine has a GPU")
    r = subprocess.run(
        [str(TORCH_PY), str(REPO / "benchmarks" / "gpu_throughput.py"), "--device", "cuda"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2 and "no CUDA device" in r.stderr
