"""Recipes: variables, overrides, validation, and that every key reaches a real argument."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from training.recipe import RecipeError, load_recipe, parse_override

RECIPES = Path(__file__).resolve().parents[2] / "configs" / "train"


def write(tmp_path: Path, body: dict) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(body, allow_unicode=True), encoding="utf-8")
    return path


def minimal(**config) -> dict:
    base = {
        "stage": "VL-SFT",
        "fine_tuning": "Full",
        "model_name_or_path": "${model_dir}",
        "output_dir": "${run_dir}/checkpoints",
        "train_dataset_path": "${data_dir}/train.jsonl",
    }
    base.update(config)
    return {
        "launcher": "paddleformers",
        "device": "cpu",
        "variables": {"data_dir": "d", "model_dir": "/abs/model", "run_dir": "runs/x"},
        "config": base,
    }


def test_variables_become_absolute_and_substitute(tmp_path: Path) -> None:
    r = load_recipe(write(tmp_path, minimal()), cwd=tmp_path)
    assert r.variables["data_dir"] == str(tmp_path / "d")
    assert r.variables["model_dir"] == "/abs/model"
    assert r.config["train_dataset_path"] == str(tmp_path / "d" / "train.jsonl")
    assert r.output_dir == tmp_path / "runs" / "x" / "checkpoints"
    assert r.run_dir == tmp_path / "runs" / "x"


def test_overrides_hit_variables_header_and_config(tmp_path: Path) -> None:
    r = load_recipe(
        write(tmp_path, minimal()),
        ["data_dir=/data/other", "max_steps=12", "do_eval=false", "gpus=0,1", "min_lr=1e-5"],
        cwd=tmp_path,
    )
    assert r.config["train_dataset_path"] == "/data/other/train.jsonl"
    assert r.config["max_steps"] == 12 and r.config["do_eval"] is False
    assert r.config["min_lr"] == 1e-5 and isinstance(r.config["min_lr"], float)  # YAML 1.2
    assert r.gpus == "0,1" and "gpus" not in r.config
    assert r.overrides == {
        "data_dir": "/data/other",
        "max_steps": 12,
        "do_eval": False,
        "gpus": "0,1",
        "min_lr": 1e-5,
    }


def test_parse_override() -> None:
    assert parse_override("a=1") == ("a", 1)
    assert parse_override("lr=1e-5") == ("lr", 1e-5)  # YAML 1.2: a float, not '1e-5'
    assert parse_override("lr=5E-6") == ("lr", 5e-6)
    assert parse_override("v=1.10") == ("v", 1.1)
    assert parse_override("t=abc") == ("t", "abc")
    assert parse_override("a=x=y") == ("a", "x=y")
    assert parse_override("a=") == ("a", "")
    with pytest.raises(RecipeError, match="key=value"):
        parse_override("nokey")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"config": {"fine_tuning": None}}, "fine_tuning is missing"),
        ({"config": {"stage": "SFT"}}, "stage must be 'VL-SFT'"),
        ({"config": {"template": "qwen2_vl"}}, "template must be paddleocr_vl"),
        ({"config": {"max_steps": "many"}}, "max_steps must be an integer or auto"),
        ({"config": {"train_dataset_path": "${nope}/t.jsonl"}}, "unknown variable"),
        ({"launcher": "erniekit", "config": {"stage": "OCR-VL-SFT"}}, "ERNIEKit needs a GPU"),
        ({"launcher": "deepspeed"}, "launcher must be one of"),
        (
            {"config": {"learning_rat": 1e-5}},
            "'learning_rat' is not an argument.*did you mean 'learning_rate'",
        ),
        ({"config": {"learning_rate": "abc"}}, "learning_rate must be a number, got 'abc'"),
        ({"config": {"fine_tunning": "LoRA"}}, "did you mean 'fine_tuning'"),
        ({"extra": 1}, "unknown top-level keys"),
    ],
)
def test_invalid_recipes_are_refused(tmp_path: Path, change: dict, message: str) -> None:
    body = minimal()
    for key, value in change.items():
        if key == "config":
            for k, v in value.items():
                if v is None:
                    body["config"].pop(k)
                else:
                    body["config"][k] = v
        else:
            body[key] = value
    with pytest.raises(RecipeError, match=message):
        load_recipe(write(tmp_path, body), cwd=tmp_path)


@pytest.mark.parametrize("name", sorted(p.name for p in RECIPES.glob("*.yaml")))
def test_shipped_recipes_load(name: str) -> None:
    r = load_recipe(RECIPES / name)
    assert str(r.config["fine_tuning"]).lower() in {"full", "lora"}
    assert Path(r.config["output_dir"]).is_absolute()


def test_erniekit_recipe_has_the_published_values() -> None:
    c = load_recipe(RECIPES / "erniekit_ocr_vl_sft_16k.yaml").config
    expected = {
        "stage": "OCR-VL-SFT",
        "fine_tuning": "Full",
        "learning_rate": 5.0e-6,
        "lr_scheduler_type": "cosine",
        "min_lr": 5.0e-7,
        "packing": True,
        "packing_size": 8,
        "gradient_accumulation_steps": 8,
        "compute_type": "bf16",
        "recompute": True,
        "save_to_hf": True,
        "max_seq_len": 16384,
    }
    assert {k: c[k] for k in expected} == expected
    assert "eval_dataset_path" not in c  # OCR-VL-SFT ignores it


# Keys of ERNIEKit's published run_ocr_vl_sft_16k.yaml (ERNIE release/v1.4): ERNIEKit's
# parser refuses unknown keys, and it cannot be installed here to ask it.
ERNIEKIT_PUBLISHED_KEYS = set(
    [
        "train_dataset_type",
        "eval_dataset_type",
        "train_dataset_path",
        "train_dataset_prob",
        "eval_dataset_path",
        "eval_dataset_prob",
        "max_seq_len",
        "num_samples_each_epoch",
        "use_pic_id",
        "sft_replace_ids",
        "sft_image_normalize",
        "sft_image_rescale",
        "image_dtype",
        "model_name_or_path",
        "fine_tuning",
        "multimodal",
        "use_flash_attention",
        "use_sparse_flash_attn",
        "stage",
        "seed",
        "do_train",
        "distributed_dataloader",
        "dataloader_num_workers",
        "prefetch_factor",
        "batch_size",
        "packing_size",
        "packing",
        "padding",
        "num_train_epochs",
        "max_steps",
        "save_steps",
        "save_total_limit",
        "save_strategy",
        "logging_steps",
        "release_grads",
        "gradient_accumulation_steps",
        "logging_dir",
        "output_dir",
        "disable_tqdm",
        "warmup_steps",
        "learning_rate",
        "lr_scheduler_type",
        "min_lr",
        "layerwise_lr_decay_bound",
        "from_scratch",
        "weight_decay",
        "adam_epsilon",
        "adam_beta1",
        "adam_beta2",
        "tensor_parallel_degree",
        "pipeline_parallel_degree",
        "sharding_parallel_degree",
        "sharding",
        "sequence_parallel",
        "pipeline_parallel_config",
        "recompute",
        "recompute_granularity",
        "recompute_use_reentrant",
        "compute_type",
        "fp16_opt_level",
        "disable_ckpt_quant",
        "amp_custom_white_list",
        "amp_custom_black_list",
        "unified_checkpoint",
        "convert_from_hf",
        "save_to_hf",
    ]
)


def test_erniekit_recipe_keys_are_the_published_ones() -> None:
    """The published keys, but warmup_ratio for warmup_steps (max_steps is computed)."""
    r = load_recipe(RECIPES / "erniekit_ocr_vl_sft_16k.yaml")
    published = ERNIEKIT_PUBLISHED_KEYS - {"eval_dataset_path", "eval_dataset_prob", "warmup_steps"}
    assert set(r.config) == published | {"warmup_ratio"}


def test_paddleformers_recipes_use_only_paddleformers_arguments() -> None:
    """Every key of the PaddleFormers recipes is an argument of paddleformers 1.2.0's
    train parser (an unknown key makes it refuse the whole config at launch)."""
    from training.pf_compat import install_shims

    install_shims()
    from paddleformers.cli.hparams.parser import _TRAIN_ARGS

    known = {f.name for cls in _TRAIN_ARGS for f in dataclasses.fields(cls)}
    for name in ("paddleformers_lora_16k.yaml", "paddleformers_full_16k.yaml", "cpu_tiny.yaml"):
        r = load_recipe(RECIPES / name)
        assert r.launcher == "paddleformers"
        assert sorted(set(r.config) - known) == [], name


def test_recipe_file_floats_are_yaml_1_2(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(
        yaml.safe_dump(minimal()).replace("stage: VL-SFT", "stage: VL-SFT\n  learning_rate: 1e-5"),
        encoding="utf-8",
    )
    assert load_recipe(path, cwd=tmp_path).config["learning_rate"] == 1e-5


@pytest.mark.parametrize(
    "recipe", ["erniekit_ocr_vl_sft_16k.yaml", "cpu_tiny.yaml", "transformers_cpu_tiny.yaml"]
)
def test_override_typos_and_bad_types_name_the_nearest_key(recipe: str) -> None:
    with pytest.raises(RecipeError) as e:
        load_recipe(RECIPES / recipe, ["learning_rat=1e-5"])
    assert "override 'learning_rat=1e-5'" in str(e.value)
    assert "did you mean 'learning_rate'" in str(e.value)
    with pytest.raises(RecipeError, match="learning_rate must be a number, got 'abc'"):
        load_recipe(RECIPES / recipe, ["learning_rate=abc"])
    r = load_recipe(RECIPES / recipe, ["learning_rate=1e-5"])
    assert r.config["learning_rate"] == 1e-5


def test_erniekit_keys_come_from_the_maintained_list_here() -> None:
    """ERNIEKit is not installed in .venv: its keys are the maintained list's."""
    from training.trainers import get_trainer

    keys, source = get_trainer("erniekit").config_keys()
    assert "maintained list" in source
    assert keys["learning_rate"] == "float" and keys["packing_size"] == "int"
    assert "tensor_parallel_degree" in keys  # ERNIEKit's PaddleFormers 0.3.x name
