"""The prompt-SFT formats, in one place: write, read and check.

Two trainers, two layouts of the same content (one image, prompt turns with no loss,
answer turns that are trained):

* ERNIEKit ``OCR-VL-SFT``::

    {"id": "doc7", "image_info": [{"matched_text_index": 0, "image_url": "/abs/img.jpg"}],
     "text_info": [{"text": "OCR:{...}", "tag": "mask"}, {"text": "{...}", "tag": "no_mask"}]}

* PaddleFormers ``VL-SFT`` with template ``paddleocr_vl``::

    {"id": "doc7", "messages": [{"role": "user", "content": "<image>OCR:{...}"},
                                {"role": "assistant", "content": "{...}"}],
     "images": ["/abs/img.jpg"]}

``id`` is the canonical label record's id, so predictions and scores join on it (every
prompt variant of one document shares it). Both trainers accept the key: ERNIE's own
multimodal record schema declares an optional string ``id``
(``data_processor/utils/format_utils.py``, ``MULTI_MODAL_SCHEMA``) and its data processor
rebuilds each example from ``text_info`` / ``image_info`` (``data_processor/utils/relief.py``,
``omini_convert_sequence_to_schema``); PaddleFormers' ``messages`` reader passes the record
through and reads only the keys it knows (``datasets/reader/file_reader.py``,
``SFTDataset``; checked: all records with ``id`` come out of its ``FileReader``, and the CPU
tiny training run trains on them). Records written
before ids existed have none: :func:`read_record` then returns ``id=None``.

A requests file (``val.requests.jsonl``, written by the dataset builder) holds what to
ask a model, one ``{"id", "image", "prompt"}`` per line; :func:`read_requests` reads it,
and also turns an SFT file of either format into the same requests, so a caller has one
reader for both.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from json.encoder import encode_basestring  # the C string encoder json.dumps uses
from pathlib import Path
from typing import Any

from data_tools.jsonl import JsonlError, read_jsonl

FORMATS = ("erniekit", "paddleformers")
IMAGE_TAG = "<image>"


class SftFormatError(ValueError):
    """An SFT or requests record that cannot be read; the message starts with `file:line:`."""


@dataclass(frozen=True)
class SftExample:
    """One SFT record, whatever its format: the image and its (prompt, answer) turns."""

    id: str | None
    image: str
    turns: tuple[tuple[str, str], ...]
    format: str


@dataclass(frozen=True)
class Request:
    """One thing to ask a model: a prompt about an image of a known record."""

    id: str | None
    image: str
    prompt: str
    where: str = ""  # file:line it came from


# ---------------------------------------------------------------- write


def erniekit_record(
    image: str, prompt: str, answer: str, record_id: str | None = None
) -> dict[str, Any]:
    """ERNIEKit `OCR-VL-SFT`: prompt tagged `mask` (no loss), answer `no_mask` (trained)."""
    rec: dict[str, Any] = {} if record_id is None else {"id": record_id}
    rec["image_info"] = [{"matched_text_index": 0, "image_url": image}]
    rec["text_info"] = [{"text": prompt, "tag": "mask"}, {"text": answer, "tag": "no_mask"}]
    return rec


def paddleformers_record(
    image: str, prompt: str, answer: str, record_id: str | None = None
) -> dict[str, Any]:
    """PaddleFormers `VL-SFT` with template `paddleocr_vl`."""
    rec: dict[str, Any] = {} if record_id is None else {"id": record_id}
    rec["messages"] = [
        {"role": "user", "content": f"{IMAGE_TAG}{prompt}"},
        {"role": "assistant", "content": answer},
    ]
    rec["images"] = [image]
    return rec


WRITERS = {"erniekit": erniekit_record, "paddleformers": paddleformers_record}

# The same records as one JSONL line each, byte for byte what `jsonl.dumps_line` makes of
# `WRITERS[fmt](...)`, without building and walking the dicts (the dataset builder writes
# millions of them; tests hold the two ways equal).
_LINES = {
    "erniekit": (
        '"image_info": [{"matched_text_index": 0, "image_url": %s}], '
        '"text_info": [{"text": %s, "tag": "mask"}, {"text": %s, "tag": "no_mask"}]}\n'
    ),
    "paddleformers": (
        '"messages": [{"role": "user", "content": %s}, {"role": "assistant", "content": %s}], '
        '"images": [%s]}\n'
    ),
}


def record_line(
    fmt: str, image: str, prompt: str, answer: str, record_id: str | None = None
) -> str:
    """`dumps_line(WRITERS[fmt](image, prompt, answer, record_id))`, fast."""
    head = "{" if record_id is None else '{"id": ' + encode_basestring(record_id) + ", "
    if fmt == "erniekit":
        body = _LINES[fmt] % (
            encode_basestring(image),
            encode_basestring(prompt),
            encode_basestring(answer),
        )
    elif fmt == "paddleformers":
        body = _LINES[fmt] % (
            encode_basestring(IMAGE_TAG + prompt),
            encode_basestring(answer),
            encode_basestring(image),
        )
    else:
        raise ValueError(f"unknown SFT format {fmt!r}; use one of {FORMATS}")
    return head + body


def request_row(record_id: str, image: str, prompt: str) -> dict[str, str]:
    """One line of a requests file."""
    return {"id": record_id, "image": image, "prompt": prompt}


# ---------------------------------------------------------------- read


def detect_format(rec: Any) -> str | None:
    """`erniekit`, `paddleformers`, or None for anything else."""
    if not isinstance(rec, dict):
        return None
    if "text_info" in rec:
        return "erniekit"
    if "messages" in rec:
        return "paddleformers"
    return None


def _record_id(rec: dict[str, Any], where: str) -> str | None:
    rid = rec.get("id")
    if rid is None:
        return None
    if not isinstance(rid, str) or not rid:
        raise SftFormatError(f"{where}: 'id' must be a non-empty string, got {rid!r}")
    return rid


def read_record(rec: Any, where: str = "record") -> SftExample:
    """One SFT record of either format → `SftExample`; raises `SftFormatError`.

    Reads what the trainers read; use :func:`check_record` for every rule they enforce.
    """
    fmt = detect_format(rec)
    if fmt is None:
        raise SftFormatError(
            f"{where}: not an SFT record (neither ERNIEKit text_info/image_info nor "
            "PaddleFormers messages/images)"
        )
    problems = check_record(rec, where, fmt, seen=None)
    if problems:
        raise SftFormatError("; ".join(problems))
    if fmt == "erniekit":
        images = [im["image_url"] for im in rec["image_info"]]
        texts = [t["text"] for t in rec["text_info"]]
    else:
        images = list(rec.get("images") or [])
        texts = [m["content"] for m in rec["messages"]]
        texts = [t.replace(IMAGE_TAG, "") if i % 2 == 0 else t for i, t in enumerate(texts)]
    if len(images) != 1:
        raise SftFormatError(f"{where}: expected exactly one image, found {len(images)}")
    turns = tuple(zip(texts[0::2], texts[1::2], strict=True))
    return SftExample(_record_id(rec, where), images[0], turns, fmt)


def read_sft(path: str | Path) -> Iterator[tuple[str, SftExample]]:
    """`(file:line, example)` for every record of an SFT JSONL file."""
    path = Path(path)
    try:
        for lineno, obj in read_jsonl(path):
            where = f"{path}:{lineno}"
            yield where, read_record(obj, where)
    except JsonlError as exc:
        raise SftFormatError(str(exc)) from None


def read_requests(path: str | Path) -> list[Request]:
    """Every request of a requests file (``{"id", "image", "prompt"}`` per line) or of an
    SFT file of either format (one request per prompt turn), in file order.

    Image paths are returned as written (the dataset builder writes absolute ones); a
    caller resolves a relative one against the file's folder. Raises `SftFormatError`
    naming the file and line of the first unusable record.
    """
    path = Path(path)
    out: list[Request] = []
    try:
        for lineno, obj in read_jsonl(path):
            where = f"{path}:{lineno}"
            if detect_format(obj) is not None:
                ex = read_record(obj, where)
                out.extend(Request(ex.id, ex.image, p, where) for p, _ in ex.turns)
                continue
            missing = [k for k in ("id", "image", "prompt") if k not in obj]
            if missing:
                raise SftFormatError(
                    f"{where}: a request needs 'id', 'image' and 'prompt' (missing "
                    f"{', '.join(missing)}), or the line must be an SFT record"
                )
            for key in ("id", "image", "prompt"):
                if not isinstance(obj[key], str) or not obj[key]:
                    raise SftFormatError(f"{where}: {key!r} must be a non-empty string")
            out.append(Request(obj["id"], obj["image"], obj["prompt"], where))
    except JsonlError as exc:
        raise SftFormatError(str(exc)) from None
    return out


# ---------------------------------------------------------------- check


def _check_image(path_text: Any, where: str, seen: dict[str, str | None] | None) -> str | None:
    """The trainers want an absolute path to an existing file (`seen` caches results;
    with `seen=None` only the type is checked, not the disk)."""
    if not isinstance(path_text, str) or not path_text:
        return f"{where}: image path must be a non-empty string"
    if seen is None:
        return None
    if path_text in seen:
        return seen[path_text]
    problem = None
    p = Path(path_text)
    if not p.is_absolute():
        problem = (
            f"{where}: image path {path_text!r} is relative; ERNIEKit/PaddleFormers resolve it "
            "against their working directory (and ERNIEKit base64-decodes a path that is not a "
            "file). Rebuild the dataset with absolute paths (data_tools.build_dataset writes them)"
        )
    elif not p.is_file():
        problem = f"{where}: image {path_text} does not exist"
    seen[path_text] = problem
    return problem


def _check_id(rec: dict[str, Any], where: str) -> list[str]:
    rid = rec.get("id")
    if rid is not None and (not isinstance(rid, str) or not rid):
        return [f"{where}: 'id' (the label record's id) must be a non-empty string, got {rid!r}"]
    return []


def check_erniekit_record(
    rec: Any, where: str, seen: dict[str, str | None] | None = None
) -> list[str]:
    """Problems of one ERNIEKit OCR-VL-SFT record (empty list: fine). `seen` caches image
    checks across records; None skips the disk checks."""
    if not isinstance(rec, dict):
        return [f"{where}: a record must be a JSON object"]
    if "messages" in rec:
        return [
            f"{where}: this is a PaddleFormers (messages/images) record; the erniekit launcher "
            "needs image_info/text_info: rebuild with python -m data_tools.build_dataset --format erniekit"
        ]
    problems = _check_id(rec, where)
    texts = rec.get("text_info")
    images = rec.get("image_info")
    if not isinstance(texts, list) or not texts:
        return [*problems, f"{where}: text_info must be a non-empty list"]
    if not isinstance(images, list):
        return [*problems, f"{where}: image_info must be a list"]
    tags = []
    for i, t in enumerate(texts):
        if not isinstance(t, dict) or not isinstance(t.get("text"), str):
            problems.append(f"{where}: text_info[{i}] needs a string 'text'")
            continue
        if t.get("tag") not in ("mask", "no_mask"):
            problems.append(
                f"{where}: text_info[{i}].tag must be mask or no_mask, got {t.get('tag')!r}"
            )
        tags.append(t.get("tag"))
    expected = ["mask" if i % 2 == 0 else "no_mask" for i in range(len(tags))]
    if tags and (tags != expected or tags[-1] != "no_mask"):
        problems.append(
            f"{where}: tags {tags} must alternate mask (prompt, no loss) / no_mask (answer, "
            "trained), starting with mask and ending with no_mask"
        )
    for i, im in enumerate(images):
        if not isinstance(im, dict):
            problems.append(f"{where}: image_info[{i}] must be an object")
            continue
        idx = im.get("matched_text_index")
        if not isinstance(idx, int) or not 0 <= idx < len(texts):
            problems.append(
                f"{where}: image_info[{i}].matched_text_index {idx!r} is not a text_info index"
            )
        problem = _check_image(im.get("image_url"), f"{where}: image_info[{i}]", seen)
        if problem:
            problems.append(problem)
    return problems


def check_paddleformers_record(
    rec: Any, where: str, seen: dict[str, str | None] | None = None
) -> list[str]:
    """Problems of one PaddleFormers VL-SFT (messages/images) record."""
    if not isinstance(rec, dict):
        return [f"{where}: a record must be a JSON object"]
    if "text_info" in rec:
        return [
            f"{where}: this is an ERNIEKit (image_info/text_info) record; the paddleformers "
            "launcher needs messages/images: rebuild with --format paddleformers"
        ]
    problems = _check_id(rec, where)
    messages = rec.get("messages")
    if not isinstance(messages, list) or not messages:
        return [*problems, f"{where}: messages must be a non-empty list"]
    roles = [m.get("role") if isinstance(m, dict) else None for m in messages]
    expected = ["user" if i % 2 == 0 else "assistant" for i in range(len(roles))]
    if roles != expected or roles[-1] != "assistant":
        problems.append(
            f"{where}: roles {roles} must alternate user (prompt, no loss) / assistant (answer), "
            "ending with assistant"
        )
    n_tags = 0
    for i, m in enumerate(messages):
        if isinstance(m, dict) and not isinstance(m.get("content"), str):
            problems.append(f"{where}: messages[{i}].content must be a string")
        elif isinstance(m, dict) and m.get("role") == "user":
            n_tags += m["content"].count(IMAGE_TAG)
    images = rec.get("images") or []
    if not isinstance(images, list):
        return [*problems, f"{where}: images must be a list of paths"]
    if n_tags != len(images):
        problems.append(
            f"{where}: {n_tags} {IMAGE_TAG} tag(s) in user messages but {len(images)} image(s)"
        )
    for i, im in enumerate(images):
        problem = _check_image(im, f"{where}: images[{i}]", seen)
        if problem:
            problems.append(problem)
    return problems


CHECKERS = {"erniekit": check_erniekit_record, "paddleformers": check_paddleformers_record}


def check_record(
    rec: Any, where: str, fmt: str, seen: dict[str, str | None] | None = None
) -> list[str]:
    """Problems of one record against format `fmt` (`erniekit` or `paddleformers`)."""
    if fmt not in CHECKERS:
        raise ValueError(f"unknown SFT format {fmt!r}; use one of {FORMATS}")
    return CHECKERS[fmt](rec, where, seen)


def check_dataset_file(path: Path, fmt: str) -> tuple[int, list[str]]:
    """(good records, problems) of one JSONL file against format `fmt`; images must exist."""
    path = Path(path)
    seen: dict[str, str | None] = {}
    problems: list[str] = []
    n = 0
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                problems.append(f"{where}: not JSON ({e.msg})")
                continue
            found = check_record(rec, where, fmt, seen)
            if found:
                problems.extend(found)
            else:
                n += 1
    return n, problems
