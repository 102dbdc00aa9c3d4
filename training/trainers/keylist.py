"""The keys a tool's config accepts, read from its argument dataclasses.

Two ways, one answer: `dataclass_keys(classes)` from the installed tool (the truth,
used when `TRAIN_PY`'s environment has it), and `ast_keys(files, roots)` from the tool's
source files without importing them (used to write the maintained fallback lists in
`training/trainers/keys/*.json` for tools that are not installed here, ERNIEKit):

    python -m training.trainers.keylist --out training/trainers/keys/erniekit.json \\
        --roots ModelArguments DataArguments End2EndProcessorArguments \\
                GeneratingArguments FinetuningArguments \\
        --source erniekit-1.3.0/erniekit/hparams/*.py \\
                 paddleformers-0.3.1/paddleformers/trainer/training_args.py \\
        --extra tensor_parallel_degree ...

A key list is {key: type name}; the type name is the annotation as written
(`int`, `float`, `Optional[str]`, `bool`, ...), which `type_problem` checks values against.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

KEYS_DIR = Path(__file__).resolve().parent / "keys"


def dataclass_keys(classes: Iterable[type]) -> dict[str, str]:
    """{field name: annotation} of the dataclasses, as the tool's own parser sees them."""
    out: dict[str, str] = {}
    for cls in classes:
        for f in dataclasses.fields(cls):
            t = f.type
            out[f.name] = t if isinstance(t, str) else _type_name(t)
    return out


def _type_name(t: Any) -> str:
    if isinstance(t, type):
        return t.__name__
    return str(t).replace("typing.", "")


def ast_keys(files: Iterable[Path], roots: Sequence[str]) -> dict[str, str]:
    """{field: annotation} of the classes `roots` and their bases, parsed (not imported)."""
    classes: dict[str, ast.ClassDef] = {}
    for path in files:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                classes.setdefault(node.name, node)
    out: dict[str, str] = {}

    def collect(name: str, seen: set[str]) -> None:
        if name in seen or name not in classes:
            return
        seen.add(name)
        node = classes[name]
        for base in node.bases:
            base_name = base.id if isinstance(base, ast.Name) else getattr(base, "attr", "")
            collect(base_name, seen)
        for stmt in node.body:
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                out[stmt.target.id] = ast.unparse(stmt.annotation)

    for root in roots:
        if root not in classes:
            raise KeyError(f"class {root} not found in the given sources")
        collect(root, set())
    return out


def load_key_list(name: str) -> dict[str, str]:
    """A maintained key list, `training/trainers/keys/<name>.json`."""
    data = json.loads((KEYS_DIR / f"{name}.json").read_text(encoding="utf-8"))
    return dict(data["keys"])


_OPTIONAL = re.compile(r"^Optional\[(.+)\]$")


def _simple_type(annotation: str) -> tuple[str, bool]:
    """(the one non-None type of an annotation, whether None is allowed)."""
    a = annotation.replace(" ", "").replace("typing.", "")
    m = _OPTIONAL.match(a)
    if m:
        return m.group(1), True
    parts = [p for p in a.split("|") if p]
    optional = "None" in parts
    rest = [p for p in parts if p != "None"]
    return (rest[0] if len(rest) == 1 else a), optional


def type_problem(value: Any, annotation: str) -> str | None:
    """Why `value` does not fit `annotation` (None: it fits, or the type is not checked)."""
    t, optional = _simple_type(annotation)
    if value is None:
        return None if optional or t in {"Any", "None"} else f"is null but must be {annotation}"
    if t == "bool":
        return None if isinstance(value, bool) else f"must be true or false, got {value!r}"
    if t == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return None
        return f"must be an integer, got {value!r}"
    if t == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return None
        return f"must be a number, got {value!r}"
    if t == "str":
        # the tools' parsers turn numbers into strings; a mapping or list is wrong
        return None if not isinstance(value, (dict, list)) else f"must be a string, got {value!r}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.trainers.keylist", description=__doc__)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--roots", nargs="+", required=True, help="argument dataclasses the CLI parses")
    p.add_argument("--source", nargs="+", type=Path, required=True, help="python files to parse")
    p.add_argument("--extra", nargs="*", default=[], help="key:type the sources do not declare")
    p.add_argument("--note", default="", help="where the sources came from")
    args = p.parse_args(argv)
    keys = ast_keys(args.source, args.roots)
    for item in args.extra:
        k, _, t = item.partition(":")
        keys.setdefault(k, t or "Any")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"source": args.note, "roots": args.roots, "keys": dict(sorted(keys.items()))}
    args.out.write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"{len(keys)} keys -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
