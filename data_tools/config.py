"""One config loader for every stage: a YAML recipe plus ``a.b=value`` overrides → dataclasses.

    from data_tools.config import load_config, ConfigError

    cfg = load_config(LabelConfig, "configs/label/vat_invoice.yaml", ["client.timeout_s=30"])

* **One grammar.** Values in files and in overrides are read as YAML 1.2 (core schema):
  ``1e-5`` is a float, ``yes``/``on`` and ``2024-01-01`` stay strings, ``017`` is 17. Flow
  collections work in overrides (``base_urls=[http://a/v1,http://b/v1]``); an empty value is
  the empty string; ``null`` is None.
* **Typed.** The target is a (nested) dataclass; every value is checked against the field's
  annotation (``int``, ``float``, ``str``, ``bool``, ``Path``, ``Literal[...]``, unions,
  ``list[...]``, ``dict[...]``, nested dataclasses). ``learning_rate=abc`` for a float field
  is an error, an int given for a float becomes a float.
* **Unknown keys are errors** naming the file (or the override) and the nearest valid names.
* A dataclass's own ``__post_init__`` checks run; a ``ValueError`` they raise becomes a
  :class:`ConfigError` naming the file.

:func:`redact` is the one place secrets are taken out of what gets written or logged
(``api_key``/``token``/``password``/``authorization`` keys, ``user:pw@`` in URLs).
Imports nothing of ours.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

__all__ = [
    "ConfigError",
    "apply_overrides",
    "build",
    "load_config",
    "load_yaml",
    "parse_overrides",
    "parse_value",
    "redact",
    "redact_url",
    "suggest",
    "to_dict",
]

T = TypeVar("T")
Override = str | tuple[str, Any]


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file or override and what to do."""


# ---------------------------------------------------------------- YAML 1.2 scalars
class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 core-schema scalars instead of YAML 1.1's."""


_REPLACED = {
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:timestamp",
}
_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in _REPLACED]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
    list("-+0123456789"),
)
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def _construct_int(loader: yaml.SafeLoader, node: yaml.Node) -> int:
    text = str(loader.construct_scalar(node))  # type: ignore[arg-type]
    if text.startswith("0x"):
        return int(text, 16)
    if text.startswith("0o"):
        return int(text[2:], 8)
    return int(text, 10)


def _construct_float(loader: yaml.SafeLoader, node: yaml.Node) -> float:
    text = str(loader.construct_scalar(node)).lower()  # type: ignore[arg-type]
    if text.endswith(".inf"):
        return float("-inf") if text.startswith("-") else float("inf")
    if text == ".nan":
        return float("nan")
    return float(text)


_Yaml12Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_Yaml12Loader.add_constructor("tag:yaml.org,2002:float", _construct_float)


def parse_value(text: str) -> Any:
    """One override value as YAML 1.2: ``1e-5`` → 1e-05, ``true`` → True, ``[a,b]`` → list."""
    if text == "":
        return ""
    try:
        return yaml.load(text, Loader=_Yaml12Loader)  # a safe loader subclass
    except yaml.YAMLError:
        return text  # not YAML (an unbalanced bracket, a stray colon...): the text itself


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from ``path`` (YAML 1.2 scalars); errors name the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config ({exc.strerror or exc})") from None
    try:
        data = yaml.load(text, Loader=_Yaml12Loader)  # a safe loader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or exc
        raise ConfigError(f"{where}: not valid YAML ({problem})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config is a mapping of keys, got {type(data).__name__}")
    return data


# ---------------------------------------------------------------- overrides
def _split_override(item: Override) -> tuple[str, Any]:
    if isinstance(item, tuple):
        key, value = item
        return key, value
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not p for p in key.split(".")):
        raise ConfigError(f"override {item!r} must look like key=value (dotted keys: a.b=1)")
    return key, parse_value(raw)


