import gc
import json

import pytest

from data_tools.jsonl import (
    JsonlError,
    append_jsonl,
    atomic_write_text,
    drop_torn_tail,
    dumps_line,
    gc_frozen,
    gc_paused,
    read_jsonl,
    write_jsonl_atomic,
)


def test_dumps_line_keeps_cjk_and_ends_with_newline():
    assert dumps_line({"发票号码": "12271524"}) == '{"发票号码": "12271524"}\n'


def test_read_jsonl_names_file_and_line(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"a": 1}\n\n{"a": 2\n', encoding="utf-8")
    rows = read_jsonl(p)
    assert next(rows) == (1, {"a": 1})
    with pytest.raises(JsonlError, match=r"x\.jsonl:3: not valid JSON"):
        next(rows)


def test_read_jsonl_rejects_non_objects(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text("[1, 2]\n", encoding="utf-8")
    with pytest.raises(JsonlError, match=r":1: expected a JSON object, got list"):
        list(read_jsonl(p))


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    p = tmp_path / "out.jsonl"
    write_jsonl_atomic(p, [{"a": 1}])

    def rows():
        yield {"a": 2}
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_jsonl_atomic(p, rows())
    assert p.read_text(encoding="utf-8") == '{"a": 1}\n'
    assert [f.name for f in tmp_path.iterdir()] == ["out.jsonl"]  # no temp file left


def test_atomic_write_text_creates_parents(tmp_path):
    p = tmp_path / "a" / "b.txt"
    atomic_write_text(p, "hé")
    assert p.read_text(encoding="utf-8") == "hé"


def test_atomic_bytes_publish_with_the_umask_mode_or_the_one_given(tmp_path):
    from data_tools.jsonl import atomic_write_bytes, atomic_writer

    p = tmp_path / "img" / "a.png"
    atomic_write_bytes(p, b"\x89PNG\r\n", fsync=False)
    assert p.read_bytes() == b"\x89PNG\r\n"  # bytes as given: no newline translation
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    assert p.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777  # not mkstemp's 0600
    with atomic_writer(p, binary=True, mode=0o640) as fh:
        fh.write(b"new")
    assert (p.read_bytes(), p.stat().st_mode & 0o777) == (b"new", 0o640)
    with pytest.raises(OSError), atomic_writer(p, binary=True) as fh:
        fh.write(b"half")
        raise OSError("disk full")
    assert p.read_bytes() == b"new"
    assert [f.name for f in p.parent.iterdir()] == ["a.png"]  # no temp file left


def test_append_and_drop_torn_tail(tmp_path):
    p = tmp_path / "labels.jsonl"
    append_jsonl(p, {"id": "a"})
    append_jsonl(p, {"id": "b"})
    assert drop_torn_tail(p) is False
    with p.open("ab") as fh:  # a crash mid-write: half a line, no newline
        fh.write(b'{"id": "c", "fie')
    assert drop_torn_tail(p) is True
    assert [o["id"] for _, o in read_jsonl(p)] == ["a", "b"]
    append_jsonl(p, {"id": "c"})
    assert [o["id"] for _, o in read_jsonl(p)] == ["a", "b", "c"]


def test_drop_torn_tail_only_line_and_invalid_complete_line(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_bytes(b'{"id": ')
    assert drop_torn_tail(p) is True
    assert p.read_bytes() == b""
    p.write_bytes(b'{"id": 1}\n{"id": \n')  # newline written but JSON cut (torn in the middle)
    assert drop_torn_tail(p) is True
    assert json.loads(p.read_text()) == {"id": 1}
    assert drop_torn_tail(tmp_path / "missing.jsonl") is False


def test_drop_torn_tail_long_lines(tmp_path):
    p = tmp_path / "x.jsonl"
    big = {"v": "x" * 200_000}
    append_jsonl(p, big)
    with p.open("ab") as fh:
        fh.write(b'{"v": "' + b"y" * 150_000)
    assert drop_torn_tail(p) is True
    assert [o for _, o in read_jsonl(p)] == [big]


def test_gc_paused_restores_the_collector_even_on_error():
    assert gc.isenabled()
    with pytest.raises(RuntimeError), gc_paused():
        assert not gc.isenabled()
        raise RuntimeError("boom")
    assert gc.isenabled()
    gc.disable()  # a caller that had it off keeps it off
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_gc_frozen_freezes_once_and_only_the_outermost_block_unfreezes():
    assert gc.get_freeze_count() == 0
    with gc_frozen():
        frozen = gc.get_freeze_count()
        assert frozen > 0
        with gc_frozen():  # nested: nothing more to do, and it must not unfreeze
            pass
        assert gc.get_freeze_count() == frozen
    assert gc.get_freeze_count() == 0
    with pytest.raises(RuntimeError), gc_frozen():
        raise RuntimeError("boom")
    assert gc.get_freeze_count() == 0
