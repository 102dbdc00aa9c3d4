"""`sroie`: ICDAR 2019 SROIE task-3 key files, one per receipt.

Each key file (`X00016469612.txt` in `0325updated.task2train(626p)/`, or `*.json` in a
`key/` folder of the re-packaged copies) holds one JSON object:

    {"company": "BOOK TA .K (TAMAN DAYA) SDN BHD", "date": "25/12/2018",
     "address": "NO.53 55,57 & 59, JALAN SAGU 18, ...", "total": "9.00"}

`--src` is the folder holding the key files (not searched recursively: task-1 box files
sit in sibling folders) or one key file. The image has the key file's stem and is looked
for next to it, then in a parallel `img/` (`images/`, `image/`) folder. Keys are kept as
written, in file order; a key the file lacks stays absent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

from data_tools.converters.common import (
    BadItem,
    ConvertError,
    ConvertOptions,
    SourceItem,
    json_error,
    load_json_text,
    read_text,
    stem_refs,
    unique_dirs,
)

DOC_TYPE = "receipt"
DEFAULT_SCHEMA = None
EXPECTS = "task-3 key files (*.txt or *.json), each a JSON object with company/date/address/total"
KNOWN_KEYS = ("company", "date", "address", "total")
_BOX_LINE = re.compile(r"^\s*\d+\s*,\s*\d+\s*,")


def _key_files(src: Path) -> tuple[list[Path], Path]:
    if src.is_file():
        return [src], src.parent
    files = sorted(
        p for p in src.iterdir() if p.is_file() and p.suffix.lower() in (".txt", ".json")
    )
    if not files:
        raise ConvertError(
            f"{src}: no *.txt or *.json key files directly in this folder; point --src at the "
            "folder holding the task-3 key files (e.g. '0325updated.task2train(626p)' or "
            "'train/entities')"
        )
    return files, src


def iter_items(src: Path, opts: ConvertOptions) -> Iterator[SourceItem | BadItem]:
    files, root = _key_files(src)
    for path in files:
        where = str(path)
        try:
            text = read_text(path).strip()
        except ConvertError as exc:
            yield BadItem(where, str(exc).removeprefix(f"{path}: "))
            continue
        if not text.startswith("{"):
            looks = (
                "a task-1/2 box file (x1,y1,...,x4,y4,text lines)"
                if _BOX_LINE.match(text)
                else "something else"
            )
            yield BadItem(
                where,
                f"not a task-3 key file: expected a JSON object with {'/'.join(KNOWN_KEYS)}, "
                f"this looks like {looks}; point --src at the key-file folder",
            )
            continue
        try:
            obj = load_json_text(text)
        except json.JSONDecodeError as exc:
            yield BadItem(where, json_error(exc) + "; fix the file")
            continue
        if not isinstance(obj, dict):
            yield BadItem(where, f"expected a JSON object, got {type(obj).__name__}")
            continue
        if not any(k in obj for k in KNOWN_KEYS):
            yield BadItem(
                where,
                f"none of the SROIE keys {', '.join(KNOWN_KEYS)} in this object "
                f"(keys: {sorted(obj)}); is this a SROIE task-3 key file?",
            )
            continue
        parent = path.parent
        yield SourceItem(
            id=path.stem,
            fields=obj,
            where=where,
            source={"file": path.relative_to(root).as_posix()},
            image_refs=stem_refs(path.stem),
            search_dirs=unique_dirs(
                [
                    parent,
                    parent.parent / "img",
                    parent.parent / "images",
                    parent.parent / "image",
                    parent / "img",
                ]
            ),
        )
