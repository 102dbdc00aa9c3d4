"""Duplicates in a batch: the same invoice code + number, or the same file, twice."""

from __future__ import annotations

import threading
from pathlib import Path

from data_tools.duplicates import (
    DuplicateTracker,
    content_hash,
    find_duplicates,
    invoice_key,
)

B1 = {"发票代码": "4400154130", "发票号码": "12270242"}


def test_invoice_key_normalises_and_puts_a_swapped_pair_back() -> None:
    assert invoice_key(B1) == "4400154130-12270242"
    assert invoice_key({"发票代码": "4400 1541-30", "发票号码": "１２２７０２４２"}) == (
        "4400154130-12270242"
    )
    assert invoice_key({"发票代码": "12270242", "发票编号": "4400154130"}) == (
        "4400154130-12270242"
    )
    assert invoice_key({"发票号码": "24442000000012345678"}) == "24442000000012345678"
    assert invoice_key({"发票号码": "12270242"}) is None  # a number alone is not unique
    assert invoice_key({"发票代码": "4400154130"}) is None
    assert invoice_key(None) is None and invoice_key("text") is None


def test_tracker_flags_the_second_sighting_only() -> None:
    t = DuplicateTracker()
    assert t.check("a", fields=B1, content=b"file-a") is None
    assert t.check("b", fields={"发票代码": "4400154130", "发票号码": "12271524"}) is None
    dup = t.check("c", fields={"发票代码": "4400154130 ", "发票号码": "1227-0242"})
    assert dup is not None and dup.to_dict() == {
        "duplicate_of": "a",
        "by": "invoice",
        "key": "4400154130-12270242",
    }
    same_file = t.check("d", fields=None, content=b"file-a")
    assert same_file.by == "image" and same_file.duplicate_of == "a"
    assert same_file.key == content_hash(b"file-a")
    assert t.check("a", fields=B1, content=b"file-a") is None  # a page of the same document
    assert t.check("e", fields={}, content=b"other") is None


def test_tracker_is_thread_safe() -> None:
    t = DuplicateTracker()
    found: list[str] = []

    def work(i: int) -> None:
        if t.check(f"doc{i}", fields=B1) is None:
            found.append(f"doc{i}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(found) == 1  # exactly one first sighting


def test_find_duplicates_over_prediction_rows(tmp_path: Path) -> None:
    a, b, c = (tmp_path / n for n in ("a.pdf", "b.jpg", "c.jpg"))
    a.write_bytes(b"%PDF same")
    b.write_bytes(b"jpeg 1")
    c.write_bytes(b"%PDF same")  # the same file under another name
    rows = [
        {"id": "a#p1", "document": "a", "image": str(a), "prediction": B1},
        {"id": "a#p2", "document": "a", "image": str(a), "prediction": {"发票号码": ""}},
        {"id": "b", "image": str(b), "prediction": dict(B1)},
        {"id": "c", "image": str(c), "prediction": None},
        {"id": "d", "image": str(tmp_path / "gone.jpg"), "prediction": {"发票代码": "1"}},
    ]
    dups = find_duplicates(rows)
    assert {k: (v.duplicate_of, v.by) for k, v in dups.items()} == {
        "b": ("a", "invoice"),
        "c": ("a", "image"),
    }
    assert set(find_duplicates(rows, hash_files=False)) == {"b"}
    # pages of one PDF (ids doc#p1, doc#p2, no "document" key) are one document
    pages = [
        {"id": "inv#p1", "image": str(a), "prediction": B1},
        {"id": "inv#p2", "image": str(a), "prediction": B1},
        {"id": "other#p1", "image": str(b), "prediction": B1},
    ]
    assert {k: v.duplicate_of for k, v in find_duplicates(pages).items()} == {"other": "inv"}
