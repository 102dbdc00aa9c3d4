"""`wildreceipt`: WildReceipt receipts (MMOCR's KIE set), in the layouts users download.

Layouts of `--src` (a folder, or one annotation file):

* the release tar (`wildreceipt.tar` → `wildreceipt/`): `class_list.txt` (`0 Ignore`,
  `1 Store_name_value`, ..., `25 Others`), `train.txt`, `test.txt`, `image_files/`;
  one JSON object per line: `{"file_name": "image_files/Image_16/11/d5de....jpeg",
  "height", "width", "annotations": [{"box": [x1, y1, ..., x4, y4], "text", "label"}]}`;
* MMOCR 1.x's dataset preparer (`data/wildreceipt/`): the same close-set lines (also as
  `annotations/train.txt` or `closeset_train.txt`) and its open-set files
  `openset_train.txt` / `openset_test.txt` (labels 0 bg, 1 key, 2 value, 3 others, and an
  `edge` id joining a key box to its value boxes); the close-set files win when both exist;
* PaddleOCR's copy (`wildreceipt_train.txt` / `wildreceipt_test.txt`): one line per image,
  `image_files/...jpeg<TAB>[{"label": 1, "transcription": "SAFEWAY", "points": [[x, y]...]}]`,
  with a names-only `class_list.txt` (one class name per line, the index is the line).

Close set: a `<Field>_value` box gives a value of field `<Field>`; a field is the list of
its boxes in reading order, so a key has one type on every receipt (`"Total": ["$7.50"]`
whether the receipt prints it once or twice). The product columns become one list of line
items, `"Items": [{"name", "quantity", "price"}]`, paired by position: each price and
quantity box is matched to the item-name box on its row, allowing for a photo's slant (the
vertical offset between two columns is estimated per receipt, then the boxes are aligned
top to bottom); a box left without a partner becomes an item of its own and is counted.
`<Field>_key` captions go to `meta.key_texts`; `Ignore` and `Others` boxes are dropped and
counted. Open set: the text of each key box is the key, its value boxes the list of values.
The split (`meta.split`) is the file's: `train` or `test`.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_tools.converters.common import (
    BadItem,
    ConvertError,
    ConvertOptions,
    SourceItem,
    image_dirs_near,
    load_json_text,
    read_text,
    split_from_path,
    unique_dirs,
)

DOC_TYPE = "receipt"
DEFAULT_SCHEMA = None  # configs/schemas/wildreceipt.yaml types the close-set fields for QA
EXPECTS = (
    "WildReceipt annotation lines: MMOCR {file_name, annotations: [{box, text, label}]} "
    "or PaddleOCR 'image<TAB>[{label, transcription, points}]'"
)
DROP_CLASSES = {"ignore", "others", "other", "bg", "background"}
ITEMS_KEY = "Items"
# product columns → the key they take in a line item; "name" anchors the pairing
ITEM_COLUMNS = {"Prod_item": "name", "Prod_quantity": "quantity", "Prod_price": "price"}
ITEM_KEYS = ("name", "quantity", "price")
SPLITS = ("train", "test", "val")
CLOSESET_FILES = tuple(
    f"{prefix}{split}.txt" for prefix in ("", "closeset_", "wildreceipt_") for split in SPLITS
)
OPENSET_FILES = tuple(f"openset_{split}.txt" for split in SPLITS)
OPENSET_LABELS = {0: "bg", 1: "key", 2: "value", 3: "others"}


# ---------------------------------------------------------------- class list


def read_class_list(path: Path) -> dict[int, tuple[str, str]]:
    """`class_list.txt` → {label: (field, role)} with role "value", "key" or "drop".

    Lines are `index name` (the release) or just `name` (PaddleOCR's copy: index = line)."""
    lines = [(n, line.strip()) for n, line in enumerate(read_text(path).splitlines(), 1)]
    lines = [(n, line) for n, line in lines if line]
    indexed = all(len(line.split()) == 2 and line.split()[0].isdigit() for _, line in lines)
    out: dict[int, tuple[str, str]] = {}
    for i, (lineno, line) in enumerate(lines):
        if indexed:
            label, name = int(line.split()[0]), line.split()[1]
        elif len(line.split()) == 1 and not line.isdigit():
            label, name = i, line
        else:
            raise ConvertError(
                f"{path}:{lineno}: expected 'index name' (e.g. '1 Store_name_value') or one "
                f"class name per line, got {line!r}"
            )
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
                "class_list.txt, or the openset_*.txt files without --class-list"
            )
        else:
            out[label] = (name, "value")
    if not out:
        raise ConvertError(f"{path}: empty class list")
    return out


