"""`sroie`: ICDAR 2019 SROIE task-3 key files, one per receipt.

Each key file holds one JSON object:

    {"company": "BOOK TA .K (TAMAN DAYA) SDN BHD", "date": "25/12/2018",
     "address": "NO.53 55,57 & 59, JALAN SAGU 18, ...", "total": "9.00"}

Layouts of `--src`:

* the ICDAR release: `0325updated.task2train(626p)/` (key files `X00016469612.txt` beside
  their `X00016469612.jpg`); the test keys in a folder named like `task3-test(347p)`;
  `--src` is that folder or the folder holding both;
* the Kaggle repack (`SROIE2019/` or `sroie-datasetv2/`): `{train,test}/entities/*.txt`
  (key files), `{train,test}/box/*.txt` (task-1 boxes, not read), `{train,test}/img/*.jpg`;
  `--src` is the root (both splits), one split folder, or an `entities/` folder;
* one key file, or any folder of key files (`*.txt` / `*.json`, not searched recursively:
  box files sit in sibling folders).

The image has the key file's stem and is looked for next to it, then in a parallel
`img/` (`images/`, `image/`) folder. Keys are kept as written, in file order; a key the
file lacks stays absent. `meta.split` is `train` or `test`, from the folder names.
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
    image_dirs_near,
    json_error,
    load_json_text,
    read_text,
    split_from_path,
    stem_refs,
    unique_dirs,
)

DOC_TYPE = "receipt"
DEFAULT_SCHEMA = "sroie"
EXPECTS = "task-3 key files (*.txt or *.json), each a JSON object with company/date/address/total"
KNOWN_KEYS = ("company", "date", "address", "total")
_BOX_LINE = re.compile(r"^\s*\d+\s*,\s*\d+\s*,")


_KEY_DIR = re.compile(r"task2train|task3.*test")


def _files_in(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in (".txt", ".json")
    )


def _key_files(src: Path) -> tuple[list[Path], Path]:
    if src.is_file():
        return [src], src.parent
    dirs = [src / "entities", src / "key", *sorted(src.glob("*/entities"))]
    dirs += sorted(src.glob("*/key"))
    dirs += sorted(d for d in src.iterdir() if d.is_dir() and _KEY_DIR.search(d.name.lower()))
    files = [f for d in unique_dirs(dirs) if d.is_dir() for f in _files_in(d)]
    if not files:
        files = _files_in(src)
    if not files:
        raise ConvertError(
            f"{src}: no *.txt or *.json key files in this folder, in entities/ or key/ below "
            "it, or in a task2train/task3-test folder; point --src at the dataset root or at "
            "the folder holding the task-3 key files (e.g. '0325updated.task2train(626p)' or "
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
            search_dirs=image_dirs_near(parent),
            split=split_from_path(path),
        )
