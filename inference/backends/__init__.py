"""Extractor backends, created by name: `make_backend(config)`.

============================  ==============================================================
name                          runs
============================  ==============================================================
``auto``                      the fastest engine for the device (``inference.backends.auto``)
``paddlex``                   PaddleX DocVLM predictor on a local model dir (Paddle)
``paddlex-pipeline``          patched PaddleOCR-VL pipeline v1, layout detection off (Paddle)
``transformers``              AutoModelForImageTextToText (torch, ``.venv-torch``)
``openai``                    any OpenAI-compatible server (vLLM, FastDeploy, PaddleX genai)
``ocr-llm``                   PP-OCR text → an LLM behind an OpenAI-compatible endpoint
``fake``                      no model: placeholder answers (dry runs, load tests)
============================  ==============================================================

Each backend module is imported only when asked for, so the Paddle environment never
imports torch and the torch environment never imports Paddle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from inference.backends.base import (
    Backend,
    BackendError,
    BackendUnavailable,
    Generation,
    GenerationOptions,
)

if TYPE_CHECKING:
    from data_tools.llm_client import EndpointConfig
    from inference.backends.config import BackendConfig, make_backend
    from inference.backends.ocr_llm import LlmPrompting, OcrSettings

BACKENDS = ("auto", "paddlex", "paddlex-pipeline", "transformers", "openai", "ocr-llm", "fake")

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendConfig",
    "BackendError",
    "BackendUnavailable",
    "EndpointConfig",
    "Generation",
    "GenerationOptions",
    "LlmPrompting",
    "OcrSettings",
    "make_backend",
]

_LAZY = {"BackendConfig", "make_backend", "EndpointConfig", "LlmPrompting", "OcrSettings"}


def __getattr__(name: str) -> Any:
    """``BackendConfig``, ``make_backend`` and the config types, imported on first use."""
    if name in _LAZY:
        from inference.backends import config

        value = getattr(config, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'inference.backends' has no attribute {name!r}")
