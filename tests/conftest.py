"""Shared fixtures: an isolated Baadal home, migrated SQLite and PostgreSQL databases."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from baadal.config import Settings, get_settings, load_settings
from baadal.db.schema import upgrade
from baadal.db.session import dispose, dispose_engines, make_engine
from baadal.drivers.remote import close_all as close_ssh_connections
from baadal.logs import close_logging
from tests.support import pg


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test gets its own Baadal home; no settings leak between tests."""
    home = tmp_path / "baadal-home"
    monkeypatch.setenv("BAADAL_HOME", str(home))
    monkeypatch.delenv("BAADAL_CONFIG", raising=False)
    monkeypatch.delenv("BAADAL_DATABASE__URL", raising=False)
    # the suite's hosts are test:/// and fake:/// (off by default: development only)
    monkeypatch.setenv("BAADAL_GENERAL__ALLOW_TEST_HYPERVISORS", "true")
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()
    dispose_engines()
    close_logging()
    close_ssh_connections()


@pytest.fixture
def settings(_isolated_home: Path) -> Settings:
    return load_settings()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'test.db'}"


@pytest.fixture
def sqlite_engine(sqlite_url: str) -> Iterator[Engine]:
    engine = make_engine(sqlite_url)
    upgrade(engine)
    yield engine
    dispose(engine)


@pytest.fixture(scope="session")
def pg_server() -> None:
    pg.ensure_server()


@pytest.fixture
def pg_url(pg_server: None) -> Iterator[str]:
    url = pg.create_database()
    yield url
    dispose_engines()
    pg.drop_database(url)


@pytest.fixture
def pg_engine(pg_url: str) -> Iterator[Engine]:
    engine = make_engine(pg_url)
    upgrade(engine)
    yield engine
    dispose(engine)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated database URL, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'param.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    return url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    dispose(eng)
