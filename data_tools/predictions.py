"""The prediction row (``predictions.jsonl``): one model answer to one prompt on one image.

    {"id", "image", "system", "prompt", "raw_output", "prediction", "parse",
     "latency_s", "usage", ...optional: "stage_latency_s", "page", "validation",
     "confidence", "duplicate_of", "info"}

``id`` is the canonical record id (label / SFT / requests file) or, for a folder of images,
the image's path below the folder without suffix: the scorer joins predictions to gold on
``(id, prompt)``. ``parse`` is ``data_tools.parsing.ParseReport.to_dict()``; a row whose
model output could not be parsed has ``prediction: null`` and ``parse.method: "failed"``.
``info`` holds what a backend adds about itself (the OCR + LLM pipeline: OCR line count,
cache hit, where the text came from).

Every writer and reader of the contract is here: :meth:`PredictionRow.to_dict`,
:func:`read_predictions` (errors name ``file:line``) and :func:`failed_parse` (the parse
report of an answer that never came). Imports nothing of ours but JSONL I/O.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from data_tools.jsonl import read_jsonl

REQUIRED = ("id", "image", "system", "prompt", "raw_output", "prediction", "parse")
OPTIONAL = ("stage_latency_s", "page", "validation", "confidence", "duplicate_of", "info")


class PredictionFormatError(ValueError):
    """A predictions line that breaks the contract; the message starts with ``file:line:``."""


def failed_parse(error: str) -> dict[str, Any]:
    """The ``parse`` report of a row without a model answer to parse."""
    return {
        "method": "failed",
        "truncated": False,
        "duplicate_keys": [],
        "conflicting_duplicate_keys": [],
        "error": error,
    }


@dataclass
class PredictionRow:
    id: str
    image: str
    system: str
    prompt: str
    raw_output: str
    prediction: Any
    parse: dict[str, Any]
    latency_s: float = 0.0
    usage: dict[str, Any] = field(default_factory=dict)
    stage_latency_s: dict[str, float] | None = None
    page: int | None = None
    validation: dict[str, Any] | None = None
    confidence: Any = None
    duplicate_of: str | None = None
    info: dict[str, Any] | None = None

    @property
    def key(self) -> str:
        """The done / join key: ``id`` and ``prompt``."""
        return row_key(self.id, self.prompt)

    @property
    def ok(self) -> bool:
        return self.parse.get("method") != "failed"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "image": self.image,
            "system": self.system,
            "prompt": self.prompt,
            "raw_output": self.raw_output,
            "prediction": self.prediction,
            "parse": self.parse,
            "latency_s": round(float(self.latency_s), 4),
            "usage": self.usage,
        }
        for name in OPTIONAL:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "prediction") -> PredictionRow:
        missing = [k for k in REQUIRED if k not in d]
        if missing:
            raise PredictionFormatError(
                f"{where}: missing key(s) {', '.join(missing)}; a prediction row has "
                f"{', '.join(REQUIRED)} (see data_tools/predictions.py)"
            )
        for k in ("id", "system", "prompt"):
            if not isinstance(d[k], str):
                raise PredictionFormatError(
                    f"{where}: '{k}' must be a string, got {type(d[k]).__name__}"
                )
        if not isinstance(d["parse"], Mapping):
            raise PredictionFormatError(f"{where}: 'parse' must be an object")
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known}
        kwargs["image"] = str(d["image"])
        kwargs["raw_output"] = "" if d["raw_output"] is None else str(d["raw_output"])
        kwargs["parse"] = dict(d["parse"])
        kwargs["usage"] = dict(d.get("usage") or {})
        try:
            kwargs["latency_s"] = float(d.get("latency_s") or 0.0)
        except (TypeError, ValueError):
            raise PredictionFormatError(f"{where}: 'latency_s' must be a number") from None
        return cls(**kwargs)


def row_key(id: str, prompt: str) -> str:
    return f"{id}\t{prompt}"


def iter_predictions(path: str | Path) -> Iterator[PredictionRow]:
    for lineno, obj in read_jsonl(path):
        yield PredictionRow.from_dict(obj, where=f"{path}:{lineno}")


def read_predictions(path: str | Path) -> list[PredictionRow]:
    """Every row of a predictions file (raises ``PredictionFormatError`` / ``JsonlError``)."""
    return list(iter_predictions(path))
