"""Parse a model's text output into JSON, and say how.

Steps, first success wins:

1. ``strict``   — `json.loads` of the whole (stripped) text;
2. ``embedded`` — JSON inside a ```json fence, or the first JSON object/array found in
   the text (prose before or after it is ignored);
3. ``repaired`` — `json_repair` on the text. It returns *something* for almost any
   input: it keeps the last of duplicate keys, turns a cut-off string into a short
   plausible value and drops leading zeros of unquoted numbers, so a repaired result
   is flagged and should be scored separately;
4. ``failed``   — nothing usable; `value` is None.

Duplicate keys are recorded (steps 1 and 2) with whether their values conflict; the
last value is kept, as `json.loads` does. Truncation is read from the generation's
signals: `finish_reason == "length"` or the token budget used up.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import json_repair

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)
_DECODER = json.JSONDecoder()


@dataclass
class ParseReport:
    method: str  # "strict" | "embedded" | "repaired" | "failed"
    truncated: bool = False
    duplicate_keys: list[str] = field(default_factory=list)
    conflicting_duplicate_keys: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.method != "failed"

    @property
    def strict_valid(self) -> bool:
        return self.method == "strict"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ParsedOutput:
    value: Any
    raw: str
    report: ParseReport


class _DuplicateRecorder:
    """`object_pairs_hook` that builds dicts and remembers repeated keys."""

    def __init__(self) -> None:
        self.duplicates: list[str] = []
        self.conflicting: list[str] = []

    def __call__(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in pairs:
            if k in out:
                if k not in self.duplicates:
                    self.duplicates.append(k)
                if out[k] != v and k not in self.conflicting:
                    self.conflicting.append(k)
            out[k] = v
        return out


def _loads(text: str) -> tuple[Any, _DuplicateRecorder]:
    rec = _DuplicateRecorder()
    return json.loads(text, object_pairs_hook=rec), rec


def _embedded(text: str) -> tuple[Any, _DuplicateRecorder] | None:
    for m in _FENCE.finditer(text):
        try:
            return _loads(m.group(1).strip())
        except json.JSONDecodeError:
            continue
    for m in re.finditer(r"[{\[]", text):
        rec = _DuplicateRecorder()
        decoder = json.JSONDecoder(object_pairs_hook=rec)
        try:
            value, _ = decoder.raw_decode(text, m.start())
        except json.JSONDecodeError:
            continue
        if isinstance(value, (dict, list)):
            return value, rec
    return None


def parse_model_output(
    text: str | None,
    *,
    finish_reason: str | None = None,
    max_new_tokens: int | None = None,
    n_tokens: int | None = None,
) -> ParsedOutput:
    """Parse `text`; never raises. See the module docstring for the steps."""
    raw = text or ""
    truncated = finish_reason == "length" or (
        max_new_tokens is not None and n_tokens is not None and n_tokens >= max_new_tokens
    )
    stripped = raw.strip()
    if not stripped:
        return ParsedOutput(None, raw, ParseReport("failed", truncated, error="empty output"))

    try:
        value, rec = _loads(stripped)
        return ParsedOutput(
            value, raw, ParseReport("strict", truncated, rec.duplicates, rec.conflicting)
        )
    except json.JSONDecodeError as exc:
        strict_error = f"{exc.msg} at char {exc.pos}"

    found = _embedded(stripped)
    if found is not None:
        value, rec = found
        return ParsedOutput(
            value,
            raw,
            ParseReport("embedded", truncated, rec.duplicates, rec.conflicting, strict_error),
        )

    fenced = _FENCE.search(stripped)
    candidate = fenced.group(1) if fenced else stripped
    if fenced is None and "```" in candidate:  # an unclosed fence, typical of truncation
        candidate = candidate.split("```", 1)[1].removeprefix("json").removeprefix("JSON")
    try:
        value = json_repair.loads(candidate)
    except Exception as exc:  # json_repair raises rarely, but any failure means "failed"
        return ParsedOutput(None, raw, ParseReport("failed", truncated, error=repr(exc)))
    if value in ("", None) or not isinstance(value, (dict, list)):
        return ParsedOutput(
            None, raw, ParseReport("failed", truncated, error=f"no JSON found ({strict_error})")
        )
    return ParsedOutput(value, raw, ParseReport("repaired", truncated, error=strict_error))
