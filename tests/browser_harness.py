"""A real browser for the tests: Debian's Chromium driven by Playwright (PyPI).

Chromium comes from the system (``apt-get install chromium``, which ``.ci/run`` does);
Playwright only drives it (``executable_path``), so no browser is downloaded. Without
Chromium the browser tests are skipped on a developer's machine and fail under CI.
"""
from __future__ import annotations

import contextlib
import functools
import http.server
import os
import shutil
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]
LOOPBACK = {"127.0.0.1", "localhost", "[::1]", "::1"}


def chromium_path() -> str:
    """The system Chromium, or skip (fail under CI, which installs it)."""
    path = os.environ.get("RESTR_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file():
        if os.environ.get("CI"):
            pytest.fail(f"no Chromium at {path}: .ci/run installs Debian's chromium with apt-get")
        pytest.skip("no Chromium (apt-get install chromium) for the browser tests")
    try:
        import playwright  # noqa: F401
    except ImportError:
        pytest.fail("playwright is not installed: pip install -r requirements.txt")
    return path


@contextlib.contextmanager
def chromium(profile_dir: Path, width: int = 1280, height: int = 900):
    """A Chromium browser context with a fresh user-data-dir; yields the context."""
    from playwright.sync_api import sync_playwright

    exe = chromium_path()
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(profile_dir), executable_path=exe, headless=True,
                                                   args=CHROMIUM_ARGS, viewport={"width": width, "height": height})
        try:
            yield ctx
        finally:
            ctx.close()


def offline(ctx) -> list[str]:
    """Cut the context off from everything but this machine: any request to another host is
    aborted (as if the network were down) and its URL recorded in the returned list."""
    blocked: list[str] = []

    def handle(route):
        url = route.request.url
        host = urlparse(url).hostname or ""
        if url.startswith(("data:", "blob:", "file:")) or host in LOOPBACK:
            route.continue_()
        else:
            blocked.append(url)
            route.abort("internetdisconnected")

    ctx.route("**/*", handle)
    return blocked


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def serve_folder(folder: Path):
    """A loopback HTTP server over ``folder`` for the duration; yields its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
