"""Drive one headless Chromium from Python through ``tests/browser/bridge.mjs`` (playwright-core).

The emulated headset is the ``iwer`` npm package, injected as an init script before the page's
own scripts run; the product pages never load it themselves.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

from hil_robot.procs import spawn

REPO = Path(__file__).resolve().parents[2]
BROWSER_DIR = REPO / "tests" / "browser"
BRIDGE = BROWSER_DIR / "bridge.mjs"
IWER_JS = BROWSER_DIR / "node_modules" / "iwer" / "build" / "iwer.min.js"
CHROMIUM = os.environ.get("HIL_CHROMIUM", "/usr/bin/chromium")

# runs before the page: install an emulated Quest 3 over navigator.xr, reachable as window.__xr
IWER_INIT = """
(() => {
  const device = new IWER.XRDevice(IWER.metaQuest3);
  device.installRuntime({ forceInstall: true });
  device.controllers.right.position.set(0.2, 1.2, -0.3);
  device.controllers.left.position.set(-0.2, 1.2, -0.3);
  window.__xr = device;
})();
"""


def unavailable_reason() -> str | None:
    """None when the browser tests can run here, else what is missing and how to get it."""
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM}: run `sudo apt-get install chromium` (scripts/install_system_deps.sh)"
    if shutil.which("node") is None:
        return "no node: run `sudo apt-get install nodejs npm`"
    if not (BROWSER_DIR / "node_modules" / "playwright-core").is_dir() or not IWER_JS.is_file():
        return "npm pieces missing: run `cd tests/browser && npm install` (make setup does it)"
    return None


class BrowserError(RuntimeError):
    pass


class Browser:
    """One Chromium for many pages (one at a time). Every call has a timeout; nothing hangs."""

    def __init__(self, timeout_s: float = 30.0) -> None:
        reason = unavailable_reason()
        if reason:
            raise BrowserError(reason)
        self.timeout_s = timeout_s
        env = dict(os.environ, HIL_CHROMIUM=CHROMIUM)
        self.proc = spawn(  # the bridge (and its Chromium) end with this process, even if it is killed
            ["node", str(BRIDGE)], cwd=BROWSER_DIR, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env=env, new_group=False,
        )
        self._replies: queue.Queue[dict[str, Any]] = queue.Queue()
        self._stderr: list[str] = []
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        self._id = 0
        self._expect(0, 60.0)  # Chromium launched

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self._replies.put(json.loads(line))
            except ValueError:
                self._stderr.append(line)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line)

    def _expect(self, rid: int, timeout_s: float) -> Any:
        try:
            reply = self._replies.get(timeout=timeout_s)
        except queue.Empty:
            raise BrowserError(f"browser bridge silent for {timeout_s} s; stderr: {''.join(self._stderr[-20:])}") from None
        if reply.get("id") != rid:
            raise BrowserError(f"out-of-order bridge reply {reply}")
        if not reply.get("ok"):
            raise BrowserError(str(reply.get("error")))
        return reply.get("value")

    def call(self, op: str, timeout_s: float | None = None, **kwargs: Any) -> Any:
        if self.proc.poll() is not None:
            raise BrowserError(f"browser bridge exited ({self.proc.returncode}): {''.join(self._stderr[-20:])}")
        self._id += 1
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"id": self._id, "op": op, **kwargs}) + "\n")
        self.proc.stdin.flush()
        return self._expect(self._id, timeout_s or self.timeout_s)

    def open(self, url: str, *, emulate_xr: bool = False, viewport: tuple[int, int] | None = None) -> None:
        kw: dict[str, Any] = {"url": url}
        if emulate_xr:
            kw["init_scripts"] = [str(IWER_JS)]
            kw["init_js"] = IWER_INIT
        if viewport:
            kw["viewport"] = list(viewport)
        self.call("open", **kw)

    def eval(self, js: str, timeout_s: float | None = None) -> Any:
        return self.call("eval", js=js, timeout_s=timeout_s)

    def wait(self, js: str, timeout_s: float = 5.0) -> None:
        self.call("wait", js=js, timeout_ms=int(timeout_s * 1000), timeout_s=timeout_s + 5)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.call("quit", timeout_s=10)
            except (BrowserError, OSError, ValueError):
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
