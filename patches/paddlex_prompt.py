"""Let custom prompts through the PaddleOCR-VL pipeline of PaddleX.

    python -m patches.paddlex_prompt {check,apply,revert,diff} [--paddlex PATH]

PaddleX (3.3 to 3.7.2 at least) refuses a ``prompt_label`` it does not know when layout
detection is off, would send ``"OCR:"`` for a label it does not know, lower-cases the label
into the block, and (from 3.4) validates the label again in its serving schema.  A
prompt-fine-tuned model needs the prompt itself, e.g. ``OCR:{"发票号码":""}``, to reach it.

The patch, located by code *structure* (``ast``), not by exact text:

* ``pipeline.py``: a helper block before the first class; the ``prompt_label`` assert in
  ``predict`` also accepts a custom prompt; the whole-page block keeps a custom prompt's
  case; the block-prompt chain (``text_prompt = "OCR:"`` / ``if block_label == "table"``
  ...) sends a custom prompt as the query.
* ``serving/schemas/paddleocr_vl.py``: the ``promptLabel`` validator (when present) lets a
  custom prompt pass.

A *custom prompt* is a label that contains a colon and is no built-in task label
(PaddleOCR-VL's task prompts all have the ``Task:`` form; layout labels never contain a
colon), so a typo such as ``tabel`` is still refused instead of being sent to the model.

Every patched file gets a byte-exact backup beside it (``*.paddlex_prompt.orig``) and a
record of both hashes (``*.paddlex_prompt.json``).  ``apply`` twice changes nothing,
``revert`` restores the original bytes, and a code shape that is not recognised is refused
with the PaddleX version and what was not found; no file is touched in that case.

Exit codes: ``check`` 0 applied, 1 not applied (patchable), 2 unknown shape / error;
other commands 0 on success, 2 on refusal.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import hashlib
import importlib.util
import itertools
import json
import logging
import os
import re
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

PIPELINE_REL = "inference/pipelines/paddleocr_vl/pipeline.py"
SCHEMA_REL = "inference/serving/schemas/paddleocr_vl.py"
BACKUP_SUFFIX = ".paddlex_prompt.orig"
RECORD_SUFFIX = ".paddlex_prompt.json"
MARKER = "paddlex_prompt patch"
HELPER_IS_CUSTOM = "_paddlex_prompt_is_custom"
HELPER_BLOCK_LABEL = "_paddlex_prompt_block_label"


class PatchError(RuntimeError):
    """The patch cannot be applied, reverted or checked; nothing was changed."""


# --------------------------------------------------------------------------- helpers


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def default_paddlex_dir() -> Path:
    """The installed ``paddlex`` package folder, found without importing paddlex."""
    spec = importlib.util.find_spec("paddlex")
    if spec is None or not spec.submodule_search_locations:
        raise PatchError("paddlex is not installed in this environment; pass --paddlex PATH")
    return Path(next(iter(spec.submodule_search_locations)))


def paddlex_version(pkg: Path) -> str:
    """Version of the paddlex package folder ``pkg`` (``.version`` file or sibling dist-info)."""
    dot_version = pkg / ".version"
    if dot_version.is_file():
        text = dot_version.read_text(encoding="utf-8").strip()
        if text:
            return text
    for meta in sorted(pkg.parent.glob("paddlex-*.dist-info/METADATA")):
        for line in meta.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("Version:"):
                return line.split(":", 1)[1].strip()
            if not line.strip():
                break
    return "unknown"


def _write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` in one rename, keeping its permission bits (this module
    imports nothing of the project: ``data_tools.jsonl.atomic_writer`` is the same write)."""
    mode = path.stat().st_mode & 0o7777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _replace_if_unchanged(path: Path, expected: bytes, data: bytes) -> None:
    """`_write_atomic` unless `path` changed since it was read as `expected`."""
    if path.read_bytes() != expected:
        raise PatchError(
            f"{path} changed while it was being patched (another install or editor?); "
            "nothing was written for it: run the command again"
        )
    _write_atomic(path, data)


