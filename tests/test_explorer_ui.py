"""The recommendation explorer in headless Chromium, inside the real Airflow UI.

Sign in, open the "Recommendations" tab of a run of the nightly DAG (the plugin's page in the
UI's frame), search a user, open an item from their list, and look up a user the batch does
not know. A screenshot of each page is saved under the test's temporary folder.
"""

from __future__ import annotations

import json
import time
from urllib.parse import quote

import pytest

from recsys.airflow_local import LocalAirflow, airflow, prepare
from tests import explorer_data as data
from tests.browser import Browser, browsing, chromium, sign_in

pytestmark = pytest.mark.slow
FRAME = "document.querySelector('iframe[title=Recommendations]')"


def frame_text(browser: Browser, needle: str, what: str) -> str:
    """The text of the plugin's frame once it shows `needle` (the frame is same-origin)."""
    return browser.wait_for(
        f"(() => {{ const t = {FRAME}.contentDocument.body.innerText; return t.includes({json.dumps(needle)}) && t; }})()",
        what,
    )


def page_text(browser: Browser, needle: str, what: str) -> str:
    return browser.wait_for(
        f"(() => {{ const t = document.body.innerText; return t.includes({json.dumps(needle)}) && t; }})()", what
    )


def test_run_tab_user_search_and_item_page(pg_url, tmp_path):
    exe = chromium()
    lake = data.write_lake(tmp_path / "lake")
    url = data.publish_batches(pg_url, tmp_path / "scores")
    env = {"RECSYS_LAKE_ROOT": str(lake.root), "RECSYS_DATABASE_URL": url}
    home = tmp_path / "airflow"
    airflow(["dags", "reserialize"], prepare(home, env), capture=True)  # the DAG without a dag-processor
    shots = {}
    with LocalAirflow(home, env, components=("api-server",)) as af:
        # The DAG run the tab belongs to; without a scheduler it stays queued, which is enough here.
        created = af.api("POST", f"/api/v2/dags/{data.DAG_ID}/dagRuns", af.token(),
                         json={"dag_run_id": data.RUN_ID, "logical_date": f"{data.DS}T00:00:00Z"})
        assert created.status_code == 200, created.text
        with browsing(exe, tmp_path, "explorer") as browser:
            tab = f"/dags/{data.DAG_ID}/runs/{quote(data.RUN_ID, safe='')}/plugin/recommendations"
            sign_in(browser, af, tab)
            browser.call("Page.navigate", url=f"{af.url}{tab}")
            run = frame_text(browser, "Nightly run for 2026-11-26", "the run page in the DAG run's tab")
            time.sleep(1)  # let the charts lay out before the picture
            shots["run"] = browser.screenshot(tmp_path / "explorer-run.png")

            browser.call("Page.navigate", url=f"{af.url}/recsys/serving")
            page_text(browser, "Nightly run for 2026-11-26", "the serving batch's run page")
            browser.type_into("input[name=id]", "u1")
            assert browser.click_text("Search", tags="button")
            user = page_text(browser, "User u1", "the user page after the search")
            shots["user"] = browser.screenshot(tmp_path / "explorer-user.png")

            assert browser.click_text("i4", tags="a")
            item = page_text(browser, "Item i4", "the item page")
            shots["item"] = browser.screenshot(tmp_path / "explorer-item.png")

            browser.call("Page.navigate", url=f"{af.url}/recsys/user?id=a-new-user")
            newcomer = page_text(browser, "User a-new-user", "the page of a user the batch does not know")
            shots["new-user"] = browser.screenshot(tmp_path / "explorer-new-user.png")
    print("explorer screenshots: " + ", ".join(str(p) for p in shots.values()))
    assert all(p.stat().st_size > 10_000 for p in shots.values())

    assert f"DAG run {data.RUN_ID}" in run and "Decision: fail" in run
    assert all(reason in run for reason in data.GATE_REASONS)
    assert "unknown_item\t7" in run and "bad_ts\t3" in run
    assert f"serving {data.CHAMPION}" in run

    assert "Current list (2 items)" in user
    assert "1\ti4\tHeadlamp 400 lumen\tgear\t0.9100\tbecause of i1" in user
    assert "added\ti5\tInsulated bottle\t2" in user and "removed\ti6\tCamp stove\t2" in user
    assert "purchase\ti3\tWaterproof jacket\touterwear" in user

    assert "Item i4: Headlamp 400 lumen" in item and "In the lists of 2 users" in item
    assert "1\ti1\tTrail running shoes\tshoes\t0.8000" in item

    assert "a-new-user is not in this batch" in newcomer
    assert "1\ti2\tMerino hiking socks\tsocks\t0.9000\tpopular" in newcomer
