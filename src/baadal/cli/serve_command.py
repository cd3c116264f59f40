"""``baadal serve``: the REST API (and later the portal) on uvicorn, per ``[web]``."""

from __future__ import annotations

import typer

from baadal.cli.door import handle_errors
from baadal.config import get_settings
from baadal.services import runtime

#: the factory uvicorn imports in each worker process (a string: the CLI does not import
#: the API door, and several workers need an import string anyway)
APP_FACTORY = "baadal.api.app:app_from_settings"


@handle_errors
def serve_cmd() -> None:
    """Serve the API at [web] host:port (127.0.0.1:8080 by default), under /api/v1."""
    import uvicorn

    settings = get_settings()
    runtime.checked_engine(settings)  # a database without the current schema fails here
    web = settings.web
    typer.echo(f"serving the API on {web.public_url or f'http://{web.host}:{web.port}'}/api/v1")
    uvicorn.run(
        APP_FACTORY,
        factory=True,
        host=web.host,
        port=web.port,
        workers=web.workers,
        ssl_certfile=web.tls_cert or None,
        ssl_keyfile=web.tls_key or None,
        log_config=None,
    )
