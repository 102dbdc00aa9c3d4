"""The PyTorch (transformers) route in `.venv-torch`: its encoding masks the prompt exactly
as PaddleFormers does, the tiny CPU recipe trains (loss falls), and its export predicts in
the `paddlex` and `transformers` backends."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from training import export
from training.summary import summarize

REPO = Path(__file__).resolve().parents[2]
TORCH_PY = REPO / ".venv-torch" / "bin" / "python"
needs_torch = pytest.mark.skipif(not TORCH_PY.exists(), reason="no .venv-torch (make setup-torch)")

ENCODE = """
import json, sys
from pathlib import Path
from transformers import AutoProcessor
from data_tools.sft import read_sft
from training.torch_sft import encode
model_dir, jsonl, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
processor = AutoProcessor.from_pretrained(model_dir)
out = []
for _, ex in list(read_sft(Path(jsonl)))[:n]:
    e = encode(ex, processor)
    out.append([e["input_ids"].tolist(), e["labels"].tolist()])
print("RESULT " + json.dumps(out))
"""

PREDICT = """
import json, sys
from inference.backends import BackendConfig
from inference.extractor import Extractor
from inference.imaging import ImageOptions
model_dir, image = sys.argv[1:3]
ex = Extractor.from_config(
    BackendConfig(backend="transformers", model_dir=model_dir, max_new_tokens=24),
    image_options=ImageOptions(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 64),
)
r = ex.extract(image, ["发票号码"])
print("RESULT " + json.dumps(r.to_dict(), ensure_ascii=False))
"""


def run_torch(code: str, *args: str, timeout: int = 600) -> object:
    r = subprocess.run(
        [str(TORCH_PY), "-c", code, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


@needs_torch
def test_torch_encoding_equals_paddleformers(tiny_model_dir: Path, tiny_sft_dir: Path) -> None:
    """Same prompt tokens (masked) and answer tokens (trained) as PaddleFormers' VL-SFT
    `paddleocr_vl` template, which test_templates holds equal to PaddleX's inference."""
    from data_tools.paddleocr_vl import IMAGE_PLACEHOLDER
    from tests.training.test_templates import collapse_placeholders
    from training.pf_compat import paddleformers_encode, paddleformers_tokenizer

    path = tiny_sft_dir / "val.jsonl"
    torch_pairs = run_torch(ENCODE, str(tiny_model_dir), str(path), "3")
    pf_pairs = paddleformers_encode(tiny_model_dir, path, limit=3)
    placeholder = paddleformers_tokenizer(tiny_model_dir).convert_tokens_to_ids(IMAGE_PLACEHOLDER)
    for (t_ids, t_labels), (p_ids, p_labels) in zip(torch_pairs, pf_pairs, strict=True):
        assert len(t_ids) == len(t_labels)
        first = next(i for i, lab in enumerate(t_labels) if lab != -100)
        # prompt: identical tokens up to the image size (PaddleFormers rescales at random)
        p_first = next(i for i, lab in enumerate(p_labels) if lab != -100) + 1
        assert collapse_placeholders(t_ids[:first], placeholder) == collapse_placeholders(
            p_ids[:p_first], placeholder
        )
        # answer: labels are the tokens themselves (transformers shifts), == PaddleFormers'
        assert t_labels[first:] == t_ids[first:]
        assert t_ids[first:] == [lab for lab in p_labels if lab != -100]
        assert all(lab == -100 for lab in t_labels[:first])


def train(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        str(TORCH_PY),
        "-m",
        "training.train",
        "--config",
        str(REPO / "configs/train/transformers_cpu_tiny.yaml"),
        *args,
    ]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1500)


@needs_torch
@pytest.mark.slow
def test_transformers_cpu_tiny_trains_and_exports(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir, data_root = tmp_path / "run", tmp_path / "data"
    paths = [f"run_dir={run_dir}", f"data_root={data_root}", f"model_dir={tiny_model_dir}"]
    done = train(*paths, "max_steps=40")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    record = json.loads((run_dir / "launch" / "run.json").read_text(encoding="utf-8"))
    assert record["status"] == "finished"
    assert "TENSORBOARD_LOGGING_DIR=" in record["command"]

    s = summarize(run_dir)
    assert s.steps == 40
    assert s.last_loss_avg < 0.75 * s.first_loss_avg, (s.first_loss_avg, s.last_loss_avg)
    assert s.s_per_step is not None and s.tokens_per_s is not None
    assert any("memory" in tag for tag in s.memory)

    out = tmp_path / "model"
    rc = export.main(
        [
            "--ckpt",
            str(run_dir / "checkpoints"),
            "--base-model",
            str(tiny_model_dir),
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    assert f"PaddleX loaded {out} and predicted" in capsys.readouterr().out
    manifest = json.loads((out / "export.json").read_text(encoding="utf-8"))
    assert manifest["kind"] == "full"
    # the tensors transformers does not save come from the base model
    assert any(".head." in k for k in manifest["filled_from_base"])

    image = sorted((data_root / "images").glob("*.jpg"))[0]
    d = run_torch(PREDICT, str(out), str(image))
    assert d["backend"] == "transformers"
    assert d["prompt"] == 'OCR:{"发票号码":""}'
    assert d["raw_output"].startswith("{"), d["raw_output"]  # it learned to open the JSON


def test_dry_run_of_the_torch_recipe_needs_no_torch(tmp_path: Path, capsys) -> None:
    """In .venv (no torch) the dry run still checks keys and prints the command."""
    from training import train as train_cli

    rc = train_cli.main(
        [
            "--config",
            str(REPO / "configs/train/transformers_full_16k.yaml"),
            "--dry-run",
            f"run_dir={tmp_path}",
            "learning_rate=1e-5",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "learning_rate: 1.0e-05" in out
    assert "-m training.torch_sft" in out
    assert "logging_dir:" not in out.split("== transformers config")[1].split("== command")[0]
    rc = train_cli.main(
        [
            "--config",
            str(REPO / "configs/train/transformers_full_16k.yaml"),
            "--dry-run",
            "learning_rat=1e-5",
        ]
    )
    assert rc == 2
    assert "did you mean 'learning_rate'" in capsys.readouterr().err


@needs_torch
@pytest.mark.slow
def test_lora_trains_the_language_model_only_and_saves_merged_weights(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """fine_tuning=LoRA (peft): only the language model's projections change, and the run
    saves full weights under the hub's names (merged, no lora_* tensors) that export reads."""
    run_dir = tmp_path / "run"
    done = train(
        f"run_dir={run_dir}",
        f"data_root={tmp_path / 'data'}",
        f"model_dir={tiny_model_dir}",
        "fine_tuning=LoRA",
        "lora_rank=4",
        "learning_rate=1e-2",
        "max_steps=3",
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "saved the merged LoRA model" in done.stdout + done.stderr
    trained = export.read_safetensors(run_dir / "checkpoints" / "model.safetensors")
    base = export.load_weights(export.weight_files(tiny_model_dir, "model"))
    assert not [k for k in trained if "lora" in k]
    assert set(trained) <= set(base)
    changed = sorted(k for k in trained if trained[k].data != base[k].data)
    projections = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    assert changed and all(
        k.startswith("model.layers.") and k.split(".")[-2] in projections for k in changed
    ), changed
    assert export.export(run_dir / "checkpoints", tiny_model_dir, tmp_path / "model")["kind"] == (
        "full"
    )
