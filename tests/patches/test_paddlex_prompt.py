"""The PaddleX custom-prompt patch, on copies of paddlex (the shared venv is never touched)."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from patches.paddlex_prompt import (
    PIPELINE_REL,
    SCHEMA_REL,
    Patcher,
    PatchError,
    default_paddlex_dir,
    main,
)

INSTALLED = default_paddlex_dir()
FILES = (PIPELINE_REL, SCHEMA_REL)


def _digest(pkg: Path) -> dict[str, str]:
    return {rel: hashlib.sha256((pkg / rel).read_bytes()).hexdigest() for rel in FILES}


def _copy_files(src_pkg: Path, dst_root: Path) -> Path:
    """The patched files (plus __init__.py and the dist-info) of a paddlex package."""
    pkg = dst_root / "paddlex"
    for rel in ("__init__.py", *FILES):
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src_pkg / rel, pkg / rel)
    for info in src_pkg.parent.glob("paddlex-*.dist-info"):
        (dst_root / info.name).mkdir()
        shutil.copy2(info / "METADATA", dst_root / info.name / "METADATA")
    return pkg


@pytest.fixture(scope="module", autouse=True)
def installed_untouched():
    """Whatever the tests do, the shared venv's paddlex must stay byte-identical."""
    before = _digest(INSTALLED)
    yield
    assert _digest(INSTALLED) == before, "a test modified the installed paddlex!"


@pytest.fixture
def pkg(tmp_path: Path) -> Path:
    return _copy_files(INSTALLED, tmp_path)


def _load_helpers(source: str) -> dict:
    """Execute only the helper block the patch inserted (the rest needs all of paddlex)."""
    tree = ast.parse(source)
    wanted = [
        n
        for n in tree.body
        if (isinstance(n, ast.FunctionDef) and n.name.startswith("_paddlex_prompt_"))
        or (
            isinstance(n, ast.Assign)
            and any(getattr(t, "id", "") == "_PADDLEX_PROMPT_TASK_LABELS" for t in n.targets)
        )
    ]
    ns: dict = {}
    exec(compile(ast.Module(body=wanted, type_ignores=[]), "<helpers>", "exec"), ns)
    return ns


def test_check_apply_idempotent_revert_byte_exact(pkg: Path) -> None:
    original = {rel: (pkg / rel).read_bytes() for rel in FILES}
    patcher = Patcher(pkg)
    assert patcher.version == "3.7.2"
    status, _ = patcher.check()
    assert status == "not applied"

    done = patcher.apply()
    assert all("applied" in line for line in done)
    patched = {rel: (pkg / rel).read_bytes() for rel in FILES}
    assert all(patched[rel] != original[rel] for rel in FILES)
    for rel in FILES:  # backup + record of both hashes beside each file
        backup = (pkg / rel).with_name(Path(rel).name + ".paddlex_prompt.orig")
        record = json.loads(
            (pkg / rel).with_name(Path(rel).name + ".paddlex_prompt.json").read_text()
        )
        assert backup.read_bytes() == original[rel]
        assert record["sha256_original"] == hashlib.sha256(original[rel]).hexdigest()
        assert record["sha256_patched"] == hashlib.sha256(patched[rel]).hexdigest()
        assert record["paddlex_version"] == "3.7.2"
        compile(patched[rel], rel, "exec")
    assert patcher.check()[0] == "applied"

    mtimes = {rel: (pkg / rel).stat().st_mtime_ns for rel in FILES}
    assert all("already applied" in line for line in Patcher(pkg).apply())
    assert {rel: (pkg / rel).read_bytes() for rel in FILES} == patched
    assert {rel: (pkg / rel).stat().st_mtime_ns for rel in FILES} == mtimes  # not rewritten

    Patcher(pkg).revert()
    assert {rel: (pkg / rel).read_bytes() for rel in FILES} == original
    assert not list(pkg.rglob("*.paddlex_prompt.*"))
    assert Patcher(pkg).check()[0] == "not applied"
    assert all("nothing to revert" in line for line in Patcher(pkg).revert())


