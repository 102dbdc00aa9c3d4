"""The layout rules of docs/architecture.md, checked on the source: who may import whom.

Every import of our own packages counts, at module top or inside a function (a lazy import
is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = ("data_tools", "training", "inference", "eval", "patches")

#: the stable kernel: contracts and shared machinery, importing nothing but each other
KERNEL = {
    "data_tools.config",
    "data_tools.jsonl",
    "data_tools.records",
    "data_tools.predictions",
    "data_tools.sft",
    "data_tools.prompts",
    "data_tools.parsing",
    "data_tools.schema",
    "data_tools.normalize",
    "data_tools.images",
    "data_tools.paddleocr_vl",
    "data_tools.runner",
    "data_tools.llm_client",
    "data_tools.compat",
}

#: package -> the packages of ours it may import
ALLOWED = {
    "data_tools": {"data_tools"},
    "training": {"data_tools", "training"},
    "inference": {"data_tools", "inference"},
    "eval": {"data_tools", "eval", "inference"},
    "patches": {"patches"},
}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def our_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        found.update(n for n in names if n.split(".")[0] in OURS)
    return found


SOURCES = sorted(p for pkg in OURS for p in (ROOT / pkg).rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down_the_layers(path: Path) -> None:
    name = module_name(path)
    package = name.split(".")[0]
    bad = sorted(m for m in our_imports(path) if m.split(".")[0] not in ALLOWED[package])
    assert not bad, f"{name} may import {sorted(ALLOWED[package])} only, imports {bad}"
    if name in KERNEL:
        outside = sorted(m for m in our_imports(path) if m not in KERNEL and m != name)
        assert not outside, f"kernel module {name} imports stage modules {outside}"


def test_kernel_modules_exist() -> None:
    for name in KERNEL:
        assert (ROOT / (name.replace(".", "/") + ".py")).is_file(), name


# import name -> distribution name, where they differ
DISTRIBUTION = {
    "PIL": "pillow",
    "cv2": "opencv-contrib-python",
    "yaml": "pyyaml",
    "json_repair": "json-repair",
    "paddle": "paddlepaddle",
    "prometheus_client": "prometheus-client",
}
NOT_ON_PYPI = {"erniekit"}  # from a pinned ERNIE checkout (scripts/setup_train_erniekit.sh)


def test_pyproject_lists_every_direct_import() -> None:
    import sys

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    listed = {d.split(";")[0].split("[")[0].strip().lower() for d in project["dependencies"]}
    for extra in project.get("optional-dependencies", {}).values():
        listed |= {d.split(";")[0].split("[")[0].strip().lower() for d in extra}
    missing = set()
    for path in SOURCES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in OURS or top in NOT_ON_PYPI:
                    continue
                if DISTRIBUTION.get(top, top).lower().replace("_", "-") not in listed:
                    missing.add(f"{top} ({path.relative_to(ROOT)})")
    assert not missing, f"imported but not in pyproject.toml: {sorted(missing)}"
