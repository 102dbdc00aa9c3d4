"""Confidence per field from the generated tokens' log-probabilities.

    from data_tools.confidence import TokenLogprob, leaf_confidence, tokens_from_openai

    tokens = tokens_from_openai(choice["logprobs"])          # OpenAI / vLLM / FastDeploy
    tokens = tokens_from_ids(tokenizer, ids, logprobs)       # transformers generate()
    conf = leaf_confidence(raw_output, tokens, prediction)
    conf.to_dict()
    # {"method": "joint", "leaves": {"发票号码": 0.998, "货物或应税劳务、服务[0].金额": 0.61},
    #  "min": 0.61, "mean": 0.80, "n_tokens": 412}
    conf.low(0.9)                                            # paths to send to review

How: the tokens' texts laid end to end are the raw output; each token covers a byte range
of it (UTF-8 bytes, so a CJK character split over two tokens is handled). A tolerant scan of
the raw output finds every JSON leaf value's span (the string's characters plus its closing
quote — the token that ends a value decides where it ends — or the literal of a number);
a leaf's confidence is the joint probability of the tokens overlapping its span,
``exp(sum(logprob))``. The leaves are those of the *parsed* prediction (paths as in
`data_tools.validation`: ``a.b``, ``items[0].c``); a leaf the scan does not find (the
parser repaired it into existence) gets no confidence. A leaf repeated under a duplicated
key takes the last occurrence, as ``json.loads`` does.

The scorer side (calibration: reliability diagram, expected calibration error) lives in
``eval/calibration.py``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MAX_DEPTH = 64


@dataclass(frozen=True)
class TokenLogprob:
    text: str
    logprob: float
    data: bytes | None = None  # the token's exact bytes when the server gives them

    @property
    def bytes(self) -> bytes:
        return self.data if self.data is not None else self.text.encode("utf-8")


def tokens_from_openai(logprobs: Mapping[str, Any] | None) -> list[TokenLogprob] | None:
    """``choices[0].logprobs`` of a chat completion → tokens (None when absent)."""
    if not isinstance(logprobs, Mapping):
        return None
    content = logprobs.get("content")
    if not isinstance(content, list):
        return None
    out = []
    for item in content:
        if not isinstance(item, Mapping) or not isinstance(item.get("token"), str):
            return None
        lp = item.get("logprob")
        if not isinstance(lp, (int, float)) or math.isnan(lp):
            return None
        raw = item.get("bytes")
        data = (
            bytes(raw) if isinstance(raw, list) and all(isinstance(b, int) for b in raw) else None
        )
        out.append(TokenLogprob(item["token"], float(max(lp, -1e4)), data))
    return out


def tokens_from_ids(
    tokenizer: Any, ids: Sequence[int], logprobs: Sequence[float]
) -> list[TokenLogprob]:
    """Generated token ids + their log-probabilities → tokens whose texts add up to
    ``tokenizer.decode(ids, skip_special_tokens=True)`` (prefix decoding: the tokens of a
    character split over several are merged into one, their log-probabilities added)."""
    out: list[TokenLogprob] = []
    prev = ""
    pending = 0.0  # logprob of tokens holding only part of a character
    for i, lp in enumerate(logprobs):
        text = tokenizer.decode(list(ids[: i + 1]), skip_special_tokens=True)
        if text.endswith("\ufffd") and i + 1 < len(logprobs):
            pending += float(lp)  # an incomplete character: it counts with the next token
            continue
        piece, prev = text[len(prev) :], text
        out.append(TokenLogprob(piece, float(lp) + pending))
        pending = 0.0
    return out


# ---------------------------------------------------------------- leaf spans in raw text


_NUMBER = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|true|false|null")


class _Scan:
    """Finds `path → (start, end)` character spans of JSON leaf values, tolerantly."""

    def __init__(self, text: str) -> None:
        self.t = text
        self.n = len(text)
        self.spans: dict[tuple[Any, ...], tuple[int, int]] = {}

    def ws(self, i: int) -> int:
        while i < self.n and self.t[i] in " \t\r\n":
            i += 1
        return i

    def string(self, i: int) -> tuple[str, int]:
        """At an opening quote: (decoded-ish content, index after the closing quote)."""
        j = i + 1
        buf = []
        while j < self.n:
            c = self.t[j]
            if c == "\\" and j + 1 < self.n:
                buf.append(self.t[j : j + 2])
                j += 2
                continue
            if c == '"':
                return "".join(buf), j + 1
            buf.append(c)
            j += 1
        return "".join(buf), self.n  # cut off: the span runs to the end

    def value(self, i: int, path: tuple[Any, ...], depth: int) -> int:
        i = self.ws(i)
        if i >= self.n or depth > MAX_DEPTH:
            return self.n
        c = self.t[i]
        if c == "{":
            return self.obj(i + 1, path, depth + 1)
        if c == "[":
            return self.arr(i + 1, path, depth + 1)
        if c == '"':
            _, end = self.string(i)
            self.spans[path] = (i + 1, end)
            return end
        m = _NUMBER.match(self.t, i)
        if m:
            self.spans[path] = (i, m.end())
            return m.end()
        return self.n  # not JSON: stop

    def obj(self, i: int, path: tuple[Any, ...], depth: int) -> int:
        while True:
            i = self.ws(i)
            if i >= self.n:
                return self.n
            if self.t[i] == "}":
                return i + 1
            if self.t[i] == ",":
                i += 1
                continue
            if self.t[i] != '"':
                return self.n
            raw_key, i = self.string(i)
            key = _unescape(raw_key)
            i = self.ws(i)
            if i >= self.n or self.t[i] != ":":
                return self.n
            i = self.value(i + 1, (*path, key), depth)

    def arr(self, i: int, path: tuple[Any, ...], depth: int) -> int:
        k = 0
        while True:
            i = self.ws(i)
            if i >= self.n:
                return self.n
            if self.t[i] == "]":
                return i + 1
            if self.t[i] == ",":
                i += 1
                continue
            before = i
            i = self.value(i, (*path, k), depth)
            k += 1
            if i == before:
                return self.n


def _unescape(raw: str) -> str:
    if "\\" not in raw:
        return raw
    import json

    try:
        return json.loads(f'"{raw}"')
    except ValueError:
        return raw


def leaf_spans(text: str) -> dict[tuple[Any, ...], tuple[int, int]]:
    """Character spans of the leaf values of the first JSON object/array in `text`."""
    scan = _Scan(text)
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    if starts:
        scan.value(min(starts), (), 0)
    return scan.spans


def path_label(path: Sequence[Any]) -> str:
    """``("items", 0, "金额")`` → ``items[0].金额``."""
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += f".{p}" if out else str(p)
    return out


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterable[tuple[Any, ...]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _leaves(v, (*path, i))
    else:
        yield path


# ---------------------------------------------------------------- confidence


@dataclass
class Confidence:
    leaves: dict[str, float | None] = field(default_factory=dict)
    n_tokens: int = 0
    method: str = "joint"
    error: str | None = None

    def values(self) -> list[float]:
        return [v for v in self.leaves.values() if v is not None]

    @property
    def min(self) -> float | None:
        vals = self.values()
        return min(vals) if vals else None

    @property
    def mean(self) -> float | None:
        vals = self.values()
        return sum(vals) / len(vals) if vals else None

    def low(self, threshold: float) -> list[str]:
        """Leaves below `threshold` (those without a confidence are not listed)."""
        return [k for k, v in self.leaves.items() if v is not None and v < threshold]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "method": self.method,
            "leaves": {k: (None if v is None else round(v, 6)) for k, v in self.leaves.items()},
            "min": None if self.min is None else round(self.min, 6),
            "mean": None if self.mean is None else round(self.mean, 6),
            "n_tokens": self.n_tokens,
        }
        if self.error:
            out["error"] = self.error
        return out


def leaf_confidence(
    raw_output: str, tokens: Sequence[TokenLogprob] | None, prediction: Any
) -> Confidence:
    """Per-leaf confidence of `prediction` (the parse of `raw_output`); see the module doc."""
    if not tokens:
        return Confidence(error="no token log-probabilities")
    raw_bytes = raw_output.encode("utf-8")
    joined = b"".join(t.bytes for t in tokens)
    if joined != raw_bytes:
        # servers may strip a leading space or special tokens: align by the longest common
        # prefix when the raw text is a suffix/prefix of the tokens; otherwise give up
        offset = joined.find(raw_bytes) if raw_bytes else -1
        if offset < 0:
            return Confidence(
                n_tokens=len(tokens),
                error="the tokens do not spell the raw output; no confidence",
            )
    else:
        offset = 0
    # byte offset of every character of the raw text
    char_byte = [0]
    for ch in raw_output:
        char_byte.append(char_byte[-1] + len(ch.encode("utf-8")))
    bounds = []
    pos = -offset
    for t in tokens:
        b = len(t.bytes)
        bounds.append((pos, pos + b, t.logprob))
        pos += b
    spans = leaf_spans(raw_output)
    conf = Confidence(n_tokens=len(tokens))
    if not isinstance(prediction, (dict, list)):
        conf.error = "no parsed prediction"
        return conf
    for path in _leaves(prediction):
        if not path:
            continue
        span = spans.get(path)
        if span is None:
            conf.leaves[path_label(path)] = None
            continue
        s, e = char_byte[span[0]], char_byte[span[1]]
        if e <= s:  # empty literal: the token at its position decides
            e = s + 1
        total = sum(lp for ts, te, lp in bounds if te > s and ts < e)
        conf.leaves[path_label(path)] = math.exp(total)
    return conf
