"""What every converter shares: the item it yields, its options, and small readers.

A converter is a generator `iter_items(src, opts)` that yields one `SourceItem` per
document (fields in the source's own key names, where the image may be found, where in
the source it came from, the source's official split) or a `BadItem` for a document it
cannot read. It raises `ConvertError` only when the source as a whole is unusable (wrong
folder, missing class list). `data_tools.convert` turns items into canonical label
records: it finds the image (`ImageLocator`, the one image search of every converter),
coerces scalars to strings, canonicalises through a schema, gives every key one type
across the dataset, validates and writes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_tools.images import IMAGE_SUFFIXES as _IMAGE_SUFFIXES
from data_tools.images import find_images

# every image suffix in lower and upper case, for label files that name no image
IMAGE_SUFFIXES = tuple(s for suffix in _IMAGE_SUFFIXES for s in (suffix, suffix.upper()))
# suffixes label files add to the image's stem (`b0_ner.json` labels `b0.jpg`)
LABEL_SUFFIXES = ("_ner", "_labels", "_label", "_gt", "_annotation", "_ann")
# the folders public datasets keep their images in, beside or above the label files
IMAGE_FOLDERS = ("images", "image", "imgs", "img", "image_files")
# a source's own split names → the names written to meta.split
SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "dev",
    "test": "test",
    "testing": "test",
    "training_data": "train",  # FUNSD
    "testing_data": "test",
}


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
    split: str | None = None  # the source's official split (train/val/dev/test) → meta.split
    # what the reader left out of `fields`, by reason ("Others boxes": 3), for the report
    dropped: dict[str, int] = field(default_factory=dict)
    # other counts for the report ("line items paired": 5, "boxes unpaired": 1)
    counts: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str, n: int = 1) -> None:
        if n:
            self.dropped[reason] = self.dropped.get(reason, 0) + n

    def count(self, what: str, n: int = 1) -> None:
        self.counts[what] = self.counts.get(what, 0) + n


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


def strip_label_suffix(stem: str) -> str:
    """`b0_ner` → `b0`: the id of a label file is its image's stem."""
    for suffix in LABEL_SUFFIXES:
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


def split_name(text: Any) -> str | None:
    """A source's split value (`"validation"`, `"dev"`, `"train"`) → meta.split, else None."""
    return SPLIT_NAMES.get(str(text).strip().lower()) if text is not None else None


_SROIE_FOLDER = re.compile(r"task\d*[-_.]?(train|test)")


def split_from_path(path: Path, stop: int = 2) -> str | None:
    """The split a file's name or one of its `stop` nearest folders names, else None.

    The file name's words count (`de.train.json`, `openset_test.txt`,
    `validation-00000-of-00001.parquet`); a folder counts only when its whole name is a
    split (`train/`, `dev/`) or the SROIE release's (`0325updated.task2train(626p)`,
    `task3-test(347p)`), so that `tests/` or `test_run1/` above a dataset do not."""
    for token in re.split(r"[^a-z]+", path.stem.lower()):
        if token in SPLIT_NAMES:
            return SPLIT_NAMES[token]
    for folder in list(path.parents)[:stop]:
        name = folder.name.lower()
        if name in SPLIT_NAMES:
            return SPLIT_NAMES[name]
        match = _SROIE_FOLDER.search(name)
        if match:
            return match.group(1)
    return None


def image_dirs_near(folder: Path) -> list[Path]:
    """Where a dataset keeps its images relative to a label folder: the folder itself, its
    usual image subfolders, the folder above and its image subfolders, and the sibling named
    like the label folder without its label suffix (`zzsptfp_ner/` → `zzsptfp/`)."""
    dirs = [folder, *(folder / name for name in IMAGE_FOLDERS)]
    dirs += [folder.parent, *(folder.parent / name for name in IMAGE_FOLDERS)]
    sibling = strip_label_suffix(folder.name)
    if sibling != folder.name:
        dirs.append(folder.parent / sibling)
    return unique_dirs(dirs)


def _tails(ref: str, max_parts: int = 4) -> list[Path]:
    """A reference and its last path parts, longest first: `/a/b/c/x.jpg` → `b/c/x.jpg`,
    `c/x.jpg`, `x.jpg` (absolute references lose their root)."""
    p = Path(ref.replace("\\", "/"))
    parts = [x for x in p.parts if x not in (p.anchor, "", ".", "..")]
    tails = [Path(*parts[-k:]) for k in range(min(len(parts), max_parts), 0, -1)]
    if not p.is_absolute() and len(parts) > max_parts:
        tails.insert(0, Path(*parts))
    return tails


class ImageLocator:
    """The one image search of every converter.

    A reference that exists as written is used. Otherwise it is looked up by its relative
    path and by its last path parts (down to the bare file name) in `--image-dir`, then in
    the reader's folders (next to the label file and the dataset's usual image folders);
    last, by file name anywhere below `--image-dir` (a name found twice is resolved by the
    longest matching path tail, else reported as ambiguous). `tried` lists every place.
    """

    def __init__(self, image_dir: Path | None = None) -> None:
        self.image_dir = image_dir
        self._index: dict[str, list[Path]] | None = None

    def _by_name(self, name: str) -> list[Path]:
        if self.image_dir is None or not self.image_dir.is_dir():
            return []
        if self._index is None:
            self._index = {}
            for path in find_images(self.image_dir):
                self._index.setdefault(path.name, []).append(path)
        return self._index.get(name, [])

    def locate(self, item: SourceItem) -> tuple[Path | None, list[str]]:
        """The item's image (or None) and every place tried, in order."""
        if item.image_path is not None:
            return item.image_path, [str(item.image_path)]
        candidates: list[Path] = []
        for ref in item.image_refs:
            if Path(ref).is_absolute():
                candidates.append(Path(ref))
        dirs = ([self.image_dir] if self.image_dir is not None else []) + list(item.search_dirs)
        for folder in dirs:
            for ref in item.image_refs:
                for tail in _tails(ref):
                    cand = folder / tail
                    if cand not in candidates:
                        candidates.append(cand)
        tried = [str(c) for c in candidates]
        for cand in candidates:
            if cand.is_file():
                return cand, tried
        if self.image_dir is not None:
            for ref in item.image_refs:
                found = self._by_name(Path(ref.replace("\\", "/")).name)
                if len(found) == 1:
                    return found[0], tried
                if len(found) > 1:
                    best = _best_tail_match(ref, found)
                    if best is not None:
                        return best, tried
                    tried.append(
                        f"{len(found)} files named {Path(ref).name!r} below {self.image_dir} "
                        f"({', '.join(str(f) for f in found[:3])}): ambiguous"
                    )
                    break
            else:
                tried.append(f"any file of that name below {self.image_dir}")
        return None, tried


def _best_tail_match(ref: str, found: list[Path]) -> Path | None:
    """The one path sharing the longest tail of `ref`'s parts; None on a tie."""
    ref_parts = Path(ref.replace("\\", "/")).parts

    def shared(path: Path) -> int:
        n = 0
        for a, b in zip(reversed(ref_parts), reversed(path.parts), strict=False):
            if a != b:
                break
            n += 1
        return n

    scores = sorted(((shared(p), p) for p in found), key=lambda x: -x[0])
    if scores[0][0] > 1 and (len(scores) == 1 or scores[0][0] > scores[1][0]):
        return scores[0][1]
    return None
