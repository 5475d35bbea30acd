"""The recommendation explorer against a real PostgreSQL and a hand-made lake (tests/explorer_data.py):
first the data each page shows, then the pages through a real Airflow api-server with its auth manager."""

from __future__ import annotations

import html
import time

import httpx
import pytest

from recsys.evaluate.report import metric_history
from recsys.explorer.app import Explorer
from tests import explorer_data as data


@pytest.fixture(scope="module")
def night(pg_url, tmp_path_factory):
    root = tmp_path_factory.mktemp("explorer")
    lake = data.write_lake(root / "lake")
    return lake, data.publish_batches(pg_url, root / "scores")


@pytest.fixture(scope="module")
def explorer(night):
    lake, url = night
    return Explorer(lake.root, lambda: url)


def test_the_run_shows_the_gate_every_metric_input_and_timings(explorer):
    run = explorer.run(data.DS)
    assert run["gate"]["decision"] == "fail" and run["gate"]["reasons"] == data.GATE_REASONS
    assert run["roles"] == ["challenger", "champion", "popularity"]
    rows = {r["metric"]: r["values"] for r in run["metrics"]}
    assert rows["ndcg@10"] == {"challenger": 0.1, "champion": 0.15, "popularity": 0.08}
    assert rows["coverage@10"]["popularity"] == 0.02 and "users" in rows
    assert run["input"]["rows_quarantined"] == 10
    assert run["input"]["quarantine_reasons"] == {"unknown_item": 7, "bad_ts": 3}
    assert run["seconds"] == {"validate": 12.5, **data.SECONDS} and run["seconds_total"] == 68.0
    assert run["train_budget"] == {"train_budget_seconds": 3456.8, "train_budget": data.TRAIN_BUDGET}
    assert run["batch"]["ds"] == data.DS and run["batch"]["is_current"] and run["report"]


def test_a_night_without_an_evaluation_is_a_gap_not_a_zero(night):
    lake, _ = night
    labels, series = metric_history(lake.root / "runs", nights=3, end=data.DS)
    assert labels == ["2026-11-24", "2026-11-25", "2026-11-26"]
    assert series == {"challenger": [0.15, None, 0.1], "popularity": [0.07, None, 0.08], "champion": [None, None, 0.15]}


def test_a_known_user_sees_their_list_history_and_changes(explorer):
    user = explorer.user("u1")
    assert user["in_batch"] and user["fallback"] == []
    assert [(r["rank"], r["item_id"], r["reason"]) for r in user["list"]] == [(1, "i4", "because of i1"), (2, "i5", "new for you")]
    assert [(c["change"], c["item_id"], c["rank"]) for c in user["changes"]] == [("added", "i5", 2), ("removed", "i6", 2)]
    assert [(h["item_id"], h["event_type"], h["title"]) for h in user["history"]] == [
        ("i3", "purchase", "Waterproof jacket"), ("i2", "cart", "Merino hiking socks"), ("i1", "view", "Trail running shoes")]
    assert user["items"]["i4"]["title"] == "Headlamp 400 lumen"
    assert user["previous"]["ds"] == data.PREVIOUS_DS


def test_a_user_absent_from_the_batch_gets_the_fallback(explorer):
    user = explorer.user("a-new-user")
    assert not user["in_batch"] and user["list"] == [] and user["history"] == []
    assert [(r["item_id"], r["reason"]) for r in user["fallback"]] == [("i2", "popular"), ("i1", "popular")]


def test_an_item_shows_its_text_neighbours_and_how_many_lists_hold_it(explorer):
    item = explorer.item("i4")
    assert item["item"]["title"] == "Headlamp 400 lumen" and item["item"]["category"] == "gear"
    assert [(s["similar_item_id"], s["rank"]) for s in item["similar"]] == [("i1", 1)]
    assert item["users"] == 2
    assert explorer.item("i1")["users"] == 1


def test_the_serving_model_shows_its_training_blend_and_the_champion_history(explorer):
    model = explorer.model("")
    assert model["version"] == data.CHAMPION and model["memory_weight"] == 0.35
    assert [e["ndcg@10"] for e in model["epochs"]] == [0.11, 0.14, 0.13]
    assert model["config"]["d_model"] == 64 and "chosen_on" not in model["blend"]
    assert [(c["ds"], c["challenger"], c["decision"], c["serving"]) for c in model["champions"]] == [
        ("2026-11-26", data.CHALLENGER, "fail", data.CHAMPION), ("2026-11-24", data.CHAMPION, "pass", data.CHAMPION)]


def test_the_explorer_can_only_read(night):
    import psycopg

    from recsys.explorer.store import reader

    _, url = night
    with reader(url) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM recsys.batches")


# --------------------------------------------------------------------------- through Airflow


@pytest.fixture(scope="module")
def airflow(night, tmp_path_factory):
    """The real api-server on 127.0.0.1 with the plugin loaded from plugins/, reading `night`."""
    from recsys.airflow_local import LocalAirflow, prepare

    lake, url = night
    home = tmp_path_factory.mktemp("airflow")
    env = {"RECSYS_LAKE_ROOT": str(lake.root), "RECSYS_DATABASE_URL": url}
    prepare(home, env)
    with LocalAirflow(home, env, components=("api-server",)) as af:
        yield af


