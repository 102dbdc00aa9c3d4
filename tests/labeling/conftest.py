"""Helpers for the labeling tests: synthetic invoice images with known truth, fast configs."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from data_tools.label import LabelConfig
from tests.support.openai_stub import TruthResponder, make_test_image

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "label" / "vat_invoice.yaml"

# A complete, arithmetically consistent VAT invoice label (every schema key present).
BASE_TRUTH: dict[str, Any] = {
    "发票名称": "广东增值税专用发票",
    "发票代码": "4400154130",
    "发票号码": "12271524",
    "开票日期": "2016年06月12日",
    "购买方": {
        "名称": "深圳市购机汇网络有限公司",
        "纳税人识别号": "440300083885931",
        "地址、电话": "深圳市龙华新区民治街道A12070755-23806606",
        "开户行及账号": "中国工商银行深圳园岭支行4000024709200172809",
    },
    "密码区": "<<1<//3*26-++936-9<9*575>39",
    "货物或应税劳务、服务": [
        {
            "名称": "小米 红米 3 全网通版",
            "规格型号": "红米3",
            "单位": "个",
            "数量": "5",
            "单价": "597.43589744",
            "金额": "2987.18",
            "税率": "17%",
            "税额": "507.82",
        }
    ],
    "合计": {"金额": "¥2987.18", "税额": "¥507.82"},
    "价税合计（大写）": "叁仟肆佰玖拾伍圆整",
    "价税合计（小写）": "¥3495.00",
    "销售方": {
        "名称": "广州晶东贸易有限公司",
        "纳税人识别号": "91440101664041243T",
        "地址、电话": "广州市黄埔区九龙镇凤凰三横路99号 66215500",
        "开户行及账号": "工行北京路支行3602000919200384952",
    },
    "备注": "",
    "收款人": "王梅",
    "复核": "张雪",
    "开票人": "陈秋燕",
}


def truth_for(i: int) -> dict[str, Any]:
    t = copy.deepcopy(BASE_TRUTH)
    t["发票号码"] = f"{12270000 + i:08d}"
    return t


class InvoiceSet:
    """n random-pattern images in ``folder`` with truth; ``responder`` answers from it."""

    def __init__(
        self, folder: Path, n: int, size: tuple[int, int] = (96, 64), suffix: str = ".png"
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.suffix = suffix
        self.truth: dict[str, dict[str, Any]] = {}
        self.paths: dict[str, Path] = {}
        self.responder = TruthResponder()
        for i in range(n):
            self.add(f"inv{i:04d}", i, size)

    def add(self, key: str, seed: int, size: tuple[int, int] = (96, 64)) -> Path:
        p = make_test_image(self.folder / f"{key}{self.suffix}", seed + 1000, size=size)
        self.truth[key] = truth_for(seed)
        self.paths[key] = p
        self.responder.add_image(p, self.truth[key], key=key)
        return p

    def key_of(self, body: dict) -> str | None:
        from tests.support.openai_stub import request_images

        imgs = request_images(body)
        return self.responder.identify(imgs[0]) if imgs else None


@pytest.fixture
def invoice_set(tmp_path: Path) -> Callable[..., InvoiceSet]:
    def make(
        n: int, size: tuple[int, int] = (96, 64), name: str = "images", suffix: str = ".png"
    ) -> InvoiceSet:
        return InvoiceSet(tmp_path / name, n, size, suffix)

    return make


def fast_config(base_url: str | list[str], images: Path, out_dir: Path, *extra: str) -> LabelConfig:
    urls = base_url if isinstance(base_url, list) else [base_url]
    return LabelConfig.from_yaml(
        CONFIG,
        [
            f"images={images}",
            f"out_dir={out_dir}",
            f"client.base_urls=[{','.join(urls)}]",
            "client.timeout_s=2",
            "client.backoff_base_s=0.02",
            "client.backoff_max_s=0.1",
            "concurrency=8",
            "progress=false",
            *extra,
        ],
    )


def jsonl_rows(path: Path) -> list[dict]:
    """Every line of a JSONL output as a dict, strictly (a torn line fails the test); [] if absent."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def labels_by_id(out: Path) -> dict[str, dict]:
    """``out/labels.jsonl`` by record id, asserting that no record was written twice."""
    rows = jsonl_rows(out / "labels.jsonl")
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), "a record was labeled twice"
    return {r["id"]: r for r in rows}
