"""collect.Collector (pictures users correct -> the project's data format) and certs (serve --https)."""

import io
import ssl
import threading

import pandas as pd
import pytest

from helpers import CLASSES, draw_shape
from pokemon_classifier import annotations
from pokemon_classifier.collect import Collector
from pokemon_classifier.errors import ImageError, UserError


def _img(fmt="PNG", shape="circle", seed=0) -> bytes:
    import numpy as np

    b = io.BytesIO()
    draw_shape(shape, CLASSES[1][1], rng=np.random.default_rng(seed)).save(b, fmt)
    return b.getvalue()


def test_saves_in_the_data_format_with_next_numbers(tmp_path):
    c = Collector(tmp_path / "col")
    assert c.save(_img("PNG"), 25) == "pikachu001.png"
    assert c.save(_img("JPEG"), "25") == "pikachu002.jpg"
    assert c.save(_img("WEBP"), 151) == "mew001.webp"  # 'mew*' also globs mewtwo: numbering must not mix them
    assert c.save(_img("PNG", "square"), 150) == "mewtwo001.png"  # another picture: the same one is kept once
    assert c.save(_img("GIF"), 151) == "mew002.gif"
    df = annotations.read_annotations(tmp_path / "col")
    assert sorted(zip(df.img_name, df.pokemon_id)) == [("mew001.webp", 151), ("mew002.gif", 151),
                                                       ("mewtwo001.png", 150), ("pikachu001.png", 25),
                                                       ("pikachu002.jpg", 25)]
    assert (tmp_path / "col" / "images" / "pikachu002.jpg").read_bytes() == _img("JPEG")
    assert not [p for p in (tmp_path / "col" / "images").iterdir() if p.name.startswith(".")]


def test_existing_folder_keeps_its_rows_and_numbers(tmp_path):
    d = tmp_path / "data"
    (d / "images").mkdir(parents=True)
    (d / "images" / "pikachu007.jpg").write_bytes(_img("JPEG"))
    pd.DataFrame({"img_name": ["pikachu007.jpg"], "pokemon_id": [25]}).to_csv(d / "annotations.csv", index=False)
    assert Collector(d).save(_img(), 25) == "pikachu008.png"
    assert len(annotations.read_annotations(d)) == 2


def test_extension_comes_from_the_content_not_the_request(tmp_path):
    c = Collector(tmp_path)
    assert c.save(_img("JPEG"), 1).endswith(".jpg")  # no name is passed at all: there is none to trust


@pytest.mark.parametrize("dex", [0, 152, "abc", "", None, "1.5", "-1"])
def test_bad_dex_id(tmp_path, dex):
    with pytest.raises(UserError):
        Collector(tmp_path).save(_img(), dex)
    assert not list((tmp_path / "images").iterdir()) and not (tmp_path / "annotations.csv").exists()


@pytest.mark.parametrize("data", [b"", b"<html>no</html>", _img("PNG")[:60]])
def test_bad_images_store_nothing(tmp_path, data):
    with pytest.raises((UserError, ImageError)):
        Collector(tmp_path).save(data, 25)
    assert not list((tmp_path / "images").iterdir()) and not (tmp_path / "annotations.csv").exists()


def test_size_cap(tmp_path):
    with pytest.raises(UserError, match="larger"):
        Collector(tmp_path, max_bytes=100).save(_img(), 25)


def test_concurrent_saves_never_share_a_number(tmp_path):
    c = Collector(tmp_path)
    names, errors = [], []

    def one(i):
        try:
            names.append(c.save(_img("JPEG" if i % 2 else "PNG", seed=i), 25 if i % 3 else 1))  # 24 pictures
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(24)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors and len(set(names)) == 24
    df = annotations.read_annotations(tmp_path)
    assert sorted(df.img_name) == sorted(names)
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == sorted(names)


def test_refuses_a_broken_annotations_file_at_start(tmp_path):
    (tmp_path / "annotations.csv").write_text("foo,bar\n1,2\n")
    with pytest.raises(UserError, match="header"):
        Collector(tmp_path)
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(UserError, match="folder"):
        Collector(f)


