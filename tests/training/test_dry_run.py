"""Dry runs: the generated tool config is exactly the recipe plus overrides; the command is right."""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

import pytest
import yaml

from training import train
from training.launch import plan_launch
from training.preflight import run_preflight
from training.recipe import load_recipe

RECIPES = Path(__file__).resolve().parents[2] / "configs" / "train"
ERNIEKIT = RECIPES / "erniekit_ocr_vl_sft_16k.yaml"


def expected_config(recipe_path: Path, variables: dict[str, str], overrides: dict) -> dict:
    """The recipe's config with ${var} replaced by hand and the overrides applied."""
    raw = yaml.safe_load(recipe_path.read_text(encoding="utf-8"))
    text = yaml.safe_dump(raw["config"], allow_unicode=True, sort_keys=False)
    for name, value in variables.items():
        text = text.replace("${" + name + "}", value)
    assert "${" not in text
    config = yaml.safe_load(text)
    config.update(overrides)
    return config


def sections(out: str) -> dict[str, str]:
    parts = re.split(r"^== (.+)$", out, flags=re.M)
    return {parts[i].split(" ")[0]: parts[i + 1] for i in range(1, len(parts), 2)}


def test_erniekit_dry_run_config_and_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, model, run = tmp_path / "data", tmp_path / "model", tmp_path / "run"
    overrides = ["learning_rate=1.0e-5", "max_steps=926", "save_total_limit=2", "warmup_ratio=0.01"]
    rc = train.main(
        [
            "--config",
            str(ERNIEKIT),
            "--dry-run",
            f"data_dir={data}",
            f"model_dir={model}",
            f"run_dir={run}",
            "gpus=0,1",
            "master_port=8123",
            *overrides,
        ]
    )
    assert rc == 0, "paths that do not exist yet still dry-run"
    out = capsys.readouterr().out
    parts = sections(out)

    generated = yaml.safe_load(parts["erniekit"].split("\n", 1)[1])
    want = expected_config(
        ERNIEKIT,
        {"data_dir": str(data), "model_dir": str(model), "run_dir": str(run)},
        {"learning_rate": 1.0e-5, "max_steps": 926, "save_total_limit": 2, "warmup_ratio": 0.01},
    )
    assert generated == want
    assert list(generated) == list(want), "recipe key order is kept"
    assert generated["fine_tuning"] == "Full"
    assert generated["train_dataset_path"] == f"{data}/train.jsonl"

    command = parts["command"].strip().splitlines()
    assert command[0] == f"cd {run}"
    assert shlex.split(command[1]) == [
        "CUDA_VISIBLE_DEVICES=0,1",
        "MASTER_PORT=8123",
        "erniekit",
        "train",
        f"{run}/launch/erniekit_config.yaml",
    ]
    # preflight findings are printed but do not fail a dry run
    assert "[ERROR  ] dataset:" in parts["preflight"]
    assert "[ERROR  ] model:" in parts["preflight"]
    assert not (run / "launch").exists(), "a dry run writes nothing"


def test_erniekit_auto_max_steps_from_data(tmp_path: Path) -> None:
    """max_steps=auto → samples x epochs / (GPUs x batch x accum x packing), rounded up."""
    img = tmp_path / "a.png"
    img.write_bytes(b"png")
    data = tmp_path / "data"
    data.mkdir()
    record = {
        "image_info": [{"matched_text_index": 0, "image_url": str(img)}],
        "text_info": [{"text": "OCR:{}", "tag": "mask"}, {"text": "{}", "tag": "no_mask"}],
    }
    line = json.dumps(record) + "\n"
    (data / "train.jsonl").write_text(line * 1000, encoding="utf-8")
    r = load_recipe(ERNIEKIT, [f"data_dir={data}", f"run_dir={tmp_path / 'run'}", "gpus=0,1"])
    result = run_preflight(r, gpus=[])
    assert result.samples == 1000
    assert result.max_steps == 16  # ceil(1000 * 2 epochs / (2 GPUs * 1 * 8 accum * 8 packing))
    plan = plan_launch(r, max_steps=result.max_steps)
    assert plan.tool_config["max_steps"] == 16
    assert r.config["max_steps"] == "auto", "the recipe itself is not changed"


def test_invalid_recipe_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = train.main(["--config", str(ERNIEKIT), "--dry-run", "stage=SFT"])
    assert rc == 2
    assert "stage must be 'OCR-VL-SFT'" in capsys.readouterr().err


def test_real_run_refuses_on_preflight_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = train.main(["--config", str(ERNIEKIT), f"run_dir={tmp_path}", f"data_dir={tmp_path}"])
    assert rc == 1
    assert "nothing was started" in capsys.readouterr().err
    assert not (tmp_path / "launch").exists()


def test_cpu_route_command_runs_paddleformers_in_process(tmp_path: Path) -> None:
    r = load_recipe(RECIPES / "cpu_tiny.yaml", [f"run_dir={tmp_path}"])
    plan = plan_launch(r, max_steps=10)
    assert plan.command == [
        sys.executable,
        "-m",
        "training.pf_compat",
        "train",
        str(tmp_path / "launch" / "paddleformers_config.yaml"),
    ]
    assert plan.env == {"CUDA_VISIBLE_DEVICES": ""}
    assert plan.tool_config["max_steps"] == 10
    assert plan.tool_config["compute_type"] == "float32"


def test_paddleformers_gpu_route_command(tmp_path: Path) -> None:
    r = load_recipe(
        RECIPES / "paddleformers_lora_16k.yaml", [f"run_dir={tmp_path}", "master_port=9000"]
    )
    plan = plan_launch(r)
    assert Path(plan.command[0]).name == "paddleformers-cli" and plan.command[1] == "train"
    assert plan.env == {"CUDA_VISIBLE_DEVICES": "0", "MASTER_PORT": "9000"}
    assert plan.tool_config["fine_tuning"] == "LoRA"
    assert plan.tool_config["max_steps"] == -1
