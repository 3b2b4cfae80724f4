"""`serve` left running (issue 28): writes only from its own page and names, a collect folder with a
budget that never jams, phone photos in feedback, clean-up after kill -9, and the smaller HTTP edges
(fps range, malformed Content-Length, uploads kept in memory, work dropped for clients that left)."""

import asyncio
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import CLASSES, draw_shape, kill_at_rename, run_cli, tiny_checkpoint
from pokemon_classifier import annotations

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from pokemon_classifier.app import create_app  # noqa: E402
from pokemon_classifier.predict import Classifier  # noqa: E402

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture(scope="module")
def clf(tmp_path_factory):
    return Classifier.load(tiny_checkpoint(tmp_path_factory.mktemp("m") / "m.pt", 64, unknown_threshold=0.0))


def _pic(seed=0, fmt="PNG", **kw) -> bytes:
    b = io.BytesIO()
    draw_shape("circle", CLASSES[1][1], rng=np.random.default_rng(seed)).save(b, fmt, **kw)
    return b.getvalue()


def _feedback(c, data, dex="25", **kw):
    return c.post("/api/feedback", files={"file": ("x.png", data, "image/png")}, data={"dex_id": dex}, **kw)


def _listing(col: Path):
    rows = sorted(annotations.read_annotations(col).img_name) if (col / "annotations.csv").exists() else []
    return rows, sorted(p.name for p in (col / "images").iterdir())


