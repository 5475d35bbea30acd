"""Airflow plugin: the recommendation explorer inside the Airflow UI (Airflow 3.1+).

- `fastapi_apps`: the explorer's pages and JSON under /recsys, in the api-server's own process;
- `external_views`: a "Recommendations" tab on every run of the nightly DAG (the page finds that
  run's date and batch) and a "Recommendations" entry in the navigation (the serving batch).

Airflow does not protect plugin endpoints by itself: every route depends on `get_user`, the auth
manager's check of the JWT in the Authorization header or in the UI's session cookie. The lake
and the database come from the same RECSYS_* settings the DAG's tasks read.
"""

from __future__ import annotations

import datetime as dt

from airflow.api_fastapi.core_api.security import get_user
from airflow.plugins_manager import AirflowPlugin

from recsys.config import get_settings
from recsys.explorer.app import create_app

DAG_ID = "recsys_nightly"
URL_PREFIX = "/recsys"


def run_date(dag_id: str, run_id: str) -> dt.date | None:
    """The date `ds` a DAG run processes: its logical date (the start of its data interval)."""
    from sqlalchemy import select

    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        run = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
    when = run and (run.logical_date or run.data_interval_start)
    return when.date() if when else None


def database_url() -> str:
    from recsys.store.db import resolve_url

    return resolve_url(get_settings())


class RecsysExplorerPlugin(AirflowPlugin):
    name = "recsys_explorer"
    fastapi_apps = [
        {
            "app": create_app(get_settings().lake_root, database_url, auth=get_user, run_date=run_date),
            "url_prefix": URL_PREFIX,
            "name": "Recommendation explorer",
        }
    ]
    external_views = [
        {
            "name": "Recommendations",
            # No leading slash: the UI resolves it against its own base URL.
            "href": f"{URL_PREFIX.lstrip('/')}/dagrun?dag_id={{DAG_ID}}&run_id={{RUN_ID}}",
            "destination": "dag_run",
            "url_route": "recommendations",
        },
        {
            "name": "Recommendations",
            "href": f"{URL_PREFIX.lstrip('/')}/serving",
            "destination": "nav",
            "url_route": "recsys-serving",
        },
    ]