def test_patched_code_makes_the_label_the_prompt(pkg: Path) -> None:
    Patcher(pkg).apply()
    source = (pkg / PIPELINE_REL).read_text(encoding="utf-8")
    ns = _load_helpers(source)
    is_custom, block_label = ns["_paddlex_prompt_is_custom"], ns["_paddlex_prompt_block_label"]
    assert is_custom('OCR:{"发票号码":""}')
    assert block_label('OCR:{"InvoiceNo":""}') == 'OCR:{"InvoiceNo":""}'  # case kept
    assert block_label("TABLE") == "table"  # built-in labels behave as before
    assert not is_custom("tabel") and not is_custom("ocr") and not is_custom(None)

    tree = ast.parse(source)
    # the assert accepts a custom prompt first
    asserts = [n for n in ast.walk(tree) if isinstance(n, ast.Assert)]
    relaxed = [
        a
        for a in asserts
        if isinstance(a.test, ast.BoolOp)
        and isinstance(a.test.values[0], ast.Call)
        and getattr(a.test.values[0].func, "id", "") == "_paddlex_prompt_is_custom"
    ]
    assert len(relaxed) == 1
    # the prompt chain sends the label itself
    assert "if _paddlex_prompt_is_custom(block_label):" in source
    assert "text_prompt = block_label" in source
    assert '"label": _paddlex_prompt_block_label(prompt_label)' in source
    assert '"label": prompt_label.lower()' not in source

    schema = (pkg / SCHEMA_REL).read_text(encoding="utf-8")
    assert 'if isinstance(v, str) and ":" in v:' in schema


def test_unknown_shape_is_refused_and_nothing_changes(pkg: Path) -> None:
    pipeline = pkg / PIPELINE_REL
    text = pipeline.read_text(encoding="utf-8")
    mutated = text.replace('text_prompt = "OCR:"', "text_prompt = DEFAULT_PROMPT")
    assert mutated != text
    pipeline.write_text(mutated, encoding="utf-8")
    before = {rel: (pkg / rel).read_bytes() for rel in FILES}
    mtimes = {rel: (pkg / rel).stat().st_mtime_ns for rel in FILES}

    with pytest.raises(PatchError) as exc:
        Patcher(pkg).apply()
    msg = str(exc.value)
    assert "paddlex 3.7.2" in msg
    assert 'text_prompt = "OCR:"' in msg and "not found" in msg
    assert {rel: (pkg / rel).read_bytes() for rel in FILES} == before  # the schema too
    assert {rel: (pkg / rel).stat().st_mtime_ns for rel in FILES} == mtimes
    assert not list(pkg.rglob("*.paddlex_prompt.*"))
    assert main(["check", "--paddlex", str(pkg)]) == 2
    assert main(["apply", "--paddlex", str(pkg)]) == 2


def test_refuses_a_second_assert_shape(pkg: Path) -> None:
    pipeline = pkg / PIPELINE_REL
    text = pipeline.read_text(encoding="utf-8")
    pipeline.write_text(
        text.replace("assert prompt_label.lower() in [", "assert prompt_label in [")
    )
    with pytest.raises(PatchError, match=r"assert prompt_label.lower\(\) in"):
        Patcher(pkg).check()


def test_revert_refuses_edited_file_unless_forced(pkg: Path) -> None:
    original = (pkg / PIPELINE_REL).read_bytes()
    Patcher(pkg).apply()
    with (pkg / PIPELINE_REL).open("a", encoding="utf-8") as f:
        f.write("\n# a local edit\n")
    with pytest.raises(PatchError, match="edited since"):
        Patcher(pkg).revert()
    with pytest.raises(PatchError, match="edited since"):
        Patcher(pkg).apply()
    Patcher(pkg).revert(force=True)
    assert (pkg / PIPELINE_REL).read_bytes() == original


