"""The people page: server-rendered (Jinja2, autoescaped — a person named ``<script>`` shows as text) plus one
small vanilla-JS file for the buttons. Nothing to build, nothing fetched from the network."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from face_pipeline.core.errors import FacePipelineError, NotFound
from face_pipeline.core.suggestions import TO_PERSON_KINDS
from face_pipeline.web import suggestions_api, views
from face_pipeline.web.app import current_caller
from face_pipeline.web.auth import COOKIE, Caller

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
COOKIE_DAYS = 30


def _base(request: Request, caller: Caller) -> dict:
    st = request.app.state
    csrf = st.tokens.csrf_for(request.cookies[COOKIE]) if caller.via == "cookie" else ""
    return {"request": request, "caller": caller, "csrf": csrf, "dagster_ui": st.settings.web_dagster_ui_url.rstrip("/"),
            "needs_login": st.reads_need_token and not caller.authenticated}


def _latest_run(request: Request) -> dict | None:
    try:
        return request.app.state.launcher.latest()
    except Exception:  # the status line must never take the page down (instance being migrated, …)
        return None


def _grouped(events: list[dict], limit: int = 12) -> list[dict]:
    """Consecutive events of one operation (same action, actor, persons and cluster, e.g. the faces of a named
    cluster) shown as one line with a few faces and a count; undo undoes each of its undoable events."""
    out: list[dict] = []
    for e in events:
        key = (e["action"], e["actor"], e["from_person"], e["to_person"], e["cluster_id"], e["face_id"] is None)
        if out and out[-1]["key"] == key and not key[-1]:
            g = out[-1]
        else:
            if len(out) == limit:
                break
            g = {**e, "key": key, "face_ids": [], "count": 0, "undo_ids": []}
            out.append(g)
        if e["face_id"]:
            g["count"] += 1
            if len(g["face_ids"]) < 4:
                g["face_ids"].append(e["face_id"])
        if e["can_undo"]:
            g["undo_ids"].append(e["id"])
    return out


@router.get("/", response_class=HTMLResponse)
def index(request: Request, people_offset: int = 0, clusters_offset: int = 0, min_size: int = 2,
          caller: Caller = Depends(current_caller)):
    ctx = _base(request, caller)
    if ctx["needs_login"]:
        return templates.TemplateResponse(request, "login.html", ctx, status_code=401)
    settings = request.app.state.settings
    people_offset, clusters_offset, min_size = max(0, people_offset), max(0, clusters_offset), max(1, min_size)
    review, merges, review_error = [], [], None
    if suggestions_api.available():
        try:
            open_ = suggestions_api.list_open(settings, limit=100)
            review = [s for s in open_ if s.get("kind") in TO_PERSON_KINDS][:30]
            # merges asked for by kind: questions about names given come first and may fill the first hundred
            merges = suggestions_api.list_open(settings, "same_person", limit=20)
        except FacePipelineError as exc:
            review_error = str(exc)
    ctx.update(
        people=views.people(settings, limit=120, offset=people_offset, with_sources=False),
        clusters=views.clusters(settings, min_size=min_size, limit=30, offset=clusters_offset, strip=20),
        names=views.person_names(settings),
        changes=_grouped(views.events(settings, limit=100)["items"]),
        health=views.health(settings),
        run=_latest_run(request),
        review=review, merges=merges, review_error=review_error, suggestions_available=suggestions_api.available(),
        min_size=min_size,
    )
    return templates.TemplateResponse(request, "index.html", ctx)


@router.get("/person/{person_ref}", response_class=HTMLResponse)
def person_page(request: Request, person_ref: str, offset: int = 0, caller: Caller = Depends(current_caller)):
    ctx = _base(request, caller)
    if ctx["needs_login"]:
        return templates.TemplateResponse(request, "login.html", ctx, status_code=401)
    settings = request.app.state.settings
    try:
        person = views.person(settings, person_ref, limit=300, offset=max(0, offset))
    except NotFound as exc:
        ctx["message"] = str(exc)
        return templates.TemplateResponse(request, "missing.html", ctx, status_code=404)
    ctx.update(person=person, names=views.person_names(settings), run=_latest_run(request))
    return templates.TemplateResponse(request, "person.html", ctx)


def _safe_next(nxt: str) -> str:
    """Only a path on this site (no scheme, no ``//host``): the login form must not be an open redirect."""
    return nxt if nxt.startswith("/") and not nxt.startswith("//") and "\\" not in nxt else "/"


@router.post("/login")
def login(request: Request, token: str = Form(..., max_length=200), next: str = Form("/", max_length=500)):
    tokens = request.app.state.tokens
    if tokens.role_of(token.strip()) is None:
        ctx = _base(request, current_caller(request, None))
        ctx["login_error"] = "That token is not valid for this library."
        return templates.TemplateResponse(request, "login.html", ctx, status_code=401)
    resp = RedirectResponse(_safe_next(next), status_code=303)
    resp.set_cookie(COOKIE, token.strip(), max_age=COOKIE_DAYS * 86400, httponly=True, samesite="strict",
                    secure=request.url.scheme == "https", path="/")
    return resp


@router.post("/logout")
def logout(request: Request):
    resp = RedirectResponse("/", status_code=303)
    resp.delete_cookie(COOKIE, path="/")
    return resp
