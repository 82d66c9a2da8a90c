"""A real TensorBoard server and headless Chromium, for the tests and the README screenshots.

Both are started as subprocesses with bounded waits and always stopped
(the whole process group, so TensorBoard's data-server child goes too).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
#: no sandbox (containers run as root), no GPU, no network chatter, a throw-away profile
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--disable-dev-shm-usage")


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """Stop a process started in its own session, and everything it started."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def chromium(args: list[str], timeout: float = 90.0) -> subprocess.CompletedProcess:
    """Run headless Chromium once with ``args`` (plus the flags above and a fresh profile)."""
    exe = find_chromium()
    if exe is None:
        raise FileNotFoundError("chromium is not installed (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="nnhealth-chromium-") as profile:
        cmd = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop(proc)
            out, err = proc.communicate()
            raise TimeoutError(f"chromium did not finish within {timeout:g} s: {err.decode(errors='replace')[-2000:]}")
        finally:
            _stop(proc)
    return subprocess.CompletedProcess(cmd, proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


def screenshot(url: str, out: Path, size: tuple[int, int] = (1280, 1600), wait_ms: int = 5000,
               timeout: float = 90.0) -> Path:
    """A PNG of ``url`` as Chromium renders it after ``wait_ms`` of (virtual) time."""
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out.unlink()
    result = chromium([f"--window-size={size[0]},{size[1]}", f"--virtual-time-budget={wait_ms}",
                       f"--screenshot={out}", url], timeout=timeout)
    if not out.is_file():
        raise RuntimeError(f"chromium wrote no screenshot (exit {result.returncode}): {result.stderr[-2000:]}")
    return out


def dump_dom(url: str, wait_ms: int = 3000, timeout: float = 90.0) -> str:
    """The page's DOM after Chromium loaded it (and ran for ``wait_ms`` of virtual time)."""
    result = chromium([f"--virtual-time-budget={wait_ms}", "--dump-dom", url], timeout=timeout)
    if result.returncode != 0 or not result.stdout.strip():
        raise RuntimeError(f"chromium --dump-dom failed (exit {result.returncode}): {result.stderr[-2000:]}")
    return result.stdout


class TensorBoardServer:
    """``tensorboard --logdir LOGDIR --host 127.0.0.1 --port P`` running in a subprocess.

    ``with TensorBoardServer(logdir) as tb: tb.get("/data/plugin/scalars/tags")``; stopped on the
    way out, and by ``start`` itself when it does not come up.
    """

    def __init__(self, logdir, port: int | None = None):
        self.logdir = str(logdir)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self._log = tempfile.TemporaryFile()

    def start(self, timeout: float = 60.0) -> TensorBoardServer:
        """Start it and wait until it answers (at most ``timeout`` seconds)."""
        cmd = [sys.executable, "-m", "tensorboard.main", "--logdir", self.logdir, "--host", "127.0.0.1",
               "--port", str(self.port), "--reload_interval", "1"]
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tensorboard exited with {self.proc.returncode}: {self.output()}")
            try:
                self.get("/data/environment", timeout=2)
                return self
            except (OSError, urllib.error.URLError):
                time.sleep(0.3)
        self.stop()
        raise TimeoutError(f"tensorboard did not answer within {timeout:g} s: {self.output()}")

    def get(self, path: str, timeout: float = 10.0, **params) -> object:
        """GET a JSON data route, e.g. ``get("/data/plugin/scalars/tags")``."""
        query = ("?" + urllib.parse.urlencode(params)) if params else ""
        with urllib.request.urlopen(self.url + path + query, timeout=timeout) as response:
            return json.loads(response.read().decode("utf-8"))

    def wait_for(self, check, timeout: float = 60.0, interval: float = 0.5):
        """Poll ``check(server)`` until it returns something true (TensorBoard loads runs lazily)."""
        deadline, last = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            try:
                got = check(self)
                if got:
                    return got
            except (OSError, urllib.error.URLError, ValueError, KeyError) as e:
                last = e
            time.sleep(interval)
        raise TimeoutError(f"tensorboard at {self.url} did not serve the data within {timeout:g} s "
                           f"(last error: {last!r}); its log: {self.output()}")

    def output(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)

    def __enter__(self) -> TensorBoardServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        self._log.close()

