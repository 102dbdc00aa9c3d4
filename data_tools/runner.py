"""One run harness for every resumable batch stage (label, label-lines, predict, ...).

A stage is its per-item coroutine plus a thin ``main()``; everything a long batch job needs
to survive crashes, reruns and failing endpoints lives here, once:

* **one run at a time** per output: an ``flock`` on ``<out>.lock`` (released by the kernel
  when a process dies, so a stale lock file from a killed run never blocks the next);
* **append-only output** (JSONL, one whole line per ``write()``, fsynced in group commits
  by one writer thread); a torn last line left by a crash is dropped on the next start;
* **done keys** read back from the output: a rerun of the same command continues where the
  last one stopped; an item counts as done only once its rows are on disk;
* a **failures file** with the reason of every item that failed; a failed item is never
  counted as done; by default a rerun leaves it alone (it is listed and the run exits 1),
  ``retry_failed`` redoes it;
* bounded **workers**, a **progress bar** (tqdm), and a **summary** (JSON, written
  atomically, config secrets redacted);
* one **exit-code convention** for every stage (README "Exit codes"):

  ====  ==========================================================================
  0     every item is done
  1     some items failed; they are listed in the failures file (rerun with
        ``--retry-failed`` to redo them)
  2     bad input or config (nothing was run)
  3     a fatal endpoint error stopped the run (wrong key, endpoint unreachable);
        finished items are kept, a rerun continues
  130   interrupted (Ctrl-C); finished items are kept, a rerun continues
  ====  ==========================================================================

The per-item coroutine returns an :class:`Output` (rows for the output file, lines for side
files written just before them) or raises :class:`ItemFailed` (stage + reason → failures
file) or :class:`FatalError` (stop the run). Any other exception on one item is recorded
as a failure of stage ``internal`` with its traceback logged: a bug on one input never
aborts the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import fcntl
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_tools.config import redact
from data_tools.jsonl import JsonlError, atomic_write_text, drop_torn_tail, dumps_line, read_jsonl

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_ITEMS_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_FATAL = 3
EXIT_INTERRUPTED = 130


class BadInput(ValueError):
    """Input or config that cannot be run (exit 2); the message names the file and what to do."""


class FatalError(RuntimeError):
    """Stops the whole run (exit 3): a rejected key, an endpoint that cannot be reached."""


class ItemFailed(Exception):
    """One item could not be done; ``stage`` and ``reason`` go to the failures file."""

    def __init__(self, stage: str, reason: str, **extra: Any) -> None:
        super().__init__(f"{stage}: {reason}")
        self.stage = stage
        self.reason = reason
        self.extra = extra


@dataclass(frozen=True)
class Item:
    """One unit of work. ``keys`` are the done keys of the rows it writes (usually one)."""

    id: str
    keys: tuple[str, ...]
    payload: Any = None

    @classmethod
    def single(cls, id: str, payload: Any = None, key: str | None = None) -> Item:
        return cls(id=id, keys=(key if key is not None else id,), payload=payload)


@dataclass
class Output:
    """What one item produced: ``rows`` for the output file (they mark the item done) and
    ``side`` lines ``(path, text)`` appended before them (a crash between leaves side lines of
    an unfinished item, which the stage's ``prepare`` hook may clean up on the next start)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    side: list[tuple[Path, str]] = field(default_factory=list)


@dataclass(frozen=True)
class RunFiles:
    """Where a run keeps its state. ``row_key`` gives the done key of an output row."""

    out: Path
    failures: Path
    summary: Path | None = None
    row_key: Callable[[Mapping[str, Any]], str] = lambda row: str(row.get("id"))
    side: tuple[Path, ...] = ()  # side files whose torn tails are dropped on start
    lock_file: Path | None = None  # default: <out>.lock

    @property
    def lock(self) -> Path:
        return self.lock_file or self.out.with_name(self.out.name + ".lock")

    @classmethod
    def beside(cls, out: Path, **kw: Any) -> RunFiles:
        """``out`` with ``<stem>.failures.jsonl`` and ``<stem>.summary.json`` next to it."""
        stem = out.name.removesuffix(".jsonl")
        return cls(
            out=out,
            failures=out.with_name(f"{stem}.failures.jsonl"),
            summary=out.with_name(f"{stem}.summary.json"),
            **kw,
        )


@dataclass
class RunState:
    """What the output files say before the run: done keys and failed (not done) keys."""

    done: set[str]
    failed: dict[str, dict[str, Any]]  # key -> its last failure row
    dropped_torn_lines: list[str]


@dataclass
class RunSummary:
    items: int = 0
    done_before: int = 0
    failed_before: int = 0  # failed in an earlier run and not retried now
    todo: int = 0
    ok: int = 0
    failed: int = 0
    elapsed_s: float = 0.0
    items_per_s: float = 0.0
    fatal: str | None = None
    interrupted: bool = False
    dropped_torn_lines: list[str] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    failures_file: str = ""
    exit_code: int = EXIT_OK

    def line(self, what: str = "item") -> str:
        """One human line for the end of a run."""
        parts = [f"{self.ok} done now", f"{self.done_before} done before"]
        if self.failed:
            parts.append(f"{self.failed} failed")
        if self.failed_before:
            parts.append(f"{self.failed_before} failed before and not retried")
        extra = ", ".join(f"{v} {k}" for k, v in self.counters.items())
        return f"{self.items} {what}(s): " + ", ".join(parts) + (f"; {extra}" if extra else "")


# ---------------------------------------------------------------- the writer
class Appender:
    """Group commit for append-only files: whole lines, one write + fsync per batch.

    ``await put(path, text)`` returns once the text is durable, so an item counts as done
    only when its rows are on disk.
    """

    def __init__(self, fsync: bool = True) -> None:
        self.fsync = fsync
        self._queue: asyncio.Queue[tuple[Path, str, asyncio.Future[None]] | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def put(self, path: Path, text: str) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._queue.put((path, text, fut))
        await fut

    async def put_row(self, path: Path, row: Mapping[str, Any]) -> None:
        await self.put(path, dumps_line(row))

    async def close(self) -> None:
        await self._queue.put(None)
        if self._task is not None:
            await self._task

    def _write(self, batch: dict[Path, list[str]]) -> None:
        for path, chunks in batch.items():
            append_text(path, "".join(chunks), fsync=self.fsync)

    async def _run(self) -> None:
        stop = False
        while not stop:
            entries = [await self._queue.get()]
            while not self._queue.empty():
                entries.append(self._queue.get_nowait())
            batch: dict[Path, list[str]] = {}
            futs: list[asyncio.Future[None]] = []
            for e in entries:
                if e is None:
                    stop = True
                    continue
                path, text, fut = e
                batch.setdefault(path, []).append(text)
                futs.append(fut)
            if not batch:
                continue
            try:
                await asyncio.to_thread(self._write, batch)
            except Exception as exc:
                for f in futs:
                    if not f.done():
                        f.set_exception(exc)
                continue
            for f in futs:
                if not f.done():
                    f.set_result(None)


def append_text(path: Path, text: str, *, fsync: bool = True) -> None:
    """Append ``text`` (whole lines) to ``path``; loops over short writes; fsync."""
    data = text.encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------- lock and state
@contextlib.contextmanager
def run_lock(path: Path, what: str = "run") -> Iterator[None]:
    """An exclusive ``flock`` on ``path``; another live run on the same output is an error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = path.open("a+")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BadInput(
                f"{path.parent} is in use by another {what} (lock {path}); wait for it to "
                "finish or write to another output"
            ) from None
        yield
    finally:
        fh.close()


def read_state(files: RunFiles) -> RunState:
    """Drop torn tails, then read the done and failed keys (see the module docstring)."""
    dropped = []
    for p in (files.out, files.failures):
        if drop_torn_tail(p):
            dropped.append(p.name)
    for p in files.side:
        if drop_torn_tail(p, check_json=p.suffix == ".jsonl"):
            dropped.append(p.name)
    try:
        done = (
            {files.row_key(row) for _, row in read_jsonl(files.out)}
            if files.out.exists()
            else set()
        )
        failed: dict[str, dict[str, Any]] = {}
        if files.failures.exists():
            for _, row in read_jsonl(files.failures):
                key = str(row.get("key", row.get("id")))
                if key not in done:
                    failed[key] = row
    except JsonlError as exc:
        raise BadInput(
            f"{exc}. A corrupt line in the middle of an output file is not from a crash; "
            "fix or remove it, then rerun"
        ) from None
    return RunState(done=done, failed=failed, dropped_torn_lines=dropped)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------- the run
Work = Callable[[Item], Awaitable[Output]]


async def run_items(
    items: Sequence[Item],
    work: Work,
    files: RunFiles,
    *,
    workers: int = 8,
    retry_failed: bool = False,
    limit: int | None = None,
    progress: bool = True,
    desc: str = "run",
    unit: str = "item",
    fsync: bool = True,
    counters: Counter[str] | None = None,
    prepare: Callable[[RunState], None] | None = None,
    before_start: Callable[[], Awaitable[None]] | None = None,
    config: Any = None,
    state: RunState | None = None,
) -> RunSummary:
    """Run every item of ``items`` not done yet; see the module docstring.

    ``prepare(state)`` runs under the lock once the state is read (clean-up of side files);
    ``before_start()`` runs only when there is work (an endpoint preflight; may raise
    :class:`FatalError`). ``counters`` (a ``Counter`` the stage bumps) lands in the summary.
    """
    files.out.parent.mkdir(parents=True, exist_ok=True)
    summary = RunSummary(failures_file=str(files.failures))
    counters = counters if counters is not None else Counter()
    with run_lock(files.lock, desc):
        state = state or read_state(files)
        summary.dropped_torn_lines = state.dropped_torn_lines
        if prepare is not None:
            prepare(state)
        todo: list[Item] = []
        summary.items = len(items)
        for it in items:
            undone = tuple(k for k in it.keys if k not in state.done)
            if not undone:
                summary.done_before += 1
                continue
            if not retry_failed and any(k in state.failed for k in undone):
                summary.failed_before += 1
                continue
            todo.append(it if undone == it.keys else dataclasses.replace(it, keys=undone))
        if limit is not None:
            todo = todo[:limit]
        summary.todo = len(todo)
        log.info(
            "%d %s(s): %d done before, %d failed before%s, %d to do → %s",
            summary.items,
            unit,
            summary.done_before,
            summary.failed_before,
            " (not retried; use --retry-failed)" if summary.failed_before else "",
            summary.todo,
            files.out,
        )
        fatal: list[BaseException] = []
        bad_input = False
        t0 = time.monotonic()
        try:
            if todo and before_start is not None:
                try:
                    await before_start()
                except FatalError as exc:
                    fatal.append(exc)
                    todo = []
            await _execute(todo, work, files, workers, fsync, progress, desc, unit, summary, fatal)
        except (KeyboardInterrupt, asyncio.CancelledError):
            summary.interrupted = True
            raise
        except BadInput as exc:  # from a hook (a model that does not load): not a success
            summary.fatal, bad_input = redact(str(exc)), True
            raise
        except Exception as exc:  # a bug in a hook or the harness: never a success on disk
            fatal.append(RuntimeError(f"internal error: {type(exc).__name__}: {exc}"))
            raise
        finally:
            summary.elapsed_s = round(time.monotonic() - t0, 3)
            summary.items_per_s = (
                round(summary.ok / summary.elapsed_s, 3) if summary.elapsed_s else 0.0
            )
            summary.counters = dict(counters)
            if fatal:
                summary.fatal = redact(str(fatal[0]))
            if summary.interrupted:
                summary.exit_code = EXIT_INTERRUPTED
            elif bad_input:
                summary.exit_code = EXIT_BAD_INPUT
            elif fatal:
                summary.exit_code = EXIT_FATAL
            elif summary.failed or summary.failed_before:
                summary.exit_code = EXIT_ITEMS_FAILED
            if files.summary is not None:
                _write_summary(files.summary, summary, config)
    return summary


async def _execute(
    todo: list[Item],
    work: Work,
    files: RunFiles,
    workers: int,
    fsync: bool,
    progress: bool,
    desc: str,
    unit: str,
    summary: RunSummary,
    fatal: list[BaseException],
) -> None:
    from tqdm import tqdm

    if not todo:
        return
    appender = Appender(fsync)
    appender.start()
    bar = tqdm(total=len(todo), desc=desc, unit=unit, disable=not progress, dynamic_ncols=True)
    queue = iter(todo)

    async def fail(item: Item, exc: ItemFailed) -> None:
        row = {
            "key": item.keys[0] if len(item.keys) == 1 else None,
            "id": item.id,
            "stage": exc.stage,
            "reason": redact(exc.reason),
            "at": _now(),
            **redact(exc.extra),
        }
        text = "".join(dumps_line({**row, "key": k}) for k in item.keys)
        await appender.put(files.failures, text)
        summary.failed += 1

    async def worker() -> None:
        for item in queue:
            if fatal:
                return
            try:
                try:
                    out = await work(item)
                except (ItemFailed, FatalError, asyncio.CancelledError):
                    raise
                except Exception as exc:  # a bug on one item must not stop the run
                    log.exception("unexpected error on %s", item.id)
                    raise ItemFailed("internal", f"{type(exc).__name__}: {exc}") from exc
            except FatalError as exc:
                fatal.append(exc)
                return
            except ItemFailed as exc:
                log.debug("failed %s: %s", item.id, exc)
                await fail(item, exc)
            else:
                for path, text in out.side:
                    await appender.put(path, text)
                if out.rows:
                    await appender.put(files.out, "".join(dumps_line(r) for r in out.rows))
                summary.ok += 1
            bar.update(1)
            bar.set_postfix(ok=summary.ok, failed=summary.failed, refresh=False)

    try:
        await run_workers(min(workers, len(todo)), worker, fatal)
    finally:
        bar.close()
        await appender.close()


async def run_workers(
    n: int, worker: Callable[[], Awaitable[None]], fatal: list[BaseException]
) -> None:
    """``n`` copies of ``worker``; once one has recorded a fatal error, cancel the others at
    once (their unfinished items are simply redone by the next run)."""
    pending = {asyncio.create_task(worker()) for _ in range(max(1, n))}
    try:
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if not t.cancelled() and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
            if fatal:
                break
    finally:
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


def _write_summary(path: Path, summary: RunSummary, config: Any) -> None:
    cfg = None
    if config is not None:
        from data_tools.config import to_dict

        cfg = to_dict(config) if dataclasses.is_dataclass(config) else redact(config)
    body = {"summary": dataclasses.asdict(summary), "config": cfg}
    atomic_write_text(path, json.dumps(body, ensure_ascii=False, indent=2, default=str) + "\n")


def exit_message(summary: RunSummary, what: str = "item") -> str:
    """The last log line of a run: what happened and what to do next."""
    text = summary.line(what)
    if summary.fatal:
        text += f". Stopped: {summary.fatal}. Finished {what}s are kept; rerun to continue"
    elif summary.failed or summary.failed_before:
        text += f". Failures are listed in {summary.failures_file}; rerun with --retry-failed"
    return text
