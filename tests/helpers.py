"""Helpers the test files share (`from helpers import ...`; fixtures live in conftest.py): the CLI run
in-process, the one-line-error check, tiny checkpoints, test pictures, a real loopback server and
bounded waits that fail with a message saying what never happened."""

from __future__ import annotations

import contextlib
import io
import os
import queue
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

from pokemon_classifier.synthetic import CLASSES, draw_shape, make_dataset  # noqa: F401  (re-exported)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pokemon"
# the developer's cache, read before any test isolates it: shared-data tests reuse its lite0 features
# of 6,555 images (minutes to compute) instead of rebuilding them in every test's temp cache
USER_CACHE = Path(os.environ.get("POKEMON_CLASSIFIER_CACHE", Path.home() / ".cache" / "pokemon-classifier"))


def run_cli(*args, cwd=None):
    """Run the CLI in-process; returns (exit code, stdout, stderr) via capsys-free subprocess-like API."""
    from pokemon_classifier.cli import main

    out, err = io.StringIO(), io.StringIO()
    old = os.getcwd()
    try:
        if cwd:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in args])
            except SystemExit as e:
                code = e.code
    finally:
        os.chdir(old)
    return code, out.getvalue(), err.getvalue()


def assert_one_line_error(code, err: str, *needles: str, case: str = "") -> str:
    """The project's error model: exit code 2 and exactly one stderr line `error: ...` holding every
    needle, with no traceback and no numpy repr (np.int64(3)) leaking into it; returns the line."""
    case = f"{case}: " if case else ""
    lines = err.strip().splitlines()
    assert "Traceback" not in err, f"{case}traceback\n{err}"
    assert code == 2, f"{case}exit {code}\n{err}"
    assert len(lines) == 1 and err.count("\n") <= 1, f"{case}{len(lines)} lines on stderr\n{err}"
    assert lines[0].startswith("error: "), f"{case}{lines[0]}"
    for needle in needles:
        assert needle in lines[0], f"{case}{needle!r} not in {lines[0]!r}"
    assert "np.int64" not in err and "np.float" not in err, f"{case}numpy repr in {lines[0]!r}"
    return lines[0]


def stale_temp_files(stale: list[Path], keep: list[Path]):
    """Plant temp files an hour old, as a killed run leaves them (`stale`, named like the atomic
    writer's `.NAME.XXXXXXXX.tmp`) and look-alikes of the user's (`keep`); returns a check that the
    next run removed exactly the stale ones."""
    old = time.time() - 3600
    for p in stale + keep:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
        os.utime(p, (old, old))
    return lambda: not any(p.exists() for p in stale) and all(p.exists() for p in keep)


def tiny_checkpoint(path: Path, size: int = 32, arch: str = "mobilenet_v3_small", **extra) -> Path:
    """A randomly initialised checkpoint in the project's format (seeded, so outputs are repeatable)."""
    import torch

    from pokemon_classifier import pokedex
    from pokemon_classifier.models import build_model, preprocessing

    torch.manual_seed(0)
    torch.save({"model": build_model(arch).state_dict(), "arch": arch, "class_ids": list(pokedex.IDS),
                "preprocessing": preprocessing(arch, size), **extra}, path)
    return path


def png(shape: str = "circle", fmt: str = "PNG", seed: int = 0) -> bytes:
    """A generated picture of `shape` in the colour of the synthetic data's second class, as file bytes
    (another `seed`, another picture: the collect folder stores the same picture once)."""
    import numpy as np

    b = io.BytesIO()
    draw_shape(shape, CLASSES[1][1], rng=np.random.default_rng(seed)).save(b, fmt)
    return b.getvalue()


# ---------------------------------------------------------------- bounded waits

SERVER_START_S = 60


def wait_for(event: threading.Event, timeout: float, what: str) -> None:
    """Wait for `event`; fail, naming `what`, if it has not happened within `timeout` seconds."""
    assert event.wait(timeout), f"{what}: not within {timeout:g} s"


