from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from data_tools.normalize import (
    amount_to_words,
    normalize_value,
    parse_amount,
    parse_amount_in_words,
    parse_date,
)


@pytest.mark.parametrize(
    ("a", "b", "field_type"),
    [
        ("¥507.82", "507.82", "amount"),
        ("￥3,495.00", "3495", "amount"),
        ("RMB 1 211.11", "1211.11元", "amount"),
        ("-1776.07", "－1776.07", "amount"),
        ("叁仟肆佰玖拾伍圆整", "3495.00", "amount_in_words"),
        ("⊗壹仟肆佰壹拾柒圆整", "壹仟肆佰壹拾柒元正", "amount_in_words"),
        ("2016年06月12日", "2016-6-12", "date"),
        ("20160612", "2016/06/12", "date"),
        ("4400 1541 30", "4400154130", "code"),
        ("91440101664041243t", "91440101664041243T", "id"),
        ("17%", "17 %", "percent"),
        ("0.17", "17%", "percent"),
        ("5.00", "5", "number"),
        ("小米 红米 3 全网通版", "小米红米3全网通版", "text"),
        ("a\nb  c", "a b c", "text"),
        ("（北京）", "(北京)", "text"),
    ],
)
def test_equal_after_normalisation(a, b, field_type):
    assert normalize_value(a, field_type) == normalize_value(b, field_type)


@pytest.mark.parametrize(
    ("a", "b", "field_type"),
    [
        ("507.82", "507.83", "amount"),
        ("叁仟肆佰玖拾伍圆整", "叁仟肆佰玖拾陆圆整", "amount_in_words"),
        ("2016年06月12日", "2016年06月13日", "date"),
        ("hello world", "helloworld", "text"),  # spaces between Latin words matter
        ("4400154130", "4400154131", "code"),
    ],
)
def test_different_after_normalisation(a, b, field_type):
    assert normalize_value(a, field_type) != normalize_value(b, field_type)


def test_amount_words_examples():
    assert parse_amount_in_words("叁仟肆佰玖拾伍圆整") == Decimal(3495)
    assert parse_amount_in_words("壹拾万零伍佰圆整") == Decimal(100500)
    assert parse_amount_in_words("壹仟零伍圆伍角") == Decimal("1005.5")
    assert parse_amount_in_words("拾圆零伍分") == Decimal("10.05")
    assert parse_amount_in_words("壹亿贰仟万圆整") == Decimal(120_000_000)
    assert parse_amount_in_words("伍角整") == Decimal("0.5")
    assert parse_amount_in_words("not words") is None
    assert amount_to_words("3495.00") == "叁仟肆佰玖拾伍圆整"
    assert amount_to_words("1417") == "壹仟肆佰壹拾柒圆整"
    assert amount_to_words("100500") == "壹拾万零伍佰圆整"
    assert amount_to_words("1005.50") == "壹仟零伍圆伍角整"
    assert amount_to_words("10.05") == "壹拾圆零伍分"
    assert amount_to_words("0.5") == "伍角整"


@given(st.decimals(min_value=0, max_value=Decimal("999999999999.99"), places=2))
def test_words_roundtrip(amount):
    assert parse_amount_in_words(amount_to_words(amount)) == amount


def test_parsers_reject_garbage():
    assert parse_amount("abc") is None
    assert parse_date("no date") is None
    assert parse_date("2016年13月40日") is None


@given(
    st.text(),
    st.sampled_from(
        ["text", "amount", "amount_in_words", "number", "date", "code", "id", "percent"]
    ),
)
def test_normalize_never_raises(value, field_type):
    assert isinstance(normalize_value(value, field_type), str)