# ------------------------------------------------------------------ serve --https
def test_self_signed_certificate_loads_and_names_localhost(tmp_path):
    from cryptography import x509

    from pokemon_classifier.certs import make_self_signed, uvicorn_tls

    cert, key = make_self_signed(tmp_path, host="192.168.1.77")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)  # a mismatched or malformed pair raises here
    san = x509.load_pem_x509_certificate(cert.read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert "192.168.1.77" in [str(i) for i in san.get_values_for_type(x509.IPAddress)]
    assert key.stat().st_mode & 0o077 == 0
    with uvicorn_tls(False) as kw:
        assert kw == {}
    with uvicorn_tls(True, "127.0.0.1") as kw:
        from pathlib import Path

        made = Path(kw["ssl_certfile"])
        assert made.is_file() and Path(kw["ssl_keyfile"]).is_file()
    assert not made.exists()  # removed at shutdown


def test_https_key_is_removed_when_the_server_is_terminated():
    """uvicorn re-raises the SIGTERM it handled; the private key must still be deleted."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import signal; from pokemon_classifier.certs import uvicorn_tls\n"
            "with uvicorn_tls(True, '127.0.0.1') as kw:\n"
            "    print(kw['ssl_keyfile'], flush=True); signal.raise_signal(signal.SIGTERM)\n")
    src = str(Path(__file__).resolve().parents[1] / "src")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env={**__import__("os").environ, "PYTHONPATH": src})
    key = Path(r.stdout.strip())
    assert r.returncode == 128 + 15 and key.name == "key.pem", r.stderr
    assert not key.parent.exists()


def test_annotate_add_merges_a_collected_folder_once(tmp_path):
    from helpers import run_cli
    from pokemon_classifier.collect import Collector
    from pokemon_classifier.synthetic import draw_shape, make_dataset

    data = make_dataset(tmp_path / "data", per_class=3)
    before = pd.read_csv(data / "annotations.csv")
    col = Collector(tmp_path / "collected")
    for dex, colour in ((25, (240, 210, 30)), (25, (230, 200, 40))):
        b = io.BytesIO()
        draw_shape("diamond", colour).save(b, "PNG")
        col.save(b.getvalue(), dex)
    code, out, err = run_cli("annotate", data, "--add", tmp_path / "collected")
    assert code == 0, err
    after = pd.read_csv(data / "annotations.csv")
    new = sorted(set(after["img_name"]) - set(before["img_name"]))
    assert len(new) == 2 and all(n.startswith("pikachu") and n.endswith(".png") for n in new)
    assert set(after.loc[after["img_name"].isin(new), "pokemon_id"]) == {25}
    assert all((data / "images" / n).is_file() for n in new)
    code, out, err = run_cli("annotate", data, "--add", tmp_path / "collected")  # twice: nothing new
    assert code == 0 and len(pd.read_csv(data / "annotations.csv")) == len(after)
    code, out, err = run_cli("annotate", data, "--add", tmp_path / "nowhere")
    assert code == 2 and err.startswith("error:") and "nowhere" in err


def test_annotate_add_exclude_leaves_listed_pictures_out(tmp_path):
    from helpers import run_cli
    from pokemon_classifier.collect import Collector
    from pokemon_classifier.synthetic import draw_shape, make_dataset

    data = make_dataset(tmp_path / "data", per_class=3)
    col = Collector(tmp_path / "extra")
    names = []
    for dex, colour in ((25, (240, 210, 30)), (25, (230, 200, 40)), (7, (30, 90, 240))):
        b = io.BytesIO()
        draw_shape("diamond", colour).save(b, "PNG")
        names.append(col.save(b.getvalue(), dex))
    (tmp_path / "overlap.csv").write_text(f"img_name,nearest_shared_image\n{names[1]},pikachu001.jpg\n")
    before = len(pd.read_csv(data / "annotations.csv"))
    code, out, err = run_cli("annotate", data, "--add", tmp_path / "extra", "--exclude", tmp_path / "overlap.csv")
    assert code == 0 and "left out 1 pictures" in out and "added 2 pictures" in out, err
    assert len(pd.read_csv(data / "annotations.csv")) == before + 2
    (tmp_path / "bad.csv").write_text("name\nx\n")
    code, _, err = run_cli("annotate", data, "--add", tmp_path / "extra", "--exclude", tmp_path / "bad.csv")
    assert code == 2 and "bad.csv: needs an img_name column" in err
    code, _, err = run_cli("annotate", data, "--exclude", tmp_path / "overlap.csv")
    assert code == 2 and "--exclude goes with --add" in err
