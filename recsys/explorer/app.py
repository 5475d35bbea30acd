"""The explorer's FastAPI app: HTML pages (Jinja templates) and the same data as JSON.

Links between pages are relative (`user?id=...`), so the app works under any prefix Airflow
mounts it at and behind a proxy. Every route depends on `auth`, the Airflow auth manager's user
check, so a request without a valid token or session is refused before any data is read.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from recsys.explorer import catalogue, runs, store
from recsys.lake import Lake

TEMPLATES = Path(__file__).resolve().parent / "templates"
RunDate = Callable[[str, str], "dt.date | None"]


def _number(value, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:,}" if isinstance(value, int) else f"{value:.{digits}f}"


def _date(value: str | None) -> dt.date:
    try:
        return dt.date.fromisoformat(value or "")
    except ValueError:
        raise HTTPException(400, f"ds must be a YYYY-MM-DD date, got {value!r}") from None


class Explorer:
    """The data behind each page, from the lake and the store (URL resolved on first use)."""

    def __init__(self, lake_root: Path, database_url: Callable[[], str], run_date: RunDate | None = None):
        self.lake = Lake(Path(lake_root))
        self._url_of = database_url
        self._url: str | None = None
        self.run_date = run_date

    @property
    def url(self) -> str:
        if self._url is None:
            self._url = self._url_of()
        return self._url

    def run(self, ds: dt.date, run_id: str | None = None) -> dict:
        view = runs.run_view(self.lake, ds)
        if view is None:
            raise HTTPException(404, f"no stage of the nightly run has results for {ds}")
        return {**view, "batch": store.batch_of_run(self.url, run_id, ds), "run_id": run_id}

    def serving_ds(self) -> dt.date:
        batch = store.serving_batch(self.url)
        if batch is None:
            raise HTTPException(404, "no batch is serving yet")
        return batch["ds"]

    def dag_run(self, dag_id: str, run_id: str) -> dict:
        batch = store.batch_of_run(self.url, run_id)
        ds = (self.run_date(dag_id, run_id) if self.run_date else None) or (batch or {}).get("ds")
        if ds is None:
            raise HTTPException(404, f"no DAG run {run_id!r} of {dag_id!r} and no batch published by it")
        return self.run(ds, run_id)

    def user(self, user_id: str) -> dict:
        found = store.user_lists(self.url, user_id)
        ds = found["batch"]["ds"] if found["batch"] else None
        shown = found["list"] or found["fallback"]
        ids = [r["item_id"] for r in shown + found["changes"]]
        return {
            "user_id": user_id, **found, "in_batch": bool(found["list"]),
            "history": catalogue.history(self.lake, ds, user_id) if ds else [],
            "items": catalogue.items(self.lake, ds, ids) if ds else {},
        }

    def item(self, item_id: str) -> dict:
        found = store.item_lists(self.url, item_id)
        ds = found["batch"]["ds"] if found["batch"] else None
        ids = [item_id] + [r["similar_item_id"] for r in found["similar"]]
        known = catalogue.items(self.lake, ds, ids) if ds else {}
        return {"item_id": item_id, "item": known.get(item_id), "items": known, **found}

    def model(self, version: str | None) -> dict:
        if not version:
            batch = store.serving_batch(self.url)
            version = batch["model_version"] if batch else None
        view = runs.model_view(self.lake, version) if version else None
        if view is None:
            raise HTTPException(404, f"no model {version!r} in the lake")
        return view


def create_app(lake_root: Path, database_url: Callable[[], str], *, auth: Callable,
               run_date: RunDate | None = None) -> FastAPI:
    """The explorer app; `auth` is a FastAPI dependency that refuses an unauthenticated request."""
    ex = Explorer(lake_root, database_url, run_date)
    templates = Jinja2Templates(directory=TEMPLATES)
    templates.env.filters["num"] = _number
    app = FastAPI(title="recsys explorer", dependencies=[Depends(auth)], docs_url=None, redoc_url=None,
                  openapi_url=None)

    def page(request: Request, name: str, **context) -> HTMLResponse:
        return templates.TemplateResponse(request, name, context)

    def run_page(request: Request, view: dict) -> HTMLResponse:
        return page(request, "run.html", run=view, charts=runs.run_charts(ex.lake, view))

    @app.get("/")
    def home() -> RedirectResponse:
        return RedirectResponse("serving")

    @app.get("/serving", response_class=HTMLResponse)
    def serving(request: Request):
        return run_page(request, ex.run(ex.serving_ds()))

    @app.get("/dagrun", response_class=HTMLResponse)
    def dag_run(request: Request, dag_id: str, run_id: str):
        return run_page(request, ex.dag_run(dag_id, run_id))

    @app.get("/run", response_class=HTMLResponse)
    def run(request: Request, ds: str):
        return run_page(request, ex.run(_date(ds)))

    @app.get("/report")
    def report(ds: str):
        path = runs.report_path(ex.lake, _date(ds))
        if path is None:
            raise HTTPException(404, f"no evaluation report for {ds}")
        return FileResponse(path, media_type="text/html")

    @app.get("/user", response_class=HTMLResponse)
    def user(request: Request, user_id: str = Query("", alias="id")):
        user_id = user_id.strip()
        return page(request, "user.html", user=ex.user(user_id) if user_id else None, query=user_id)

    @app.get("/item", response_class=HTMLResponse)
    def item(request: Request, item_id: str = Query(alias="id")):
        return page(request, "item.html", view=ex.item(item_id.strip()))

    @app.get("/model", response_class=HTMLResponse)
    def model(request: Request, version: str = ""):
        view = ex.model(version.strip())
        return page(request, "model.html", model=view, charts=runs.model_charts(view))

    @app.get("/api/run")
    def run_json(ds: str) -> dict:
        return ex.run(_date(ds))

    @app.get("/api/user")
    def user_json(user_id: str = Query(alias="id")) -> dict:
        return ex.user(user_id.strip())

    @app.get("/api/item")
    def item_json(item_id: str = Query(alias="id")) -> dict:
        return ex.item(item_id.strip())

    @app.get("/api/model")
    def model_json(version: str = "") -> dict:
        return ex.model(version.strip())

    return app
