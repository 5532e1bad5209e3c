"""``face-pipeline serve``: the people page and the HTTP API (one uvicorn process).

Registered into the main CLI by :func:`register` (one line in ``cli.py``), so the web's dependencies are imported
only when ``serve`` runs.
"""

from __future__ import annotations

from typing import Optional

import typer


def serve(
    host: Optional[str] = typer.Option(None, "--host", help="Address to bind (default FACE_WEB_HOST or 127.0.0.1). "
                                       "Anything but loopback makes every request need a token."),
    port: Optional[int] = typer.Option(None, "--port", help="Port (default FACE_WEB_PORT or 8800)."),
) -> None:
    """Serve the people page and the HTTP API (docs at /docs)."""
    import uvicorn

    from face_pipeline.settings import Settings
    from face_pipeline.web import create_app
    from face_pipeline.web.auth import tokens_file

    overrides = {k: v for k, v in {"web_host": host, "web_port": port}.items() if v is not None}
    settings = Settings(**overrides)
    app = create_app(settings)
    tokens = app.state.tokens
    url = f"http://{settings.web_host if ':' not in settings.web_host else '[' + settings.web_host + ']'}:{settings.web_port}/"
    print(f"people page: {url}   API docs: {url}docs   library: {settings.home_dir}", flush=True)
    if tokens.generated:  # printed once: on later starts the tokens are only in the file (mode 0600)
        print(f"new tokens written to {tokens_file(settings)} (shown only now):", flush=True)
        if "user" in tokens.generated:
            print(f"  FACE_WEB_TOKEN={tokens.user}        labelling: paste into the page's sign-in box, or curl -H 'Authorization: Bearer …'", flush=True)
        if "admin" in tokens.generated:
            print(f"  FACE_WEB_ADMIN_TOKEN={tokens.admin}  also training, re-clustering, deleting people", flush=True)
    else:
        print(f"tokens: FACE_WEB_TOKEN / FACE_WEB_ADMIN_TOKEN or {tokens_file(settings)}", flush=True)
    uvicorn.run(app, host=settings.web_host, port=settings.web_port, log_level="warning", proxy_headers=False)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
