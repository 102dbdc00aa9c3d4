"""The one config loader: YAML 1.2 values, typed dataclasses, unknown keys with suggestions."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from data_tools.config import (
    ConfigError,
    load_config,
    parse_overrides,
    parse_value,
    redact,
    suggest,
    to_dict,
)


@dataclass
class Client:
    base_urls: list[str] = field(default_factory=list)
    api_key: str | None = None
    timeout_s: float = 60.0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Recipe:
    out_dir: str
    learning_rate: float = 1e-4
    epochs: int = 2
    bf16: bool = True
    mode: Literal["schema", "free"] = "schema"
    images: str | list[str] = "data"
    client: Client = field(default_factory=Client)
    extra: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError("epochs must be >= 1")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1e-5", 1e-5),
        ("3.0e-4", 3e-4),
        ("10", 10),
        ("017", 17),
        ("0x1f", 31),
        ("true", True),
        ("False", False),
        ("yes", "yes"),  # YAML 1.1 would say True
        ("on", "on"),
        ("2024-01-01", "2024-01-01"),  # YAML 1.1 would say a date
        ("1:30", "1:30"),  # YAML 1.1 would say 90
        ("null", None),
        ("", ""),
        ("[a, b]", ["a", "b"]),
        ("{k: 1}", {"k": 1}),
        ("http://h:8/v1", "http://h:8/v1"),
        ("[unbalanced", "[unbalanced"),
    ],
)
def test_values_are_yaml_1_2(text: str, value: Any) -> None:
    assert parse_value(text) == value
    assert type(parse_value(text)) is type(value)


def test_inf_and_nan() -> None:
    assert parse_value(".inf") == math.inf
    assert math.isnan(parse_value(".nan"))


def test_file_and_overrides_typed(tmp_path: Path) -> None:
    p = tmp_path / "r.yaml"
    p.write_text(
        "out_dir: runs/a\nlearning_rate: 1e-5\nclient:\n  timeout_s: 5\n", encoding="utf-8"
    )
    cfg = load_config(
        Recipe, p, ["epochs=3", "client.base_urls=[http://a/v1,http://b/v1]", ("bf16", False)]
    )
    assert cfg.learning_rate == 1e-5 and isinstance(cfg.learning_rate, float)
    assert cfg.client.timeout_s == 5.0 and isinstance(cfg.client.timeout_s, float)
    assert cfg.client.base_urls == ["http://a/v1", "http://b/v1"]
    assert cfg.epochs == 3 and cfg.bf16 is False
    assert cfg.images == "data"


def test_base_is_merged_under_the_file(tmp_path: Path) -> None:
    p = tmp_path / "r.yaml"
    p.write_text("client:\n  timeout_s: 5\n", encoding="utf-8")
    cfg = load_config(Recipe, p, base={"out_dir": "x", "client": {"api_key": "k"}})
    assert cfg.client.api_key == "k" and cfg.client.timeout_s == 5.0


def test_unknown_key_names_the_file_and_the_nearest(tmp_path: Path) -> None:
    p = tmp_path / "r.yaml"
    p.write_text("out_dir: x\nlearning_rat: 1e-5\n", encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_config(Recipe, p)
    msg = str(e.value)
    assert str(p) in msg and "learning_rat" in msg and "'learning_rate'" in msg


def test_unknown_override_says_override() -> None:
    with pytest.raises(ConfigError) as e:
        load_config(Recipe, None, ["out_dir=x", "client.timeout=3"])
    msg = str(e.value)
    assert "command-line override" in msg and "client.timeout" in msg and "'timeout_s'" in msg


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("learning_rate=abc", "expected a number"),
        ("epochs=1.5", "expected an integer"),
        ("bf16=yes", "expected true or false"),
        ("mode=shema", "did you mean 'schema'"),
        ("client=3", "expected a mapping"),
        ("epochs=0", "epochs must be >= 1"),
        ("images={a: 1}", "expected str or list"),
    ],
)
def test_type_errors(override: str, needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(Recipe, None, ["out_dir=x", override])
    assert needle in str(e.value)


def test_missing_required_key() -> None:
    with pytest.raises(ConfigError, match=r"missing required key.*out_dir"):
        load_config(Recipe, None, [])


def test_bad_yaml_names_the_line(tmp_path: Path) -> None:
    p = tmp_path / "r.yaml"
    p.write_text("out_dir: x\nclient: [\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"r\.yaml:\d+: not valid YAML"):
        load_config(Recipe, p)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(Recipe, tmp_path / "missing.yaml")


def test_malformed_override() -> None:
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["novalue"])
    assert parse_overrides(["a.b=1", "a.c=x", "a.b=2"]) == {"a": {"b": 2, "c": "x"}}


def test_suggest() -> None:
    assert "learning_rate" in suggest("learning_rat", ["learning_rate", "epochs"])
    assert suggest("zzz", ["learning_rate"]) == ""


def test_redact() -> None:
    cfg = Recipe(
        out_dir="x",
        client=Client(base_urls=["https://user:pw@h/v1"], api_key="sk-1", headers={"X-Key": "s"}),
    )
    d = to_dict(cfg)
    assert d["client"]["api_key"] == "***"
    assert d["client"]["base_urls"] == ["https://***@h/v1"]
    assert d["client"]["headers"] == {"X-Key": "***"}
    assert redact({"api_key_env": "OPENAI_API_KEY"}) == {"api_key_env": "OPENAI_API_KEY"}
    assert "sk-1" not in repr(d) and "pw" not in repr(d)
