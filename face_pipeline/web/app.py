"""The web app: ``create_app(settings)`` builds the FastAPI application (HTTP API under ``/api/v1``, OpenAPI at
``/docs``, the people page at ``/``).

Every change goes through :mod:`face_pipeline.core.labels` — the functions the CLI calls — with the caller's
token as the event actor. Errors are the label module's typed errors, mapped by class (``http_status``) to JSON
``{"detail": reason, "error": kind}``; nothing matches message text.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from face_pipeline.core.errors import FacePipelineError
from face_pipeline.home import prepare_home
from face_pipeline.settings import Settings
from face_pipeline.web.auth import (
    ANONYMOUS,
    COOKIE,
    CSRF_HEADER,
    Caller,
    Tokens,
    is_loopback,
    load_tokens,
)
from face_pipeline.web.runs import RunLauncher

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
API_PREFIX = "/api/v1"
STATE_CHANGING = ("POST", "PUT", "PATCH", "DELETE")

bearer = HTTPBearer(auto_error=False, description="FACE_WEB_TOKEN (labelling) or FACE_WEB_ADMIN_TOKEN (also training, re-clustering, deleting people)")


# ----------------------------------------------------------------------------------------------------------------
# Who is calling
# ----------------------------------------------------------------------------------------------------------------


def current_caller(request: Request, creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Caller:
    tokens: Tokens = request.app.state.tokens
    if request.headers.get("authorization"):
        if creds is None or creds.scheme.lower() != "bearer":
            raise HTTPException(401, "use 'Authorization: Bearer <token>'", headers={"WWW-Authenticate": "Bearer"})
        caller = tokens.caller(creds.credentials, "bearer")
        if caller is None:
            raise HTTPException(401, "unknown token", headers={"WWW-Authenticate": "Bearer"})
        return caller
    cookie = request.cookies.get(COOKIE)
    if cookie:
        caller = tokens.caller(cookie, "cookie")
        if caller is not None:
            return caller
    return ANONYMOUS


def reader(request: Request, caller: Caller = Depends(current_caller)) -> Caller:
    """Reads are open on loopback; bound elsewhere they need a token like everything else."""
    if request.app.state.reads_need_token and not caller.authenticated:
        raise HTTPException(401, "this server needs a token for every request (Authorization: Bearer …)",
                            headers={"WWW-Authenticate": "Bearer"})
    return caller


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host", "")


def writer(request: Request, caller: Caller = Depends(current_caller)) -> Caller:
    """Every state-changing call needs a token; from the page (cookie) also the CSRF header and the same origin."""
    if not caller.authenticated:
        raise HTTPException(401, "changes need a token (Authorization: Bearer …, or log in on the page)",
                            headers={"WWW-Authenticate": "Bearer"})
    if caller.via == "cookie":
        tokens: Tokens = request.app.state.tokens
        expected = tokens.csrf_for(request.cookies.get(COOKIE, ""))
        if request.headers.get(CSRF_HEADER) != expected or not _same_origin(request):
            raise HTTPException(403, "missing or wrong CSRF token: reload the page")
    return caller


def admin(caller: Caller = Depends(writer)) -> Caller:
    if not caller.is_admin:
        raise HTTPException(403, "this needs the admin token (FACE_WEB_ADMIN_TOKEN)")
    return caller


# ----------------------------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------------------------


def _error(status: int, detail: str, kind: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail, "error": kind}, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(FacePipelineError)
    async def _typed(request: Request, exc: FacePipelineError):
        return _error(exc.http_status, str(exc), type(exc).__name__)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        kind = {401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed", 413: "TooLarge"}.get(exc.status_code, "HTTPError")
        return _error(exc.status_code, str(exc.detail), kind, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        parts = []
        for e in exc.errors()[:5]:
            where = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
            parts.append(f"{where}: {e.get('msg')}" if where else str(e.get("msg")))
        return _error(400, "; ".join(parts) or "invalid request", "InvalidInput")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):  # a bug: logged with its traceback, answered in one line
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error(500, f"internal error ({type(exc).__name__}); see the server log", "InternalError")


def _allowed_hosts(settings: Settings) -> list[str] | None:
    """Host headers the app answers. On loopback, reads need no token, so a web page elsewhere must not reach the
    API through DNS rebinding (evil.example resolving to 127.0.0.1): only loopback names are accepted."""
    if settings.web_allowed_hosts:
        return [h.strip() for h in settings.web_allowed_hosts.split(",") if h.strip()]
    if is_loopback(settings.web_host):
        return sorted({"127.0.0.1", "localhost", "::1", "[::1]", settings.web_host})
    return None


def _install_docs(app: FastAPI) -> None:
    """Swagger UI at /docs from the files shipped in the ``fastapi-offline`` wheel (no CDN: the library's machine
    may be offline); FastAPI's CDN page only if that package is missing."""
    from fastapi.openapi.docs import get_swagger_ui_html

    try:
        import fastapi_offline

        assets = Path(fastapi_offline.__file__).parent / "static"
    except ImportError:  # pragma: no cover - declared dependency
        assets = None
    if assets is not None and (assets / "swagger-ui-bundle.js").is_file():
        app.mount("/docs-assets", StaticFiles(directory=assets), name="docs-assets")
        js, css = "/docs-assets/swagger-ui-bundle.js", "/docs-assets/swagger-ui.css"
    else:
        js = css = None

    @app.get("/docs", include_in_schema=False)
    def docs():
        kw = {"swagger_js_url": js, "swagger_css_url": css} if js else {}
        return get_swagger_ui_html(openapi_url="/openapi.json", title=app.title + " — API", swagger_favicon_url="", **kw)