def _annotation_files(src: Path) -> list[Path]:
    if src.is_file():
        return [src]
    for names in (CLOSESET_FILES, OPENSET_FILES):
        for folder in (src, src / "annotations"):
            files = [folder / name for name in names if (folder / name).is_file()]
            if files:
                return files
    raise ConvertError(
        f"{src}: no WildReceipt annotation file here or in {src / 'annotations'} (looked for "
        f"{', '.join(CLOSESET_FILES + OPENSET_FILES)}); point --src at the unpacked "
        "wildreceipt folder or at one annotation file"
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
        "(the file of class names shipped with WildReceipt)"
    )


# ---------------------------------------------------------------- boxes


@dataclass
class Box:
    text: str
    label: int
    top: float | None = None
    bottom: float | None = None
    left: float | None = None
    edge: Any = None

    @property
    def has_geometry(self) -> bool:
        return self.top is not None

    @property
    def center(self) -> float:
        assert self.top is not None and self.bottom is not None
        return (self.top + self.bottom) / 2

    @property
    def height(self) -> float:
        assert self.top is not None and self.bottom is not None
        return max(self.bottom - self.top, 1.0)


def _geometry(coords: Any) -> tuple[float, float, float] | None:
    """(top, bottom, left) of a `[x1, y1, ...]` box or `[[x, y], ...]` points."""
    if isinstance(coords, list) and coords and isinstance(coords[0], list):
        coords = [c for point in coords for c in point]
    if not isinstance(coords, list) or len(coords) < 4 or len(coords) % 2:
        return None
    try:
        xs, ys = [float(x) for x in coords[0::2]], [float(y) for y in coords[1::2]]
    except (TypeError, ValueError):
        return None
    return min(ys), max(ys), min(xs)


def _parse_line(line: str) -> tuple[str, list[Any], bool] | str:
    """(file_name, raw annotations, paddle_layout) of one annotation line, or an error."""
    text = line.strip()
    if text.startswith("{"):
        try:
            obj = load_json_text(text)
        except json.JSONDecodeError as exc:
            return f"not valid JSON ({exc.msg}, column {exc.colno}); fix or delete this line"
        if not isinstance(obj, dict) or not isinstance(obj.get("file_name"), str):
            return f"expected {EXPECTS}; 'file_name' (string) is missing"
        if not isinstance(obj.get("annotations"), list):
            return "'annotations' must be a list of {box, text, label}"
        return obj["file_name"], obj["annotations"], False
    image, tab, payload = line.partition("\t")
    if not tab:
        return f"expected a JSON object or 'image<TAB>[annotations]'; {EXPECTS}"
    try:
        anns = load_json_text(payload)
    except json.JSONDecodeError as exc:
        return f"the annotation list after the tab is not valid JSON ({exc.msg})"
    if not isinstance(anns, list):
        return "the annotations after the tab must be a JSON list"
    return image.strip(), anns, True


def _boxes(anns: list[Any], known: set[int] | None, class_file: Path | None) -> list[Box] | str:
    out: list[Box] = []
    for i, ann in enumerate(anns):
        if not isinstance(ann, dict) or "label" not in ann:
            return (
                f"annotation {i}: expected an object with 'text' (or 'transcription') and 'label'"
            )
        text = ann.get("text", ann.get("transcription"))
        label = ann["label"]
        if isinstance(label, str) and label.isdigit():
            label = int(label)
        if not isinstance(text, str):
            return f"annotation {i}: 'text' must be a string, got {type(text).__name__}"
        if not isinstance(label, int) or (known is not None and label not in known):
            where = f"not in {class_file}" if class_file else "not an open-set label (0-3)"
            return (
                f"annotation {i} ({text!r}): label {label!r} is {where}; use the class list "
                "that came with these annotations (--class-list)"
            )
        geo = _geometry(ann.get("box", ann.get("points")))
        top, bottom, left = geo if geo else (None, None, None)
        out.append(Box(text.strip(), label, top, bottom, left, ann.get("edge")))
    return out


def reading_order(boxes: list[Box]) -> list[Box]:
    """Top to bottom, then left to right within a row (boxes overlapping by half a height)."""
    placed = [b for b in boxes if b.has_geometry]
    rows: list[list[Box]] = []
    for box in sorted(placed, key=lambda b: b.center):
        row = rows[-1] if rows else None
        if row is not None and abs(box.center - statistics.fmean(b.center for b in row)) < (
            0.5 * min(box.height, statistics.median(b.height for b in row))
        ):
            row.append(box)
        else:
            rows.append([box])
    ordered = [b for row in rows for b in sorted(row, key=lambda b: b.left or 0.0)]
    return ordered + [b for b in boxes if not b.has_geometry]