# ------------------------------------------------------------------ same-origin writes, Host names
@pytest.mark.parametrize("headers", [
    {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"},  # fetch(..., {mode: 'no-cors'}) from any page
    {"Sec-Fetch-Site": "same-site"},  # another port of the same machine is another origin
    {"Origin": "https://evil.example"},
    {"Origin": "null"},  # sandboxed frames, file:// pages
    {"Origin": "http://testserver:8000"},
])
def test_cross_site_writes_are_refused(clf, tmp_path, headers):
    col = tmp_path / "col"
    c = TestClient(create_app(clf, collect_dir=col))
    r = _feedback(c, _pic(), headers=headers)
    assert r.status_code == 403 and r.json()["error"].startswith("cross-site request refused")
    assert _listing(col) == ([], [])
    r = c.post("/api/predict", files={"file": ("x.png", _pic(), "image/png")}, headers=headers)
    assert r.status_code == 403


def test_same_origin_and_scripts_may_write(clf, tmp_path):
    col = tmp_path / "col"
    c = TestClient(create_app(clf, collect_dir=col))
    assert _feedback(c, _pic(1)).status_code == 200  # curl: no Origin, no Sec-Fetch-Site
    own_page = {"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"}
    assert _feedback(c, _pic(2), headers=own_page).status_code == 200
    assert len(_listing(col)[0]) == 2
    assert c.get("/api/health", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 200  # reads are not writes


def test_host_header_must_name_this_server(clf, tmp_path):
    c = TestClient(create_app(clf, collect_dir=tmp_path / "col", allowed_hosts=["testserver", "127.0.0.1"]))
    for method, path in (("get", "/api/health"), ("post", "/api/feedback"), ("get", "/")):
        r = getattr(c, method)(path, headers={"Host": "evil.example"})
        assert r.status_code == 400 and "evil.example" in r.json()["error"] and "--allowed-hosts" in r.json()["error"]
    assert c.get("/api/health", headers={"Host": "127.0.0.1:7860"}).status_code == 200
    assert c.get("/api/health").status_code == 200
    anyone = TestClient(create_app(clf, allowed_hosts=["*"]))
    assert anyone.get("/api/health", headers={"Host": "evil.example"}).status_code == 200


def test_serve_defaults_guard_hosts_and_warns_about_open_collect(clf, tmp_path, monkeypatch):
    """serve's main: the Host guard on by default, a warning for --collect on a LAN address over http,
    and with --https the key folder gone before the server answers (only the SSL context holds it)."""
    import tempfile

    import uvicorn

    from pokemon_classifier.app import served_names

    monkeypatch.setattr(Classifier, "load", staticmethod(lambda *a, **kw: clf))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    seen = {}

    def fake_run(self, sockets=None):
        seen["config"] = self.config
        seen["tls_folders"] = sorted(p.name for p in tmp_path.glob("pokemon-tls-*"))
        for s in sockets or ():
            s.close()

    monkeypatch.setattr(uvicorn.Server, "run", fake_run)
    code, out, err = run_cli("serve", "--port", "0", "--host", "0.0.0.0", "--collect", tmp_path / "col")
    assert code == 0 and "warning: --collect on 0.0.0.0 without --https" in err
    c = TestClient(seen["config"].app)
    assert c.get("/api/health", headers={"Host": "evil.example"}).status_code == 400
    assert c.get("/api/health", headers={"Host": "localhost:7860"}).status_code == 200
    code, out, err = run_cli("serve", "--port", "0", "--collect", tmp_path / "col", "--https")
    assert code == 0 and "warning" not in err and out.startswith("serving on https://")
    assert seen["config"].loaded and seen["config"].ssl is not None and seen["tls_folders"] == []
    code, out, err = run_cli("serve", "--port", "0", "--collect", tmp_path / "col")  # loopback: no warning
    assert code == 0 and "warning" not in err
    assert set(served_names("127.0.0.1")) == {"localhost", "127.0.0.1", "::1"}
    assert "localhost" in served_names("0.0.0.0")


# ------------------------------------------------------------------ budget, same picture once, rate limit
def test_byte_and_picture_budget(clf, tmp_path):
    col = tmp_path / "col"
    one = len(_pic(0))
    c = TestClient(create_app(clf, collect_dir=col, collect_max_mb=2.5 * one / 1e6))
    assert _feedback(c, _pic(0)).status_code == 200 and _feedback(c, _pic(1)).status_code == 200
    r = _feedback(c, _pic(2))
    assert r.status_code == 413
    assert "collect folder is full" in r.json()["error"] and "--collect-max-mb" in r.json()["error"]
    assert len(_listing(col)[1]) == 2
    col2 = tmp_path / "col2"
    c = TestClient(create_app(clf, collect_dir=col2, collect_max_files=2))
    assert [_feedback(c, _pic(i)).status_code for i in range(3)] == [200, 200, 413]
    (col2 / "images" / _listing(col2)[1][0]).unlink()  # a reviewer deletes one: room again
    assert _feedback(c, _pic(3)).status_code == 200


def test_the_same_picture_is_stored_once(clf, tmp_path):
    col = tmp_path / "col"
    c = TestClient(create_app(clf, collect_dir=col))
    first = _feedback(c, _pic(0)).json()
    for _ in range(5):  # one correction per picture (issue 26): again is 409, naming where it is kept
        r = _feedback(c, _pic(0))
        assert r.status_code == 409 and first["saved"] in r.json()["error"]
    r = _feedback(c, _pic(0), dex="7")  # kept under the label it came with first
    assert r.status_code == 409 and first["saved"] in r.json()["error"]
    assert _listing(col) == (["pikachu001.png"], ["pikachu001.png"])


def test_rate_limit_per_client(clf, tmp_path):
    from pokemon_classifier.fans import RateLimit

    now = [1000.0]
    rl = RateLimit(3, clock=lambda: now[0])
    assert [rl.wait("a") for _ in range(3)] == [0, 0, 0]
    assert rl.wait("a") == pytest.approx(60) and rl.wait("b") == 0  # another client is not held up
    now[0] += 30
    assert rl.wait("a") == pytest.approx(30)
    now[0] += 30.001
    assert rl.wait("a") == 0
    c = TestClient(create_app(clf, collect_dir=tmp_path / "col", collect_per_minute=2))
    codes = [_feedback(c, _pic(i)) for i in range(3)]
    assert [r.status_code for r in codes] == [200, 200, 429]
    assert int(codes[2].headers["retry-after"]) >= 1 and "at most 2 a minute" in codes[2].json()["error"]


# ------------------------------------------------------------------ the folder never jams
def test_deleting_the_last_picture_does_not_jam_the_folder(clf, tmp_path):
    col = tmp_path / "col"
    c = TestClient(create_app(clf, collect_dir=col))
    for i in range(3):
        assert _feedback(c, _pic(i)).status_code == 200
    (col / "images" / "pikachu003.png").unlink()  # a natural review step
    for i in range(3, 6):
        r = _feedback(c, _pic(i))
        assert r.status_code == 200, r.text
    rows, files = _listing(col)
    assert rows == files == ["pikachu001.png", "pikachu002.png", "pikachu004.png", "pikachu005.png", "pikachu006.png"]
    # and a restart starts
    TestClient(create_app(clf, collect_dir=col))


def test_a_drifted_folder_is_repaired_at_start_in_one_line(clf, tmp_path, capsys):
    col = tmp_path / "col"
    (col / "images").mkdir(parents=True)
    for n in ("pikachu001.png", "pikachu002.png", "pikachu005.png"):
        (col / "images" / n).write_bytes(_pic(int(n[7:10])))
    # rows: one twice (written by the old code), one whose picture a reviewer deleted; pikachu005 has none
    (col / "annotations.csv").write_text("img_name,pokemon_id\npikachu001.png,25\npikachu002.png,25\n"
                                         "pikachu002.png,25\npikachu003.png,25\n")
    (col / "images" / ".pikachu004.png.abcd1234.tmp").write_bytes(b"half")
    c = TestClient(create_app(clf, collect_dir=col))
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "repaired" in err
    for part in ("removed 1 unfinished .tmp", "dropped 1 repeated rows", "dropped 1 rows whose picture is gone",
                 "moved 1 pictures without a row"):
        assert part in err
    assert _listing(col) == (["pikachu001.png", "pikachu002.png"], ["pikachu001.png", "pikachu002.png"])
    assert (col / "unlisted" / "pikachu005.png").is_file()
    assert _feedback(c, _pic(9)).json()["saved"] == "images/pikachu006.png"  # numbers of moved files not reused


def test_api_errors_never_show_the_servers_paths(clf, tmp_path):
    col = tmp_path / "col"
    c = TestClient(create_app(clf, collect_dir=col))
    assert _feedback(c, _pic(0)).status_code == 200
    (col / "annotations.csv").write_text("broken,header\n1,2\n")  # damaged while serving
    r = _feedback(c, _pic(1))
    assert r.status_code == 400 and "annotations.csv" in r.json()["error"]
    assert str(tmp_path) not in r.text and "/tmp" not in r.text


# ------------------------------------------------------------------ phone photos
@pytest.mark.parametrize("fmt", ["MPO", "HEIF", "AVIF"])
def test_phone_photos_are_kept(clf, tmp_path, fmt):
    src = Image.new("RGB", (64, 48), (220, 40, 40))
    src.paste((30, 60, 230), (32, 0, 64, 48))
    b = io.BytesIO()
    if fmt == "MPO":  # Android's Ultra HDR JPEG: a JPEG followed by a gain map picture
        src.save(b, "MPO", save_all=True, append_images=[src.resize((32, 24))], quality=95)
    else:
        src.save(b, fmt, quality=95)
    data = b.getvalue()
    col = tmp_path / "col"
    c = TestClient(create_app(clf, collect_dir=col))
    assert c.post("/api/predict", files={"file": ("p", data, "image/jpeg")}).status_code == 200
    r = _feedback(c, data)
    assert r.status_code == 200, r.text
    assert r.json()["saved"] == "images/pikachu001.jpg"
    stored = (col / "images" / "pikachu001.jpg").read_bytes()
    if fmt == "MPO":
        assert stored == data  # a valid JPEG already: the original bytes
    with Image.open(io.BytesIO(stored)) as im:
        assert im.format in ("JPEG", "MPO") and im.size == (64, 48)
        a = np.asarray(im.convert("RGB")).astype(int)
    assert abs(a[24, 10] - [220, 40, 40]).max() < 30 and abs(a[24, 50] - [30, 60, 230]).max() < 30


# ------------------------------------------------------------------ kill -9
_SAVER = kill_at_rename(3) + """
import io
import numpy as np
from pokemon_classifier.collect import Collector
from pokemon_classifier.synthetic import draw_shape
c = Collector(sys.argv[1])
for i in range(100):
    b = io.BytesIO()
    draw_shape("circle", (200, 30, 30), rng=np.random.default_rng(int(sys.argv[2]) * 100 + i)).save(b, "PNG")
    c.save(b.getvalue(), 25 if i % 2 else 1)
"""


def test_kill_9_during_a_feedback_burst_is_cleaned_up_at_start(clf, tmp_path):
    """A saver killed at every point of a save (before the picture's rename, between picture and row,
    before the row's rename); each next start leaves every picture with its row and no .tmp files."""
    col = tmp_path / "col"
    for run, kill_at in enumerate(range(1, 9)):
        p = subprocess.run([sys.executable, "-c", _SAVER, str(col), str(run), str(kill_at)], timeout=120,
                           env={**os.environ, "PYTHONPATH": SRC}, capture_output=True, text=True)
        assert p.returncode == -signal.SIGKILL, p.stderr
        TestClient(create_app(clf, collect_dir=col))  # the start repairs
        rows, files = _listing(col)
        assert rows == files and not list(col.rglob("*.tmp")), (kill_at, rows, files)
    assert len(rows) == sum((k - 1) // 2 for k in range(1, 9))  # every save that finished (2 renames each)
    assert len(list((col / "unlisted").iterdir())) == 4  # killed between picture and row: kept aside


def test_https_key_folders_of_killed_servers_are_removed_at_start(tmp_path):
    from pokemon_classifier.certs import remove_stale_key_folders

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"pokemon-tls-{dead.pid}-abcd"
    live = tmp_path / f"pokemon-tls-{os.getpid()}-efgh"
    other = tmp_path / "pokemon-tls-notes"  # an old version's name, made just now: left for a minute
    for d in (stale, live, other):
        d.mkdir()
        (d / "key.pem").write_text("secret")
    assert remove_stale_key_folders(tmp_path) == [stale]
    assert not stale.exists() and live.exists() and other.exists()
    old = time.time() - 3600
    os.utime(other, (old, old))
    assert remove_stale_key_folders(tmp_path) == [other]


def test_kill_9_of_serve_https_leaves_no_key_folder(tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "m.pt", 64)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    p = subprocess.Popen([sys.executable, "-m", "pokemon_classifier", "serve", "--https", "--port", "0",
                          "--backend", "torch", "--weights", str(ckpt)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": SRC, "TMPDIR": str(tmp)})
    try:
        line = p.stdout.readline()
        assert line.startswith("serving on https://"), p.stderr.read() if p.poll() is not None else line
        assert not list(tmp.glob("pokemon-tls-*"))  # read into memory, folder gone, while serving
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(30)
    assert not list(tmp.glob("pokemon-tls-*"))


# ------------------------------------------------------------------ fps, Content-Length, spooling, clients gone
@pytest.mark.parametrize("fps", ["1e-300", "0.05", "10.5", "1e300", "0"])
def test_fps_outside_the_documented_range_is_refused(clf, fps):
    r = TestClient(create_app(clf)).post(f"/api/predict_video?fps={fps}",
                                         files={"file": ("v.mp4", b"x" * 10, "video/mp4")})
    assert r.status_code == 400 and r.json()["error"].startswith("fps must be between 0.1 and 10, got")


def test_malformed_content_length_gets_json(clf):
    import uvicorn

    from pokemon_classifier.app import uvicorn_config

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    srv = uvicorn.Server(uvicorn_config(create_app(clf), host="127.0.0.1", port=port, log_level="critical"))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    try:
        for _ in range(200):
            if srv.started:
                break
            time.sleep(0.05)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: abc\r\n\r\n")
            answer = b""
            while chunk := s.recv(65536):
                answer += chunk
    finally:
        srv.should_exit = True
        t.join(10)
    head, body = answer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 400") and b"content-type: application/json" in head.lower()
    assert json.loads(body)["error"].startswith("malformed HTTP request")


def test_uploads_over_one_mb_stay_in_memory(clf, monkeypatch):
    import tempfile

    rolled = []
    monkeypatch.setattr(tempfile.SpooledTemporaryFile, "rollover", lambda self: rolled.append(1))
    big = Image.fromarray(np.random.default_rng(0).integers(0, 256, (700, 700, 3), dtype=np.uint8))
    b = io.BytesIO()
    big.save(b, "PNG")
    assert 1 << 20 < len(b.getvalue()) < 10 << 20
    r = TestClient(create_app(clf)).post("/api/predict", files={"file": ("x.png", b.getvalue(), "image/png")})
    assert r.status_code == 200 and not rolled


class _Counting:
    def __init__(self, clf):
        self._clf, self.preprocessed, self.forwards = clf, 0, 0

    def __getattr__(self, name):
        return getattr(self._clf, name)

    def preprocess(self, item):
        self.preprocessed += 1
        return self._clf.preprocess(item)

    def predict_tensors(self, batch, ks):
        self.forwards += 1
        return self._clf.predict_tensors(batch, ks)


def test_no_work_for_a_client_that_has_gone(clf):
    """Four pictures whose clients left after sending: nothing decoded, no forward pass."""
    counting = _Counting(clf)
    app = create_app(counting)
    boundary = "b0undary"
    png = _pic(0)
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + png + f"\r\n--{boundary}--\r\n".encode()

    async def one(gone: bool):
        msgs = [{"type": "http.request", "body": body, "more_body": False}]
        sent = []

        async def receive():
            if msgs:
                return msgs.pop(0)
            if gone:
                return {"type": "http.disconnect"}
            await asyncio.sleep(3600)  # a client still waiting: nothing more to read

        async def send(m):
            sent.append(m)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": "/api/predict", "raw_path": b"/api/predict", "query_string": b"",
                 "root_path": "", "client": ("127.0.0.1", 5000), "server": ("testserver", 80),
                 "headers": [(b"host", b"testserver"), (b"content-length", str(len(body)).encode()),
                             (b"content-type", f"multipart/form-data; boundary={boundary}".encode())]}
        await app(scope, receive, send)
        return sent[0]["status"]

    async def main():
        return await asyncio.gather(*[one(True) for _ in range(4)])

    assert asyncio.run(main()) == [400] * 4
    assert counting.preprocessed == 0 and counting.forwards == 0
    assert asyncio.run(one(False)) == 200 and counting.forwards == 1
    app.state.batcher.close()


def test_a_collected_folder_goes_through_annotate_and_trains_cache(clf, tmp_path):
    """What feedback stores (phone photos, the longest legal shape) is read by the commands that follow;
    what it refuses (1xN) never gets in."""
    from pokemon_classifier.data import build_cache
    from pokemon_classifier.models import preprocessing

    col = tmp_path / "col"
    c = TestClient(create_app(clf, collect_dir=col))
    src = Image.new("RGB", (64, 48), (220, 40, 40))
    for i, (fmt, kw) in enumerate([("PNG", {}), ("MPO", {"save_all": True, "append_images": [src]}),
                                   ("HEIF", {}), ("AVIF", {}), ("JPEG", {})]):
        b = io.BytesIO()
        (src.resize((4000, 200)) if fmt == "JPEG" else src).rotate(i).save(b, fmt, **kw)
        assert _feedback(c, b.getvalue()).status_code == 200
    b = io.BytesIO()
    Image.new("RGB", (1, 30000)).save(b, "PNG")
    assert _feedback(c, b.getvalue()).status_code == 400
    df = annotations.annotate(col, plot=False).df  # every stored picture decodes
    assert len(df) == 5 and not (col / "annotate_report.csv").exists()
    arr = build_cache(col, df, preprocessing("mobilenet_v3_small", 64), workers=1, root=tmp_path / "cache",
                      progress=False)
    assert arr.shape == (5, 3, 73, 73)


@pytest.mark.parametrize("content", ["", "img_name,pokemon_id\n\"unclosed,25\n", "a,b,c\n1,2\n1,2,3,4,5\n",
                                     "img_name,pokemon_id\npikachu001.png,999\n"])
def test_a_broken_annotations_file_stops_serve_in_one_line(clf, tmp_path, monkeypatch, content):
    col = tmp_path / "col"
    (col / "images").mkdir(parents=True)
    (col / "annotations.csv").write_text(content)
    monkeypatch.setattr(Classifier, "load", staticmethod(lambda *a, **kw: clf))
    code, out, err = run_cli("serve", "--port", "0", "--collect", col)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "annotations.csv" in err, err
