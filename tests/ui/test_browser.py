"""The UI in a real browser (Debian's chromium driven by playwright, no browser download).

Uploads a fixture invoice on the Extract page and reads the fields off the page, runs a
batch with a duplicate, edits a record on the Review page and checks ``reviewed.jsonl``.
With ``KIE_UI_SCREENSHOTS=DIR`` it also saves the screenshots used in ``docs/ui.md``.

Needs ``chromium`` (``apt-get install chromium``; ``make browser``) and the ``playwright``
package (pinned in requirements/cpu.in); skips with the reason when either is absent.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from data_tools.review import read_reviewed
from tests.support.make_documents import TextItem, write_pdf

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).is_file(),
        reason=f"no chromium at {CHROMIUM}: run `make browser` (apt-get install chromium)",
    ),
]


@pytest.fixture
def browser_page():
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright not installed (requirements/cpu.in)"
    )
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000}, locale="zh-CN")
        page.set_default_timeout(30_000)
        try:
            yield page
        finally:
            browser.close()


def _shot(page, name: str) -> None:
    out = os.environ.get("KIE_UI_SCREENSHOTS")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(out) / name), full_page=True)


def test_extract_batch_and_review_in_chromium(ui_service: dict, browser_page, tmp_path) -> None:
    page = browser_page
    run = ui_service["run"]
    jpg = run / "images" / "b1.jpg"
    im = Image.open(jpg)
    pdf = write_pdf(
        tmp_path / "b1-scan.pdf", [im, im], [[TextItem("发票号码 12270242", 150, 18)], []]
    )

    page.goto(ui_service["url"] + "/ui/")
    assert "发票信息抽取" in page.title()
    page.wait_for_selector("#status:has-text('API key')")  # 401 without the key: says so
    page.fill("#api-key", ui_service["key"])
    page.press("#api-key", "Enter")
    page.dispatch_event("#api-key", "change")
    page.wait_for_selector("#status:has-text('Ready')")

    # ---- keyboard: arrow keys move between the tabs
    page.focus("#tab-extract")
    page.keyboard.press("ArrowRight")
    assert page.get_attribute("#tab-batch", "aria-selected") == "true"
    assert page.is_visible("#page-batch") and not page.is_visible("#page-extract")
    page.keyboard.press("ArrowLeft")
    assert page.get_attribute("#tab-extract", "aria-selected") == "true"

    # ---- Extract: upload, read the fields off the page
    page.set_input_files("#extract-file", str(jpg))
    page.click("#extract-run")
    page.wait_for_selector("#extract-pages-out tr[data-field='发票代码']")
    value = page.inner_text("#extract-pages-out tr[data-field='发票代码'] td.value")
    assert value == "12270242"
    buyer = page.inner_text("#extract-pages-out tr[data-field='购买方.名称'] td.value")
    assert buyer == "深圳市购机汇网络有限公司"  # CJK round-trips through the page
    row_class = page.get_attribute("#extract-pages-out tr[data-field='发票代码']", "class")
    assert "flagged" in row_class and "low" in row_class  # failed validation, low confidence
    assert "invoice_code" in page.inner_text("#extract-pages-out ul.failures")
    assert (
        page.inner_text("#extract-pages-out tr[data-field='购买方.名称'] .conf") == "97%"
    )  # 13 tokens at -0.002
    img_ok = page.evaluate(
        "() => { const i = document.querySelector('#extract-pages-out img'); "
        "return i.complete && i.naturalWidth > 100; }"
    )
    assert img_ok
    with page.expect_download() as dl:
        page.click("#extract-download")
    saved = tmp_path / "extract.json"
    dl.value.save_as(saved)
    assert '"12270242"' in saved.read_text(encoding="utf-8")
    _shot(page, "ui-extract.png")

    # ---- Batch: two files, the second repeats the first invoice
    page.click("#tab-batch")
    page.set_input_files("#batch-files", [str(jpg), str(pdf)])
    page.click("#batch-run")
    page.wait_for_selector("#batch-count:has-text('2 / 2')")
    rows = page.locator("#batch-table tbody tr")
    assert rows.count() == 2
    assert "duplicate of b1.jpg" in rows.nth(1).inner_text()
    assert "invoice_code" in rows.nth(0).inner_text()
    with page.expect_download() as dl:
        page.click("#batch-excel")
    assert dl.value.suggested_filename == "predictions.xlsx"
    with page.expect_download() as dl:
        page.click("#batch-jsonl")
    jsonl = tmp_path / "batch.jsonl"
    dl.value.save_as(jsonl)
    assert len(jsonl.read_text(encoding="utf-8").splitlines()) == 3  # 1 image + 2 PDF pages
    _shot(page, "ui-batch.png")

    # ---- Review: pick the vote, edit a value, save
    page.click("#tab-review")
    page.wait_for_selector(
        "#review-source option[value='labels_run/needs_review.jsonl']", state="attached"
    )
    page.click("#review-open")
    page.wait_for_selector("#review-fields input[aria-label='发票代码']")
    page.click(
        "#review-fields tr:has(input[aria-label='发票代码']) button.cand:has-text('4400154130')"
    )
    page.fill("#review-fields input[aria-label='发票号码']", "12270242")
    page.wait_for_function(
        "() => { const i = document.querySelector('#review-image'); "
        "return i.complete && i.naturalWidth > 100; }"
    )
    _shot(page, "ui-review.png")
    page.keyboard.press("Alt+s")  # the page's shortcut for "Save edits"
    page.wait_for_selector("#status:has-text('saved (edit)')")
    assert "done" in page.get_attribute("#review-list button[data-id='b1']", "class")
    rec = read_reviewed(run / "reviewed.jsonl")["b1"]
    assert rec.fields["发票代码"] == "4400154130" and rec.fields["发票号码"] == "12270242"
    assert rec.fields["购买方"]["名称"] == "深圳市购机汇网络有限公司"
    assert rec.meta["reviewed"]["action"] == "edit"
    failed = {f["rule"] for f in rec.meta["reviewed"]["validation"]["failed"]}
    assert "invoice_code" not in failed and "invoice_number" not in failed
