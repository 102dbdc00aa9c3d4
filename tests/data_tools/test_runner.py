"""The one run harness, covered once and deeply: resume, torn tails, locks, failures, exits."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from data_tools.runner import (
    EXIT_FATAL,
    EXIT_ITEMS_FAILED,
    EXIT_OK,
    BadInput,
    FatalError,
    Item,
    ItemFailed,
    Output,
    RunFiles,
    read_state,
    run_items,
    run_lock,
)

ROOT = Path(__file__).resolve().parents[2]


def rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def items(n: int) -> list[Item]:
    return [Item.single(f"doc{i}", payload=i) for i in range(n)]


def run(its, work, files, **kw):
    kw.setdefault("progress", False)
    return asyncio.run(run_items(its, work, files, **kw))


async def ok_work(item: Item) -> Output:
    return Output(rows=[{"id": item.id, "value": item.payload * 2}])


def test_all_done_and_rerun_is_a_no_op(tmp_path: Path) -> None:
    files = RunFiles.beside(tmp_path / "out.jsonl")
    s = run(items(5), ok_work, files, config={"api_key": "sk-x", "n": 1})
    assert s.exit_code == EXIT_OK and s.ok == 5 and s.todo == 5
    assert sorted(r["id"] for r in rows(files.out)) == [f"doc{i}" for i in range(5)]
    summary = json.loads(files.summary.read_text(encoding="utf-8"))
    assert summary["summary"]["ok"] == 5 and summary["config"] == {"api_key": "***", "n": 1}
    s2 = run(items(5), ok_work, files)
    assert s2.todo == 0 and s2.done_before == 5 and s2.exit_code == EXIT_OK
    assert len(rows(files.out)) == 5


def test_failures_are_listed_never_done_and_retried_when_asked(tmp_path: Path) -> None:
    files = RunFiles.beside(tmp_path / "out.jsonl")
    broken = {"doc1", "doc3"}

    async def work(item: Item) -> Output:
        if item.id in broken:
            raise ItemFailed("image", f"cannot decode {item.id}", image=f"/x/{item.id}.png")
        if item.id == "doc4":
            raise RuntimeError("a bug")
        return await ok_work(item)

    s = run(items(5), work, files)
    assert s.exit_code == EXIT_ITEMS_FAILED and s.ok == 2 and s.failed == 3
    fails = {r["id"]: r for r in rows(files.failures)}
    assert fails["doc1"]["stage"] == "image" and fails["doc1"]["image"] == "/x/doc1.png"
    assert fails["doc4"]["stage"] == "internal" and "RuntimeError: a bug" in fails["doc4"]["reason"]
    assert {r["id"] for r in rows(files.out)} == {"doc0", "doc2"}

    # a plain rerun leaves failures alone but still reports them (exit 1)
    s2 = run(items(5), work, files)
    assert s2.todo == 0 and s2.failed_before == 3 and s2.exit_code == EXIT_ITEMS_FAILED

    # fixed inputs + --retry-failed: done, exit 0, and nothing done twice
    broken.clear()
    s3 = run(items(5), ok_work, files, retry_failed=True)
    assert s3.todo == 3 and s3.exit_code == EXIT_OK
    assert sorted(r["id"] for r in rows(files.out)) == [f"doc{i}" for i in range(5)]
    assert read_state(files).failed == {}


def test_fatal_stops_the_run_keeps_what_is_done_and_the_rerun_continues(tmp_path: Path) -> None:
    files = RunFiles.beside(tmp_path / "out.jsonl")
    calls = Counter()

    async def work(item: Item) -> Output:
        calls["n"] += 1
        if item.payload >= 3:
            raise FatalError("401 from http://h/v1: wrong key")
        return await ok_work(item)

    s = run(items(10), work, files, workers=1)
    assert s.exit_code == EXIT_FATAL and "wrong key" in s.fatal
    assert [r["id"] for r in rows(files.out)] == ["doc0", "doc1", "doc2"]
    assert not files.failures.exists()  # a fatal error is no item's failure
    s2 = run(items(10), ok_work, files)
    assert s2.exit_code == EXIT_OK and s2.todo == 7 and len(rows(files.out)) == 10


def test_preflight_fatal_runs_nothing(tmp_path: Path) -> None:
    files = RunFiles.beside(tmp_path / "out.jsonl")

    async def preflight() -> None:
        raise FatalError("no endpoint reachable")

    s = run(items(3), ok_work, files, before_start=preflight)
    assert s.exit_code == EXIT_FATAL and s.ok == 0 and not files.out.exists()
    done_called = []

    async def never() -> None:
        done_called.append(1)

    # nothing to do: the preflight is not even called
    run(items(3), ok_work, files)
    s3 = run(items(3), ok_work, files, before_start=never)
    assert s3.todo == 0 and not done_called


def test_torn_tail_is_dropped_and_redone(tmp_path: Path) -> None:
    files = RunFiles.beside(tmp_path / "out.jsonl")
    run(items(2), ok_work, files)
    with files.out.open("a", encoding="utf-8") as fh:
        fh.write('{"id": "doc2", "val')  # a crash mid-line
    s = run(items(3), ok_work, files)
    assert s.dropped_torn_lines == ["out.jsonl"] and s.todo == 1
    assert [r["id"] for r in rows(files.out)] == ["doc0", "doc1", "doc2"]


def test_corrupt_middle_line_is_bad_input(tmp_path: Path) -> None:
    files = RunFiles.beside(tmp_path / "out.jsonl")
    files.out.write_text('{"id": "a"}\nnot json\n{"id": "b"}\n', encoding="utf-8")
    with pytest.raises(BadInput, match=r"out\.jsonl:2"):
        run(items(1), ok_work, files)


def test_multi_key_items_only_redo_missing_keys(tmp_path: Path) -> None:
    files = RunFiles.beside(tmp_path / "out.jsonl", row_key=lambda r: f"{r['id']}\t{r['p']}")
    files.out.write_text(json.dumps({"id": "a", "p": "x"}) + "\n", encoding="utf-8")
    seen = []

    async def work(item: Item) -> Output:
        seen.append(item.keys)
        return Output(rows=[{"id": item.id, "p": k.split("\t")[1]} for k in item.keys])

    its = [Item("a", ("a\tx", "a\ty")), Item("b", ("b\tx",))]
    s = run(its, work, files)
    assert sorted(seen) == [("a\ty",), ("b\tx",)] and s.done_before == 0 and s.ok == 2
    assert len(rows(files.out)) == 3


def test_side_lines_land_before_rows(tmp_path: Path) -> None:
    side = tmp_path / "side.txt"
    files = RunFiles.beside(tmp_path / "out.jsonl", side=(side,))

    async def work(item: Item) -> Output:
        return Output(rows=[{"id": item.id}], side=[(side, f"{item.id}\tline\n")])

    side.write_text("old\ttorn", encoding="utf-8")  # torn text tail from a crash
    run(items(2), work, files)
    lines = side.read_text(encoding="utf-8").splitlines()
    assert sorted(lines) == ["doc0\tline", "doc1\tline"]


def test_counters_and_limit(tmp_path: Path) -> None:
    files = RunFiles.beside(tmp_path / "out.jsonl")
    c: Counter[str] = Counter()

    async def work(item: Item) -> Output:
        c["calls"] += 2
        return await ok_work(item)

    s = run(items(5), work, files, limit=2, counters=c)
    assert s.ok == 2 and s.counters == {"calls": 4}


def test_live_lock_is_refused_and_stale_lock_file_is_not(tmp_path: Path) -> None:
    files = RunFiles.beside(tmp_path / "out.jsonl")
    files.lock.write_text("", encoding="utf-8")  # left by a killed run: no process holds it
    assert run(items(1), ok_work, files).exit_code == EXIT_OK
    with run_lock(files.lock), pytest.raises(BadInput, match="in use by another"):
        run(items(2), ok_work, files)


def test_files_get_the_umask_permissions(tmp_path: Path) -> None:
    files = RunFiles.beside(tmp_path / "out.jsonl")
    run(items(1), ok_work, files)
    old = os.umask(0o022)
    os.umask(old)
    expected = 0o666 & ~old
    assert files.summary.stat().st_mode & 0o777 == expected
    assert files.out.stat().st_mode & 0o777 == expected


CHILD = textwrap.dedent(
    """
    import asyncio, random, sys
    from data_tools.runner import Item, Output, RunFiles, run_items
    from pathlib import Path

    async def work(item):
        await asyncio.sleep(random.random() * 0.04)
        return Output(rows=[{"id": item.id, "pad": "x" * 3000}])

    files = RunFiles.beside(Path(sys.argv[1]))
    its = [Item.single(f"doc{i}") for i in range(int(sys.argv[2]))]
    s = asyncio.run(run_items(its, work, files, workers=8, progress=False))
    sys.exit(s.exit_code)
    """
)


@pytest.mark.slow
def test_sigkill_many_times_then_exactly_one_row_per_item(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    script = tmp_path / "child.py"
    script.write_text(CHILD, encoding="utf-8")
    n, kills = 2000, 0
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for delay in (0.7, 0.8, 0.9, 1.0, 1.1, 1.2):
        p = subprocess.Popen([sys.executable, str(script), str(out), str(n)], env=env)
        time.sleep(delay)
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            kills += 1
        p.wait()
    assert kills >= 5
    done = subprocess.run([sys.executable, str(script), str(out), str(n)], env=env, timeout=120)
    assert done.returncode == 0
    ids = [r["id"] for r in rows(out)]
    assert sorted(ids) == sorted(f"doc{i}" for i in range(n))


def test_a_crash_in_a_hook_is_never_a_success_on_disk(tmp_path: Path) -> None:
    files = RunFiles.beside(tmp_path / "out.jsonl")

    async def broken_preflight() -> None:
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        run(items(2), ok_work, files, before_start=broken_preflight)
    summary = json.loads(files.summary.read_text(encoding="utf-8"))["summary"]
    assert summary["exit_code"] == EXIT_FATAL and "internal error: KeyError" in summary["fatal"]
