"""Duplicates in a batch: the same invoice (code + number) or the same file seen twice.

    from data_tools.duplicates import DuplicateTracker, find_duplicates

    tracker = DuplicateTracker()                     # one per predict run / service batch
    dup = tracker.check("inv-7", fields=prediction, content=file_bytes)
    dup and dup.to_dict()   # {"duplicate_of": "inv-2", "by": "invoice", "key": "4400154130-12270242"}

    find_duplicates(rows)   # {row id: Duplicate} over a whole predictions file, in file order

The double-reimbursement check finance teams run first: an invoice is identified by its
发票代码 + 发票号码 (normalised: NFKC, spaces and dashes removed; a code and number read in
each other's place are put back by their lengths, 10/12 vs 8 digits); a fully digital
invoice (数电票) by its 20-digit number alone. A file is identified by the SHA-256 of its
bytes, so the same PDF uploaded twice is caught before the model reads it. The first
document seen keeps its place; every later one points at it (``duplicate_of``).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_tools.documents import document_id_of
from data_tools.normalize import normalize_code

CODE_KEYS = ("发票代码",)
NUMBER_KEYS = ("发票号码", "发票编号")


@dataclass(frozen=True)
class Duplicate:
    duplicate_of: str  # the id seen first
    by: str  # "invoice" | "image"
    key: str  # the invoice key or the content hash

    def to_dict(self) -> dict[str, str]:
        return {"duplicate_of": self.duplicate_of, "by": self.by, "key": self.key}


def _first(fields: Mapping[str, Any], keys: tuple[str, ...]) -> str:
    for k in keys:
        v = fields.get(k)
        if isinstance(v, str) and v.strip():
            return normalize_code(v)
    return ""


def invoice_key(fields: Any) -> str | None:
    """``code-number`` of an invoice's fields (``number`` for a 数电票); None if unknown."""
    if not isinstance(fields, Mapping):
        return None
    code, number = _first(fields, CODE_KEYS), _first(fields, NUMBER_KEYS)
    if len(code) == 8 and len(number) in (10, 12):  # read in each other's place
        code, number = number, code
    if not number:
        return None
    if len(number) == 20 and number.isdigit():
        return number
    return f"{code}-{number}" if code else None


def content_hash(data: bytes | str | Path) -> str:
    """SHA-256 of a file's bytes (a path is read in chunks)."""
    h = hashlib.sha256()
    if isinstance(data, bytes):
        h.update(data)
    else:
        with Path(data).open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


class DuplicateTracker:
    """Remembers what a batch has seen; thread-safe. Bounded: `max_entries` keys per kind."""

    def __init__(self, max_entries: int = 1_000_000) -> None:
        self._by_invoice: dict[str, str] = {}
        self._by_hash: dict[str, str] = {}
        self._lock = threading.Lock()
        self.max_entries = max_entries

    def check(
        self,
        doc_id: str,
        *,
        fields: Any = None,
        content: bytes | None = None,
        digest: str | None = None,
    ) -> Duplicate | None:
        """Record `doc_id` and say whether it repeats an earlier document.

        The file hash (`digest`, or the hash of `content`) is checked first, then the
        invoice key of `fields`. Checking the same id again is not a duplicate of itself.
        """
        if digest is None and content is not None:
            digest = content_hash(content)
        key = invoice_key(fields)
        with self._lock:
            found: Duplicate | None = None
            if digest is not None:
                first = self._by_hash.get(digest)
                if first is not None and first != doc_id:
                    found = Duplicate(first, "image", digest)
                elif first is None and len(self._by_hash) < self.max_entries:
                    self._by_hash[digest] = doc_id
            if key is not None:
                first = self._by_invoice.get(key)
                if first is not None and first != doc_id:
                    found = found or Duplicate(first, "invoice", key)
                elif first is None and len(self._by_invoice) < self.max_entries:
                    self._by_invoice[key] = doc_id
            return found

    def __len__(self) -> int:
        return len(set(self._by_invoice.values()) | set(self._by_hash.values()))


def find_duplicates(
    rows: Iterable[Mapping[str, Any]],
    *,
    id_key: str = "id",
    hash_files: bool = True,
) -> dict[str, Duplicate]:
    """Duplicates among prediction rows (file order): `{document id: Duplicate}` for every
    document that repeats an earlier one (mark all its rows with ``duplicate_of``).

    Rows of one document (several prompts, or the pages ``doc#p1``, ``doc#p2`` of a PDF:
    the same ``document``, else the same id less its page suffix) count once; the invoice key is taken from each row's ``prediction``; with `hash_files`
    the ``image`` file each row names is hashed (once per path; missing files skipped).
    """
    tracker = DuplicateTracker()
    out: dict[str, Duplicate] = {}
    hashes: dict[str, str | None] = {}
    for row in rows:
        doc = str(row.get("document") or document_id_of(str(row.get(id_key))))
        digest = None
        image = row.get("image")
        if hash_files and isinstance(image, str) and image:
            if image not in hashes:
                try:
                    hashes[image] = content_hash(image)
                except OSError:
                    hashes[image] = None
            digest = hashes[image]
        dup = tracker.check(doc, fields=row.get("prediction"), digest=digest)
        if dup is not None and doc not in out:
            out[doc] = dup
    return out