def _check_writable(paths: list[Path]) -> None:
    """PatchError (nothing changed) unless every folder in `paths` can take a new file."""
    for folder in sorted({p.parent for p in paths}):
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PatchError(
                f"cannot write to {folder} (read-only site-packages?); nothing was changed. "
                "Run as the user who installed paddlex, or patch a writable copy "
                "(--paddlex PATH, then put its parent first on PYTHONPATH)"
            )


# --------------------------------------------------------------------------- text edits


@dataclass(frozen=True)
class _Edit:
    """Replace source[start:end] (character offsets) by ``text``."""

    start: int
    end: int
    text: str


class _Source:
    """Source text with ast positions (1-based lines, UTF-8 byte columns) -> char offsets."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.newline = "\r\n" if "\r\n" in text else "\n"
        self.line_starts = [0]
        for m in re.finditer("\n", text):
            self.line_starts.append(m.end())

    def line(self, lineno: int) -> str:
        start = self.line_starts[lineno - 1]
        end = self.line_starts[lineno] if lineno < len(self.line_starts) else len(self.text)
        return self.text[start:end]

    def offset(self, lineno: int, col_bytes: int) -> int:
        prefix = self.line(lineno).encode("utf-8")[:col_bytes].decode("utf-8")
        return self.line_starts[lineno - 1] + len(prefix)

    def start(self, node: ast.AST) -> int:
        return self.offset(node.lineno, node.col_offset)

    def end(self, node: ast.AST) -> int:
        return self.offset(node.end_lineno, node.end_col_offset)

    def segment(self, node: ast.AST) -> str:
        return self.text[self.start(node) : self.end(node)]

    def indent_of(self, lineno: int) -> str:
        line = self.line(lineno)
        return line[: len(line) - len(line.lstrip(" \t"))]

    def after_line(self, lineno: int) -> int:
        """Char offset of the start of the line after ``lineno``."""
        return self.line_starts[lineno] if lineno < len(self.line_starts) else len(self.text)


def _apply_edits(text: str, edits: list[_Edit]) -> str:
    edits = sorted(edits, key=lambda e: (e.start, e.end))
    for a, b in itertools.pairwise(edits):
        if b.start < a.end:
            raise PatchError("internal error: overlapping edits")
    out, pos = [], 0
    for e in edits:
        out.append(text[pos : e.start])
        out.append(e.text)
        pos = e.end
    out.append(text[pos:])
    return "".join(out)


def _lines(src: _Source, *lines: str) -> str:
    """Join new source lines with the file's own newline (ending with one)."""
    return "".join(line + src.newline for line in lines)


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    parents: dict[ast.AST, ast.AST] = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node
    return parents


def _is_name(node: ast.AST, name: str) -> bool:
    return isinstance(node, ast.Name) and node.id == name


def _is_lower_call(node: ast.AST, var: str) -> bool:
    """``var.lower()``"""
    return (
        isinstance(node, ast.Call)
        and not node.args
        and not node.keywords
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "lower"
        and _is_name(node.func.value, var)
    )


def _str_constants(node: ast.AST) -> list[str] | None:
    if isinstance(node, ast.List | ast.Tuple) and all(
        isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts
    ):
        return [e.value for e in node.elts]
    return None


# --------------------------------------------------------------------------- the transforms


@dataclass
class FilePlan:
    """What the patch does to one file."""

    rel: str
    path: Path
    original: bytes
    patched: bytes | None  # None: nothing to change in this file (e.g. no validator)
    notes: list[str] = field(default_factory=list)


def _helper_block(src: _Source, task_labels: list[str]) -> str:
    return _lines(
        src,
        f"# >>> {MARKER}: custom PaddleOCR-VL prompts (python -m patches.paddlex_prompt revert) >>>",
        f"_PADDLEX_PROMPT_TASK_LABELS = {tuple(task_labels)!r}",
        "",
        "",
        f"def {HELPER_IS_CUSTOM}(label):",
        '    """A custom prompt such as \'OCR:{"k":""}\': has a colon, is no built-in task label."""',
        "    return (",
        "        isinstance(label, str)",
        '        and ":" in label',
        "        and label.lower() not in _PADDLEX_PROMPT_TASK_LABELS",
        "    )",
        "",
        "",
        f"def {HELPER_BLOCK_LABEL}(label):",
        '    """Built-in task labels are lower-cased as before; a custom prompt keeps its case."""',
        f"    return label if {HELPER_IS_CUSTOM}(label) else label.lower()",
        "",
        "",
        f"# <<< {MARKER} <<<",
        "",
        "",
    )


