"""Headless Chromium driven over the Chrome DevTools Protocol, shared by the browser tests.

Chromium (Debian's `chromium`) runs headless with a fresh profile; the protocol is spoken with
the `websockets` package Airflow already depends on. Without Chromium a test fails and says how
to install it (`make test` installs it first, scripts/ensure_chromium.sh).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
)
STEP_TIMEOUT_S = 90


def launch_env(name: str) -> str | None:
    """`name` from the environment pytest was started with.

    tests/conftest.py removes RECSYS_* variables from os.environ so that no test reads a
    developer's settings; the process's initial environment still holds what CI exported.
    """
    if name in os.environ:
        return os.environ[name]
    try:
        initial = Path("/proc/self/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for item in initial:
        key, _, value = item.partition(b"=")
        if key == name.encode():
            return value.decode(errors="replace")
    return None


def chromium() -> str:
    path = launch_env("RECSYS_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if path:
        return path
    why = "no `chromium` on PATH (Debian/Ubuntu: apt-get install -y chromium)"
    pytest.fail(f"{why}; `make test` installs it (scripts/ensure_chromium.sh)")


class Browser:
    """One headless Chromium page driven over the DevTools protocol."""

    def __init__(self, exe: str, profile: Path, log: Path):
        profile.mkdir(parents=True)
        self.log = log
        self.proc = subprocess.Popen(
            [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-address=127.0.0.1",
             "--remote-debugging-port=0", "--window-size=1400,1000", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=open(log, "wb"), stdin=subprocess.DEVNULL, start_new_session=True,
        )
        port_file = profile / "DevToolsActivePort"  # Chromium writes its port here once it listens
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Chromium did not start: {log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.2)
        port = int(port_file.read_text().split()[0])
        page = next(t for t in httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=30).json() if t["type"] == "page")
        from websockets.sync.client import connect

        # Entered as a context manager (websockets wants that); close() leaves it.
        self._ws_context = connect(page["webSocketDebuggerUrl"], max_size=64 * 1024 * 1024, open_timeout=30)
        self.ws = self._ws_context.__enter__()
        self._id = 0
        self.call("Page.enable")
        self.call("Runtime.enable")

    def call(self, method: str, **params) -> dict:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:  # events arrive in between; only the answer to this call matters
            msg = json.loads(self.ws.recv(timeout=STEP_TIMEOUT_S))
            if msg.get("id") == self._id:
                if "error" in msg:
                    error = NavigatedAway if _is_navigation(msg["error"]) else RuntimeError
                    raise error(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def js(self, expression: str):
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression[:80]}...: {r['exceptionDetails']}")
        return r.get("result", {}).get("value")

    def wait_for(self, expression: str, what: str, timeout: float = STEP_TIMEOUT_S):
        deadline = time.monotonic() + timeout
        guarded = f"(() => {{ try {{ return ({expression}); }} catch (e) {{ return null; }} }})()"  # mid-navigation
        while time.monotonic() < deadline:
            try:
                value = self.js(guarded)
            except NavigatedAway:  # the page navigated while it was being asked; ask the new one
                value = None
            if value:
                return value
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what}; page {self.js('location.href')}:\n{self.text()[:1500]}")

    def text(self) -> str:
        return self.js("document.body ? document.body.innerText : ''") or ""

    def type_into(self, selector: str, text: str) -> None:
        self.js(f"document.querySelector({json.dumps(selector)}).focus()")
        self.call("Input.insertText", text=text)  # real key input, so the page's own handlers see it

    def click_text(self, text: str, within: str = "document", tags: str = "button,label,[role=radio],a") -> bool:
        """Click the innermost visible element among `tags` whose text is exactly `text`."""
        return self.js(
            f"""(() => {{
              const root = {within};
              if (!root) return false;
              const els = [...root.querySelectorAll({json.dumps(tags)})]
                .filter(e => e.innerText && e.innerText.trim() === {json.dumps(text)} && e.offsetParent !== null);
              if (!els.length) return false;
              els[els.length - 1].click();
              return true;
            }})()"""
        )

    def screenshot(self, path: Path) -> Path:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))
        return path

    def close(self) -> None:
        try:
            self._ws_context.__exit__(None, None, None)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, 15)
                try:
                    self.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, 9)
                    self.proc.wait(timeout=15)


class NavigatedAway(RuntimeError):
    """An evaluation that the page's own navigation cut short; asking again reaches the new page."""


def _is_navigation(error: dict) -> bool:
    message = str(error.get("message", ""))
    return any(m in message for m in ("navigated or closed", "context was destroyed", "Cannot find context"))


def sign_in(browser: Browser, af, path: str) -> None:
    """Open `path` on the api-server of `af` and sign in through the simple auth manager's own form."""
    browser.call("Page.navigate", url=f"{af.url}{path}")
    browser.wait_for("!!document.querySelector('input[name=password]')", "the sign-in form")
    browser.type_into("input[name=username]", af.user)
    browser.type_into("input[name=password]", af.password)
    assert browser.click_text("Sign in", tags="button")
    browser.wait_for("!location.pathname.startsWith('/auth')", "the redirect after signing in")


@contextmanager
def browsing(exe: str, folder: Path, name: str):
    """A Browser for one test, closed afterwards; on a failure `<name>-failure.png` is saved in
    `folder` and its path printed, so the page that failed can be looked at."""
    browser = Browser(exe, folder / "chromium-profile", folder / "chromium.log")
    try:
        yield browser
    except BaseException:
        print(f"UI failure screenshot: {browser.screenshot(folder / f'{name}-failure.png')}")
        raise
    finally:
        browser.close()
