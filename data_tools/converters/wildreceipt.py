"""`wildreceipt`: the close-set WildReceipt annotations of MMOCR.

The release (`wildreceipt.tar`) holds `class_list.txt`, `train.txt`, `test.txt` and
`image_files/`. Each line of `train.txt` / `test.txt` is one receipt:

    {"file_name": "image_files/Image_16/11/d5de...554.jpeg", "height": 1200, "width": 1600,
     "annotations": [{"box": [x1, y1, ..., x4, y4], "text": "SAFEWAY", "label": 1}, ...]}

and `class_list.txt` names the labels, one `index name` per line (`0 Ignore`,
`1 Store_name_value`, `2 Store_name_key`, ..., `25 Others`).

Pairing: a `<Field>_value` box gives a value of field `<Field>`; the `<Field>_key` boxes
are the printed captions ("TOTAL") and go to `meta.key_texts`; `Ignore` and `Others` are
dropped. A field with one value box is a string, with several a list of strings in file
order; the product columns (`Prod_item`, `Prod_quantity`, `Prod_price`) are always lists.
Fields come in class-list order. Class names without a `_key`/`_value` suffix (a custom
close-set list) are taken as value fields of that name.

`--src` is one annotation file, or a folder holding `train.txt` / `test.txt` (or
`annotations/train.txt` as MMOCR 1.x's dataset preparer lays it out). The class list is
taken from `--class-list`, else from `class_list.txt` beside the annotation file or one
folder up. The open-set variant (`openset_train.txt`, labels key/value/others) is not read.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from data_tools.converters.common import (
    BadItem,
    ConvertError,
    ConvertOptions,
    SourceItem,
    json_lines,
    read_text,
    unique_dirs,
)

DOC_TYPE = "receipt"
DEFAULT_SCHEMA = None
EXPECTS = "MMOCR close-set annotation lines {file_name, annotations: [{box, text, label}]}"
DROP_CLASSES = {"ignore", "others", "other", "bg", "background"}
LIST_FIELDS = {"Prod_item", "Prod_quantity", "Prod_price"}
SPLIT_FILES = ("train.txt", "test.txt")


def read_class_list(path: Path) -> dict[int, tuple[str, str]]:
    """`class_list.txt` → {label: (field, role)} with role "value", "key" or "drop"."""
    out: dict[int, tuple[str, str]] = {}
    for lineno, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or not parts[0].isdigit():
            raise ConvertError(
                f"{path}:{lineno}: expected 'index name' (e.g. '1 Store_name_value'), got {line!r}"
            )
        label, name = int(parts[0]), parts[1].strip()
        if name.lower() in DROP_CLASSES:
            out[label] = (name, "drop")
        elif name.endswith("_value"):
            out[label] = (name.removesuffix("_value"), "value")
        elif name.endswith("_key"):
            out[label] = (name.removesuffix("_key"), "key")
        elif name.lower() in ("key", "value"):
            raise ConvertError(
                f"{path}:{lineno}: this is the open-set class list (bg/key/value/others), which "
                "carries no field names; convert the close-set train.txt/test.txt with its "
                "class_list.txt instead"
            )
        else:
            out[label] = (name, "value")
    if not out:
        raise ConvertError(f"{path}: empty class list")
    return out


def _annotation_files(src: Path) -> list[Path]:
    if src.is_file():
        return [src]
    for folder in (src, src / "annotations"):
        files = [folder / name for name in SPLIT_FILES if (folder / name).is_file()]
        if files:
            return files
    raise ConvertError(
        f"{src}: no train.txt or test.txt here or in {src / 'annotations'}; point --src at the "
        "unpacked wildreceipt folder or at one annotation file"
    )


def _find_class_list(ann: Path, opts: ConvertOptions) -> Path:
    if opts.class_list is not None:
        if not opts.class_list.is_file():
            raise ConvertError(f"--class-list {opts.class_list}: file not found")
        return opts.class_list
    for folder in (ann.parent, ann.parent.parent):
        if (folder / "class_list.txt").is_file():
            return folder / "class_list.txt"
    raise ConvertError(
        f"class_list.txt not found beside {ann} or one folder up; pass --class-list PATH "
        "(the file of 'index name' lines shipped with WildReceipt)"
    )


def _convert_line(
    obj: Any, classes: dict[int, tuple[str, str]], class_file: Path
) -> tuple[dict[str, Any], dict[str, Any]] | str:
    """(fields, meta) for one receipt, or an error message."""
    if not isinstance(obj, dict) or not isinstance(obj.get("file_name"), str):
        return f"expected {EXPECTS}; 'file_name' (string) is missing"
    annotations = obj.get("annotations")
    if not isinstance(annotations, list):
        return "'annotations' must be a list of {box, text, label}"
    values: dict[str, list[str]] = {}
    key_texts: dict[str, list[str]] = {}
    for i, ann in enumerate(annotations):
        if not isinstance(ann, dict) or "label" not in ann or "text" not in ann:
            return f"annotation {i}: expected an object with 'text' and 'label'"
        label, text = ann["label"], ann["text"]
        if isinstance(label, str) and label.isdigit():
            label = int(label)
        if not isinstance(label, int) or label not in classes:
            return (
                f"annotation {i} ({text!r}): label {label!r} is not in {class_file}; "
                "use the class list that came with these annotations (--class-list)"
            )
        if not isinstance(text, str):
            return f"annotation {i}: 'text' must be a string, got {type(text).__name__}"
        name, role = classes[label]
        text = text.strip()
        if role == "drop" or not text:
            continue
        (values if role == "value" else key_texts).setdefault(name, []).append(text)
    fields: dict[str, Any] = {}
    for name in dict.fromkeys(n for n, role in classes.values() if role == "value"):
        if name in values:
            texts = values[name]
            fields[name] = texts if name in LIST_FIELDS or len(texts) > 1 else texts[0]
    meta = {"key_texts": key_texts} if key_texts else {}
    return fields, meta


def iter_items(src: Path, opts: ConvertOptions) -> Iterator[SourceItem | BadItem]:
    ann_files = _annotation_files(src)
    for ann in ann_files:
        class_file = _find_class_list(ann, opts)
        classes = read_class_list(class_file)
        split = ann.stem
        for where, lineno, obj in json_lines(ann, read_text(ann)):
            if isinstance(obj, BadItem):
                yield obj
                continue
            result = _convert_line(obj, classes, class_file)
            if isinstance(result, str):
                yield BadItem(where, result)
                continue
            fields, meta = result
            file_name = obj["file_name"]
            yield SourceItem(
                id=Path(file_name).with_suffix("").as_posix(),
                fields=fields,
                where=where,
                source={"file": ann.name, "line": lineno, "split": split},
                image_refs=[file_name],
                search_dirs=unique_dirs(
                    [
                        ann.parent,
                        ann.parent.parent,
                        # MMOCR 1.x's preparer flattens the images into image_files/
                        ann.parent / "image_files",
                        ann.parent.parent / "image_files",
                    ]
                ),
                meta=meta,
            )