def parse_overrides(items: Sequence[Override]) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` → ``{"a": {"b": 1}, "c": "x"}`` (later items win)."""
    out: dict[str, Any] = {}
    apply_overrides(out, items)
    return out


def apply_overrides(data: dict[str, Any], items: Sequence[Override]) -> list[str]:
    """Apply dotted overrides to the nested mapping ``data`` in place; returns their keys."""
    keys = []
    for item in items:
        key, value = _split_override(item)
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
        keys.append(key)
    return keys


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


# ---------------------------------------------------------------- typed build
def suggest(name: str, valid: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for the nearest valid names, or ``""``."""
    near = difflib.get_close_matches(name, list(valid), n=2, cutoff=0.6)
    if not near:
        return ""
    return " (did you mean " + " or ".join(repr(n) for n in near) + "?)"


@dataclasses.dataclass
class _Context:
    source: str  # the file, or "config"
    override_keys: frozenset[str]

    def where(self, path: str) -> str:
        src = "command-line override" if path in self.override_keys else self.source
        return f"{src}: {path}" if path else src


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _describe(value: Any) -> str:
    text = repr(value)
    return (text[:60] + "…" if len(text) > 60 else text) + f" ({type(value).__name__})"


def _coerce(value: Any, tp: Any, path: str, ctx: _Context) -> Any:
    if tp is Any or tp is object:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, path, ctx)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        expected = " or ".join(_type_name(a) for a in args if a is not type(None))
        raise ConfigError(f"{ctx.where(path)}: expected {expected}, got {_describe(value)}")
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value in choices:
            return value
        hint = suggest(str(value), [str(c) for c in choices])
        raise ConfigError(f"{ctx.where(path)}: {value!r} is not one of {list(choices)}{hint}")
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, Mapping):
            raise ConfigError(
                f"{ctx.where(path)}: expected a mapping of {tp.__name__} keys, got "
                f"{_describe(value)}"
            )
        return _build(tp, value, path, ctx)
    if origin in (list, Sequence, tuple) or tp in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{ctx.where(path)}: expected a list, got {_describe(value)}")
        args = typing.get_args(tp)
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{path}[{i}]", ctx) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple or tp is tuple else items
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{ctx.where(path)}: expected a mapping, got {_describe(value)}")
        args = typing.get_args(tp)
        val_tp = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(v, val_tp, f"{path}.{k}", ctx) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{ctx.where(path)}: expected true or false, got {_describe(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{ctx.where(path)}: expected an integer, got {_describe(value)}")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{ctx.where(path)}: expected a number, got {_describe(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{ctx.where(path)}: expected a string, got {_describe(value)}")
    if tp is Path:
        if isinstance(value, str | Path):
            return Path(value)
        raise ConfigError(f"{ctx.where(path)}: expected a path, got {_describe(value)}")
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise ConfigError(f"{ctx.where(path)}: expected {tp.__name__}, got {_describe(value)}")
    return value


def _build(cls: type[T], data: Mapping[str, Any], prefix: str, ctx: _Context) -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            raise ConfigError(
                f"{ctx.where(path)}: unknown key{suggest(str(key), list(fields))}; "
                f"valid keys{' of ' + prefix if prefix else ''}: {', '.join(fields)}"
            )
        kwargs[key] = _coerce(value, hints[key], path, ctx)
    missing = [
        name
        for name, f in fields.items()
        if name not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        where = ctx.where(prefix)
        raise ConfigError(f"{where}: missing required key(s) {', '.join(missing)}")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{ctx.where(prefix)}: {exc}") from None


def build(cls: type[T], data: Mapping[str, Any], *, source: str = "config") -> T:
    """``cls`` from a plain mapping, typed and checked (see the module docstring)."""
    return _build(cls, data, "", _Context(source, frozenset()))


def load_config(
    cls: type[T],
    path: str | Path | None = None,
    overrides: Sequence[Override] = (),
    *,
    base: Mapping[str, Any] | None = None,
) -> T:
    """``cls`` from ``base`` ← the YAML file ``path`` ← ``overrides`` (later wins, nested merge).

    An override is ``"a.b=value"`` (value read as YAML 1.2) or a ``(key, value)`` pair
    already typed (what a CLI flag maps to).
    """
    data: dict[str, Any] = copy.deepcopy(dict(base or {}))
    if path is not None:
        data = _merge(data, load_yaml(path))
    keys = apply_overrides(data, overrides)
    source = str(path) if path is not None else "config"
    return _build(cls, data, "", _Context(source, frozenset(keys)))


# ---------------------------------------------------------------- writing configs out
_SECRET_KEY = re.compile(r"(api[_-]?key|token|password|passwd|secret|authorization|cookie)", re.I)
_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")


def redact_url(url: str) -> str:
    """``https://user:pw@host/v1`` → ``https://***@host/v1``."""
    return _USERINFO.sub("***@", url)


def redact(obj: Any) -> Any:
    """A copy of ``obj`` fit to write or log: secret-named values and URL userinfo masked.

    Keys ending in ``_env`` name an environment variable, not a secret, and are kept.
    """
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            key = str(k)
            if (
                _SECRET_KEY.search(key)
                and not key.endswith("_env")
                and v not in (None, "")
                and not isinstance(v, Mapping | list | bool)
            ):
                out[k] = "***"
            elif key.lower() == "headers" and isinstance(v, Mapping):
                out[k] = {hk: "***" for hk in v}
            else:
                out[k] = redact(v)
        return out
    if isinstance(obj, list | tuple):
        return [redact(v) for v in obj]
    if isinstance(obj, str):
        return redact_url(obj)
    return obj


def to_dict(cfg: Any) -> dict[str, Any]:
    """A dataclass config as a plain dict with secrets redacted (for summary.json, logs)."""
    raw = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg)
    return redact(_plain(raw))


def _plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj
