"""`cord`: CORD-v2 receipts in the Donut `gt_parse` form (`naver-clova-ix/cord-v2` on HF).

Every sample carries a `ground_truth` JSON string:

    {"gt_parse": {"menu": [{"nm": "Nasi Campur Bali", "cnt": "1 x", "price": "75,000"}, ...],
                  "sub_total": {"subtotal_price": "1,346,000", ...},
                  "total": {"total_price": "1,591,600"}},
     "meta": {"split": "train", "image_id": 0, ...}, "valid_line": [...], ...}

Readable layouts of `--src` (a file, or a folder; in a folder the first kind found wins):

* `*.parquet` — the HF dataset files (`data/train-00000-of-00004.parquet`, columns
  `image` {bytes, path} and `ground_truth`); embedded images are written to
  `--extract-images-to` (default `<out folder>/<out stem>_images/`);
* `*.jsonl` — Donut's `metadata.jsonl`: `{"file_name": "img.png", "ground_truth": ...}`
  per line, images beside it;
* `*.json` — one sample per file holding `ground_truth` (string or object) or `gt_parse`
  directly; the image has the file's stem, next to it or in a parallel `image/` folder.

`gt_parse` is kept as written except that `menu` and an item's `sub` become lists of
objects when a receipt has only one (`{"nm": ...}` → `[{"nm": ...}]`); numbers become
strings later, in the common coercion step. Ids are `<split>/<image_id>` from
`ground_truth.meta` when present, else the file path (and row) they came from.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from data_tools.converters.common import (
    BadItem,
    ConvertError,
    ConvertOptions,
    SourceItem,
    json_error,
    load_json_text,
    read_text,
    rel_id,
    stem_refs,
    unique_dirs,
)

DOC_TYPE = "receipt"
DEFAULT_SCHEMA = None
EXPECTS = "CORD-v2 samples with a 'ground_truth' JSON holding 'gt_parse' (parquet, jsonl or json)"
LIST_KEYS = ("menu", "sub")


class _Bad(Exception):
    pass


def normalize_gt_parse(value: Any) -> Any:
    """`menu` / `sub` given as one object → a list of one; everything else as it is."""
    if isinstance(value, dict):
        out = {}
        for key, sub in value.items():
            sub = normalize_gt_parse(sub)
            if key in LIST_KEYS and isinstance(sub, dict):
                sub = [sub]
            out[str(key)] = sub
        return out
    if isinstance(value, list):
        return [normalize_gt_parse(v) for v in value]
    return value


def _gt_parse(ground_truth: Any) -> tuple[dict[str, Any], dict[str, Any]]:
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
    if "gt_parse" not in ground_truth:
        if "gt_parses" in ground_truth:
            raise _Bad("'gt_parses' (several answers per image, a VQA layout) is not supported")
        if "valid_line" in ground_truth:
            raise _Bad(
                "this is an original CORD release file (valid_line) without 'gt_parse'; "
                "convert the Hugging Face naver-clova-ix/cord-v2 export instead"
            )
        raise _Bad(f"no 'gt_parse' in ground_truth (keys: {sorted(ground_truth)})")
    parse = ground_truth["gt_parse"]
    if not isinstance(parse, dict):
        raise _Bad(f"'gt_parse' must be a JSON object, got {type(parse).__name__}")
    meta = ground_truth.get("meta")
    return normalize_gt_parse(parse), meta if isinstance(meta, dict) else {}


def _meta_id(meta: dict[str, Any]) -> str | None:
    split, image_id = meta.get("split"), meta.get("image_id")
    if split is None or image_id is None:
        return None
    return f"{split}/{image_id}"


def _source_meta(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: str(meta[k]) for k in ("split", "image_id") if meta.get(k) is not None}


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
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
            try:
                fields, meta = _gt_parse(rec["ground_truth"])
            except _Bad as exc:
                yield BadItem(where, str(exc))
                continue
            item = SourceItem(
                id=_meta_id(meta) or f"{rel}/{row - 1}",
                fields=fields,
                where=where,
                source=source | _source_meta(meta),
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
        try:
            obj = load_json_text(line)
            if not isinstance(obj, dict):
                raise _Bad(f"expected a JSON object, got {type(obj).__name__}")
            image = obj.get("file_name", obj.get("image"))
            if not isinstance(image, str) or not image:
                raise _Bad("expected 'file_name' (the image path, Donut metadata.jsonl layout)")
            if "ground_truth" not in obj:
                raise _Bad("no 'ground_truth' on this line")
            fields, meta = _gt_parse(obj["ground_truth"])
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
            search_dirs=[path.parent],
        )


def _iter_json(path: Path, root: Path) -> Iterator[SourceItem | BadItem]:
    where = str(path)
    try:
        obj = load_json_text(read_text(path))
        if not isinstance(obj, dict):
            raise _Bad(f"expected a JSON object, got {type(obj).__name__}")
        fields, meta = _gt_parse(obj.get("ground_truth", obj))
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
        search_dirs=unique_dirs(
            [parent, parent.parent / "image", parent.parent / "images", parent.parent / "img"]
        ),
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
