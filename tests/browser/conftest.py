"""Browser tests: Playwright's Python package driving Debian's Chromium (ANNOTATION.md §6.8).

Never ``playwright install`` (its browser download is not available here). Chromium comes from
``apt-get install -y chromium``; without it these tests fail and say so.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn

from hggt.annotate.app import create_app
from tests.annotate.fixtures import Study, make_study

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1280, "height": 800}


# Module scope, not session: Playwright's sync API keeps an event loop on the main thread while
# it runs, and Prefect's sync-compatible calls in later test modules would then return
# un-awaited coroutines.
@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests need Debian's Chromium "
            "(`apt-get install -y chromium`; never `playwright install`). "
            "Set CHROMIUM_PATH to use another Chromium binary."
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield b
        b.close()


@dataclass
class Live:
    url: str
    study: Study

    def link(self, annotator: str) -> str:
        return f"{self.url}/#t={self.study.tokens[annotator]}"


@pytest.fixture
def live(tmp_path):
    """A study (4 groups, 3 annotators, k=3, one control and one repeat each) served by uvicorn
    in a thread of this process."""
    study = make_study(tmp_path, annotators=3, k=3, controls=0.25, repeats=0.25)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(study.db), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield Live(f"http://127.0.0.1:{port}", study)
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


@pytest.fixture
def context(browser):
    """A fresh browser profile (own localStorage); page errors fail the test."""
    ctx = browser.new_context(viewport=VIEWPORT)
    errors: list[str] = []
    ctx.on("weberror", lambda e: errors.append(str(e.error)))
    yield ctx
    ctx.close()
    assert errors == [], f"JavaScript errors: {errors}"


@pytest.fixture
def shot(tmp_path, request):
    """``shot(page, name)`` saves a screenshot under the test's tmp dir and $HGGT_SCREENSHOTS."""
    extra = os.environ.get("HGGT_SCREENSHOTS")

    def save(page, name: str) -> Path:
        path = tmp_path / "screenshots" / f"{request.node.name}-{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(path))
        if extra:
            Path(extra).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(extra) / path.name)
        return path

    return save
