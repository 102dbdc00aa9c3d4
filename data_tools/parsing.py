"""Parse a model's text output into JSON, and say how.

Steps, first success wins:

1. ``strict``   — `json.loads` of the whole (stripped) text;
2. ``embedded`` — JSON inside a ```json fence, or the first JSON object/array found in
   the text (prose before or after it is ignored);
3. ``repaired`` — `json_repair` on the text. It returns *something* for almost any
   input: it keeps the last of duplicate keys, turns a cut-off string into a short
   plausible value and drops leading zeros of unquoted numbers, so a repaired result
   is flagged and should be scored separately;
4. ``failed``   — nothing usable; `value` is None and `error` says why.

Duplicate keys are recorded (steps 1 and 2) with whether their values conflict; the
last value is kept, as `json.loads` does. Truncation is read from the generation's
signals: `finish_reason == "length"` or the token budget used up.

Bounded for any text (`ParseLimits`): past `max_chars` nothing is parsed; a value nested
deeper than `max_depth` or a number literal longer than `max_number_chars` fails with
that reason (Python's own parser would raise RecursionError / ValueError, and deep
values break every consumer downstream); `json_repair`, superlinear in its input, is
skipped past `max_repair_chars` and the report says so (``error`` starts with
``repair skipped``). At most `max_embedded_starts` positions are tried for embedded JSON.
`parse_model_output` never raises.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import json_repair

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)
_START = re.compile(r"[{\[]")
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{}]')  # strings (maybe unclosed), brackets

REPAIR_SKIPPED = "repair skipped"


@dataclass(frozen=True)
class ParseLimits:
    """Bounds that keep parsing linear and its result safe to walk."""

    max_chars: int = 1_000_000  # longer outputs are not parsed at all
    max_depth: int = 64  # nesting of objects/arrays
    max_number_chars: int = 100  # digits (and sign, dot, exponent) of one number literal
    max_repair_chars: int = 100_000  # json_repair takes ~0.4 s here at 100 kB, 2.6 s at 200 kB
    max_embedded_starts: int = 32  # '{' / '[' positions tried for embedded JSON


DEFAULT_LIMITS = ParseLimits()


class JsonLimitError(ValueError):
    """A JSON text or value past a `ParseLimits` bound; the message names the bound."""


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

    @property
    def repair_skipped(self) -> bool:
        return bool(self.error and REPAIR_SKIPPED in self.error)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ParsedOutput:
    value: Any
    raw: str
    report: ParseReport
    # (nesting depth, leaves) of `value` (`json_size`), measured whole by the depth bound
    # check; None when there is no value
    size: tuple[int, int] | None = None


class _DuplicateRecorder:
    """`object_pairs_hook` that builds dicts and remembers repeated keys."""

    def __init__(self) -> None:
        self.duplicates: list[str] = []
        self.conflicting: list[str] = []

    def __call__(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(pairs)  # the last value of a repeated key wins, as in json.loads
        if len(out) < len(pairs):  # a key repeats: find which, and whether values differ
            self._record(pairs)
        return out

    def _record(self, pairs: list[tuple[str, Any]]) -> None:
        out: dict[str, Any] = {}
        for k, v in pairs:
            if k in out:
                if k not in self.duplicates:
                    self.duplicates.append(k)
                if out[k] != v and k not in self.conflicting:
                    self.conflicting.append(k)
            out[k] = v


def json_size(value: Any, *, max_depth: int = 0, max_leaves: int = 0) -> tuple[int, int]:
    """(nesting depth, leaves) of a parsed value: depth 0 for a scalar, 1 for a flat dict.

    Walked level by level (iterative: safe for any depth), stopping at the first level past
    ``max_depth`` or ``max_leaves`` (0: no bound); the numbers are then only "past it".
    """
    depth = leaves = 0
    level = [value]
    while level:
        deeper: list[Any] = []
        containers = 0
        for v in level:
            if type(v) is str:  # most leaves: one check instead of two
                continue
            if isinstance(v, dict):
                deeper.extend(v.values())
                containers += 1
            elif isinstance(v, list):
                deeper.extend(v)
                containers += 1
        leaves += len(level) - containers
        if containers:
            depth += 1
        if (max_leaves and leaves > max_leaves) or (max_depth and depth > max_depth):
            break
        level = deeper
    return depth, leaves


def json_depth(value: Any, limit: int) -> int:
    """Nesting depth of a parsed value (0 for a scalar); stops past `limit` (``json_size``)."""
    return json_size(value, max_depth=limit)[0]


def _number_hook(limit: int, kind: type) -> Any:
    def parse(text: str) -> Any:
        if len(text) > limit:
            raise JsonLimitError(f"a number literal of {len(text)} characters (limit {limit})")
        return kind(text)

    return parse


def _decoder(limits: ParseLimits, rec: _DuplicateRecorder | None = None) -> json.JSONDecoder:
    return json.JSONDecoder(
        object_pairs_hook=rec,
        parse_int=_number_hook(limits.max_number_chars, int),
        parse_float=_number_hook(limits.max_number_chars, float),
    )


def _check_depth(value: Any, limits: ParseLimits) -> tuple[int, int]:
    """``json_size(value)``, whole (the walk stops early only past the bound: an error)."""
    size = json_size(value, max_depth=limits.max_depth)
    if size[0] > limits.max_depth:
        raise JsonLimitError(f"JSON nested deeper than {limits.max_depth} levels")
    return size


def loads_bounded(
    text: str | bytes,
    limits: ParseLimits = DEFAULT_LIMITS,
    *,
    object_pairs_hook: Any = None,
) -> Any:
    """`json.loads` that cannot blow up: raises `json.JSONDecodeError` for invalid JSON and
    `JsonLimitError` (a ValueError naming the bound) for text past `limits`."""
    return _loads_sized(text, limits, object_pairs_hook)[0]


def _loads_sized(
    text: str | bytes, limits: ParseLimits, object_pairs_hook: Any
) -> tuple[Any, tuple[int, int]]:
    """`loads_bounded`, and the value's (depth, leaves)."""
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as e:
            raise json.JSONDecodeError(f"not UTF-8 ({e.reason})", "", e.start) from None
    if len(text) > limits.max_chars:
        raise JsonLimitError(f"JSON text of {len(text)} characters (limit {limits.max_chars})")
    decoder = _decoder(limits, object_pairs_hook)
    try:
        value = decoder.decode(text)
    except RecursionError:
        raise JsonLimitError(f"JSON nested deeper than {limits.max_depth} levels") from None
    return value, _check_depth(value, limits)


