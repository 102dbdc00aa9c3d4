"""`cord`: CORD receipts (clovaai/cord v1, the Hugging Face `naver-clova-ix/cord-v1/-v2`).

Every sample is one JSON object: the original release's (`CORD/{train,dev,test}/json/
receipt_00000.json`, images in the parallel `image/` folder) holds `valid_line` (text
lines with `words[{text, is_key, quad, row_id}]`, a `category` such as `menu.nm` and a
`group_id`) and `meta {version, split, image_id}`; the exports add `gt_parse`, the parse
Donut trains on:

    {"gt_parse": {"menu": [{"nm": "Nasi Campur Bali", "cnt": "x 1", "price": "75,000"}, ...],
                  "sub_total": {"subtotal_price": "1,346,000", ...},
                  "total": {"total_price": "1,591,600"}}, "meta": {...}, "valid_line": [...]}

Readable layouts of `--src` (a file, or a folder; in a folder the first kind found wins):

* `*.parquet` — the HF dataset files (`data/train-00000-of-00004.parquet`, columns
  `image` {bytes, path} and `ground_truth`); embedded images are written to
  `--extract-images-to` (default `<out folder>/<out stem>_images/`);
* `*.jsonl` — Donut's `metadata.jsonl`: `{"file_name": "img.png", "ground_truth": ...}`
  per line, images beside it;
* `*.json` — one sample per file holding `ground_truth` (string or object), `gt_parse`,
  or only `valid_line` (the original release); the image has the file's stem, next to it
  or in a parallel `image/` folder.

A sample without `gt_parse` is parsed from `valid_line` the way the exports derive it
(checked against the HF v1 export: 800 of 800 train receipts identical): lines are
grouped in the order of their first line (captions only count) by the
category's first part (`menu`, `void_menu`, `sub_total`, `total`) and `group_id`; a
line's text is its words that are not captions (`is_key` 0) joined by spaces; two lines
of one category in one group are joined by a space (`"x"` + `"1"` → `"x 1"`); keys come
in the class order of CORD's README. Then every receipt gets the same shapes: `menu`,
`void_menu` and `sub_total` are always lists of objects (one per group), an item's `sub`
a list of objects, `total` one object (groups merged when their keys differ), and a value
given as a list of strings inside an item is joined by spaces, as the v1 export does.
Numbers become strings later, in the common coercion step. Ids are `<split>/<image_id>`
from `meta` when present, else the file path (and row); `meta.split` is `train`, `dev`
(`val` for the HF `validation` split) or `test`.
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
    load_json_text,
    read_text,
    rel_id,
    split_from_path,
    split_name,
    stem_refs,
)
from data_tools.jsonl import atomic_write_bytes

DOC_TYPE = "receipt"
DEFAULT_SCHEMA = "cord"
EXPECTS = (
    "CORD samples: a 'ground_truth' JSON holding 'gt_parse' (parquet, jsonl or json), or the "
    "original release's json files with 'valid_line'"
)
LIST_KEYS = ("menu", "void_menu", "sub_total", "sub")  # always lists of objects
MERGED_KEYS = ("total",)  # one object; its groups merged when their keys differ
# CORD's class definition (README), in order: the order of keys in every record
CLASS_ORDER: dict[str, tuple[str, ...]] = {
    "menu": (
        "nm",
        "num",
        "unitprice",
        "cnt",
        "discountprice",
        "price",
        "itemsubtotal",
        "vatyn",
        "etc",
        "sub_nm",
        "sub_num",
        "sub_unitprice",
        "sub_cnt",
        "sub_discountprice",
        "sub_price",
        "sub_etc",
        "sub",
    ),
    "void_menu": ("nm", "num", "unitprice", "cnt", "price", "etc"),
    "sub_total": (
        "subtotal_price",
        "discount_price",
        "subtotal_count",
        "service_price",
        "othersvc_price",
        "tax_price",
        "tax_and_service",
        "etc",
    ),
    "void_total": ("subtotal_price", "tax_price", "total_price", "etc"),
    "total": (
        "total_price",
        "total_etc",
        "cashprice",
        "changeprice",
        "creditcardprice",
        "emoneyprice",
        "menutype_cnt",
        "menuqty_cnt",
    ),
}


class _Bad(Exception):
    pass


def _ordered(obj: dict[str, Any], order: tuple[str, ...]) -> dict[str, Any]:
    rank = {k: i for i, k in enumerate(order)}
    return dict(sorted(obj.items(), key=lambda kv: rank.get(kv[0], len(rank))))


def gt_parse_from_valid_line(valid_line: Any) -> dict[str, Any]:
    """`gt_parse` derived from the original release's `valid_line` (see the module doc)."""
    if not isinstance(valid_line, list):
        raise _Bad(f"'valid_line' must be a list, got {type(valid_line).__name__}")
    groups: dict[str, dict[Any, dict[str, Any]]] = {}
    for i, line in enumerate(valid_line):
        if not isinstance(line, dict) or not isinstance(line.get("category"), str):
            raise _Bad(f"valid_line[{i}]: expected an object with a 'category' string")
        words = line.get("words")
        if not isinstance(words, list):
            raise _Bad(f"valid_line[{i}]: 'words' must be a list")
        text = " ".join(
            str(w.get("text", "")).strip()
            for w in words
            if isinstance(w, dict) and not w.get("is_key") and str(w.get("text", "")).strip()
        )
        top, *rest = line["category"].split(".")
        if not rest:
            continue
        # a group takes its place at its first line, even a line of captions only
        group = groups.setdefault(top, {}).setdefault(line.get("group_id", i), {})
        if not text:
            continue
        if len(rest) >= 2:  # `menu.sub.nm`: a sub-item of the group's item
            subs = group.setdefault(rest[0], [{}])
            key = ".".join(rest[1:])
            if key in subs[-1]:
                subs.append({})
            subs[-1][key] = text
            continue
        key = rest[0]
        group[key] = f"{group[key]} {text}" if key in group else text
    top_order = ("menu", "void_menu", "sub_total", "void_total", "total")
    out: dict[str, Any] = {}
    for top in sorted(groups, key=lambda t: top_order.index(t) if t in top_order else 99):
        objs = [_ordered(g, CLASS_ORDER.get(top, ())) for g in groups[top].values() if g]
        if objs:
            out[top] = objs[0] if len(objs) == 1 else objs
    return out


