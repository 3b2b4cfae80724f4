"""The downloader against a loopback server in the real Bing / DuckDuckGo formats (never the network)."""

import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from PIL import Image

from helpers import run_cli
from fake_web import FakeWeb
from pokemon_classifier.scrape import BingProvider, DownloadOptions, Downloader, DuckDuckGoProvider, HttpClient

GOOD = [f"/img/ok-{i}.jpg" for i in range(1, 6)] + ["/img/png-1", "/img/webp-1"]
BAD = ["/img/404-1", "/img/500-1", "/img/slow-1", "/img/truncated-1", "/img/html-1", "/img/huge-1",
       "/img/loop-1", "/img/tiny-1", "/img/dup-1"]
RECOVER = ["/img/flaky403-1", "/img/ratelimited-1"]


def client(**kw):
    return HttpClient(timeout=(2.0, kw.pop("read", 1.0)), retries=kw.pop("retries", 2), backoff=0.01,
                      max_bytes=kw.pop("max_bytes", 1024 * 1024), **kw)


def bing_downloader(tmp_path, c, web, **opts):
    return Downloader(tmp_path, [BingProvider(c, web.url)], c, DownloadOptions(progress=False, **opts))


def test_bing_parse_uses_m_json_not_css_classes():
    html = ('<div><a class="whatever" m=\'{"murl":"http://x/a.png","turl":"t","purl":"p","t":"Pikachu"}\'></a>'
            '<a m="not json"></a><a class="iusc" m=\'{"murl":"http://x/b.webp"}\'></a></div>')
    hits = BingProvider.parse(html)
    assert [h.image_url for h in hits] == ["http://x/a.png", "http://x/b.webp"] and hits[0].title == "Pikachu"


def test_every_failure_mode_and_recovery(tmp_path):
    with FakeWeb({"Pikachu pokemon": GOOD + BAD + RECOVER}) as web:
        c = client()
        dl = bing_downloader(tmp_path, c, web, per_class=100)
        n = dl.run([25])
    files = sorted(p.name for p in (tmp_path / "images").iterdir())
    assert n == len(GOOD) + len(RECOVER) == len(files) == 9
    assert sorted(f.split(".")[0] for f in files) == [f"pikachu{i:03d}" for i in range(1, 10)]  # no gaps
    assert sum(f.endswith(".jpg") for f in files) == 7
    assert sum(f.endswith(".png") for f in files) == 1 and sum(f.endswith(".webp") for f in files) == 1
    f = dl.failures
    assert f["http 404"] == 1 and f["http 500"] == 1 and f["timeout"] == 1 and f["too large"] == 1
    assert f["redirect loop"] == 1 and f["too small"] == 1 and f["duplicate (sha256)"] == 1
    assert f["not an image"] == 2  # truncated + HTML served as image/jpeg
    assert web.hits["/img/flaky403-1"] == 2 and web.hits["/img/ratelimited-1"] == 2
    assert web.hits["/img/500-1"] == 3  # capped retries: 1 + 2
    m = pd.read_csv(tmp_path / "manifest.csv")
    assert list(m.columns) == ["img_name", "pokemon_id", "provider", "query", "image_url", "page_url", "sha256",
                               "width", "height", "fetched_at"]
    assert sorted(m["img_name"]) == files and (m["provider"] == "bing").all() and m["sha256"].is_unique
    for name in files:
        Image.open(tmp_path / "images" / name).verify()
    assert not list((tmp_path / "images").glob(".*"))


def test_resized_duplicates_are_kept_for_dedup(tmp_path):
    with FakeWeb({"Pikachu pokemon": ["/img/ok-1.jpg", "/img/resized-1"]}) as web:
        c = client()
        assert bing_downloader(tmp_path, c, web).run([25]) == 2


def test_duckduckgo_and_fallback_chain(tmp_path):
    with FakeWeb({"Mr. Mime pokemon": GOOD[:3]}, engines=("duckduckgo",)) as web:
        c = client()
        ddg = DuckDuckGoProvider(c, web.url)
        hits = ddg.search("Mr. Mime pokemon", 0, 100)
        assert len(hits) == 3 and hits[0].image_url.endswith("/img/ok-1.jpg")
        # bing has nothing for this query (empty page) -> falls back to DuckDuckGo
        dl = Downloader(tmp_path, [BingProvider(c, web.url), ddg], c, DownloadOptions(progress=False))
        assert dl.run([122]) == 3
        assert dl.failures["search bing: no results"] == 1
        assert set(pd.read_csv(tmp_path / "manifest.csv")["provider"]) == {"duckduckgo"}
        assert (tmp_path / "images" / "mr-mime001.jpg").is_file()


