"""Confidence per leaf: token log-probabilities mapped onto the JSON leaves of the output."""

from __future__ import annotations

import json
import math

import httpx
import pytest

from data_tools.confidence import (
    TokenLogprob,
    leaf_confidence,
    leaf_spans,
    path_label,
    tokens_from_ids,
    tokens_from_openai,
)
from data_tools.parsing import parse_model_output
from tests.support.openai_stub import OpenAIStub, StubReply, stub_tokens

PRED = {
    "发票号码": "12270242",
    "购买方": {"名称": "深圳市购机汇"},
    "货物或应税劳务、服务": [{"金额": "2987.18"}, {"金额": "-1776.07"}],
    "n": 3,
}
RAW = json.dumps(PRED, ensure_ascii=False)


def _tokens(text: str, low: dict[str, float] | None = None) -> list[TokenLogprob]:
    """stub tokens at logprob -0.01, except those equal to a key of `low`."""
    low = low or {}
    return [TokenLogprob(t, low.get(t, -0.01)) for t in stub_tokens(text)]


def test_leaf_spans_cover_values_and_closing_quotes() -> None:
    spans = leaf_spans(RAW)
    s, e = spans[("发票号码",)]
    assert RAW[s:e] == '12270242"'
    s, e = spans[("货物或应税劳务、服务", 1, "金额")]
    assert RAW[s:e] == '-1776.07"'
    s, e = spans[("n",)]
    assert RAW[s:e] == "3"
    assert path_label(("货物或应税劳务、服务", 1, "金额")) == "货物或应税劳务、服务[1].金额"


def test_confidence_is_the_joint_probability_of_a_values_tokens() -> None:
    tokens = _tokens(RAW, low={"702": math.log(0.5), "深": math.log(0.2)})
    conf = leaf_confidence(RAW, tokens, PRED)
    # 12270242" = tokens 122 | 702 | 42 | " : 0.5 x e^-0.03
    assert conf.leaves["发票号码"] == pytest.approx(0.5 * math.exp(-0.03))
    # 深圳市购机汇" = 6 CJK tokens + quote; 深 at 0.2
    assert conf.leaves["购买方.名称"] == pytest.approx(0.2 * math.exp(-0.06))
    assert conf.leaves["货物或应税劳务、服务[0].金额"] == pytest.approx(math.exp(-0.01 * 5))
    assert set(conf.leaves) == {
        "发票号码",
        "购买方.名称",
        "货物或应税劳务、服务[0].金额",
        "货物或应税劳务、服务[1].金额",
        "n",
    }
    assert conf.low(0.5) == ["发票号码", "购买方.名称"]
    d = conf.to_dict()
    assert d["min"] == pytest.approx(0.2 * math.exp(-0.06), abs=1e-6)
    assert d["n_tokens"] == len(tokens) and d["method"] == "joint"


def test_a_character_split_over_two_tokens_is_aligned_by_bytes() -> None:
    raw = '{"名称":"购机"}'
    b = "购".encode()
    tokens = [
        TokenLogprob('{"', -0.0),
        TokenLogprob("名称", -0.0),
        TokenLogprob('":"', -0.0),
        TokenLogprob("bytes:\\xe8", math.log(0.5), b[:1]),  # vLLM spells partial bytes so
        TokenLogprob("bytes:\\x8e\\xad", math.log(0.5), b[1:]),
        TokenLogprob('机"', -0.0),
        TokenLogprob("}", -0.0),
    ]
    conf = leaf_confidence(raw, tokens, {"名称": "购机"})
    assert conf.leaves["名称"] == pytest.approx(0.25)


def test_fenced_and_repaired_outputs() -> None:
    raw = "```json\n" + RAW + "\n```"
    parsed = parse_model_output(raw)
    conf = leaf_confidence(raw, _tokens(raw), parsed.value)
    assert conf.leaves["发票号码"] == pytest.approx(math.exp(-0.04))
    # a leaf the repair invented (not in the raw text) gets None, not a number
    conf = leaf_confidence(RAW, _tokens(RAW), {**PRED, "开票日期": "2016"})
    assert conf.leaves["开票日期"] is None
    assert "开票日期" not in conf.low(1.0)


def test_tokens_that_do_not_spell_the_output_give_no_confidence() -> None:
    conf = leaf_confidence(RAW, _tokens(RAW + "x")[:-3], PRED)
    assert conf.error and conf.leaves == {}
    assert leaf_confidence(RAW, None, PRED).error == "no token log-probabilities"
    # a server that echoes a leading space: the raw text is found inside the tokens
    conf = leaf_confidence(RAW, [TokenLogprob(" ", 0.0), *_tokens(RAW)], PRED)
    assert conf.leaves["n"] == pytest.approx(math.exp(-0.01))


def test_tokens_from_ids_decodes_prefixes() -> None:
    class ByteTokenizer:  # ids are UTF-8 bytes, like a byte-level BPE's base vocabulary
        def decode(self, ids, skip_special_tokens=True):
            return bytes(ids).decode("utf-8", errors="replace")

    raw = '{"a":"购"}'
    ids = list(raw.encode())
    toks = tokens_from_ids(ByteTokenizer(), ids, [-0.1] * len(ids))
    assert "".join(t.text for t in toks) == raw
    conf = leaf_confidence(raw, toks, {"a": "购"})
    assert conf.leaves["a"] == pytest.approx(math.exp(-0.1 * 4))  # 3 bytes + the quote


def test_the_stub_returns_logprobs_when_asked() -> None:
    def responder(body):
        return StubReply(RAW, token_logprobs=[(t, -0.02) for t in stub_tokens(RAW)])

    with OpenAIStub(responder) as stub:
        body = {"model": "m", "messages": [{"role": "user", "content": "OCR:{}"}]}
        plain = httpx.post(stub.base_url + "/chat/completions", json=body).json()
        assert "logprobs" not in plain["choices"][0]
        answer = httpx.post(
            stub.base_url + "/chat/completions", json={**body, "logprobs": True, "top_logprobs": 1}
        ).json()
    choice = answer["choices"][0]
    tokens = tokens_from_openai(choice["logprobs"])
    assert "".join(t.text for t in tokens) == choice["message"]["content"] == RAW
    conf = leaf_confidence(RAW, tokens, json.loads(RAW))
    assert conf.leaves["发票号码"] == pytest.approx(math.exp(-0.02 * 4))
    assert tokens_from_openai(None) is None
    assert tokens_from_openai({"content": [{"token": "x"}]}) is None


def test_tokens_from_ids_with_the_paddleocr_vl_tokenizer(tiny_model_dir) -> None:
    """The tiny model's real tokenizer (SentencePiece pieces, ▁ for spaces, CJK words)."""
    from tokenizers import Tokenizer

    tk = Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json"))
    raw = json.dumps(PRED, ensure_ascii=False)
    ids = tk.encode(raw, add_special_tokens=False).ids
    assert tk.decode(ids, skip_special_tokens=True) == raw
    lps = [-0.01] * len(ids)
    toks = tokens_from_ids(tk, ids, lps)
    assert "".join(t.text for t in toks) == raw
    conf = leaf_confidence(raw, toks, PRED)
    assert set(conf.leaves) == {
        "发票号码",
        "购买方.名称",
        "货物或应税劳务、服务[0].金额",
        "货物或应税劳务、服务[1].金额",
        "n",
    }
    assert all(v is not None and 0 < v < 1 for v in conf.leaves.values())
    # a value spelled by more tokens is less certain at the same per-token logprob
    assert conf.leaves["货物或应税劳务、服务[1].金额"] < conf.leaves["n"]
