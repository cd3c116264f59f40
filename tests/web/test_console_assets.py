"""The vendored noVNC loads in Chromium from ``baadal serve``'s /static (no lab needed):
every module rfb.js imports is served, and nothing comes from elsewhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from baadal.db.schema import upgrade
from baadal.db.session import make_engine

IMPORT_RFB_JS = "() => import('/static/novnc/core/rfb.js').then((m) => typeof m.default)"


def test_novnc_loads_from_the_portal(tmp_path: Path, serve: Any, new_page: Any) -> None:
    home = tmp_path / "home"
    home.mkdir()
    engine = make_engine(f"sqlite:///{home / 'baadal.db'}")
    upgrade(engine)
    engine.dispose()
    base = serve(home)
    page = new_page(base)
    requests: list[str] = []
    failed: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("response", lambda r: r.ok or failed.append(f"{r.status} {r.url}"))
    page.goto("/login")
    assert page.evaluate(IMPORT_RFB_JS) == "function"
    modules = [url for url in requests if "/static/novnc/" in url]
    assert len(modules) > 30 and not failed, failed
    assert all(url.startswith(base) for url in requests), requests