def test_empty_page_ends_pagination(tmp_path):
    with FakeWeb({"Mew pokemon": GOOD[:2]}) as web:
        c = client()
        dl = bing_downloader(tmp_path, c, web, per_class=50, max_pages=1000)
        assert dl.run([151]) == 2
        assert sum(r.startswith("/images/async") for r in web.requests) <= 2


def test_per_class_target_and_resume_skips(tmp_path):
    with FakeWeb({"Abra pokemon": GOOD}) as web:
        c = client()
        assert bing_downloader(tmp_path, c, web, per_class=3).run([63]) == 3
        before = len(web.requests)
        assert bing_downloader(tmp_path, c, web, per_class=3).run([63]) == 0
        assert len(web.requests) == before  # class at target: not even searched
        assert bing_downloader(tmp_path, c, web, per_class=5).run([63]) == 2
        assert sorted(p.stem for p in (tmp_path / "images").iterdir())[-1] == "abra005"
        assert pd.read_csv(tmp_path / "manifest.csv")["image_url"].is_unique


def test_url_list_provider(tmp_path):
    with FakeWeb() as web:
        lst = tmp_path / "links.csv"
        lst.write_text(f"url,class\n{web.url}/img/ok-1.jpg,pikachu\n{web.url}/img/ok-2.jpg,Mr. Mime\n")
        code, out, err = run_cli("download", tmp_path / "d", "--provider", "urls", "--url-list", lst,
                                 "--classes", "pikachu", "Mr. Mime", "--no-progress")
        assert code == 0, err
        assert sorted(p.name for p in (tmp_path / "d" / "images").iterdir()) == ["mr-mime001.jpg", "pikachu001.jpg"]


def test_dry_run_fetches_no_images(tmp_path):
    with FakeWeb({"Pikachu pokemon": GOOD}) as web:
        code, out, err = run_cli("download", tmp_path, "--classes", "25", "--provider", "bing", "--base-url",
                                 f"bing={web.url}", "--dry-run", "--search-interval", "0", "--no-progress")
        assert code == 0, err
        assert "Pikachu: need 100, 7 candidates from bing" in out
        assert not any(r.startswith("/img/") for r in web.requests)


def test_dry_run_plan_is_returned_not_printed(tmp_path, capsys):
    with FakeWeb({"Pikachu pokemon": GOOD}) as web:
        dl = bing_downloader(tmp_path, client(), web, per_class=2)
        assert dl.run([25], dry_run=True) == 0
    assert dl.plan[0] == "Pikachu: need 2, 7 candidates from bing" and len(dl.plan) == 3
    assert capsys.readouterr().out == ""  # the download command prints the plan, the library does not


def test_google_is_refused_clearly(tmp_path):
    code, _, err = run_cli("download", tmp_path, "--provider", "google")
    assert code == 2 and "JavaScript" in err


def test_sigkill_mid_run_then_resume(tmp_path):
    items = [f"/img/ok-{i}.jpg" for i in range(1, 41)]
    with FakeWeb({"Pikachu pokemon": items}, image_delay=0.1) as web:
        cmd = [sys.executable, "-m", "pokemon_classifier", "download", str(tmp_path), "--classes", "pikachu",
               "--per-class", "40", "--provider", "bing", "--base-url", f"bing={web.url}", "--workers", "2",
               "--search-interval", "0", "--no-progress"]
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t0 = time.time()
        img_dir = tmp_path / "images"
        while time.time() - t0 < 60 and len([f for f in img_dir.glob("pikachu*")] if img_dir.exists() else []) < 5:
            time.sleep(0.05)
        p.send_signal(signal.SIGKILL)
        p.wait()
        saved = [f for f in img_dir.iterdir() if not f.name.startswith(".")]
        assert 5 <= len(saved) < 40
        for f in saved:  # no partial image under a real name
            Image.open(f).load()
        journal = tmp_path / "manifest.journal.csv"
        rows = pd.read_csv(journal, keep_default_na=False) if journal.exists() else pd.DataFrame(columns=["img_name"])
        rows = rows[rows["img_name"].isin([f.name for f in saved])]
        assert len(rows) == len(saved)  # every image on disk already has its journal row
        saved_urls = [u.removeprefix(web.url) for u in rows["image_url"]]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        refetched = {u: web.hits[u] for u in saved_urls if web.hits[u] > 1}
    files = sorted(f.name for f in img_dir.iterdir())
    assert len(files) == 40 and not any(f.startswith(".") for f in files)
    m = pd.read_csv(tmp_path / "manifest.csv", keep_default_na=False)
    assert sorted(m["img_name"]) == files and m["sha256"].is_unique
    # provenance survives the kill: every image, including those saved before it, has its engine and URL
    assert (m["provider"] == "bing").all() and m["image_url"].str.startswith(web.url + "/img/ok-").all()
    assert not refetched  # images saved before the kill were not downloaded again
    assert not (tmp_path / "manifest.journal.csv").exists()  # merged into manifest.csv at the end