_Found = tuple[Any, "_DuplicateRecorder", tuple[int, int]]  # value, its duplicate keys, size


def _loads(text: str, limits: ParseLimits) -> _Found:
    rec = _DuplicateRecorder()
    value, size = _loads_sized(text, limits, rec)
    return value, rec, size


def _raw_decode(text: str, start: int, limits: ParseLimits) -> _Found:
    rec = _DuplicateRecorder()
    try:
        value, _ = _decoder(limits, rec).raw_decode(text, start)
    except RecursionError:
        raise JsonLimitError(f"JSON nested deeper than {limits.max_depth} levels") from None
    return value, rec, _check_depth(value, limits)


def _embedded(text: str, limits: ParseLimits) -> _Found | None:
    """Fenced or embedded JSON; a JsonLimitError of a candidate is re-raised at the end."""
    limit_error: JsonLimitError | None = None
    for m in _FENCE.finditer(text):
        try:
            return _loads(m.group(1).strip(), limits)
        except JsonLimitError as e:
            limit_error = limit_error or e
        except json.JSONDecodeError:
            continue
    for i, m in enumerate(_START.finditer(text)):
        if i >= limits.max_embedded_starts:
            break
        try:
            found = _raw_decode(text, m.start(), limits)
        except JsonLimitError as e:
            limit_error = limit_error or e
            continue
        except json.JSONDecodeError:
            continue
        if isinstance(found[0], dict | list):
            return found
    if limit_error is not None:
        raise limit_error
    return None


