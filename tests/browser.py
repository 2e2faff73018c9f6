"""Real headless Chromium for tests, driven over the DevTools protocol on a pipe.

No browser download and no driver: Debian's ``chromium`` package (``.ci/run`` installs it) is
started with ``--remote-debugging-pipe``, which speaks JSON messages separated by NUL on file
descriptors 3 (commands in) and 4 (answers and events out). ``Browser`` sends a command and
reads until its answer, keeping the events that arrive meanwhile; ``Tab`` is one page target.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

CHROMIUM = next((path for name in ("chromium", "chromium-browser", "google-chrome")
                 if (path := shutil.which(name))), None)
COMMAND_TIMEOUT = 30.0
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
    "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--disable-quic", "--no-proxy-server", "--disable-extensions",
    "--disable-features=Translate,MediaRouter,OptimizationHints", "--hide-scrollbars",
    "--mute-audio", "--remote-debugging-pipe",
)


class BrowserError(Exception):
    """The browser died, timed out, or answered a command with an error."""


class Browser:
    def __init__(self, process: subprocess.Popen[bytes], commands: int, answers: int, log: Path) -> None:
        self.process = process
        self._commands = commands
        self._answers = answers
        self._buffer = b""
        self._next_id = 0
        self.log = log
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             timeout: float = COMMAND_TIMEOUT) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            answer = self._read(deadline, method)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise BrowserError(f"{method}: {answer['error']}")
                result: dict[str, Any] = answer.get("result", {})
                return result
            self.events.append(answer)

    def wait_event(self, method: str, session: str | None,
                   timeout: float = COMMAND_TIMEOUT) -> dict[str, Any]:
        """The first event ``method`` (for ``session``) not yet consumed; consumes it."""
        deadline = time.monotonic() + timeout
        while True:
            for index, event in enumerate(self.events):
                if event.get("method") == method and event.get("sessionId") == session:
                    del self.events[index]
                    return event
            self.events.append(self._read(deadline, method))

    def _read(self, deadline: float, waiting_for: str) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"timed out waiting for {waiting_for}\n{self.log_tail()}")
            ready, _, _ = select.select([self._answers], [], [], left)
            if ready:
                chunk = os.read(self._answers, 1 << 20)
                if not chunk:
                    raise BrowserError(f"chromium exited ({self.process.poll()})\n{self.log_tail()}")
                self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        decoded: dict[str, Any] = json.loads(message)
        return decoded

    def log_tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])

    @contextmanager
    def tab(self, width: int = 1280, height: int = 900) -> Iterator[Tab]:
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        tab = Tab(self, session)
        tab.call("Page.enable")
        tab.call("Network.enable")
        tab.call("Emulation.setDeviceMetricsOverride",
                 {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        try:
            yield tab
        finally:
            self.call("Target.closeTarget", {"targetId": target})


class Tab:
    def __init__(self, browser: Browser, session: str) -> None:
        self.browser = browser
        self.session = session

    def call(self, method: str, params: dict[str, Any] | None = None,
             timeout: float = COMMAND_TIMEOUT) -> dict[str, Any]:
        return self.browser.call(method, params, self.session, timeout)

    def navigate(self, url: str, timeout: float = COMMAND_TIMEOUT) -> None:
        """Go to ``url`` and wait for its load event (every image loaded or failed)."""
        self.browser.events = [e for e in self.browser.events if e.get("sessionId") != self.session]
        answer = self.call("Page.navigate", {"url": url})
        if answer.get("errorText"):
            raise BrowserError(f"navigate {url}: {answer['errorText']}")
        self.browser.wait_event("Page.loadEventFired", self.session, timeout)

    def evaluate(self, expression: str) -> Any:
        answer = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        if "exceptionDetails" in answer:
            raise BrowserError(f"{expression}: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    def wait_for(self, expression: str, timeout: float = COMMAND_TIMEOUT) -> Any:
        deadline = time.monotonic() + timeout
        while not (value := self.evaluate(expression)):
            if time.monotonic() > deadline:
                raise BrowserError(f"timed out waiting for {expression}")
            time.sleep(0.05)
        return value

    def hover(self, x: float, y: float) -> None:
        self.call("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y})

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    def network_requests(self) -> list[dict[str, Any]]:
        """``Network.requestWillBeSent`` events seen so far on this tab (and not consumed)."""
        return [e["params"] for e in self.browser.events
                if e.get("sessionId") == self.session and e.get("method") == "Network.requestWillBeSent"]


@contextmanager
def chromium(profile: Path) -> Iterator[Browser]:
    """A headless Chromium with a fresh profile (so a fresh HTTP cache) in ``profile``."""
    if CHROMIUM is None:
        raise BrowserError("no chromium binary: apt-get install chromium")
    profile.mkdir(parents=True, exist_ok=True)
    to_browser_read, to_browser_write = os.pipe()
    from_browser_read, from_browser_write = os.pipe()
    log = profile.parent / f"{profile.name}.log"
    # The browser reads commands on fd 3 and writes answers on fd 4; bash puts them there (dash
    # takes one-digit fds only) and closes the originals.
    inward, outward = to_browser_read, from_browser_write
    script = f'exec "$@" 3<&{inward} 4>&{outward} {inward}<&- {outward}>&-'
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            ["bash", "-c", script, "bash", CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
            pass_fds=(to_browser_read, from_browser_write), start_new_session=True)
    os.close(to_browser_read)
    os.close(from_browser_write)
    browser = Browser(process, to_browser_write, from_browser_read, log)
    try:
        yield browser
    finally:
        with suppress(BrowserError, OSError):
            browser.call("Browser.close", timeout=5)
        try:
            process.wait(timeout=10)
        finally:
            with suppress(ProcessLookupError):  # its zygote and renderers, if any are left
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        os.close(to_browser_write)
        os.close(from_browser_read)
