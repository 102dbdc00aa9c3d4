"""Training (PaddleFormers template `paddleocr_vl`) and inference (PaddleX, the model's
chat_template.jinja) build the same tokens, and the prompt carries no loss."""

from __future__ import annotations

import json
from itertools import groupby
from pathlib import Path

import pytest

from data_tools.paddleocr_vl import IMAGE_PLACEHOLDER


def collapse_placeholders(ids: list[int], placeholder: int) -> list[int]:
    """Runs of the image placeholder as one token: the count depends on the image size,
    which PaddleFormers' training augmentation rescales at random."""
    out: list[int] = []
    for tok, run in groupby(ids):
        if tok == placeholder:
            out.append(tok)
        else:
            out.extend(run)
    return out


@pytest.fixture(scope="module")
def encoded(tiny_model_dir: Path, tiny_sft_dir: Path) -> list[tuple[dict, list[int], list[int]]]:
    from training.pf_compat import paddleformers_encode

    path = tiny_sft_dir / "val.jsonl"
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()][:3]
    pairs = paddleformers_encode(tiny_model_dir, path, limit=3)
    assert len(pairs) == 3
    return [(rec, ids, labels) for rec, (ids, labels) in zip(records, pairs, strict=True)]


def test_prompt_tokens_carry_no_loss(encoded, tiny_model_dir: Path) -> None:
    from training.pf_compat import paddleformers_tokenizer

    tok = paddleformers_tokenizer(tiny_model_dir)
    for rec, ids, labels in encoded:
        assert len(ids) == len(labels)
        first = next(i for i, lab in enumerate(labels) if lab != -100)
        # labels are shifted: labels[i] is the target for position i, i.e. ids[i + 1]
        assert all(lab == ids[i + 1] for i, lab in enumerate(labels) if lab != -100)
        prompt = tok.decode(ids[: first + 1], skip_special_tokens=False)
        assert prompt.endswith("\nAssistant: "), prompt[-40:]
        assert rec["messages"][0]["content"].replace("<image>", "") in prompt
        trained = tok.decode([lab for lab in labels if lab != -100], skip_special_tokens=False)
        assert trained == rec["messages"][1]["content"] + "</s>"


def test_training_and_inference_templates_agree(
    encoded, paddlex_tiny, tiny_model_dir: Path
) -> None:
    processor = paddlex_tiny._predictor.processor
    placeholder = processor.tokenizer.convert_tokens_to_ids(IMAGE_PLACEHOLDER)
    for rec, ids, labels in encoded:
        first = next(i for i, lab in enumerate(labels) if lab != -100)
        train_prompt = ids[: first + 1]
        query = rec["messages"][0]["content"].replace("<image>", "")
        batch = processor.preprocess([{"image": rec["images"][0], "query": query}])
        infer_prompt = [int(t) for t in batch["input_ids"][0].tolist()]
        assert collapse_placeholders(train_prompt, placeholder) == collapse_placeholders(
            infer_prompt, placeholder
        )
        # and PaddleX's image tokens are what its image grid implies
        grid = batch["image_grid_thw"][0].tolist()
        assert infer_prompt.count(placeholder) == grid[0] * grid[1] * grid[2] // 4
