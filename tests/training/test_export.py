"""Export: shards merged into one model.safetensors, LoRA merged, deploy files complete."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors.numpy import load_file

from training import export as ex
from training.export import (
    ExportError,
    RawTensor,
    export,
    merge_lora,
    read_safetensors,
    write_safetensors,
)


def test_bf16_round_trip_rounds_to_nearest_even() -> None:
    x = np.array([1.0, -2.5, 3.140625, 1.00390625, 1.01171875], dtype=np.float32)
    back = RawTensor.from_float32(x, "BF16").to_float32()
    # 1 + 2^-8 is halfway between bf16 neighbours 1 and 1 + 2^-7: ties go to even (1.0)
    assert back.tolist() == [1.0, -2.5, 3.140625, 1.0, 1.015625]


def test_safetensors_round_trip(tmp_path: Path) -> None:
    tensors = {
        "b": RawTensor.from_float32(np.arange(6, dtype=np.float32).reshape(2, 3), "F32"),
        "a": RawTensor.from_float32(np.ones(3, dtype=np.float32), "BF16"),
    }
    path = tmp_path / "x.safetensors"
    write_safetensors(path, tensors, {"format": "pt"})
    back = read_safetensors(path)
    assert back["b"].shape == (2, 3) and back["a"].dtype == "BF16"
    assert back["a"].to_float32().tolist() == [1.0, 1.0, 1.0]
    f32 = tmp_path / "f32.safetensors"
    write_safetensors(f32, {"b": tensors["b"]}, {"format": "pt"})  # readable by safetensors itself
    assert np.array_equal(load_file(str(f32))["b"], np.arange(6, dtype=np.float32).reshape(2, 3))


def test_lora_merge_matches_the_lora_forward() -> None:
    """PaddleFormers' LoRALinear: y = x @ W_paddle + (x @ A @ B) * scaling, W_paddle = W_torch^T."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(6, 4)).astype(np.float32)  # torch layout [out, in]
    a = rng.normal(size=(4, 2)).astype(np.float32)  # [in, r]
    b = rng.normal(size=(2, 6)).astype(np.float32)  # [r, out]
    base = {"l.weight": RawTensor.from_float32(w, "F32"), "other": RawTensor.from_float32(w, "F32")}
    adapter = {
        "l.lora_A": RawTensor.from_float32(a, "F32"),
        "l.lora_B": RawTensor.from_float32(b, "F32"),
    }
    merged, done = merge_lora(base, adapter, scaling=2.0)
    assert done == ["l.weight"]
    x = rng.normal(size=(3, 4)).astype(np.float32)
    lora_forward = x @ w.T + (x @ a @ b) * 2.0
    np.testing.assert_allclose(
        x @ merged["l.weight"].to_float32().T, lora_forward, rtol=1e-5, atol=1e-5
    )
    assert merged["other"] is base["other"]
    assert ex.lora_scaling({"r": 8, "lora_alpha": 16}) == 2.0
    assert ex.lora_scaling({"r": 16, "lora_alpha": 16, "rslora": True}) == 4.0