def test_crlf_file_keeps_its_line_endings(pkg: Path) -> None:
    pipeline = pkg / PIPELINE_REL
    crlf = pipeline.read_bytes().replace(b"\n", b"\r\n")
    pipeline.write_bytes(crlf)
    Patcher(pkg).apply()
    patched = pipeline.read_bytes()
    assert patched.count(b"\n") == patched.count(b"\r\n")
    Patcher(pkg).revert()
    assert pipeline.read_bytes() == crlf


def test_cli_diff_and_check_exit_codes(pkg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--paddlex", str(pkg)]) == 1
    assert main(["diff", "--paddlex", str(pkg)]) == 0
    out = capsys.readouterr().out
    assert "+def _paddlex_prompt_is_custom(label):" in out
    assert "-            assert prompt_label.lower() in [" in out
    assert main(["apply", "--paddlex", str(pkg)]) == 0
    assert main(["check", "--paddlex", str(pkg)]) == 0
    assert main(["revert", "--paddlex", str(pkg)]) == 0
    assert main(["check", "--paddlex", str(pkg.parent / "nope")]) == 2


def test_module_runs_as_script(pkg: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    r = subprocess.run(
        [sys.executable, "-m", "patches.paddlex_prompt", "check", "--paddlex", str(pkg)],
        cwd=repo,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(repo)},
        timeout=60,
    )
    assert r.returncode == 1, r.stderr
    assert "paddlex 3.7.2" in r.stdout and "not applied" in r.stdout


# ---------------------------------------------------------------- older releases from PyPI

OLD_RELEASES = ("3.3.0", "3.4.3", "3.6.1")


def _pip() -> list[str] | None:
    for cmd in (
        [sys.executable, "-m", "pip"],
        [shutil.which("pip3") or ""],
        [shutil.which("pip") or ""],
    ):
        if not cmd[0]:
            continue
        probe = subprocess.run([*cmd, "--version"], capture_output=True, timeout=60)
        if probe.returncode == 0:
            return cmd
    return None


@pytest.mark.slow
@pytest.mark.parametrize("version", OLD_RELEASES)
def test_older_paddlex_releases(version: str, tmp_path: Path) -> None:
    pip = _pip()
    if pip is None:
        pytest.skip("no pip to download older paddlex releases with")
    r = subprocess.run(
        [*pip, "download", f"paddlex=={version}", "--no-deps", "-d", str(tmp_path / "dl"), "-q"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if r.returncode != 0:
        pytest.skip(f"paddlex=={version} not downloadable here: {r.stderr[-300:]}")
    (wheel,) = (tmp_path / "dl").glob("paddlex-*.whl")
    root = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        members = [
            n
            for n in zf.namelist()
            if n
            in (
                "paddlex/__init__.py",
                "paddlex/.version",
                f"paddlex/{PIPELINE_REL}",
                f"paddlex/{SCHEMA_REL}",
            )
            or (n.startswith("paddlex-") and n.endswith(".dist-info/METADATA"))
        ]
        zf.extractall(root, members)
    pkg = root / "paddlex"
    original = {rel: (pkg / rel).read_bytes() for rel in FILES}

    patcher = Patcher(pkg)
    assert patcher.version == version
    assert patcher.check()[0] == "not applied"
    patcher.apply()
    pipeline = (pkg / PIPELINE_REL).read_text(encoding="utf-8")
    compile(pipeline, PIPELINE_REL, "exec")
    assert "text_prompt = block_label" in pipeline
    assert "_paddlex_prompt_block_label(prompt_label)" in pipeline
    assert _load_helpers(pipeline)["_paddlex_prompt_is_custom"]('OCR:{"发票号码":""}')
    patched = (pkg / PIPELINE_REL).read_bytes()
    Patcher(pkg).apply()  # idempotent
    assert (pkg / PIPELINE_REL).read_bytes() == patched
    Patcher(pkg).revert()
    assert {rel: (pkg / rel).read_bytes() for rel in FILES} == original

    # and an unknown shape of this release is refused, untouched
    mutated = original[PIPELINE_REL].replace(b'"label": prompt_label.lower()', b'"label": LABEL')
    (pkg / PIPELINE_REL).write_bytes(mutated)
    with pytest.raises(PatchError, match=rf"paddlex {version}.*prompt_label.lower\(\)"):
        Patcher(pkg).apply()
    assert (pkg / PIPELINE_REL).read_bytes() == mutated


def _validator(source: str):  # type: ignore[no-untyped-def]
    """The serving schema's promptLabel validator as a plain function (no pydantic needed)."""
    tree = ast.parse(source)
    (func,) = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.FunctionDef) and n.name == "validate_prompt_label"
    ]
    func.decorator_list = []
    ns: dict = {}
    exec(compile(ast.Module(body=[func], type_ignores=[]), "<schema>", "exec"), ns)
    return ns["validate_prompt_label"]


def test_serving_schema_accepts_custom_prompts_only_when_patched(pkg: Path) -> None:
    prompt = 'OCR:{"发票号码":""}'
    stock = _validator((pkg / SCHEMA_REL).read_text(encoding="utf-8"))
    with pytest.raises(ValueError, match="promptLabel"):
        stock(None, prompt)
    Patcher(pkg).apply()
    patched = _validator((pkg / SCHEMA_REL).read_text(encoding="utf-8"))
    assert patched(None, prompt) == prompt
    assert patched(None, "ocr") == "ocr" and patched(None, None) is None
    with pytest.raises(ValueError, match="promptLabel"):
        patched(None, "tabel")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_read_only_site_packages_is_a_clear_error_and_nothing_changes(
    pkg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _digest(pkg)
    folders = sorted({(pkg / rel).parent for rel in FILES})
    for folder in folders:
        folder.chmod(0o555)
    try:
        with pytest.raises(PatchError, match=r"cannot write to .*nothing was changed"):
            Patcher(pkg).apply()
        assert main(["apply", "--paddlex", str(pkg)]) == 2
        err = capsys.readouterr().err
        assert "read-only site-packages" in err and "Traceback" not in err
    finally:
        for folder in folders:
            folder.chmod(0o755)
    assert _digest(pkg) == before
    assert not list(pkg.rglob("*.paddlex_prompt.*"))


def test_an_edit_between_read_and_write_is_not_lost(
    pkg: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import patches.paddlex_prompt as pp

    real_plan = pp._plan
    target = pkg / SCHEMA_REL

    def plan_then_someone_edits(state):  # type: ignore[no-untyped-def]
        plan = real_plan(state)
        if state.rel == SCHEMA_REL:
            target.write_bytes(target.read_bytes() + b"\n# edited meanwhile\n")
        return plan

    monkeypatch.setattr(pp, "_plan", plan_then_someone_edits)
    with pytest.raises(PatchError, match="changed while it was being patched"):
        Patcher(pkg).apply()
    assert target.read_bytes().endswith(b"# edited meanwhile\n")  # the edit is kept
    assert b"paddlex_prompt patch" not in (pkg / PIPELINE_REL).read_bytes()  # all or nothing
    assert not list(pkg.rglob("*.paddlex_prompt.*"))


def test_a_write_that_fails_midway_restores_everything(
    pkg: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """What a read-only or full filesystem does to the second file (works as root too)."""
    import patches.paddlex_prompt as pp

    before = _digest(pkg)
    real = pp._write_atomic

    def failing(path: Path, data: bytes) -> None:
        if path == pkg / SCHEMA_REL:
            raise PermissionError(13, "Permission denied", str(path))
        real(path, data)

    monkeypatch.setattr(pp, "_write_atomic", failing)
    with pytest.raises(PatchError, match=r"writing the patch failed .*every file was restored"):
        Patcher(pkg).apply()
    assert main(["apply", "--paddlex", str(pkg)]) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert _digest(pkg) == before
    assert not list(pkg.rglob("*.paddlex_prompt.*"))