def _transform_pipeline(text: str) -> tuple[str, list[str]]:
    """Patched pipeline.py source, or PatchError naming what was not found."""
    tree = ast.parse(text)
    src = _Source(text)
    parents = _parents(tree)
    missing: list[str] = []
    edits: list[_Edit] = []

    # 1. predict(..., prompt_label=...): `assert prompt_label.lower() in [labels...], msg`
    funcs = [
        f
        for f in ast.walk(tree)
        if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
        and any(a.arg == "prompt_label" for a in f.args.args + f.args.kwonlyargs)
        and any(isinstance(n, ast.Assert) for n in ast.walk(f))
    ]
    asserts = [
        n
        for f in funcs
        for n in ast.walk(f)
        if isinstance(n, ast.Assert)
        and isinstance(n.test, ast.Compare)
        and len(n.test.ops) == 1
        and isinstance(n.test.ops[0], ast.In)
        and _is_lower_call(n.test.left, "prompt_label")
        and _str_constants(n.test.comparators[0]) is not None
    ]
    task_labels: list[str] = []
    if len(asserts) != 1:
        missing.append(
            "a single `assert prompt_label.lower() in [<labels>]` in a function taking "
            f"`prompt_label` (found {len(asserts)})"
        )
    else:
        node = asserts[0]
        task_labels = _str_constants(node.test.comparators[0]) or []
        at = src.start(node.test)
        edits.append(_Edit(at, at, f"{HELPER_IS_CUSTOM}(prompt_label) or "))

        # 2. the whole-page box: {"label": prompt_label.lower(), ...} in the same function
        func = next(f for f in funcs if any(n is node for n in ast.walk(f)))
        label_values = [
            v
            for d in ast.walk(func)
            if isinstance(d, ast.Dict)
            for k, v in zip(d.keys, d.values, strict=True)
            if isinstance(k, ast.Constant)
            and k.value == "label"
            and _is_lower_call(v, "prompt_label")
        ]
        if len(label_values) != 1:
            missing.append(
                f'a single `{{"label": prompt_label.lower(), ...}}` box in `{func.name}` '
                f"(found {len(label_values)})"
            )
        else:
            v = label_values[0]
            edits.append(_Edit(src.start(v), src.end(v), f"{HELPER_BLOCK_LABEL}(prompt_label)"))

    # 3. text_prompt = "OCR:" followed by the `if <label> == "table": ... elif ...` chain
    defaults = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Assign)
        and len(n.targets) == 1
        and _is_name(n.targets[0], "text_prompt")
        and isinstance(n.value, ast.Constant)
        and n.value.value == "OCR:"
    ]
    if len(defaults) != 1:
        missing.append(f'a single `text_prompt = "OCR:"` assignment (found {len(defaults)})')
    else:
        default = defaults[0]
        body = next(
            getattr(parents[default], name)
            for name in ("body", "orelse", "finalbody")
            if default in getattr(parents[default], name, [])
        )
        chain = None
        label_expr = None
        for stmt in body[body.index(default) + 1 :]:
            if not isinstance(stmt, ast.If):
                continue
            tests = [
                stmt.test,
                *([stmt.test.values[0]] if isinstance(stmt.test, ast.BoolOp) else []),
            ]
            for t in tests:
                if (
                    isinstance(t, ast.Compare)
                    and isinstance(t.ops[0], ast.Eq)
                    and isinstance(t.comparators[0], ast.Constant)
                    and t.comparators[0].value == "table"
                ):
                    chain, label_expr = stmt, t.left
                    break
            if chain is not None:
                break
        assigns_prompt = chain is not None and any(
            isinstance(n, ast.Assign) and any(_is_name(t, "text_prompt") for t in n.targets)
            for n in ast.walk(chain)
        )
        if chain is None or label_expr is None or not assigns_prompt:
            missing.append(
                'an `if <block label> == "table": text_prompt = ...` chain after '
                f'`text_prompt = "OCR:"` (line {default.lineno})'
            )
        else:
            label_src = src.segment(label_expr)
            indent = src.indent_of(chain.lineno)
            at = src.after_line(chain.end_lineno)
            edits.append(
                _Edit(
                    at,
                    at,
                    _lines(
                        src,
                        f"{indent}if {HELPER_IS_CUSTOM}({label_src}):  # {MARKER}",
                        f"{indent}    text_prompt = {label_src}",
                    ),
                )
            )

    # 4. the helper block, before the first top-level def/class
    first_def = next(
        (
            n
            for n in tree.body
            if isinstance(n, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        ),
        None,
    )
    if first_def is None:
        missing.append("a top-level class or function to put the helpers before")
    elif not missing:
        line = min([first_def.lineno, *(d.lineno for d in first_def.decorator_list)])
        at = src.line_starts[line - 1]
        edits.append(_Edit(at, at, _helper_block(src, task_labels)))

    if missing:
        raise PatchError("; ".join(missing))
    notes = [
        f"assert relaxed (task labels {task_labels})",
        "whole-page block keeps a custom prompt's case",
        "custom prompt sent as the block query",
    ]
    return _apply_edits(text, edits), notes


def _transform_schema(text: str) -> tuple[str | None, list[str]]:
    """Patched serving schema source; None when it has no promptLabel validator."""
    tree = ast.parse(text)
    src = _Source(text)
    has_field = any(
        isinstance(n, ast.AnnAssign) and _is_name(n.target, "promptLabel") for n in ast.walk(tree)
    )
    validators = [
        f
        for f in ast.walk(tree)
        if isinstance(f, ast.FunctionDef)
        and any(
            isinstance(d, ast.Call)
            and any(isinstance(a, ast.Constant) and a.value == "promptLabel" for a in d.args)
            for d in f.decorator_list
        )
    ]
    if not has_field:
        raise PatchError("no `promptLabel` field in the serving schema")
    if not validators:
        return None, ["no promptLabel validator: nothing to relax"]
    if len(validators) != 1:
        raise PatchError(f"{len(validators)} `promptLabel` validators (expected one)")
    func = validators[0]
    args = [a.arg for a in func.args.args]
    raises = any(isinstance(n, ast.Raise) for n in ast.walk(func))
    if len(args) != 2 or not raises:
        raise PatchError(
            f"`{func.name}` is not a `(cls, value)` validator that raises (args {args})"
        )
    value = args[1]
    first = func.body[0]
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
        and len(func.body) > 1
    ):
        first = func.body[1]
    indent = src.indent_of(first.lineno)
    at = src.line_starts[first.lineno - 1]
    block = _lines(
        src,
        f'{indent}# {MARKER}: a custom prompt such as \'OCR:{{"k":""}}\' passes',
        f'{indent}if isinstance({value}, str) and ":" in {value}:',
        f"{indent}    return {value}",
    )
    return _apply_edits(text, [_Edit(at, at, block)]), [f"`{func.name}` lets custom prompts pass"]


