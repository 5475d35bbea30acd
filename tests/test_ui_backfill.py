"""The Airflow UI in headless Chromium: sign in, open the DAG, open Trigger -> Backfill.

The api-server runs on 127.0.0.1 with the simple auth manager; Chromium runs headless
(tests/browser.py). The screenshot of the backfill dialog is saved under the test's temporary
folder and its path printed.
"""

from __future__ import annotations

import json
import time

import pytest

from recsys.airflow_local import LocalAirflow, airflow, prepare
from tests.browser import browsing, chromium, sign_in

pytestmark = pytest.mark.slow
DAG_ID = "recsys_nightly"


def test_trigger_dialog_offers_a_backfill(tmp_path):
    exe = chromium()
    home = tmp_path / "airflow"
    env = prepare(home)
    airflow(["dags", "reserialize"], env, capture=True)  # the DAG is in the UI without a dag-processor
    with LocalAirflow(home, components=("api-server",)) as af:
        shot = tmp_path / "ui-backfill.png"
        with browsing(exe, tmp_path, "ui") as browser:
            sign_in(browser, af, f"/dags/{DAG_ID}")

            # The DAG's page, then its Trigger dialog on the Backfill choice.
            browser.call("Page.navigate", url=f"{af.url}/dags/{DAG_ID}")
            browser.wait_for(f"document.body.innerText.includes({json.dumps(DAG_ID)})", "the DAG page")
            browser.wait_for("(() => [...document.querySelectorAll('button')].some(b => b.innerText.trim() === 'Trigger'))()",
                             "the Trigger button")
            assert browser.click_text("Trigger", tags="button")
            dialog = "[...document.querySelectorAll('[role=dialog]')].find(d => d.innerText.includes('Single Run'))"
            browser.wait_for(f"{dialog}.innerText.includes('Backfill')", "the trigger dialog with its Backfill choice")
            assert browser.click_text("Backfill", within=dialog, tags="*")
            text = browser.wait_for(
                f"(() => {{ const t = {dialog}.innerText; return t.includes('Run Backfill') && t.includes('Max Active Runs') && t; }})()",
                "the backfill form",
            )
            time.sleep(1)  # let the form settle before the picture
            browser.screenshot(shot)
            (tmp_path / "ui-backfill.txt").write_text(text)
    print(f"backfill dialog screenshot: {shot}")
    assert shot.stat().st_size > 10_000
    assert f"Run Backfill - {DAG_ID}" in text
    assert all(field in text for field in ("Date Range", "Reprocess Behavior", "Max Active Runs", "top_k"))