def normalize_gt_parse(value: Any, item: SourceItem | None = None, key: str = "") -> Any:
    """Every receipt in the same shapes: `menu`, `void_menu`, `sub_total`, `sub` lists of
    objects; `total` one object (groups merged when their keys differ); a list of strings
    inside an item joined by spaces."""
    if isinstance(value, dict):
        out = {str(k): normalize_gt_parse(v, item, str(k)) for k, v in value.items()}
        return _ordered(out, CLASS_ORDER.get(key, ()))
    if isinstance(value, list):
        if all(isinstance(v, str) for v in value) and key not in LIST_KEYS:
            if item is not None and len(value) > 1:
                item.count("values given as several strings, joined by spaces")
            return " ".join(v.strip() for v in value)
        value = [normalize_gt_parse(v, item, key) for v in value]
        if key in MERGED_KEYS and all(isinstance(v, dict) for v in value):
            keys = [k for v in value for k in v]
            if len(keys) == len(set(keys)):
                merged = {k: x for v in value for k, x in v.items()}
                return _ordered(merged, CLASS_ORDER.get(key, ()))
        return value
    return value


def _normalize_top(parse: dict[str, Any], item: SourceItem | None) -> dict[str, Any]:
    out = normalize_gt_parse(parse, item)
    for key in LIST_KEYS:
        if isinstance(out.get(key), dict):
            out[key] = [out[key]]
            if item is not None:
                item.count(f"{key} given as one object, written as a list of one")
    for value in out.get("menu", []) if isinstance(out.get("menu"), list) else []:
        if isinstance(value, dict) and isinstance(value.get("sub"), dict):
            value["sub"] = [value["sub"]]
            if item is not None:
                item.count("menu.sub given as one object, written as a list of one")
    return out


