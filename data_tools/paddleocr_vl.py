"""PaddleOCR-VL's facts, in one place: names, special tokens, prompt templates, pixel rules.

Training (the recipes, the tiny model, the PyTorch route), every inference backend
and the dataset builder read these; this module imports nothing of ours.

- Model names: `PaddleOCR-VL-0.9B` (the model PaddleX / PaddleOCR call it), and the
  1.5 / 1.6 releases, which use `Assistant:\\n` instead of `Assistant: ` in the template.
- The prompt a model sees for one image and one query (`prompt_text`) is what the
  chat template renders, and what ERNIEKit's OCR-VL-SFT and PaddleFormers'
  `paddleocr_vl` template build; training and inference must agree on it.
- `smart_resize`: the SigLIP processor resizes an image so both sides are multiples
  of `PATCH_SIZE * MERGE_SIZE` (28) and the area lies in [MIN_PIXELS, MAX_PIXELS];
  every 2x2 block of 14-px patches becomes one token of the language model
  (`visual_tokens`). The defaults are those of PaddleOCR-VL-0.9B's
  `preprocessor_config.json`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# ---------------------------------------------------------------- names

MODEL_NAME = "PaddleOCR-VL-0.9B"  # PaddleX / PaddleOCR model name of the 0.9B release
MODEL_NAME_1_5 = "PaddleOCR-VL-1.5"
MODEL_NAME_1_6 = "PaddleOCR-VL-1.6"
MODEL_NAMES = (MODEL_NAME, MODEL_NAME_1_5, MODEL_NAME_1_6)
HUB_REPO = "PaddlePaddle/PaddleOCR-VL"  # the hub repository of the 0.9B weights
MODEL_TYPE = "paddleocr_vl"  # config.json model_type (transformers, PaddleFormers)
PADDLEFORMERS_TEMPLATE = "paddleocr_vl"  # PaddleFormers' chat template name
ERNIEKIT_STAGE = "OCR-VL-SFT"
PADDLEFORMERS_STAGE = "VL-SFT"

# ---------------------------------------------------------------- special tokens

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
BEGIN_OF_SENTENCE = "<|begin_of_sentence|>"
END_OF_SENTENCE = "<|end_of_sentence|>"
IMAGE_START = "<|IMAGE_START|>"
IMAGE_PLACEHOLDER = "<|IMAGE_PLACEHOLDER|>"
IMAGE_END = "<|IMAGE_END|>"
VIDEO_PAD = "<|video_pad|>"
MASK_TOKEN = "<mask:1>"
# Added to the tokenizer as user-defined symbols (never split).
USER_SPECIALS = (
    BEGIN_OF_SENTENCE,
    END_OF_SENTENCE,
    IMAGE_START,
    IMAGE_PLACEHOLDER,
    IMAGE_END,
    VIDEO_PAD,
    MASK_TOKEN,
)

# ---------------------------------------------------------------- templates

USER_PREFIX = "User: "
ASSISTANT_0_9B = "Assistant: "
ASSISTANT_1_5 = "Assistant:\n"  # 1.5 and 1.6
IMAGE_BLOCK = IMAGE_START + IMAGE_PLACEHOLDER + IMAGE_END


def assistant_prefix(model_name: str = MODEL_NAME) -> str:
    """What opens the answer: `Assistant: ` for 0.9B, `Assistant:\\n` for 1.5 / 1.6."""
    if model_name not in MODEL_NAMES:
        raise ValueError(f"unknown PaddleOCR-VL model {model_name!r}; one of {MODEL_NAMES}")
    return ASSISTANT_0_9B if model_name == MODEL_NAME else ASSISTANT_1_5


def prompt_text(prompt: str, model_name: str = MODEL_NAME, *, image_tokens: int = 1) -> str:
    """The text the model sees before its answer, for one image and one query.

    `image_tokens` placeholders stand for the image (the processor expands the one
    placeholder to `visual_tokens(h, w)` of them).
    """
    return (
        f"{BEGIN_OF_SENTENCE}{USER_PREFIX}{IMAGE_START}{IMAGE_PLACEHOLDER * image_tokens}"
        f"{IMAGE_END}{prompt}\n{assistant_prefix(model_name)}"
    )


def chat_template(model_name: str = MODEL_NAME) -> str:
    """The Jinja chat template (`chat_template.jinja`) of `model_name`.

    The image markers are written literally: transformers passes the tokenizer's
    `image_token` (the placeholder alone) into the template, which would drop them.
    """
    assistant = assistant_prefix(model_name).replace("\n", "\\n")
    return _CHAT_TEMPLATE.replace("@ASSISTANT@", assistant)


_CHAT_TEMPLATE = """\
{%- if not add_generation_prompt is defined -%}
    {%- set add_generation_prompt = true -%}
{%- endif -%}
{%- if not cls_token is defined -%}
    {%- set cls_token = "<|begin_of_sentence|>" -%}
{%- endif -%}
{%- if not eos_token is defined -%}
    {%- set eos_token = "</s>" -%}
{%- endif -%}
{{- cls_token -}}
{%- for message in messages -%}
    {%- if message["role"] == "user" -%}
        {{- "User: " -}}
        {%- for content in message["content"] -%}
            {%- if content["type"] == "image" -%}
                {{- "<|IMAGE_START|><|IMAGE_PLACEHOLDER|><|IMAGE_END|>" -}}
            {%- endif -%}
        {%- endfor -%}
        {%- for content in message["content"] -%}
            {%- if content["type"] == "text" -%}
                {{ content["text"] }}
            {%- endif -%}
        {%- endfor -%}
        {{ "\\n" -}}
    {%- elif message["role"] == "assistant" -%}
        {{- "@ASSISTANT@" -}}
        {%- for content in message["content"] -%}
            {%- if content["type"] == "text" -%}
                {{ content["text"] }}
            {%- endif -%}
        {%- endfor -%}
        {{ eos_token -}}
    {%- elif message["role"] == "system" -%}
        {%- for content in message["content"] -%}
            {%- if content["type"] == "text" -%}
                {{ content["text"] + "\\n" }}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- "@ASSISTANT@" -}}
{%- endif -%}
"""

# ---------------------------------------------------------------- architecture

# PaddleOCR-VL-0.9B's published config.json (PaddlePaddle/PaddleOCR-VL): a SigLIP NaViT
# vision encoder, a 2x2-merging projector, an ERNIE-4.5-0.3B decoder with 3D RoPE.
ARCH_0_9B = {
    "vocab_size": 103424,
    "text_hidden": 1024,
    "text_layers": 18,
    "text_heads": 16,
    "text_kv_heads": 2,
    "text_head_dim": 128,
    "text_intermediate": 3072,
    "mrope_section": (16, 24, 24),
    "vision_hidden": 1152,
    "vision_layers": 27,
    "vision_heads": 16,
    "vision_intermediate": 4304,
    "image_size": 384,
}

# ---------------------------------------------------------------- pixels

PATCH_SIZE = 14
MERGE_SIZE = 2
FACTOR = PATCH_SIZE * MERGE_SIZE  # 28: both sides are multiples of it
MIN_PIXELS = 147384
MAX_PIXELS = 28 * 28 * 3600  # 2,822,400
MAX_ASPECT_RATIO = 200


@dataclass(frozen=True)
class PixelRules:
    """The processor's resize settings (preprocessor_config.json)."""

    patch_size: int = PATCH_SIZE
    merge_size: int = MERGE_SIZE
    min_pixels: int = MIN_PIXELS
    max_pixels: int = MAX_PIXELS


def smart_resize(
    height: int,
    width: int,
    factor: int = FACTOR,
    min_pixels: int = MIN_PIXELS,
    max_pixels: int = MAX_PIXELS,
) -> tuple[int, int]:
    """The (height, width) PaddleOCR-VL resizes an image to (same rule as PaddleX's)."""
    if height < factor:
        width = round(width * factor / height)
        height = factor
    if width < factor:
        height = round(height * factor / width)
        width = factor
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ValueError(
            f"aspect ratio {height}x{width} is over {MAX_ASPECT_RATIO}; PaddleOCR-VL refuses it"
        )
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def visual_tokens(
    height: int,
    width: int,
    *,
    patch_size: int = PATCH_SIZE,
    merge_size: int = MERGE_SIZE,
    min_pixels: int = MIN_PIXELS,
    max_pixels: int = MAX_PIXELS,
) -> int:
    """Number of image tokens the language model sees for an image of this size."""
    h, w = smart_resize(height, width, patch_size * merge_size, min_pixels, max_pixels)
    return (h // patch_size) * (w // patch_size) // (merge_size * merge_size)