# ----------------------------------------------------------------------------------------------------------------
# The factory
# ----------------------------------------------------------------------------------------------------------------


def create_app(settings: Settings | None = None, *, launcher: RunLauncher | None = None) -> FastAPI:
    """The application for one library. Prepares the home (folders, schema) and loads or generates the tokens;
    ``app.state.tokens.generated`` says which tokens were created now (``serve`` prints them once)."""
    from face_pipeline.web import routes_api, routes_page

    settings = settings or Settings()
    prepare_home(settings, set_dagster_home=False)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        app.state.launcher.close()

    app = FastAPI(
        lifespan=lifespan,
        title="face_pipeline people review",
        version="1",
        description="Name people, fix mistakes and look at faces. Reads are open on loopback; every change needs "
        "a bearer token (FACE_WEB_TOKEN); training, re-clustering and deleting people need the admin token.",
        docs_url=None,  # served below from local files: the docs must work without the network
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.settings = settings
    app.state.tokens = load_tokens(settings)
    app.state.reads_need_token = not is_loopback(settings.web_host)
    app.state.launcher = launcher or RunLauncher(settings)
    _install_error_handlers(app)

    @app.middleware("http")
    async def _limits_and_headers(request: Request, call_next):
        if request.method in STATE_CHANGING and request.url.path.startswith(API_PREFIX):
            try:
                length = int(request.headers.get("content-length") or 0)
            except ValueError:
                return _error(400, "bad Content-Length", "InvalidInput")
            if length > settings.web_max_upload_bytes + 65536:
                return _error(413, f"request body too large ({length} bytes; the limit is {settings.web_max_upload_bytes})", "TooLarge")
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if not request.url.path.startswith(("/docs", "/openapi")):
            response.headers.setdefault("Content-Security-Policy",
                                        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                                        "frame-ancestors 'none'; form-action 'self'")
        return response

    _install_docs(app)
    hosts = _allowed_hosts(settings)
    if hosts:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts)
    app.include_router(routes_api.router, prefix=API_PREFIX)
    app.include_router(routes_page.router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    return app
