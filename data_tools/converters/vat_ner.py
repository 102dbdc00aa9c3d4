"""`vat_ner`: the published per-image VLM label files `{"image": "b0.jpg", "data": {...}}`.

`--src` is one file or a folder searched recursively for `*.json` / `*.jsonl`. A `.json`
file holds one object or a list of them; a `.jsonl` file one object per line. `data` is
kept as written (the schema canonicalises it later).

The published labels (megemini/PaddleOCR-VL-REC `zzsptfp/zzsptfp_ner/b0_ner.json`) name
the image by the author's own absolute path (`/media/shun/.../zzsptfp/b0.jpg`): an image
reference that does not exist is looked up by its last path parts and its file name in
`--image-dir`, next to the label file, one folder up, in the usual image folders and in
the sibling folder named like the label folder without `_ner` (`zzsptfp_ner/` →
`zzsptfp/`). The id is the label file's stem without its label suffix (`b0_ner` → `b0`);
in list and JSONL files, the image's stem.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from data_tools.converters.common import (
    BadItem,
    ConvertError,
    ConvertOptions,
    SourceItem,
    image_dirs_near,
    json_error,
    json_lines,
    load_json_text,
    read_text,
    strip_label_suffix,
    unique_dirs,
)

DOC_TYPE = "vat_invoice"
DEFAULT_SCHEMA = "vat_invoice"
EXPECTS = 'one JSON object {"image": "...", "data": {...}} per image, in *.json or *.jsonl files'


def _label_files(src: Path) -> tuple[list[Path], Path]:
    if src.is_file():
        return [src], src.parent
    files = sorted(
        p
        for p in src.rglob("*")
        if p.is_file()
        and p.suffix in (".json", ".jsonl")
        and not any(part.startswith(".") for part in p.relative_to(src).parts)
    )
    if not files:
        raise ConvertError(f"{src}: no *.json or *.jsonl label files in this folder; {EXPECTS}")
    return files, src


def _item(
    obj: Any, path: Path, root: Path, where: str, source: dict, single: bool
) -> SourceItem | BadItem:
    if not isinstance(obj, dict) or "data" not in obj or "image" not in obj:
        got = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        return BadItem(where, f"expected {EXPECTS}; got {got}")
    image, data = obj["image"], obj["data"]
    if not isinstance(image, str) or not image.strip():
        return BadItem(where, "'image' must be a non-empty string (the image file name)")
    if not isinstance(data, dict):
        return BadItem(where, f"'data' must be a JSON object of fields, got {type(data).__name__}")
    stem = path.stem if single else Path(image.replace("\\", "/")).stem
    return SourceItem(
        id=strip_label_suffix(stem),
        fields=data,
        where=where,
        source=source,
        image_refs=[image],
        search_dirs=unique_dirs([*image_dirs_near(path.parent), root]),
    )


def iter_items(src: Path, opts: ConvertOptions) -> Iterator[SourceItem | BadItem]:
    files, root = _label_files(src)
    for path in files:
        rel = path.relative_to(root).as_posix()
        try:
            text = read_text(path)
        except ConvertError as exc:
            yield BadItem(str(path), str(exc).removeprefix(f"{path}: "))
            continue
        if path.suffix == ".jsonl":
            for where, lineno, obj in json_lines(path, text):
                if isinstance(obj, BadItem):
                    yield obj
                    continue
                yield _item(obj, path, root, where, {"file": rel, "line": lineno}, single=False)
            continue
        try:
            obj = load_json_text(text)
        except json.JSONDecodeError as exc:
            yield BadItem(str(path), json_error(exc) + "; fix or remove the file")
            continue
        if isinstance(obj, list):
            for i, one in enumerate(obj):
                where = f"{path}: item {i}"
                source = {"file": rel, "index": i}
                yield _item(one, path, root, where, source, single=False)
        else:
            yield _item(obj, path, root, str(path), {"file": rel}, single=True)