TRANSFORMS: dict[str, Callable[[str], tuple[str | None, list[str]]]] = {
    PIPELINE_REL: _transform_pipeline,
    SCHEMA_REL: _transform_schema,
}


# --------------------------------------------------------------------------- state


@dataclass
class FileState:
    rel: str
    path: Path
    current: bytes
    applied: bool
    backup: Path
    record: Path

    @property
    def record_data(self) -> dict | None:
        if not self.record.is_file():
            return None
        try:
            return json.loads(self.record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None


def _state(pkg: Path, rel: str) -> FileState:
    path = pkg / rel
    if not path.is_file():
        raise PatchError(f"{rel} not found")
    current = path.read_bytes()
    return FileState(
        rel=rel,
        path=path,
        current=current,
        applied=MARKER.encode() in current,
        backup=path.with_name(path.name + BACKUP_SUFFIX),
        record=path.with_name(path.name + RECORD_SUFFIX),
    )


def _plan(state: FileState) -> FilePlan:
    """Transform the original bytes of an unpatched file (PatchError on unknown shapes)."""
    try:
        text = state.current.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PatchError(f"{state.rel}: not UTF-8 ({e})") from e
    try:
        patched, notes = TRANSFORMS[state.rel](text)
    except SyntaxError as e:
        raise PatchError(f"{state.rel}: does not parse ({e})") from e
    except PatchError as e:
        raise PatchError(f"{state.rel}: not found: {e}") from e
    if patched is None:
        return FilePlan(state.rel, state.path, state.current, None, notes)
    try:
        compile(patched, str(state.path), "exec")
    except SyntaxError as e:  # pragma: no cover - would be a bug in a transform
        raise PatchError(f"{state.rel}: patched source does not compile ({e})") from e
    return FilePlan(state.rel, state.path, state.current, patched.encode("utf-8"), notes)


def _verify_applied(state: FileState) -> bytes:
    """Original bytes of an applied file (from its backup), checked against the record."""
    record = state.record_data
    if record is None or not state.backup.is_file():
        raise PatchError(
            f"{state.rel}: carries the patch marker but its backup/record "
            f"({state.backup.name}, {state.record.name}) is missing; reinstall paddlex "
            "(pip install --force-reinstall --no-deps paddlex==<version>) to get the original"
        )
    original = state.backup.read_bytes()
    if sha256(original) != record.get("sha256_original"):
        raise PatchError(
            f"{state.rel}: backup {state.backup.name} does not match its recorded hash"
        )
    return original


class Patcher:
    """check / apply / revert / diff for one paddlex package folder."""

    def __init__(self, paddlex_dir: Path | None = None) -> None:
        self.pkg = Path(paddlex_dir) if paddlex_dir else default_paddlex_dir()
        if not (self.pkg / "__init__.py").is_file():
            raise PatchError(f"{self.pkg} is not a paddlex package folder (no __init__.py)")
        self.version = paddlex_version(self.pkg)

    def _refuse(self, why: str) -> PatchError:
        return PatchError(
            f"paddlex {self.version} at {self.pkg}: unknown code shape, nothing was changed: {why}"
        )

    def states(self) -> list[FileState]:
        try:
            return [_state(self.pkg, rel) for rel in TRANSFORMS]
        except PatchError as e:
            raise self._refuse(str(e)) from e

    def check(self) -> tuple[str, list[str]]:
        """('applied' | 'not applied' | 'partial', per-file lines); PatchError if unknown."""
        lines, applied = [], []
        for st in self.states():
            if st.applied:
                original = _verify_applied(st)
                record = st.record_data or {}
                edited = sha256(st.current) != record.get("sha256_patched")
                lines.append(
                    f"{st.rel}: applied (original sha256 {sha256(original)[:12]})"
                    + ("; EDITED since the patch" if edited else "")
                )
                applied.append(True)
            else:
                try:
                    plan = _plan(st)
                except PatchError as e:
                    raise self._refuse(str(e)) from e
                if plan.patched is None:
                    lines.append(f"{st.rel}: nothing to patch ({'; '.join(plan.notes)})")
                    continue
                lines.append(f"{st.rel}: not applied, patchable ({'; '.join(plan.notes)})")
                applied.append(False)
        if all(applied):
            return "applied", lines
        return ("partial" if any(applied) else "not applied"), lines

    def apply(self) -> list[str]:
        """Patch every file that needs it; all or nothing. Returns what was done."""
        states = self.states()
        plans: list[tuple[FileState, FilePlan]] = []
        done: list[str] = []
        for st in states:
            if st.applied:
                _verify_applied(st)
                record = st.record_data or {}
                if sha256(st.current) != record.get("sha256_patched"):
                    raise PatchError(
                        f"{st.rel}: patched earlier but edited since; run `revert --force` first"
                    )
                done.append(f"{st.rel}: already applied")
                continue
            try:
                plan = _plan(st)
            except PatchError as e:
                raise self._refuse(str(e)) from e
            if plan.patched is None:
                done.append(f"{st.rel}: nothing to patch ({'; '.join(plan.notes)})")
                continue
            plans.append((st, plan))
        _check_writable([st.path for st, _ in plans])
        written: list[FileState] = []
        try:
            for st, plan in plans:
                assert plan.patched is not None
                _write_atomic(st.backup, plan.original)
                record = {
                    "tool": "patches.paddlex_prompt",
                    "paddlex_version": self.version,
                    "file": st.rel,
                    "sha256_original": sha256(plan.original),
                    "sha256_patched": sha256(plan.patched),
                }
                _write_atomic(st.record, (json.dumps(record, indent=2) + "\n").encode())
                _replace_if_unchanged(st.path, st.current, plan.patched)
                written.append(st)
                done.append(f"{st.rel}: applied ({'; '.join(plan.notes)})")
        except BaseException as exc:
            for st, _ in plans:  # all or nothing
                if st in written:
                    _write_atomic(st.path, st.current)
                st.backup.unlink(missing_ok=True)
                st.record.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise PatchError(
                    f"writing the patch failed ({exc}); every file was restored"
                ) from exc
            raise
        log.debug("paddlex %s at %s: %s", self.version, self.pkg, "; ".join(done))
        return done

    def revert(self, force: bool = False) -> list[str]:
        """Restore the original bytes of every patched file."""
        done: list[str] = []
        restores: list[tuple[FileState, bytes]] = []
        for st in self.states():
            if not st.applied:
                done.append(f"{st.rel}: not applied, nothing to revert")
                continue
            original = _verify_applied(st)
            record = st.record_data or {}
            if sha256(st.current) != record.get("sha256_patched") and not force:
                raise PatchError(
                    f"{st.rel}: edited since the patch was applied; `revert --force` restores "
                    "the original and drops those edits"
                )
            restores.append((st, original))
        _check_writable([st.path for st, _ in restores])
        for st, original in restores:
            try:
                _replace_if_unchanged(st.path, st.current, original)
            except OSError as exc:
                raise PatchError(f"{st.rel}: restoring the original failed ({exc})") from exc
            st.backup.unlink(missing_ok=True)
            st.record.unlink(missing_ok=True)
            done.append(f"{st.rel}: reverted (sha256 {sha256(original)[:12]})")
        return done

    def diff(self) -> str:
        """Unified diff original -> patched (of the applied patch, or of what apply would do)."""
        out: list[str] = []
        for st in self.states():
            if st.applied:
                before, after = _verify_applied(st), st.current
            else:
                try:
                    plan = _plan(st)
                except PatchError as e:
                    raise self._refuse(str(e)) from e
                if plan.patched is None:
                    continue
                before, after = plan.original, plan.patched
            out.extend(
                difflib.unified_diff(
                    before.decode("utf-8").splitlines(keepends=True),
                    after.decode("utf-8").splitlines(keepends=True),
                    fromfile=f"a/paddlex/{st.rel}",
                    tofile=f"b/paddlex/{st.rel}",
                )
            )
        return "".join(out)


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m patches.paddlex_prompt",
        description='Let custom prompts (e.g. \'OCR:{"发票号码":""}\') through PaddleX\'s '
        "PaddleOCR-VL pipeline and serving schema.",
    )
    parser.add_argument("command", choices=["check", "apply", "revert", "diff"])
    parser.add_argument(
        "--paddlex",
        type=Path,
        default=None,
        help="a paddlex package folder (default: the installed one)",
    )
    parser.add_argument(
        "--force", action="store_true", help="revert even if the patched file was edited since"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        patcher = Patcher(args.paddlex)
        head = f"paddlex {patcher.version} at {patcher.pkg}"
        if args.command == "check":
            status, lines = patcher.check()
            print(f"{head}: {status}")
            for line in lines:
                print(f"  {line}")
            return 0 if status == "applied" else 1
        if args.command == "apply":
            lines = patcher.apply()
        elif args.command == "revert":
            lines = patcher.revert(force=args.force)
        else:
            sys.stdout.write(patcher.diff())
            return 0
        print(head)
        for line in lines:
            print(f"  {line}")
        return 0
    except PatchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
