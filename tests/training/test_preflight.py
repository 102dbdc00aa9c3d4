"""Preflight: each check catches its problem and says what to do."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from training.preflight import (
    check_dataset_file,
    check_device,
    check_output,
    check_port,
    check_steps,
    estimate_checkpoint_bytes,
    run_preflight,
    safetensors_params,
)
from training.recipe import load_recipe

RECIPES = Path(__file__).resolve().parents[2] / "configs" / "train"
A100 = [{"index": "0", "name": "NVIDIA A100-SXM4-80GB", "memory_mib": 81920.0, "capability": 8.0}]
V100 = [{"index": "0", "name": "Tesla V100-SXM2-32GB", "memory_mib": 32768.0, "capability": 7.0}]


def ernie_rec(image: str, tags=("mask", "no_mask")) -> dict:
    texts = [{"text": "OCR:{}" if t == "mask" else "{}", "tag": t} for t in tags]
    return {"image_info": [{"matched_text_index": 0, "image_url": image}], "text_info": texts}


def pf_rec(image: str, content: str = "<image>OCR:{}") -> dict:
    return {
        "messages": [{"role": "user", "content": content}, {"role": "assistant", "content": "{}"}],
        "images": [image],
    }


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    return path


@pytest.fixture
def image(tmp_path: Path) -> str:
    p = tmp_path / "img.png"
    p.write_bytes(b"\x89PNG")
    return str(p)


def test_erniekit_contract(tmp_path: Path, image: str) -> None:
    rows = [
        ernie_rec(image),
        ernie_rec(image, tags=("mask", "mask")),
        ernie_rec("rel/img.png"),
        ernie_rec(str(tmp_path / "missing.png")),
        pf_rec(image),
        ernie_rec(image, tags=("no_mask", "mask")),
    ]
    n, problems = check_dataset_file(write_jsonl(tmp_path / "t.jsonl", rows), "erniekit")
    assert n == 1
    text = "\n".join(problems)
    assert ":2: tags ['mask', 'mask'] must alternate" in text
    assert ":3: image_info[0]: image path 'rel/img.png' is relative" in text
    assert ":4: image_info[0]: image " in text and "missing.png does not exist" in text
    assert (
        ":5: this is a PaddleFormers (messages/images) record" in text
        and "--format erniekit" in text
    )
    assert ":6: tags ['no_mask', 'mask']" in text


def test_paddleformers_contract(tmp_path: Path, image: str) -> None:
    bad_roles = pf_rec(image)
    bad_roles["messages"].reverse()
    rows = [pf_rec(image), pf_rec(image, content="OCR:{}"), bad_roles, ernie_rec(image), "x"]
    path = write_jsonl(tmp_path / "t.jsonl", rows)
    with path.open("a") as f:
        f.write("{not json\n")
    n, problems = check_dataset_file(path, "paddleformers")
    assert n == 1
    text = "\n".join(problems)
    assert ":2: 0 <image> tag(s) in user messages but 1 image(s)" in text
    assert ":3: roles ['assistant', 'user'] must alternate" in text
    assert ":4: this is an ERNIEKit" in text
    assert ":5: a record must be a JSON object" in text
    assert ":6: not JSON" in text


def test_steps_formula_and_comparison(tmp_path: Path) -> None:
    r = load_recipe(RECIPES / "erniekit_ocr_vl_sft_16k.yaml", ["max_steps=926"])
    findings, computed, _ = check_steps(r, 3000)
    assert computed == 94  # ceil(3000 * 2 / (1 * 1 * 8 * 8)): no examples, packing_size assumed
    assert findings[0].level == "warning" and "max_steps=auto" in findings[0].message
    findings, _, _ = check_steps(
        load_recipe(RECIPES / "erniekit_ocr_vl_sft_16k.yaml", ["max_steps=94"]), 3000
    )
    assert findings[0].level == "ok"
    pf = load_recipe(RECIPES / "paddleformers_lora_16k.yaml")  # max_steps -1: the tool decides
    findings, computed, _ = check_steps(pf, 6400)
    assert computed == 200  # ceil(6400 * 2 / (1 * 8 * 8))
    assert findings[0].level == "info"


def test_device_checks() -> None:
    r = load_recipe(RECIPES / "erniekit_ocr_vl_sft_16k.yaml")
    assert [f.level for f in check_device(r, A100)] == ["ok"]
    errors = [f for f in check_device(r, V100) if f.level == "error"]
    assert errors and "bf16 needs >= 8.0" in errors[0].message
    warnings = [f for f in check_device(r, V100) if f.level == "warning"]
    assert warnings and "80 GB" in warnings[0].message
    assert "no GPU with index 3" in check_device(load_recipe(r.path, ["gpus=0,3"]), A100)[0].message
    assert "no NVIDIA GPU" in check_device(r, [])[0].message
    cpu = load_recipe(RECIPES / "cpu_tiny.yaml", ["compute_type=bf16"])
    assert check_device(cpu) == []  # the PaddleFormers trainer checks its CPU settings
    assert any("compute_type: float32" in f.message for f in cpu.trainer.preflight(cpu, "py"))


def test_port_in_use_is_an_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = load_recipe(RECIPES / "erniekit_ocr_vl_sft_16k.yaml", [f"master_port={port}"])
        finding = check_port(r)[0]
    assert finding.level == "error" and f"master_port {port} is in use" in finding.message


def test_existing_checkpoints_need_resume(tmp_path: Path) -> None:
    r = load_recipe(RECIPES / "cpu_tiny.yaml", [f"run_dir={tmp_path}"])
    assert check_output(r, resume=False)[0].level == "ok"
    assert "no checkpoint-N" in check_output(r, resume=True)[0].message
    (r.output_dir / "checkpoint-5").mkdir(parents=True)
    (r.output_dir / "checkpoint-12").mkdir()
    refused = check_output(r, resume=False)[0]
    assert (
        refused.level == "error"
        and "checkpoint-12" in refused.message
        and "--resume" in refused.message
    )
    assert check_output(r, resume=True)[0].message.endswith("checkpoint-12")


def test_disk_estimate(tiny_model_dir: Path) -> None:
    params = safetensors_params(tiny_model_dir)
    assert 1_000_000 < params < 2_000_000
    full = load_recipe(RECIPES / "erniekit_ocr_vl_sft_16k.yaml")
    # bf16 weights + fp32 master + Adam (14 B/param) x 5 kept saves + final bf16 weights
    assert estimate_checkpoint_bytes(full, 10**9, 2000) == 10**9 * (14 * 5 + 2)
    lora = load_recipe(RECIPES / "paddleformers_lora_16k.yaml", ["max_steps=800"])
    assert estimate_checkpoint_bytes(lora, 10**9, None) == 10**9 * (2 * 2 + 2)


def test_full_preflight_on_the_tiny_setup(
    tiny_model_dir: Path, tiny_sft_dir: Path, tmp_path: Path
) -> None:
    r = load_recipe(
        RECIPES / "cpu_tiny.yaml",
        [f"model_dir={tiny_model_dir}", f"data_root={tiny_sft_dir.parent}", f"run_dir={tmp_path}"],
    )
    result = run_preflight(r)
    assert result.ok, [str(f) for f in result.errors]
    assert result.samples and result.max_steps
    checks = {f.check for f in result.findings}
    assert {"dataset", "model", "device", "max_steps", "disk", "port", "output"} <= checks


def test_greedy_packing_formula() -> None:
    from training.preflight import greedy_packs

    # 16k tokens, up to 8 per pack: 3,600-token pages fit 4 at a time
    assert greedy_packs([3600] * 10, 16384, 8) == (3, 0)  # 4 + 4 + 2
    # short line crops: packing_size is the limit
    assert greedy_packs([500] * 20, 16384, 8) == (3, 0)  # 8 + 8 + 4
    # a sample over max_seq_len is counted and packed alone
    assert greedy_packs([100, 20000, 100], 16384, 8) == (3, 1)
    assert greedy_packs([], 16384, 8) == (0, 0)


@pytest.fixture(scope="module")
def full_page_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 ERNIEKit records of synthetic full-page invoices at 2104x1560 (blank pages: only
    the size matters to the token count)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("full_pages")
    rows = []
    answer = json.dumps(
        {"发票号码": "12345678", "购买方": {"名称": "北京某某科技有限公司"}}, ensure_ascii=False
    )
    for i in range(40):
        img = root / f"page{i}.png"
        Image.new("RGB", (2104, 1560), "white").save(img)
        rows.append(
            {
                "image_info": [{"matched_text_index": 0, "image_url": str(img)}],
                "text_info": [
                    {"text": 'OCR:{"发票号码":"","购买方":{"名称":""}}', "tag": "mask"},
                    {"text": answer, "tag": "no_mask"},
                ],
            }
        )
    write_jsonl(root / "train.jsonl", rows)
    return root


def test_full_page_invoices_get_real_packs_and_steps(
    full_page_dataset: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """The 16k ERNIEKit recipe on 2104x1560 pages: 3,519 visual tokens each, so 4 fit in a
    pack, not 8; max_steps covers the 2 epochs asked for."""
    r = load_recipe(
        RECIPES / "erniekit_ocr_vl_sft_16k.yaml",
        [
            f"data_dir={full_page_dataset}",
            f"model_dir={tmp_path / 'no_model'}",
            f"run_dir={tmp_path}",
        ],
    )
    result = run_preflight(r, gpus=A100)
    stats = result.packs
    assert stats is not None and stats.samples == 40
    # default pixel bounds (no model dir): 3,519 visual tokens + prompt/answer text
    assert 3519 + 20 < stats.mean_tokens < 3519 + 200
    assert stats.packs == 10 and stats.samples_per_pack == 4.0  # 4 x ~3.6k <= 16384 < 5 x
    # 40 samples x 2 epochs / (1 GPU x batch 1 x accum 8 x 4 per pack) = 2.5 -> 3 steps
    assert result.max_steps == 3
    by_check = {f.check: f for f in result.findings}
    assert by_check["packing"].level == "warning"
    assert "4.00 samples per pack (packing_size 8)" in by_check["packing"].message
    assert "1.25 steps per epoch" in by_check["steps"].message  # 40 / 32: a stream
    assert "max_steps=auto -> 3" in by_check["max_steps"].message
    # each step sees 8 packs of 4 samples: 2 epochs need 80 samples / 32 = 2.5 steps
    assert result.max_steps * 8 * stats.samples_per_pack >= 40 * 2


def test_token_count_uses_the_models_tokenizer_and_pixel_bounds(
    tiny_model_dir: Path, tiny_sft_dir: Path, tmp_path: Path
) -> None:
    from data_tools.sft import read_sft
    from training.preflight import TokenCounter

    counter = TokenCounter(tiny_model_dir)
    assert "tokenizer.json" in counter.source
    examples = [ex for _, ex in read_sft(tiny_sft_dir / "train.jsonl")][:3]
    counts = counter.count(examples)
    pre = json.loads((tiny_model_dir / "preprocessor_config.json").read_text())
    from PIL import Image

    from data_tools.paddleocr_vl import visual_tokens

    for ex, n in zip(examples, counts, strict=True):
        w, h = Image.open(ex.image).size
        vis = visual_tokens(h, w, min_pixels=pre["min_pixels"], max_pixels=pre["max_pixels"])
        assert vis <= 64  # the tiny model's bound
        assert n > vis + len(ex.turns[0][1]) // 4  # the answer's tokens are counted


def test_executable_is_found_beside_train_py(tmp_path: Path, monkeypatch) -> None:
    from training.trainers import find_executable, get_trainer

    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    python = bin_dir / "python"
    python.write_text("")
    exe = bin_dir / "erniekit"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert find_executable("erniekit", str(python)) == str(exe)
    r = load_recipe(RECIPES / "erniekit_ocr_vl_sft_16k.yaml", [f"run_dir={tmp_path}"])
    ek = get_trainer("erniekit")
    assert not [f for f in ek.preflight(r, str(python)) if f.check == "tools"]
    cmd, _ = ek.command(r, tmp_path / "c.yaml", str(python))
    assert cmd[0] == str(exe)
    exe.unlink()
    tools = [f for f in ek.preflight(r, str(python)) if f.check == "tools"]
    assert tools and "make setup-train-erniekit" in tools[0].message


def test_transformers_steps_round_each_epoch_up() -> None:
    """transformers' Trainer keeps each epoch's short last batch: 57 samples at 2 a step
    are 29 steps an epoch, 174 for 6 epochs (171 would stop 0.1 epoch short)."""
    r = load_recipe(RECIPES / "transformers_cpu_tiny.yaml")
    findings, computed, _ = check_steps(r, 57)
    assert computed == 174
    assert "6 epochs x 29 steps each" in findings[-1].message
    # the Paddle tools read one stream: the epochs are consecutive (ceil(57 * 6 / 2))
    assert load_recipe(RECIPES / "cpu_tiny.yaml").trainer.total_steps(57, 6, 2) == 171
