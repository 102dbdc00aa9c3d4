"""The tiny PaddleOCR-VL model dir: files, caching, tokenizers, and loading in PaddleX."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from training import tiny_model
from training.tiny_model import build_tiny_model, is_tiny_model

HUB_FILES = (
    "config.json",
    "generation_config.json",
    "preprocessor_config.json",
    "inference.yml",
    "chat_template.jinja",
    "tokenizer.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "model.safetensors",
)


def test_model_dir_has_the_hub_files(tiny_model_dir: Path) -> None:
    for name in HUB_FILES:
        assert (tiny_model_dir / name).is_file(), name
    assert not (tiny_model_dir / "model.safetensors.index.json").exists()
    config = json.loads((tiny_model_dir / "config.json").read_text(encoding="utf-8"))
    assert config["model_type"] == "paddleocr_vl"
    assert config["num_hidden_layers"] == 2
    assert config["hidden_size"] == 64
    assert sum(config["rope_scaling"]["mrope_section"]) * 2 == config["head_dim"]
    assert "model_name: PaddleOCR-VL-0.9B" in (tiny_model_dir / "inference.yml").read_text()
    size = (tiny_model_dir / "model.safetensors").stat().st_size
    assert size < 8_000_000, size


def test_checkpoint_keys_are_the_hub_keys(tiny_model_dir: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(tiny_model_dir / "model.safetensors"), "np") as f:
        keys = set(f.keys())
        patch = f.get_tensor("visual.vision_model.embeddings.patch_embedding.weight")
        lm_head = f.get_tensor("lm_head.weight")
    config = json.loads((tiny_model_dir / "config.json").read_text(encoding="utf-8"))
    # PaddleX's dynamic-graph model needs these two; transformers ignores them.
    assert "visual.vision_model.embeddings.packing_position_embedding.weight" in keys
    assert "visual.vision_model.head.attention.in_proj_weight" in keys
    assert {k.split(".")[0] for k in keys} == {"visual", "mlp_AR", "model", "lm_head"}
    assert patch.shape == (32, 3, 14, 14)
    assert lm_head.shape == (config["vocab_size"], 64)  # PyTorch layout [out, in]


def test_build_is_cached_and_seeded(tmp_path: Path) -> None:
    out = tmp_path / "tiny"
    assert build_tiny_model(out) == out.absolute()
    weights = out / "model.safetensors"
    first = weights.stat().st_mtime_ns
    build_tiny_model(out)
    assert weights.stat().st_mtime_ns == first, "an existing model must be reused"
    assert is_tiny_model(out, seed=0)
    before = weights.read_bytes()
    build_tiny_model(out, seed=1)
    assert is_tiny_model(out, seed=1) and not is_tiny_model(out, seed=0)
    assert weights.read_bytes() != before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tiny.")], "temp dir left"


def test_refuses_to_overwrite_a_foreign_dir(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a tiny model"):
        build_tiny_model(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_cli_prints_the_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert tiny_model.main(["--out", str(tmp_path / "m")]) == 0
    assert capsys.readouterr().out.strip() == str((tmp_path / "m").absolute())


PROMPT_TEXT = (
    "<|begin_of_sentence|>User: <|IMAGE_START|><|IMAGE_PLACEHOLDER|><|IMAGE_PLACEHOLDER|>"
    '<|IMAGE_END|>OCR:{"发票代码":"","购买方":{"名称":""}}\nAssistant: '
    '{"发票代码": "4400154130", "x  y": "Ω€漢"}'
)


def test_special_tokens_are_single_ids(tiny_model_dir: Path) -> None:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(tiny_model_dir / "tokenizer.model"))
    for tok in tiny_model.USER_SPECIALS:
        assert sp.encode(tok, out_type=str) == [tok]
    config = json.loads((tiny_model_dir / "config.json").read_text(encoding="utf-8"))
    assert config["image_token_id"] == sp.piece_to_id("<|IMAGE_PLACEHOLDER|>")
    assert config["vision_start_token_id"] == sp.piece_to_id("<|IMAGE_START|>")
    assert config["eos_token_id"] == sp.piece_to_id("</s>") == 2
    assert config["vocab_size"] == sp.get_piece_size()
    # Invoice words are whole pieces, so tiny models learn short sequences.
    assert "发票代码" in sp.encode('{"发票代码":', out_type=str)


def test_all_tokenizers_agree(tiny_model_dir: Path) -> None:
    """SentencePiece, transformers, PaddleX (inference) and PaddleFormers (training)."""
    import sentencepiece as spm
    from paddlex.inference.models.common.tokenizer import LlamaTokenizer as PaddleXTokenizer
    from transformers import AutoTokenizer

    from training.pf_compat import paddleformers_tokenizer

    sp = spm.SentencePieceProcessor(model_file=str(tiny_model_dir / "tokenizer.model"))
    expected = sp.encode(PROMPT_TEXT)
    hf = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    px = PaddleXTokenizer.from_pretrained(
        str(tiny_model_dir), vocab_file=str(tiny_model_dir / "tokenizer.model")
    )
    pf = paddleformers_tokenizer(tiny_model_dir)
    assert hf(PROMPT_TEXT)["input_ids"] == expected
    assert px(PROMPT_TEXT)["input_ids"] == expected
    assert pf(PROMPT_TEXT)["input_ids"] == expected
    answer = PROMPT_TEXT.split("Assistant: ")[1]
    assert px.decode(sp.encode(answer), skip_special_tokens=True) == answer


def test_paddlex_loads_and_predicts(paddlex_tiny, tmp_path: Path) -> None:
    image = tmp_path / "page.png"
    Image.new("RGB", (280, 200), "white").save(image)
    results = list(paddlex_tiny.predict({"image": str(image), "query": "OCR:{}"}, max_new_tokens=8))
    assert len(results) == 1
    assert isinstance(results[0]["result"], str)
