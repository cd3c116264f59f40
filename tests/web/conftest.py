"""Browser tests (marker ``web``): Debian's Chromium driven by Playwright, and ``baadal
serve`` as a real server process.

Fixtures:

* ``browser``: one headless Chromium for the session (``/usr/bin/chromium``; Playwright's
  own browser download is never used: see ../shared/spec/lab-notes.md);
* ``new_page(base_url)``: a page in a fresh context (its own cookies, 1280x800); closed
  after the test, with a screenshot of each page left open when the test failed;
* ``artifacts``: ``tests/web/artifacts/<test name>/`` (ignored by git) for screenshots;
* ``serve(home, **env)``: ``python -m baadal serve`` (API, portal and websockify) on free
  loopback ports for a Baadal home, until the test ends; returns its base URL.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import baadal
from tests.support.sshd import free_port

CHROMIUM = "/usr/bin/chromium"
SRC = str(Path(baadal.__file__).resolve().parents[1])
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
VIEWPORT = {"width": 1280, "height": 800}
#: how long ``baadal serve`` may take to answer (it starts websockify first)
SERVE_START_S = 30.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test in this directory is a browser test."""
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.web)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Remember each phase's outcome on the item (for screenshots of failed tests)."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Path:
    """This test's artifact directory, emptied first."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    path = ARTIFACTS / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


@pytest.fixture
def new_page(
    browser: Any, artifacts: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[[str], Any]]:
    contexts: list[Any] = []

    def make(base_url: str) -> Any:
        context = browser.new_context(base_url=base_url, viewport=VIEWPORT)
        contexts.append(context)
        return context.new_page()

    yield make
    failed = getattr(request.node, "rep_call", None) is None or request.node.rep_call.failed
    for i, context in enumerate(contexts):
        if failed:
            for j, page in enumerate(context.pages):
                with contextlib.suppress(Exception):  # the page may be gone
                    page.screenshot(path=str(artifacts / f"failed-{i}-{j}.png"), full_page=True)
        context.close()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # it answers (401/404 is an answer)
    except OSError:
        return False


@pytest.fixture
def serve() -> Iterator[Callable[..., str]]:
    processes: list[subprocess.Popen[bytes]] = []

    def start(home: Path, **env: str) -> str:
        port = free_port()
        environment = {
            **os.environ,
            "BAADAL_HOME": str(home),
            "BAADAL_WEB__PORT": str(port),
            "BAADAL_NOVNC__PORT": str(free_port()),
            "PYTHONPATH": SRC,  # this checkout's package, wherever pytest runs from
            **env,
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "baadal", "serve"], env=environment, stdin=subprocess.DEVNULL
        )
        processes.append(process)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + SERVE_START_S
        while not _answers(f"{base}/api/v1/openapi.json"):
            assert process.poll() is None, f"baadal serve exited with {process.returncode}"
            assert time.monotonic() < deadline, "baadal serve did not answer"
            time.sleep(0.2)
        return base

    yield start
    for process in processes:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