def _gt_parse(
    ground_truth: Any, item: SourceItem | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(`gt_parse`, `meta`) from a `ground_truth` string/object; raises `_Bad`."""
    if isinstance(ground_truth, (bytes, str)):
        try:
            ground_truth = load_json_text(ground_truth)
        except json.JSONDecodeError as exc:
            raise _Bad(
                f"'ground_truth' is not valid JSON ({exc.msg}, column {exc.colno})"
            ) from None
    if not isinstance(ground_truth, dict):
        raise _Bad(f"'ground_truth' must be a JSON object, got {type(ground_truth).__name__}")
    meta = ground_truth.get("meta")
    meta = meta if isinstance(meta, dict) else {}
    if "gt_parse" not in ground_truth:
        if "gt_parses" in ground_truth:
            raise _Bad("'gt_parses' (several answers per image, a VQA layout) is not supported")
        if "valid_line" in ground_truth:
            parse = gt_parse_from_valid_line(ground_truth["valid_line"])
            if item is not None:
                item.count("receipts parsed from valid_line (original release)")
            return _normalize_top(parse, item), meta
        raise _Bad(f"no 'gt_parse' or 'valid_line' in ground_truth (keys: {sorted(ground_truth)})")
    parse = ground_truth["gt_parse"]
    if not isinstance(parse, dict):
        raise _Bad(f"'gt_parse' must be a JSON object, got {type(parse).__name__}")
    return _normalize_top(parse, item), meta


def _meta_id(meta: dict[str, Any]) -> str | None:
    split, image_id = meta.get("split"), meta.get("image_id")
    if split is None or image_id is None:
        return None
    return f"{split}/{image_id}"


def _source_meta(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: str(meta[k]) for k in ("split", "image_id") if meta.get(k) is not None}


def _tally(where: str) -> SourceItem:
    """A scratch item that collects the counts of one sample before its item exists."""
    return SourceItem(id="", fields={}, where=where, source={})


def _split(meta: dict[str, Any], path: Path) -> str | None:
    return split_name(meta.get("split")) or split_from_path(path)


def _image_suffix(data: bytes, path: str | None) -> str:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return ".png"
    if data.startswith(b"\xff\xd8\xff"):
        return ".jpg"
    if path and Path(path).suffix:
        return Path(path).suffix.lower()
    return ".img"


def _write_image(target: Path, data: bytes) -> None:
    """Write bytes atomically; leave an identical existing file alone."""
    if target.is_file() and target.stat().st_size == len(data) and target.read_bytes() == data:
        return
    atomic_write_bytes(target, data, fsync=False)  # a rerun of the conversion remakes it


def _iter_parquet(path: Path, root: Path, opts: ConvertOptions) -> Iterator[SourceItem | BadItem]:
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow is in the pinned stack
        raise ConvertError("reading parquet needs pyarrow: pip install 'pyarrow<22'") from None
    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:
        raise ConvertError(f"{path}: not a readable parquet file ({exc})") from None
    names = pf.schema_arrow.names
    if "ground_truth" not in names:
        raise ConvertError(
            f"{path}: no 'ground_truth' column (columns: {names}); expected the Hugging Face "
            "naver-clova-ix/cord-v2 parquet layout (image, ground_truth)"
        )
    columns = ["ground_truth", *(["image"] if "image" in names else [])]
    rel = rel_id(path, root)
    row = 0
    for batch in pf.iter_batches(batch_size=64, columns=columns):
        for rec in batch.to_pylist():
            where = f"{path}: row {row}"
            source = {"file": path.relative_to(root).as_posix(), "row": row}
            row += 1
            tally = _tally(where)
            try:
                fields, meta = _gt_parse(rec["ground_truth"], tally)
            except _Bad as exc:
                yield BadItem(where, str(exc))
                continue
            item = SourceItem(
                id=_meta_id(meta) or f"{rel}/{row - 1}",
                fields=fields,
                where=where,
                source=source | _source_meta(meta),
                split=_split(meta, path),
                counts=tally.counts,
            )
            image = rec.get("image")
            if isinstance(image, dict) and image.get("bytes"):
                assert opts.extract_images_to is not None, "convert() sets extract_images_to"
                data = image["bytes"]
                name = item.id.replace("/", "_") + _image_suffix(data, image.get("path"))
                item.image_path = opts.extract_images_to / name
                _write_image(item.image_path, data)
            elif isinstance(image, dict) and image.get("path"):
                item.image_refs, item.search_dirs = [image["path"]], [path.parent]
            elif isinstance(image, str):
                item.image_refs, item.search_dirs = [image], [path.parent]
            else:
                yield BadItem(where, "the 'image' column holds neither bytes nor a path")
                continue
            yield item


def _iter_jsonl(path: Path, root: Path) -> Iterator[SourceItem | BadItem]:
    for lineno, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        tally = _tally(where)
        try:
            obj = load_json_text(line)
            if not isinstance(obj, dict):
                raise _Bad(f"expected a JSON object, got {type(obj).__name__}")
            image = obj.get("file_name", obj.get("image"))
            if not isinstance(image, str) or not image:
                raise _Bad("expected 'file_name' (the image path, Donut metadata.jsonl layout)")
            if "ground_truth" not in obj:
                raise _Bad("no 'ground_truth' on this line")
            fields, meta = _gt_parse(obj["ground_truth"], tally)
        except json.JSONDecodeError as exc:
            yield BadItem(where, json_error(exc) + "; fix or delete this line")
            continue
        except _Bad as exc:
            yield BadItem(where, str(exc))
            continue
        yield SourceItem(
            id=_meta_id(meta) or Path(image).with_suffix("").as_posix(),
            fields=fields,
            where=where,
            source={"file": path.relative_to(root).as_posix(), "line": lineno} | _source_meta(meta),
            image_refs=[image],
            search_dirs=image_dirs_near(path.parent),
            split=_split(meta, path),
            counts=tally.counts,
        )


def _iter_json(path: Path, root: Path) -> Iterator[SourceItem | BadItem]:
    where = str(path)
    tally = _tally(where)
    try:
        obj = load_json_text(read_text(path))
        if not isinstance(obj, dict):
            raise _Bad(f"expected a JSON object, got {type(obj).__name__}")
        fields, meta = _gt_parse(obj.get("ground_truth", obj), tally)
    except json.JSONDecodeError as exc:
        yield BadItem(where, json_error(exc) + "; fix or remove the file")
        return
    except _Bad as exc:
        yield BadItem(where, str(exc))
        return
    image = obj.get("file_name") or obj.get("image")
    parent = path.parent
    yield SourceItem(
        id=_meta_id(meta) or rel_id(path, root),
        fields=fields,
        where=where,
        source={"file": path.relative_to(root).as_posix()} | _source_meta(meta),
        image_refs=[image] if isinstance(image, str) and image else stem_refs(path.stem),
        search_dirs=image_dirs_near(parent),
        split=_split(meta, path),
        counts=tally.counts,
    )


def iter_items(src: Path, opts: ConvertOptions) -> Iterator[SourceItem | BadItem]:
    if src.is_file():
        files, root = [src], src.parent
    else:
        root = src
        files = []
        for suffix in (".parquet", ".jsonl", ".json"):
            files = sorted(p for p in src.rglob(f"*{suffix}") if p.is_file())
            if files:
                break
        if not files:
            raise ConvertError(f"{src}: no *.parquet, *.jsonl or *.json files; expected {EXPECTS}")
    for path in files:
        suffix = path.suffix.lower()
        if suffix == ".parquet":
            yield from _iter_parquet(path, root, opts)
        elif suffix == ".jsonl":
            yield from _iter_jsonl(path, root)
        elif suffix == ".json":
            yield from _iter_json(path, root)
        else:
            raise ConvertError(f"{path}: unknown file type; expected {EXPECTS}")