def text_depth(text: str, limit: int) -> int:
    """Bracket nesting of JSON-ish text, strings skipped (unclosed ones too); stops past
    `limit`. json_repair is recursive and superlinear on deep text: this is checked first."""
    depth = deepest = 0
    for m in _TOKENS.finditer(text):
        c = m.group()
        if c in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return deepest
        elif c in "]}":
            depth = max(0, depth - 1)
    return deepest


def _repair(candidate: str, limits: ParseLimits) -> tuple[Any, tuple[int, int]]:
    if text_depth(candidate, limits.max_depth) > limits.max_depth:
        raise JsonLimitError(f"JSON nested deeper than {limits.max_depth} levels")
    value = json_repair.loads(candidate)
    return value, _check_depth(value, limits)


def parse_model_output(
    text: str | None,
    *,
    finish_reason: str | None = None,
    max_new_tokens: int | None = None,
    n_tokens: int | None = None,
    limits: ParseLimits = DEFAULT_LIMITS,
) -> ParsedOutput:
    """Parse `text`; never raises. See the module docstring for the steps and bounds."""
    raw = text if isinstance(text, str) else ""
    truncated = finish_reason == "length" or (
        max_new_tokens is not None and n_tokens is not None and n_tokens >= max_new_tokens
    )

    def failed(error: str) -> ParsedOutput:
        return ParsedOutput(None, raw, ParseReport("failed", truncated, error=error))

    try:
        return _parse(raw, truncated, limits, failed)
    except Exception as exc:  # the promise is "never raises": a bug here is a failed parse
        return failed(f"parser error ({type(exc).__name__}: {str(exc)[:200]})")


def _parse(raw: str, truncated: bool, limits: ParseLimits, failed: Any) -> ParsedOutput:
    if len(raw) > limits.max_chars:
        return failed(f"output of {len(raw)} characters is over the limit of {limits.max_chars}")
    stripped = raw.strip()
    if not stripped:
        return failed("empty output")

    try:
        value, rec, size = _loads(stripped, limits)
        return ParsedOutput(
            value, raw, ParseReport("strict", truncated, rec.duplicates, rec.conflicting), size
        )
    except JsonLimitError as exc:
        return failed(str(exc))
    except json.JSONDecodeError as exc:
        strict_error = f"{exc.msg} at char {exc.pos}"

    try:
        found = _embedded(stripped, limits)
    except JsonLimitError as exc:
        return failed(f"{exc} ({strict_error})")
    if found is not None:
        value, rec, size = found
        return ParsedOutput(
            value,
            raw,
            ParseReport("embedded", truncated, rec.duplicates, rec.conflicting, strict_error),
            size,
        )

    fenced = _FENCE.search(stripped)
    candidate = fenced.group(1) if fenced else stripped
    if fenced is None and "```" in candidate:  # an unclosed fence, typical of truncation
        candidate = candidate.split("```", 1)[1].removeprefix("json").removeprefix("JSON")
    if len(candidate) > limits.max_repair_chars:
        return failed(
            f"{REPAIR_SKIPPED}: {len(candidate)} characters is over the repair limit of "
            f"{limits.max_repair_chars} ({strict_error})"
        )
    try:
        value, size = _repair(candidate, limits)
    except JsonLimitError as exc:
        return failed(f"{exc} ({strict_error})")
    except Exception as exc:  # json_repair raises rarely (RecursionError, int digits)
        return failed(f"repair failed ({type(exc).__name__}) ({strict_error})")
    if value in ("", None) or not isinstance(value, dict | list):
        return failed(f"no JSON found ({strict_error})")
    return ParsedOutput(value, raw, ParseReport("repaired", truncated, error=strict_error), size)
