"""The prompt grammar of PaddleOCR-VL prompt-SFT for key-information extraction.

A prompt is ``OCR:`` followed by a JSON *request*; the model answers with exactly the
requested keys, in the prompt's order, as ``json.dumps(answer, ensure_ascii=False)``.

=========================================  =================================================
prompt                                      answer holds
=========================================  =================================================
``OCR:{}``                                  every field of the document
``OCR:{"发票号码":""}``                      one string field
``OCR:{"购买方":{}}``                        a whole object
``OCR:{"货物或应税劳务、服务":[]}``            a whole list
``OCR:{"购买方":{"名称":""}}``               chosen sub-keys of an object
``OCR:{"货物或应税劳务、服务":[{"名称":"","金额":""}]}``   chosen sub-keys of every list item
=========================================  =================================================

This module is the one home of the grammar: the dataset builder, the extractors and
the scorer all call it. `parse_prompt` turns any prompt back into its request so the
scorer knows what was asked.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

PROMPT_PREFIX = "OCR:"
# One encoder each, built once: json.dumps with options builds a new one per call, which
# costs more than encoding a short prompt (the dataset builder encodes millions).
_PROMPT_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_ANSWER_JSON = json.JSONEncoder(ensure_ascii=False)
FULL_REQUEST: dict[str, Any] = {}
FULL_PROMPT = "OCR:{}"


class PromptError(ValueError):
    """A prompt or request that does not follow the grammar."""


# ---------------------------------------------------------------- requests


def placeholder_for(value: Any) -> Any:
    """The type-aware placeholder a request uses for a whole value."""
    if isinstance(value, dict):
        return {}
    if isinstance(value, list):
        return []
    return ""


def request_for_keys(fields: dict[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """A top-level partial request for `keys`, with placeholders typed after `fields`."""
    return {k: placeholder_for(fields.get(k, "")) for k in keys}


def validate_request(request: Any, where: str = "request") -> None:
    """Raise `PromptError` unless `request` follows the grammar."""
    if not isinstance(request, dict):
        raise PromptError(f"{where}: a request must be a JSON object, got {type(request).__name__}")
    for key, spec in request.items():
        path = f"{where}.{key}"
        if not key:
            raise PromptError(f"{path}: empty key")
        if spec == "" or spec == {} or spec == []:
            continue
        if isinstance(spec, dict):
            validate_request(spec, path)
        elif isinstance(spec, list):
            if len(spec) != 1 or not isinstance(spec[0], dict) or not spec[0]:
                raise PromptError(
                    f"{path}: a list request is [] (whole list) or [{{sub-keys}}] with one object"
                )
            validate_request(spec[0], f"{path}[]")
        else:
            raise PromptError(
                f'{path}: placeholder must be "", {{}}, [], an object of sub-keys or '
                f"[{{sub-keys}}], got {spec!r}"
            )


def build_prompt(request: dict[str, Any]) -> str:
    """`OCR:` + the request as compact JSON (`OCR:{"发票号码":""}`)."""
    validate_request(request)
    return PROMPT_PREFIX + _PROMPT_JSON.encode(request)


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise PromptError(f"duplicate key {k!r} in the request")
        out[k] = v
    return out


def parse_prompt(prompt: str) -> dict[str, Any]:
    """A prompt back to its request: `'OCR:{"a":""}'` → `{"a": ""}`; `'OCR:{}'` → `{}`.

    Raises `PromptError` for a prompt that is not a key-extraction prompt (such as the
    plain `OCR:` of text recognition) or whose JSON breaks the grammar.
    """
    text = prompt.strip()
    if not text.startswith(PROMPT_PREFIX):
        raise PromptError(f"prompt must start with {PROMPT_PREFIX!r}: {prompt[:60]!r}")
    body = text[len(PROMPT_PREFIX) :].strip()
    if not body:
        raise PromptError("plain 'OCR:' is text recognition, not key extraction: no request")
    try:
        request = json.loads(body, object_pairs_hook=_reject_duplicates)
    except json.JSONDecodeError as exc:
        raise PromptError(
            f"request after 'OCR:' is not valid JSON: {exc.msg} at {exc.pos}"
        ) from None
    validate_request(request)
    return request


def is_full_request(request: dict[str, Any]) -> bool:
    return request == {}


def requested_paths(request: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The paths a request names; list items are marked by `"[]"`.

    `{"a":"", "b":{"c":""}, "d":[{"e":""}]}` → `[("a",), ("b","c"), ("d","[]","e")]`.
    A whole-value placeholder (`""`, `{}`, `[]`) is one path. `{}` at the top → `[]`.
    """
    paths: list[tuple[str, ...]] = []
    for key, spec in request.items():
        here = (*prefix, key)
        if isinstance(spec, dict) and spec:
            paths.extend(requested_paths(spec, here))
        elif isinstance(spec, list) and spec:
            paths.extend(requested_paths(spec[0], (*here, "[]")))
        else:
            paths.append(here)
    return paths


# ---------------------------------------------------------------- answers


def project(fields: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
    """The answer to `request` for a document whose truth is `fields`.

    Exactly the requested keys, in the request's order. A key the document lacks gets
    the request's placeholder (`""`, `{}`, `[]`; for a sub-key request: the sub-keys,
    empty). A whole-value placeholder returns the value as it is, whatever its type.
    """
    if not request:
        return fields
    out: dict[str, Any] = {}
    for key, spec in request.items():
        out[key] = _project_value(fields.get(key, _MISSING), spec)
    return out


class _Missing:
    pass


_MISSING: Any = _Missing()


def _project_value(value: Any, spec: Any) -> Any:
    if isinstance(spec, dict) and spec:
        if value is _MISSING:
            return project({}, spec)
        if isinstance(value, dict):
            return project(value, spec)
        return value
    if isinstance(spec, list) and spec:
        if value is _MISSING:
            return []
        if isinstance(value, list):
            return [project(v, spec[0]) if isinstance(v, dict) else v for v in value]
        return value
    if value is _MISSING:
        return json.loads(json.dumps(spec))  # a fresh "", {} or []
    return value


def answer_text(answer: Any) -> str:
    """The exact answer string the model is trained to emit."""
    return _ANSWER_JSON.encode(answer)  # = json.dumps(answer, ensure_ascii=False)
