"""Headless Chromium volunteers: real browsers running the real volunteer page.

Used by `crowdtrain local --volunteers N`, the browser tests and benchmarks.
Chromium is Debian's (/usr/bin/chromium), driven by Playwright without its
own browser download, with flags that keep it off the network beyond the
page it is given, and a fresh profile each time.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from typing import Any

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def open_context(playwright: Any, profile: str, webgpu: bool = False, device: str | None = None) -> Any:
    """A persistent browser context on a fresh profile folder (Chromium's
    --user-data-dir, which Playwright only accepts this way); `webgpu` adds
    the flag under which headless Chromium offers a (SwiftShader) WebGPU
    adapter to pages served from http://127.0.0.1; `device` emulates one of
    Playwright's devices (viewport, touch, mobile user agent), e.g. "Pixel 7"."""
    if not shutil.which(CHROMIUM):
        raise RuntimeError(f"{CHROMIUM} not found: install Debian's chromium package (apt-get install chromium)")
    screen = {"viewport": {"width": 1100, "height": 900}}
    if device:
        screen = {k: v for k, v in playwright.devices[device].items() if k != "default_browser_type"}
    return playwright.chromium.launch_persistent_context(
        profile,
        executable_path=CHROMIUM,
        headless=True,
        args=FLAGS + (["--enable-unsafe-webgpu"] if webgpu else []),
        **screen,
    )


def volunteer_url(web_url: str, name: str, backend: str = "auto") -> str:
    return f"{web_url}?autostart&volunteer={name}&backend={backend}"


class Swarm:
    """N volunteer pages in one headless Chromium, each with its own volunteer id."""

    def __init__(self, web_url: str, count: int, backend: str = "auto"):
        self.web_url, self.count, self.backend = web_url, count, backend
        self._ready, self._stop = threading.Event(), threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="swarm", daemon=True)

    def start(self) -> "Swarm":
        self._thread.start()
        self._ready.wait(120)
        if self._error:
            raise self._error
        return self

    def _run(self) -> None:
        from playwright.sync_api import sync_playwright

        profile = tempfile.mkdtemp(prefix="crowdtrain-swarm-")
        try:
            with sync_playwright() as playwright:
                context = open_context(playwright, profile)
                for i in range(self.count):
                    context.new_page().goto(volunteer_url(self.web_url, f"swarm-{i + 1}", self.backend))
                self._ready.set()
                self._stop.wait()
                context.close()
        except BaseException as err:  # reported by start()
            self._error = err
            self._ready.set()
        finally:
            shutil.rmtree(profile, ignore_errors=True)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
