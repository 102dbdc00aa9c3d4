"""PaddleOCR-VL's facts: the chat template renders the prompt the trainers build, per release."""

from __future__ import annotations

import ast
from pathlib import Path

import jinja2
import pytest

from data_tools import images, paddleocr_vl
from data_tools.paddleocr_vl import (
    MODEL_NAME,
    MODEL_NAME_1_5,
    MODEL_NAME_1_6,
    chat_template,
    prompt_text,
    smart_resize,
    visual_tokens,
)

REPO = Path(__file__).resolve().parents[2]


def render(template: str, prompt: str, answer: str | None = None) -> str:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    if answer is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return (
        jinja2.Environment()
        .from_string(template)
        .render(messages=messages, add_generation_prompt=answer is None)
    )


def test_0_9b_template_is_the_published_prompt() -> None:
    text = render(chat_template(MODEL_NAME), "OCR:{}")
    assert text == (
        "<|begin_of_sentence|>User: <|IMAGE_START|><|IMAGE_PLACEHOLDER|><|IMAGE_END|>"
        "OCR:{}\nAssistant: "
    )
    assert text == prompt_text("OCR:{}")


@pytest.mark.parametrize("name", [MODEL_NAME_1_5, MODEL_NAME_1_6])
def test_1_5_and_1_6_open_the_answer_with_a_newline(name: str) -> None:
    text = render(chat_template(name), 'OCR:{"发票号码":""}')
    assert text.endswith('OCR:{"发票号码":""}\nAssistant:\n')
    assert text == prompt_text('OCR:{"发票号码":""}', name)
    # a training sequence: prompt, then answer closed by </s>
    full = render(chat_template(name), "OCR:{}", answer='{"a": "1"}')
    assert full == prompt_text("OCR:{}", name) + '{"a": "1"}</s>'


def test_unknown_release_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown PaddleOCR-VL model"):
        prompt_text("OCR:{}", "PaddleOCR-VL-2.0")


def test_prompt_text_expands_the_image_placeholder() -> None:
    text = prompt_text("OCR:{}", image_tokens=3)
    assert text.count("<|IMAGE_PLACEHOLDER|>") == 3


def test_smart_resize_known_values() -> None:
    # a 2104x1560 invoice photo: over max_pixels -> 1428x1932 -> 102x138 patches -> 3519 tokens
    assert smart_resize(1560, 2104) == (1428, 1932)
    assert visual_tokens(1560, 2104) == 3519
    h, w = smart_resize(100, 100)
    assert h % 28 == 0 and w % 28 == 0 and h * w >= paddleocr_vl.MIN_PIXELS


def test_images_reexports_the_one_home() -> None:
    assert images.smart_resize is paddleocr_vl.smart_resize
    assert images.visual_tokens is paddleocr_vl.visual_tokens
    assert images.MAX_PIXELS == paddleocr_vl.MAX_PIXELS


def test_imports_nothing_of_ours() -> None:
    tree = ast.parse((REPO / "data_tools" / "paddleocr_vl.py").read_text(encoding="utf-8"))
    ours = {"data_tools", "training", "inference", "eval", "patches"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            assert not {a.name.split(".")[0] for a in node.names} & ours
        elif isinstance(node, ast.ImportFrom):
            assert (node.module or "").split(".")[0] not in ours


def test_no_other_file_spells_the_model_name() -> None:
    """Code reads the name from data_tools.paddleocr_vl (docs and tests may spell it)."""
    offenders = []
    for folder in ("data_tools", "training", "inference", "eval", "patches"):
        for path in (REPO / folder).rglob("*.py"):
            if path.name == "paddleocr_vl.py":
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            offenders += [
                f"{path.relative_to(REPO)}:{node.lineno}"
                for node in ast.walk(tree)
                if isinstance(node, ast.Constant) and node.value in paddleocr_vl.MODEL_NAMES
            ]
    assert offenders == []
