"""JSON Lines I/O: one record per line, UTF-8, never a half-written file.

Two ways to write, matching the two kinds of output in this project:

* `write_jsonl_atomic` / `atomic_write_text` for files produced in one go (datasets,
  reports): written to a temp file in the same folder, then `os.replace`d.
* `append_jsonl` for files that grow while a long job runs (labels, predictions):
  one `write()` per whole line, flushed and fsynced, so a crash leaves at most a torn
  last line, which `drop_torn_tail` removes before the job resumes.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class JsonlError(ValueError):
    """A line of a JSONL file that cannot be used; the message starts with `file:line:`."""


def dumps_line(obj: Any) -> str:
    """One JSONL line: compact-ish JSON, real UTF-8 characters, trailing newline."""
    return json.dumps(obj, ensure_ascii=False) + "\n"


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while building a large tree of objects.

    Loading a JSONL file of thousands of records allocates millions of dicts, lists and
    strings that all survive; each allocation burst triggers a collection that traverses
    the survivors again (scoring 10,000 invoices: ~900 collections, 0.76 s of the main
    process). Parsed JSON holds no reference cycles, so nothing is lost by waiting: the
    collector is restored (if it was on) when the block ends, and whatever cycles were
    made meanwhile are collected later as usual. Do not fork worker processes inside
    the block: they would inherit a disabled collector.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@contextmanager
def gc_frozen() -> Iterator[None]:
    """Keep every object alive now out of the cyclic collector's walks until the block ends
    (``gc.freeze``; undone at the end unless a caller further out froze them first).

    For long-lived data such as loaded samples: later collections then walk only what was
    made since, and processes forked inside the block do not touch the frozen objects'
    pages when they collect (which would make the kernel copy them).
    """
    froze = gc.get_freeze_count() == 0
    if froze:
        gc.freeze()
    try:
        yield
    finally:
        if froze:
            gc.unfreeze()


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield `(line_number, object)` for every non-blank line; 1-based line numbers.

    Raises `JsonlError("file:line: ...")` on a line that is not a JSON object.
    """
    path = Path(path)
    with path.open("r", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise JsonlError(
                    f"{path}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno}); "
                    "fix or delete this line"
                ) from None
            if not isinstance(obj, dict):
                raise JsonlError(
                    f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}"
                )
            yield lineno, obj


_UMASK = os.umask(0)  # read once at import (single-threaded then): os.umask only sets
os.umask(_UMASK)


def _default_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give: 0o666 minus the umask."""
    return 0o666 & ~_UMASK


@contextmanager
def atomic_writer(
    path: str | Path, *, binary: bool = False, fsync: bool = True, mode: int | None = None
) -> Iterator[Any]:
    """Open a temp file beside `path`; on success it replaces `path`, on error it vanishes.

    Text (UTF-8, ``\n`` newlines) or, with ``binary``, bytes. ``fsync``: the data is on
    disk before the rename (off for bulk files a rerun can remake, e.g. rendered images).
    ``mode``: the published file's permission bits; default what a plain ``open(path,
    "w")`` gives (0o666 minus the umask), not ``mkstemp``'s 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _default_mode() if mode is None else mode)
        fh = os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8", newline="\n")
        with fh:
            yield fh
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes, *, fsync: bool = True) -> None:
    """Write `data` to `path` so readers see either the old file or the whole new one."""
    with atomic_writer(path, binary=True, fsync=fsync) as fh:
        fh.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` so readers see either the old file or the whole new one."""
    with atomic_writer(path) as fh:
        fh.write(text)


def write_jsonl_atomic(path: str | Path, rows: Iterable[Any]) -> int:
    """Write all `rows` as JSONL atomically; returns the number of rows written."""
    n = 0
    with atomic_writer(path) as fh:
        for row in rows:
            fh.write(dumps_line(row))
            n += 1
    return n


def append_jsonl(path: str | Path, row: Any, *, fsync: bool = True) -> None:
    """Append one whole line with a single `write()`; safe against crashes mid-job."""
    data = dumps_line(row).encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    try:
        written = os.write(fd, data)
        if written != len(data):  # pragma: no cover - only on a full disk
            raise OSError(f"{path}: short write ({written} of {len(data)} bytes); disk full?")
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def drop_torn_tail(path: str | Path, *, check_json: bool = True) -> bool:
    """Remove a torn last line (no trailing newline, or not valid JSON) left by a crash.

    With ``check_json=False`` (plain text files such as ``rec_gt.txt``) only a missing
    trailing newline marks a torn line.

    Returns True when something was dropped. Lines before the last are not touched:
    a bad line in the middle is a real error and is reported by `read_jsonl`.
    """
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return False
    with path.open("rb+") as fh:
        size = fh.seek(0, os.SEEK_END)
        # find the start of the last line
        block = 1 << 16
        pos = size
        tail = b""
        while pos > 0:
            step = min(block, pos)
            pos -= step
            fh.seek(pos)
            tail = fh.read(step) + tail
            stripped = tail[:-1] if tail.endswith(b"\n") else tail
            if b"\n" in stripped:
                break
        body = tail[:-1] if tail.endswith(b"\n") else tail
        cut = body.rfind(b"\n")
        last_start = (pos + cut + 1) if cut >= 0 else 0
        fh.seek(last_start)
        last = fh.read()
        ok = last.endswith(b"\n")
        if ok and check_json:
            try:
                json.loads(last.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                ok = not last.strip()
        if ok:
            return False
        fh.truncate(last_start)
    log.warning(
        "%s: dropped a torn last line (%d bytes) left by an interrupted run", path, len(last)
    )
    return True