def sharded_checkpoint(base_dir: Path, ckpt: Path) -> dict[str, np.ndarray]:
    """A PaddleFormers-like output: 2 shards + index, no SigLIP head, one tensor changed."""
    weights = load_file(str(base_dir / "model.safetensors"))
    weights = {k: v for k, v in weights.items() if ".head." not in k}
    weights["model.norm.weight"] = weights["model.norm.weight"] * 3
    keys = sorted(weights)
    ckpt.mkdir(parents=True)
    shards = {
        "model-00001-of-00002.safetensors": keys[::2],
        "model-00002-of-00002.safetensors": keys[1::2],
    }
    weight_map = {}
    for name, ks in shards.items():
        write_safetensors(
            ckpt / name,
            {k: RawTensor.from_float32(weights[k], "F32") for k in ks},
            {"format": "pt"},
        )
        weight_map.update(dict.fromkeys(ks, name))
    (ckpt / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    shutil.copy(base_dir / "config.json", ckpt / "config.json")
    (ckpt / "tokenizer_config.json").write_text(
        '{"tokenizer_class": "LlamaTokenizer"}'
    )  # no add_bos_token
    return weights


def test_export_merges_shards_and_completes_the_dir(tiny_model_dir: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "run" / "checkpoints"
    trained = sharded_checkpoint(tiny_model_dir, ckpt)
    out = tmp_path / "model"
    manifest = export(ckpt, tiny_model_dir, out, model_name="PaddleOCR-VL-0.9B")

    assert not (out / "model.safetensors.index.json").exists()
    assert not list(out.glob("model-*.safetensors"))
    weights = load_file(str(out / "model.safetensors"))
    base = load_file(str(tiny_model_dir / "model.safetensors"))
    assert set(weights) == set(base)
    np.testing.assert_array_equal(weights["model.norm.weight"], trained["model.norm.weight"])
    np.testing.assert_array_equal(
        weights["visual.vision_model.head.probe"], base["visual.vision_model.head.probe"]
    )
    assert (
        manifest["kind"] == "full"
        and "visual.vision_model.head.probe" in manifest["filled_from_base"]
    )

    for name in (
        "chat_template.jinja",
        "tokenizer.model",
        "preprocessor_config.json",
        "generation_config.json",
    ):
        assert (out / name).read_bytes() == (tiny_model_dir / name).read_bytes(), name
    # the checkpoint's re-saved tokenizer_config lacks add_bos_token: false; the base's wins
    assert json.loads((out / "tokenizer_config.json").read_text())["add_bos_token"] is False
    assert manifest["checkpoint_files_differing_from_base"] == ["tokenizer_config.json"]
    assert yaml.safe_load((out / "inference.yml").read_text()) == {
        "Global": {"model_name": "PaddleOCR-VL-0.9B"}
    }
    assert json.loads((out / "export.json").read_text())["checkpoint"] == str(ckpt)

    with pytest.raises(ExportError, match="not empty"):
        export(ckpt, tiny_model_dir, out)
    export(ckpt, tiny_model_dir, out, force=True)
    assert (out / "model.safetensors").is_file()


def test_export_takes_the_newest_checkpoint(tiny_model_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "checkpoints"
    sharded_checkpoint(tiny_model_dir, run / "checkpoint-5")
    sharded_checkpoint(tiny_model_dir, run / "checkpoint-20")
    manifest = export(run, tiny_model_dir, tmp_path / "out")
    assert manifest["checkpoint"].endswith("checkpoint-20")


def test_export_refuses_what_it_cannot_read(tiny_model_dir: Path, tmp_path: Path) -> None:
    flex = tmp_path / "flex" / "checkpoint-10" / "model_state"
    flex.mkdir(parents=True)
    (flex / "0_0.distcp").write_bytes(b"x")
    with pytest.raises(ExportError, match="flex_checkpoint"):
        export(tmp_path / "flex", tiny_model_dir, tmp_path / "o1")

    other = tmp_path / "other"
    sharded_checkpoint(tiny_model_dir, other)
    config = json.loads((other / "config.json").read_text())
    config["num_hidden_layers"] = 18
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(ExportError, match="num_hidden_layers"):
        export(other, tiny_model_dir, tmp_path / "o2")


def test_lora_export_loads_in_paddlex(tiny_model_dir: Path, tmp_path: Path, paddlex_tiny) -> None:
    base = load_file(str(tiny_model_dir / "model.safetensors"))
    ckpt = tmp_path / "lora"
    ckpt.mkdir()
    rng = np.random.default_rng(1)
    key = "model.layers.0.mlp.down_proj"
    out_f, in_f = base[f"{key}.weight"].shape
    adapter = {
        f"{key}.lora_A": RawTensor.from_float32(
            rng.normal(size=(in_f, 4)).astype(np.float32), "F32"
        ),
        f"{key}.lora_B": RawTensor.from_float32(
            rng.normal(size=(4, out_f)).astype(np.float32), "F32"
        ),
    }
    write_safetensors(ckpt / "peft_model-00001-of-00001.safetensors", adapter, {"format": "pt"})
    (ckpt / "lora_config.json").write_text(json.dumps({"r": 4, "lora_alpha": 8, "scaling": 2.0}))
    out = tmp_path / "merged"
    manifest = export(ckpt, tiny_model_dir, out)
    assert manifest["kind"] == "lora" and manifest["lora_merged"] == [f"{key}.weight"]
    merged = load_file(str(out / "model.safetensors"))[f"{key}.weight"]
    delta = (adapter[f"{key}.lora_A"].to_float32() @ adapter[f"{key}.lora_B"].to_float32()).T * 2.0
    np.testing.assert_allclose(merged, base[f"{key}.weight"] + delta, rtol=1e-6, atol=1e-6)
    assert isinstance(ex.verify_with_paddlex(out, max_new_tokens=4), str)