def wait_for_line(proc: subprocess.Popen, needle: str, timeout: float) -> str:
    """Read `proc`'s text stdout until a line holds `needle`; returns that line. Fails, with what the
    process printed, if it exits first or `timeout` seconds pass."""
    lines: queue.Queue = queue.Queue()
    seen: list[str] = []

    def pump():
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)  # end of output: the process closed stdout (exited)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"no line with {needle!r} within {timeout:g} s; output so far:\n"
                                 + "".join(seen)) from None
        if line is None:
            raise AssertionError(f"the process ended (exit {proc.wait()}) before printing {needle!r}:\n"
                                 + "".join(seen))
        seen.append(line)
        if needle in line:
            return line


@contextlib.contextmanager
def served_app(app, **config):
    """A real uvicorn on a free loopback port, in a thread; yields the port once it accepts
    connections (config: e.g. ssl files). Fails if it has not started within SERVER_START_S."""
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets=None):
            try:
                await super().startup(sockets=sockets)
            finally:
                self.settled.set()

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # handed to uvicorn: no other process can take the port in between
    port = sock.getsockname()[1]
    srv = Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", **config))
    srv.settled = threading.Event()  # startup finished, failed, or the thread ended

    def run():
        try:
            srv.run(sockets=[sock])
        finally:
            srv.settled.set()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        wait_for(srv.settled, SERVER_START_S, f"uvicorn on 127.0.0.1:{port} starting")
        assert srv.started, f"uvicorn on 127.0.0.1:{port} did not start (see its log above)"
        yield port
    finally:
        srv.should_exit = True
        t.join(10)
        sock.close()


# ---------------------------------------------------------------- headless Chromium

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--use-fake-device-for-media-stream",
         "--use-fake-ui-for-media-stream"]


def chromium():
    """A headless Chromium (Playwright) for a module-scoped fixture: `yield from chromium()`; skips the
    module's browser tests with a reason when Chromium or Playwright is missing."""
    import pytest

    sync_api = pytest.importorskip("playwright.sync_api")
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


def kill_at_rename(argv_index: int) -> str:
    """Python source that makes a child process kill itself (SIGKILL) instead of making its k-th
    `os.replace` (fileio.atomic_open's rename), k = int(sys.argv[argv_index]): a crash at each write."""
    return f"""
import os, signal, sys
real, calls = os.replace, [0]
def replace(a, b):  # fileio.atomic_open's rename: the k-th one is never reached
    calls[0] += 1
    if calls[0] == int(sys.argv[{argv_index}]):
        os.kill(os.getpid(), signal.SIGKILL)
    return real(a, b)
os.replace = replace
"""


def open_page(browser, served, locale="en-US", viewport=(1280, 800), **context):
    """A new context + page on served["url"] (camera allowed, file choosers intercepted), page ready."""
    ctx = browser.new_context(locale=locale, viewport={"width": viewport[0], "height": viewport[1]}, **context)
    ctx.grant_permissions(["camera"], origin=served["url"])
    page = ctx.new_page()
    # Playwright turns on file-chooser interception when the first listener appears, asynchronously: do it
    # before any key is pressed, or the first chooser can open natively (invisible headless) and be missed.
    page.on("filechooser", lambda chooser: None)
    page.goto(served["url"])
    page.evaluate("window.pageReady")
    return page


def fake_video_answer(page, served, body: dict, name: str = "clip.mp4") -> list[str]:
    """Answer the page's next video upload with `body` (no real clip is decoded), upload a dummy clip,
    and return the list the requested URLs are appended to."""
    import json

    seen = []

    def answer(route):
        seen.append(route.request.url)
        route.fulfill(status=200, content_type="application/json", body=json.dumps(body))

    page.route("**/api/predict_video*", answer)
    clip = served["root"] / name
    clip.write_bytes(b"\0" * 64)
    page.set_input_files("#video", str(clip))
    return seen