@pytest.fixture(scope="module")
def client(airflow):
    token = airflow.token()
    with httpx.Client(base_url=f"{airflow.url}/recsys/", headers={"Authorization": f"Bearer {token}"},
                      timeout=60) as c:
        yield c


# (path, texts the page must show)
PAGES = [
    ("serving", [html.escape(data.GATE_REASONS[0]), "fail", "0.1500", "unknown_item", "68.00", "NDCG@10 over the 30 nights",
                 "report?ds=2026-11-26", "by item popularity decile", "(interactions)"]),
    (f"run?ds={data.DS}", ["Nightly run for 2026-11-26", data.CHALLENGER, "12.50", "3456.8 s", data.TRAIN_BUDGET]),
    ("user?id=u1", ["Headlamp 400 lumen", "because of i1", "Waterproof jacket", "purchase", "removed", "i6"]),
    ("user?id=a-new-user", ["a-new-user is not in this batch", "Merino hiking socks", "Fallback list (2 items)"]),
    ("item?id=i4", ["Headlamp 400 lumen", "In the lists of <strong>2</strong> users", "Trail running shoes"]),
    ("model", [data.CHAMPION, "0.3500", "validation NDCG@10 per epoch", "training loss per task", "d_model",
               "Notes from training", data.NOTE]),
]


def test_a_request_without_a_valid_token_is_refused(airflow):
    for path in ("serving", "user?id=u1", "api/user?id=u1", f"report?ds={data.DS}"):
        assert httpx.get(f"{airflow.url}/recsys/{path}", timeout=30).status_code == 401, path
        bad = httpx.get(f"{airflow.url}/recsys/{path}", headers={"Authorization": "Bearer not-a-jwt"}, timeout=30)
        assert bad.status_code in (401, 403), path


@pytest.mark.parametrize("path, texts", PAGES, ids=[p for p, _ in PAGES])
def test_each_page_shows_the_night(client, path, texts):
    r = client.get(path)
    assert r.status_code == 200, r.text[:500]
    missing = [t for t in texts if t not in r.text]
    assert not missing, f"{path} lacks {missing}"


def test_the_ui_session_cookie_is_accepted(airflow):
    r = httpx.get(f"{airflow.url}/recsys/user?id=u2", cookies={"_token": airflow.token()}, timeout=30)
    assert r.status_code == 200 and "because of i2" in r.text


def test_the_dag_run_tab_finds_the_run_by_its_id(client):
    r = client.get("dagrun", params={"dag_id": data.DAG_ID, "run_id": data.RUN_ID})
    assert r.status_code == 200 and f"DAG run {data.RUN_ID}" in r.text and "serving now" in r.text
    assert client.get("dagrun", params={"dag_id": data.DAG_ID, "run_id": "manual__never"}).status_code == 404


def test_json_endpoints_and_the_full_report(client):
    user = client.get("api/user", params={"id": "u1"}).json()
    assert [r["item_id"] for r in user["list"]] == ["i4", "i5"] and user["batch"]["ds"] == "2026-11-26"
    run = client.get("api/run", params={"ds": "2026-11-26"}).json()
    assert run["gate"]["serving_version"] == data.CHAMPION and run["input"]["rows_in"] == 1000
    report = client.get("report", params={"ds": "2026-11-26"})
    assert "Offline evaluation for 2026-11-26" in report.text and "<svg" in report.text
    # the static report: the gate's decision and reasons, every role's figures, the same charts
    text = html.unescape(report.text)
    assert f"Gate: fail — serving {data.CHAMPION}" in text and data.GATE_REASONS[0] in text
    assert all(f"<th>{role}</th>" in text for role in ("challenger", "champion", "popularity"))
    assert "0.1500" in text and "0.4000" in text  # champion's NDCG@10, challenger's HR@10 (4 x 0.1)
    assert text.count("<svg") == 4 and "popularity decile" in text


def test_the_plugin_adds_a_dag_run_tab_and_a_navigation_entry(airflow):
    plugins = airflow.api("GET", "/api/v2/plugins", airflow.token()).json()["plugins"]
    views = {(v["destination"], v["href"]) for p in plugins if p["name"] == "recsys_explorer" for v in p["external_views"]}
    assert views == {("dag_run", "recsys/dagrun?dag_id={DAG_ID}&run_id={RUN_ID}"), ("nav", "recsys/serving")}


def test_page_load_times(client):
    """Server-side time per page (median of 20 authenticated GETs); docs/BENCHMARKS.md, "Explorer pages"."""
    figures = {}
    for path, _ in PAGES:
        seconds = []
        for _ in range(20):
            t0 = time.perf_counter()
            assert client.get(path).status_code == 200
            seconds.append(time.perf_counter() - t0)
        figures[path] = sorted(seconds)[len(seconds) // 2]
    print("\n".join(f"{path:<22} median {s * 1000:7.1f} ms" for path, s in figures.items()))
    assert max(figures.values()) < 2.0, figures
