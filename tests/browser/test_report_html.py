"""Open report/index.html in headless Chromium and use it as a reader would.

Needs Debian's chromium (/usr/bin/chromium, or TRAINSPEC_CHROMIUM) and the
playwright Python package, which drives it without downloading a browser.
The test fails, never skips, when Chromium is missing: it exists to prove
that the page renders.
"""

import os
import shutil
from pathlib import Path

import pytest

from harness.catalogue import load_rules
from harness.report import merge
from tests.harness.test_report import write_sample

pytestmark = pytest.mark.harness

CHROMIUM = os.environ.get("TRAINSPEC_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"Chromium not found at {CHROMIUM}: install Debian's chromium package"
    folder = tmp_path_factory.mktemp("report")
    write_sample(folder / "results")
    merge(folder / "results", folder / "report", frameworks=("mxnet", "torch"))

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto((folder / "report" / "index.html").as_uri())
        page.errors = errors
        yield page
        browser.close()


def visible_rules(page):
    return page.eval_on_selector_all("tr.rule:not([hidden])", "rows => rows.map(r => r.dataset.rule)")


def test_matrix_renders_every_rule_and_run(page):
    assert page.errors == []
    assert visible_rules(page) == list(load_rules())
    headers = page.eval_on_selector_all("#matrix thead th", "cells => cells.map(c => c.textContent)")
    assert headers[2].startswith("mxnet 1.9.1 cpu float32")
    assert headers[3].startswith("torch (no results record)")
    cell = page.text_content('tr[data-rule="LOSS-L2-NORMALIZATION"] td:nth-child(3)')
    assert cell.startswith("pass / dev")


def test_area_filter(page):
    page.select_option("#area-filter", "losses")
    shown = visible_rules(page)
    assert shown
    assert all(rule.startswith("LOSS-") for rule in shown)
    page.select_option("#area-filter", "")
    assert len(visible_rules(page)) == len(load_rules())


def test_outcome_filter(page):
    page.select_option("#outcome-filter", "deviation")
    assert visible_rules(page) == ["LOSS-L2-NORMALIZATION"]
    page.select_option("#outcome-filter", "failed")
    assert visible_rules(page) == ["INIT-FANS", "ADAM-EPSILON"]
    page.select_option("#outcome-filter", "")


def test_rule_details_open_on_click(page):
    details = 'tr[data-details-for="LOSS-BATCH-AXIS"]'
    assert page.is_hidden(details)
    page.click('tr[data-rule="LOSS-BATCH-AXIS"] td.id')
    assert page.is_visible(details)
    text = page.text_content(details)
    assert "The mean runs over every axis except batch_axis" in text
    assert "reference.losses:l2_loss" in text
    assert "NumPy mode ignores batch_axis" in text


def test_headroom_plot_has_bars(page):
    assert page.eval_on_selector_all("#plot svg rect.bar", "bars => bars.length") >= 1