def test_manifest_journal_with_a_torn_last_row_is_merged(tmp_path):
    from pokemon_classifier.scrape import MANIFEST_COLUMNS, Manifest

    (tmp_path / "images").mkdir()
    Image.new("RGB", (80, 80)).save(tmp_path / "images" / "pikachu001.jpg")
    (tmp_path / "manifest.journal.csv").write_text(
        ",".join(MANIFEST_COLUMNS) + "\n"
        "pikachu001.jpg,25,bing,q,http://x/1.jpg,http://x/p,abc,80,80,2026-01-01T00:00:00+00:00\n"
        "pikachu002.jpg,25,bing,q,http://x/2.jpg,http://x/p,def,80,80,2026-01-01T00:00:00+00:00\n"  # image never landed
        "pikachu003.jpg,25,bi")  # torn by the kill
    m = Manifest(tmp_path)
    assert list(m.df["img_name"]) == ["pikachu001.jpg"] and m.df["image_url"][0] == "http://x/1.jpg"
    m.save()
    assert not (tmp_path / "manifest.journal.csv").exists()
    assert list(pd.read_csv(tmp_path / "manifest.csv")["provider"]) == ["bing"]


def test_slow_drip_server_is_bounded_by_the_deadline(tmp_path):
    with FakeWeb({"Pikachu pokemon": [f"/img/drip-{i}" for i in range(1, 4)]}) as web:
        cmd = [sys.executable, "-m", "pokemon_classifier", "download", str(tmp_path), "--classes", "pikachu",
               "--per-class", "3", "--provider", "bing", "--base-url", f"bing={web.url}", "--timeout", "5",
               "--deadline", "2", "--retries", "0", "--search-interval", "0", "--no-progress"]
        # without a deadline each drip image takes ~2,000 reads x 0.2 s; the run must end long before
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert r.returncode == 0, r.stderr
    assert "deadline: 3" in r.stdout
    assert not list((tmp_path / "images").glob("pikachu*"))


def test_dead_engine_exits_non_zero_and_counts_each_failure_once(tmp_path):
    code, out, err = run_cli("download", tmp_path, "--classes", "pikachu", "--per-class", "5", "--provider", "bing",
                             "--base-url", "bing=http://127.0.0.1:9", "--retries", "0", "--search-interval", "0",
                             "--no-progress")
    assert code == 1
    assert err.startswith("error: ") and err.count("\n") == 1 and "Pikachu" in err and "Traceback" not in err
    assert "search bing: connection error: 1" in out and "no results" not in out and "next:" not in out


def test_classes_take_commas_like_provider(tmp_path):
    with FakeWeb({"Pikachu pokemon": GOOD, "Bulbasaur pokemon": GOOD[:2]}) as web:
        code, out, err = run_cli("download", tmp_path, "--classes", "pikachu,bulbasaur", "Mr. Mime", "--provider",
                                 "bing", "--base-url", f"bing={web.url}", "--dry-run", "--search-interval", "0",
                                 "--no-progress")
    assert code == 0, err
    assert "Pikachu: need 100, 7 candidates" in out and "Bulbasaur: need 100, 2 candidates" in out
    assert "Mr. Mime: need 100, 0 candidates" in out


def test_top_up_fetches_only_what_is_missing(tmp_path):
    items = [f"/img/ok-{i}.jpg" for i in range(1, 41)]
    with FakeWeb({"Abra pokemon": items}, image_delay=0.05) as web:
        c = client()
        assert bing_downloader(tmp_path, c, web, per_class=3, workers=16).run([63]) == 3
        first = sum(r.startswith("/img/") for r in web.requests)
        assert bing_downloader(tmp_path, c, web, per_class=6, workers=16).run([63]) == 3
        second = sum(r.startswith("/img/") for r in web.requests) - first
    assert first <= 4 and second <= 4  # 3 needed + a margin of 1, not one per worker


@pytest.mark.network
def test_live_bing_returns_results(tmp_path):
    """Opt-in (pytest --run-network): checks the live Bing format still parses."""
    hits = BingProvider(HttpClient()).search("pikachu pokemon", 0, 35)
    assert len(hits) > 5


def test_network_guard_blocks_real_addresses():
    import socket

    s = socket.socket()
    with pytest.raises(RuntimeError, match="network"):
        s.connect(("93.184.216.34", 80))
    s.close()