def _rows(boxes: list[Box]) -> list[list[Box]]:
    """Boxes of one column grouped into rows (a name split into two boxes side by side)."""
    rows: list[list[Box]] = []
    for box in reading_order(boxes):
        last = rows[-1][-1] if rows else None
        if (
            last is not None
            and box.has_geometry
            and last.has_geometry
            and abs(box.center - last.center) < 0.5 * min(box.height, last.height)
        ):
            rows[-1].append(box)
        else:
            rows.append([box])
    return rows


def _center(row: list[Box]) -> float:
    return statistics.fmean(b.center for b in row)


def _offset(anchors: list[float], others: list[float], h: float) -> float:
    """The vertical shift between two columns (a slanted photo): the shift that lines up
    the most boxes within half a box height, the smallest such shift on a tie."""
    candidates = [o - a for a in anchors for o in others if abs(o - a) < 3 * h]
    if not candidates:
        return 0.0
    return min(
        candidates,
        key=lambda d: (-sum(1 for c in candidates if abs(c - d) < 0.5 * h), abs(d)),
    )


def _align(anchors: list[float], others: list[float], h: float) -> dict[int, int]:
    """A monotone matching anchor row → other row (top to bottom, no crossing), maximising
    the pairs within `0.75 h` of the estimated shift, then their closeness."""
    d = _offset(anchors, others, h)
    n, m = len(anchors), len(others)
    best = [[(0.0, 0.0)] * (m + 1) for _ in range(n + 1)]  # (pairs, -deviation)
    move = [[0] * (m + 1) for _ in range(n + 1)]  # 1 skip anchor, 2 skip other, 3 pair
    for i in range(n + 1):
        for j in range(m + 1):
            if i == 0 and j == 0:
                continue
            options = []
            if i > 0:
                options.append((best[i - 1][j], 1))
            if j > 0:
                options.append((best[i][j - 1], 2))
            if i > 0 and j > 0:
                dev = abs(others[j - 1] - anchors[i - 1] - d) / h
                if dev < 0.75:
                    pairs, neg = best[i - 1][j - 1]
                    options.append(((pairs + 1, neg - dev), 3))
            best[i][j], move[i][j] = max(options, key=lambda o: o[0])
    out: dict[int, int] = {}
    i, j = n, m
    while i > 0 or j > 0:
        step = move[i][j]
        if step == 3:
            out[i - 1] = j - 1
            i, j = i - 1, j - 1
        elif step == 1:
            i -= 1
        else:
            j -= 1
    return out


def pair_line_items(columns: dict[str, list[Box]]) -> tuple[list[dict[str, str]], int, int]:
    """Line items `[{name, quantity, price}]` from the boxes of each column, paired by
    position; also the number of boxes paired and left unpaired (kept as items alone)."""
    rows = {key: _rows(boxes) for key, boxes in columns.items() if boxes}
    if not rows:
        return [], 0, 0
    anchor_key = next(k for k in ITEM_KEYS if k in rows)
    anchors = rows[anchor_key]
    placed = [b for rs in rows.values() for r in rs for b in r if b.has_geometry]
    h = statistics.median(b.height for b in placed) if placed else 1.0
    # item → {key: row}; rows that cannot be placed (no box geometry) stay alone
    items: list[tuple[float, dict[str, list[Box]]]] = []
    anchored = [i for i, r in enumerate(anchors) if r[0].has_geometry]
    for row in anchors:
        pos = _center(row) if row[0].has_geometry else float("inf")
        items.append((pos, {anchor_key: row}))
    for key in ITEM_KEYS:
        if key == anchor_key or key not in rows:
            continue
        others = rows[key]
        placed_others = [j for j, r in enumerate(others) if r[0].has_geometry]
        match = _align(
            [_center(anchors[i]) for i in anchored], [_center(others[j]) for j in placed_others], h
        )
        matched: set[int] = set()
        for ai, oj in match.items():
            items[anchored[ai]][1][key] = others[placed_others[oj]]
            matched.add(placed_others[oj])
        for j, row in enumerate(others):
            if j not in matched:
                pos = _center(row) if row[0].has_geometry else float("inf")
                items.append((pos, {key: row}))
    items.sort(key=lambda x: x[0])  # stable: rows without geometry keep file order, last
    # boxes left without an anchor (the name box is missing or unreadable) pair with each
    # other when they share a row: quantity "1x" and price "6,90" of one line
    merged: list[tuple[float, dict[str, list[Box]]]] = []
    for pos, parts in items:
        if merged and anchor_key not in parts and pos != float("inf"):
            last_pos, last = merged[-1]
            if (
                anchor_key not in last
                and not set(parts) & set(last)
                and abs(pos - last_pos) < 0.75 * h
            ):
                last.update(parts)
                continue
        merged.append((pos, parts))
    items = merged
    out: list[dict[str, str]] = []
    paired = unpaired = 0
    for _, parts in items:
        n_boxes = sum(len(r) for r in parts.values())
        if len(parts) > 1:
            paired += n_boxes
        else:
            unpaired += n_boxes
        out.append({k: " ".join(b.text for b in parts[k]) for k in ITEM_KEYS if k in parts})
    return out, paired, unpaired


