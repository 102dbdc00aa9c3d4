"""What every converter shares: the item it yields, its options, and small readers.

A converter is a generator `iter_items(src, opts)` that yields one `SourceItem` per
document (fields in the source's own key names, where the image may be found, where in
the source it came from) or a `BadItem` for a document it cannot read. It raises
`ConvertError` only when the source as a whole is unusable (wrong folder, missing class
list). `data_tools.convert` turns items into canonical label records: it finds the
image, coerces scalars to strings, canonicalises through a schema, validates and writes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

IMAGE_SUFFIXES = (
    ".jpg",
    ".jpeg",
    ".png",
    ".JPG",
    ".JPEG",
    ".PNG",
    ".tif",
    ".tiff",
    ".bmp",
    ".webp",
)


class ConvertError(ValueError):
    """Input that cannot be converted; the message names the file (line, entity) and the fix."""


@dataclass
class ConvertOptions:
    image_dir: Path | None = None  # searched first for every image (by relative path, then name)
    extract_images_to: Path | None = None  # where embedded images (CORD parquet) are written
    class_list: Path | None = None  # WildReceipt class_list.txt


@dataclass
class SourceItem:
    id: str
    fields: dict[str, Any]
    where: str  # human-readable location for messages: "file", "file:line", "file: document X"
    source: dict[str, Any]  # provenance kept in meta: {"file": ..., "line": ...}
    image_refs: list[str] = field(default_factory=list)  # the image as the source names it
    search_dirs: list[Path] = field(default_factory=list)  # folders to look for image_refs in
    image_path: Path | None = None  # an already-resolved image (extracted from the source)
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class BadItem:
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


def load_json_text(text: str) -> Any:
    """`json.loads` that keeps printed decimals exactly (`"2987.10"`, not `2987.1`)."""
    return json.loads(text, parse_float=str)


def read_text(path: Path) -> str:
    """UTF-8 (a BOM is accepted); a file in another encoding is a clear error."""
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConvertError(
            f"{path}: not UTF-8 text (byte {exc.start}); re-save the file as UTF-8"
        ) from None


def json_error(exc: json.JSONDecodeError) -> str:
    return f"not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"


def json_lines(path: Path, text: str) -> Iterator[tuple[str, int, Any]]:
    """`(where, lineno, value)` for each non-blank JSON line of `text` (read from `path`);
    a line that is not JSON gives a `BadItem` as its value."""
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            yield where, lineno, load_json_text(line)
        except json.JSONDecodeError as exc:
            yield where, lineno, BadItem(where, json_error(exc) + "; fix or delete this line")


def rel_id(path: Path, root: Path) -> str:
    """A stable id from a file's path below `root`, without its suffix, `/`-separated."""
    try:
        rel = path.resolve().relative_to(root.resolve())
    except ValueError:
        rel = Path(path.name)
    return rel.with_suffix("").as_posix()


def unique_dirs(dirs: list[Path]) -> list[Path]:
    out: list[Path] = []
    for d in dirs:
        if d not in out:
            out.append(d)
    return out


def stem_refs(stem: str) -> list[str]:
    """Image names to try for a label file that names no image (`X0001` → `X0001.jpg`, ...)."""
    return [stem + suffix for suffix in IMAGE_SUFFIXES]