# ---------------------------------------------------------------- receipts


def _closeset_fields(
    boxes: list[Box], classes: dict[int, tuple[str, str]], item: SourceItem
) -> dict[str, Any]:
    values: dict[str, list[Box]] = {}
    key_texts: dict[str, list[str]] = {}
    for box in reading_order(boxes):
        name, role = classes[box.label]
        if role == "drop":
            item.drop(f"{name} boxes")
        elif not box.text:
            item.drop("boxes with empty text")
        elif role == "key":
            key_texts.setdefault(name, []).append(box.text)
            item.count("key captions (<Field>_key) kept in meta.key_texts")
        else:
            values.setdefault(name, []).append(box)
    fields: dict[str, Any] = {}
    for name in dict.fromkeys(n for n, role in classes.values() if role == "value"):
        if name in ITEM_COLUMNS:
            if ITEMS_KEY in fields:
                continue
            columns = {ITEM_COLUMNS[c]: values.get(c, []) for c in ITEM_COLUMNS}
            rows, paired, unpaired = pair_line_items(columns)
            if rows:
                fields[ITEMS_KEY] = rows
                item.count("line items", len(rows))
                item.count("item boxes paired", paired)
                item.count("item boxes unpaired (kept as items alone)", unpaired)
        elif name in values:
            fields[name] = [b.text for b in values[name]]
    if key_texts:
        item.meta["key_texts"] = key_texts
    return fields


def _openset_fields(boxes: list[Box], item: SourceItem) -> dict[str, Any]:
    by_edge: dict[Any, dict[str, list[Box]]] = {}
    for box in reading_order(boxes):
        role = OPENSET_LABELS[box.label]
        if role in ("bg", "others"):
            item.drop(f"open-set {role} boxes")
        elif not box.text:
            item.drop("boxes with empty text")
        else:
            by_edge.setdefault(box.edge, {}).setdefault(role, []).append(box)
    fields: dict[str, Any] = {}
    for parts in by_edge.values():
        keys, vals = parts.get("key", []), parts.get("value", [])
        if not keys:
            item.drop("open-set values linked to no key box", len(vals))
            continue
        if not vals:
            item.drop("open-set key boxes with no value", len(keys))
            continue
        key = " ".join(b.text for b in keys)
        fields.setdefault(key, []).extend(b.text for b in vals)
    return fields


def iter_items(src: Path, opts: ConvertOptions) -> Iterator[SourceItem | BadItem]:
    for ann in _annotation_files(src):
        openset = ann.name.startswith("openset_")
        classes: dict[int, tuple[str, str]] = {}
        class_file: Path | None = None
        if not openset:
            class_file = _find_class_list(ann, opts)
            classes = read_class_list(class_file)
        split = split_from_path(ann, stop=0)
        for lineno, line in enumerate(read_text(ann).splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{ann}:{lineno}"
            parsed = _parse_line(line)
            if isinstance(parsed, str):
                yield BadItem(where, parsed)
                continue
            file_name, anns, paddle = parsed
            line_openset = openset or any(isinstance(a, dict) and "edge" in a for a in anns)
            known = set(OPENSET_LABELS) if line_openset else set(classes)
            boxes = _boxes(anns, known, None if line_openset else class_file)
            if isinstance(boxes, str):
                yield BadItem(where, boxes)
                continue
            item = SourceItem(
                id=Path(file_name).with_suffix("").as_posix(),
                fields={},
                where=where,
                source={"file": ann.name, "line": lineno},
                image_refs=[file_name],
                search_dirs=unique_dirs(
                    [*image_dirs_near(ann.parent), ann.parent.parent / "image_files"]
                ),
                split=split,
            )
            if paddle:
                item.source["layout"] = "paddleocr"
            item.fields = (
                _openset_fields(boxes, item)
                if line_openset
                else _closeset_fields(boxes, classes, item)
            )
            yield item
