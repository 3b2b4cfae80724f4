"""Collect images per Pokemon from an image search engine into DATA/images/<name><NNN>.<ext>.

    pokemon-classifier download data/ --per-class 100                       # all 151, Bing then DuckDuckGo
    pokemon-classifier download data/ --classes pikachu,"Mr. Mime" --provider duckduckgo --dry-run
    pokemon-classifier download data/ --provider urls --url-list links.csv    # links you collected
    python scripts/download_dataset.py data/                                  # the original script name

Google Images needs JavaScript since 2025 and cannot be scraped over plain HTTP, so there is no
Google provider. Providers are small classes (build request -> parse body -> hits) with an
injectable base URL; an empty page ends pagination. Every download streams to a temp file and is
renamed into place only after Pillow verified it; DATA/manifest.csv records where each image came
from and is written atomically, so a killed run leaves no partial image and a re-run resumes.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd
import requests
from tqdm import tqdm

from pokemon_classifier import pokedex
from pokemon_classifier.annotations import FORMAT_EXT, MANIFEST, class_files
from pokemon_classifier.errors import ImageError, UserError
from pokemon_classifier.fileio import atomic_write_csv, remove_stale_temps, sha256_file, temp_beside

MANIFEST_COLUMNS = ["img_name", "pokemon_id", "provider", "query", "image_url", "page_url", "sha256",
                    "width", "height", "fetched_at"]
DEFAULT_UA = "pokemon-classifier/0.1 (+https://github.com/; dataset builder for a hobby classifier)"
RETRY_STATUS = {202, 403, 429, 500, 502, 503, 504}
DOWNLOAD_TEMP = "download"  # a picture streams into ".download.XXXXXXXX.tmp" (fileio.temp_beside) until verified


@dataclass
class Hit:
    image_url: str
    thumb_url: str = ""
    page_url: str = ""
    title: str = ""
    query: str = ""  # the search that found it ("" for a URL list)


class FetchError(Exception):
    """A failed request; `reason` is a short category for the end-of-run summary."""

    def __init__(self, reason: str, detail: str = "", partial: list | None = None):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.partial = partial or []  # hits gathered before a search failed part-way


# ------------------------------------------------------------------ HTTP

class HostLimiter:
    """Politeness per host: at most `per_host` requests in flight and `min_interval` s between starts."""

    def __init__(self, per_host: int = 8, min_interval: float = 0.0):
        self.per_host, self.min_interval = per_host, min_interval
        self._lock = threading.Lock()
        self._sems: dict[str, threading.Semaphore] = {}
        self._next: dict[str, float] = {}
        self.intervals: dict[str, float] = {}

    def acquire(self, host: str) -> None:
        with self._lock:
            sem = self._sems.setdefault(host, threading.Semaphore(self.per_host))
        sem.acquire()
        with self._lock:
            gap = self.intervals.get(host, self.min_interval)
            now = time.monotonic()
            start = max(now, self._next.get(host, now))
            self._next[host] = start + gap
        if start > now:
            time.sleep(start - now)

    def release(self, host: str) -> None:
        self._sems[host].release()


class HttpClient:
    """One requests.Session: timeouts, capped retries with backoff + jitter, per-host limits, body cap."""

    def __init__(self, user_agent: str = DEFAULT_UA, timeout=(5.0, 15.0), retries: int = 3, backoff: float = 0.5,
                 max_bytes: int = 20 * 1024 * 1024, per_host: int = 8, min_interval: float = 0.0,
                 max_redirects: int = 5, pool: int = 32):
        self.session = requests.Session()
        self.session.headers["User-Agent"] = user_agent
        self.session.max_redirects = max_redirects
        adapter = requests.adapters.HTTPAdapter(pool_connections=pool, pool_maxsize=pool, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.timeout, self.retries, self.backoff, self.max_bytes = timeout, retries, backoff, max_bytes
        self.limiter = HostLimiter(per_host, min_interval)

    def _wait(self, attempt: int, retry_after: str | None, end: float | None = None) -> None:
        pause = self.backoff * (2 ** attempt) * (0.5 + random.random())  # exponential, jittered
        if retry_after:
            try:
                pause = min(float(retry_after), 30.0)
            except ValueError:
                pass
        if end is not None:
            pause = min(pause, max(0.0, end - time.monotonic()))
        time.sleep(pause)

    def get(self, url: str, params: dict | None = None, stream_to=None,
            deadline: float | None = None) -> tuple[int, bytes, dict]:
        """GET with retries. Returns (status, body, headers); body streamed to `stream_to` (a file) if given.

        `timeout` bounds each socket read; `deadline` (seconds) bounds the whole download, retries
        included, so a server that drips one byte per read cannot hold a worker for long.
        """
        host = urlparse(url).netloc
        end = None if deadline is None else time.monotonic() + deadline
        last = None
        for attempt in range(self.retries + 1):
            self._check_deadline(end, url, deadline)
            self.limiter.acquire(host)
            try:
                connect, read = self.timeout
                if end is not None:
                    read = max(0.01, min(read, end - time.monotonic()))
                with self.session.get(url, params=params, timeout=(connect, read), stream=True) as r:
                    if r.status_code in RETRY_STATUS and attempt < self.retries:
                        last = FetchError(f"http {r.status_code}")
                        retry_after = r.headers.get("Retry-After")
                    elif r.status_code >= 400 or r.status_code == 202:
                        raise FetchError(f"http {r.status_code}", url)
                    else:
                        declared = r.headers.get("Content-Length")
                        if declared and declared.isdigit() and int(declared) > self.max_bytes:
                            raise FetchError("too large", f"{declared} bytes")
                        size, chunks = 0, []
                        for chunk in self._chunks(r, end, url, deadline):
                            size += len(chunk)
                            if size > self.max_bytes:
                                raise FetchError("too large", f"over {self.max_bytes} bytes")
                            if stream_to is not None:
                                stream_to.write(chunk)
                            else:
                                chunks.append(chunk)
                        return r.status_code, b"".join(chunks), dict(r.headers)
            except requests.exceptions.TooManyRedirects:
                raise FetchError("redirect loop", url) from None
            except (requests.exceptions.Timeout, requests.exceptions.ConnectionError) as e:
                last = FetchError("timeout" if isinstance(e, requests.exceptions.Timeout) else "connection error", url)
                retry_after = None
                if attempt >= self.retries:
                    raise last from None
            except requests.exceptions.RequestException as e:
                raise FetchError("request failed", f"{url} ({type(e).__name__})") from None
            finally:
                self.limiter.release(host)
            if stream_to is not None:
                stream_to.seek(0)
                stream_to.truncate()
            self._wait(attempt, retry_after, end)
        raise last or FetchError("failed", url)

    @staticmethod
    def _check_deadline(end, url, deadline) -> None:
        if end is not None and time.monotonic() >= end:
            raise FetchError("deadline", f"{url} (over {deadline:g} s)")

    def _chunks(self, r, end, url, deadline):
        """The body, one socket read at a time (read1), checking the deadline between reads."""
        import urllib3

        while True:
            self._check_deadline(end, url, deadline)
            try:
                chunk = r.raw.read1(64 * 1024)
            except urllib3.exceptions.ReadTimeoutError:
                raise requests.exceptions.ReadTimeout(url) from None
            except (urllib3.exceptions.ProtocolError, urllib3.exceptions.DecodeError, OSError) as e:
                raise requests.exceptions.ConnectionError(str(e)) from None
            if not chunk:
                return
            yield chunk


# ------------------------------------------------------------------ providers

class Provider:
    """A source of image links for a class. Subclasses implement `hits`."""

    name = "base"

    def hits(self, dex: int, query: str, want: int, seen_urls: set, max_pages: int) -> list[Hit]:
        raise NotImplementedError

    def check_classes(self, classes: list[int]) -> None:
        """Refuse a class list this provider cannot serve (a UserError); most serve any."""


class SearchProvider(Provider):
    """An image search engine: build request -> parse body -> hits, paged until an empty page."""

    page_size = 35
    default_base = ""

    def __init__(self, client: HttpClient, base_url: str | None = None):
        self.client = client
        self.base_url = (base_url or self.default_base).rstrip("/")

    def search(self, query: str, offset: int, count: int) -> list[Hit]:
        raise NotImplementedError

    def hits(self, dex, query, want, seen_urls, max_pages):
        hits, offset, urls = [], 0, set()
        try:
            for _ in range(max_pages):
                page = self.search(query, offset, self.page_size)
                if not page:
                    break  # an empty page ends pagination
                new = [h for h in page if h.image_url not in seen_urls and h.image_url not in urls]
                for h in new:
                    h.query = query
                    urls.add(h.image_url)
                hits += new
                offset += len(page)
                if len(hits) >= want * 2 or not new:
                    break
        except FetchError as e:
            e.partial = hits
            raise
        return hits


class BingProvider(SearchProvider):
    """GET /images/async?q=&first=&count= -> HTML fragment; each result's `m` attribute is JSON."""

    name = "bing"
    default_base = "https://www.bing.com"

    def search(self, query, offset, count):
        _, body, _ = self.client.get(f"{self.base_url}/images/async",
                                     params={"q": query, "first": offset, "count": count, "adlt": "moderate"})
        return self.parse(body.decode("utf-8", "replace"))

    @staticmethod
    def parse(html: str) -> list[Hit]:
        from bs4 import BeautifulSoup

        hits = []
        for el in BeautifulSoup(html, "html.parser").find_all(attrs={"m": True}):
            try:
                m = json.loads(el["m"])
            except (ValueError, TypeError):
                continue
            if isinstance(m, dict) and m.get("murl"):
                hits.append(Hit(m["murl"], m.get("turl", ""), m.get("purl", ""), m.get("t", "")))
        return hits


class DuckDuckGoProvider(SearchProvider):
    """GET /?q= for a vqd token, then /i.js?o=json&q=&vqd=&p=1&s=OFFSET -> JSON results[]."""

    name = "duckduckgo"
    default_base = "https://duckduckgo.com"
    page_size = 100
    _VQD = re.compile(r"""vqd\s*[=:]\s*["']?([0-9][0-9-]{3,})""")

    def __init__(self, client, base_url=None):
        super().__init__(client, base_url)
        self._vqd: dict[str, str] = {}

    def token(self, query: str) -> str:
        if query not in self._vqd:
            _, body, _ = self.client.get(f"{self.base_url}/", params={"q": query, "iax": "images", "ia": "images"})
            m = self._VQD.search(body.decode("utf-8", "replace"))
            if not m:
                raise FetchError("no vqd token", "DuckDuckGo page format changed or rate limited")
            self._vqd[query] = m.group(1)
        return self._vqd[query]

    def search(self, query, offset, count):
        vqd = self.token(query)
        _, body, _ = self.client.get(f"{self.base_url}/i.js",
                                     params={"o": "json", "q": query, "vqd": vqd, "p": "1", "s": offset, "l": "us-en"})
        return self.parse(body)

    @staticmethod
    def parse(body: bytes) -> list[Hit]:
        try:
            data = json.loads(body)
        except ValueError:
            raise FetchError("bad json", "DuckDuckGo i.js did not return JSON") from None
        return [Hit(r["image"], r.get("thumbnail", ""), r.get("url", ""), r.get("title", ""))
                for r in data.get("results", []) if r.get("image")]


class UrlListProvider(Provider):
    """Links collected by hand: one URL per line, or CSV `url,class` (class optional)."""

    name = "urls"

    def __init__(self, client, path):
        self.client = client
        self.path = Path(path)
        self.by_class: dict[int | None, list[Hit]] = {}
        path = Path(path)
        if not path.is_file():
            raise UserError(f"--url-list {path}: file not found")
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#") or line.lower().startswith("url,"):
                continue
            row = next(csv.reader([line]))
            url, cls = row[0].strip(), (row[1].strip() if len(row) > 1 else "")
            if not url.startswith(("http://", "https://")):
                raise UserError(f"--url-list {path}:{n}: not an http(s) URL: {url!r}")
            dex = pokedex.to_id(cls) if cls else None
            self.by_class.setdefault(dex, []).append(Hit(url))

    def hits(self, dex, query, want, seen_urls, max_pages):
        """URLs labelled with this class, plus unlabelled ones (allowed only when one class is fetched)."""
        return [h for h in self.by_class.get(dex, []) + self.by_class.get(None, []) if h.image_url not in seen_urls]

    def check_classes(self, classes):
        if None in self.by_class and len(classes) != 1:
            raise UserError(f"--url-list {self.path}: lines without a class column need exactly one --classes")


PROVIDERS = {"bing": BingProvider, "duckduckgo": DuckDuckGoProvider}


# ------------------------------------------------------------------ provenance

class Manifest:
    """DATA/manifest.csv (where each image came from) plus DATA/manifest.journal.csv, an append-only
    journal with one fsynced row per image, written *before* the image is renamed into place.

    A kill -9 at any moment therefore leaves every saved image with its provenance; the journal is
    merged into manifest.csv (atomically) when a class finishes and at the next start. Journal rows
    whose image never landed, and a row torn by the kill, are dropped.
    """

    def __init__(self, data_dir):
        self.data = Path(data_dir)
        self.path = self.data / MANIFEST
        self.journal_path = self.data / "manifest.journal.csv"
        self.df = self._load()
        self._pending: list[dict] = []
        self._fh = None
        journaled = self._read_journal()
        if journaled:
            self._pending = journaled
            self.save()

    def _load(self) -> pd.DataFrame:
        if not self.path.is_file():
            return pd.DataFrame(columns=MANIFEST_COLUMNS)
        try:
            df = pd.read_csv(self.path, dtype=str, encoding="utf-8").fillna("")
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            raise UserError(f"{self.path}: not a readable CSV ({' '.join(str(e).split())})") from None
        missing = set(MANIFEST_COLUMNS) - set(df.columns)
        if missing:
            raise UserError(f"{self.path}: missing columns {sorted(missing)}")
        return df[MANIFEST_COLUMNS]

    def _read_journal(self) -> list[dict]:
        if not self.journal_path.is_file():
            return []
        known = set(self.df["img_name"])
        with open(self.journal_path, newline="", encoding="utf-8", errors="replace") as f:
            rows = [r for r in csv.reader(f) if len(r) == len(MANIFEST_COLUMNS) and r != MANIFEST_COLUMNS]
        out = []
        for r in rows:
            row = dict(zip(MANIFEST_COLUMNS, r))
            if row["img_name"] not in known and (self.data / "images" / row["img_name"]).is_file():
                known.add(row["img_name"])
                out.append(row)
        return out

    @staticmethod
    def row(img_name: str, dex: int, provider: str = "unknown", hit: Hit | None = None, sha256: str = "",
            width="", height="", fetched_at: str | None = None) -> dict:
        return {"img_name": img_name, "pokemon_id": str(dex), "provider": provider,
                "query": hit.query if hit else "", "image_url": hit.image_url if hit else "",
                "page_url": hit.page_url if hit else "", "sha256": sha256, "width": str(width),
                "height": str(height),
                "fetched_at": fetched_at or datetime.now(timezone.utc).isoformat(timespec="seconds")}

    def add(self, row: dict) -> None:
        """Journal one row durably (the caller serialises calls)."""
        if self._fh is None:
            new = not self.journal_path.exists() or self.journal_path.stat().st_size == 0
            self._fh = open(self.journal_path, "a", newline="", encoding="utf-8")
            if new:
                csv.writer(self._fh).writerow(MANIFEST_COLUMNS)
        csv.writer(self._fh).writerow([row[c] for c in MANIFEST_COLUMNS])
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._pending.append(row)

    def frame(self) -> pd.DataFrame:
        if not self._pending:
            return self.df
        return pd.concat([self.df, pd.DataFrame(self._pending, columns=MANIFEST_COLUMNS)], ignore_index=True)

    def save(self) -> None:
        """Merge the journal into manifest.csv (atomic), then drop the journal."""
        self.df = self.frame()
        self._pending = []
        atomic_write_csv(self.path, self.df)
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        self.journal_path.unlink(missing_ok=True)

    def reconcile(self, images: Path) -> None:
        """Images on disk without a row (saved by a version without the journal, or copied in by hand)."""
        known = set(self.frame()["img_name"])
        added = False
        for p in sorted(images.iterdir()) if images.is_dir() else []:
            if p.name.startswith(".") or p.name in known:
                continue
            try:
                dex = pokedex.id_from_filename(p.name)
            except UserError:
                continue
            self._pending.append(self.row(p.name, dex, sha256=sha256_file(p), fetched_at=datetime.fromtimestamp(
                p.stat().st_mtime, timezone.utc).isoformat()))
            added = True
        if added:
            self.save()


# ------------------------------------------------------------------ the downloader

@dataclass
class DownloadOptions:
    """How much to fetch and how: the download command's flags that the Downloader itself uses."""
    per_class: int = 100
    min_size: int = 64  # minimum width and height in px
    workers: int = 16
    query_template: str = "{name} pokemon"
    max_pages: int = 10
    progress: bool = True
    deadline: float | None = 30.0  # seconds one image download may take in all


class Downloader:
    def __init__(self, data_dir, providers: list[Provider], client: HttpClient, options: DownloadOptions | None = None):
        self.data = Path(data_dir)
        self.images = self.data / "images"
        self.providers, self.client = providers, client
        self.opt = options or DownloadOptions()
        self.failures: Counter = Counter()
        self.dead: list[int] = []  # classes that got nothing because every engine failed
        self.plan: list[str] = []  # what a dry run would fetch, one line each, for the command to print
        self._lock = threading.Lock()
        self.manifest = Manifest(self.data)

    # search -----------------------------------------------------------
    def find_hits(self, dex: int, want: int, seen_urls: set) -> tuple[list[Hit], str]:
        """Hits from the first provider in the chain that returns any (fallback on errors/empty).

        Each failure is counted once: an engine that errored is not also counted as "no results".
        """
        query = self.opt.query_template.format(name=pokedex.display_name(dex), id=dex, slug=pokedex.name(dex))
        answered = False
        for prov in self.providers:
            try:
                hits = prov.hits(dex, query, want, seen_urls, self.opt.max_pages)
                answered = True
            except FetchError as e:
                self.failures[f"search {prov.name}: {e.reason}"] += 1
                hits = e.partial
            if hits:
                return hits, prov.name
            if answered:
                self.failures[f"search {prov.name}: no results"] += 1
        if not answered and self.providers:
            self.dead.append(dex)
        return [], ""

    # download ---------------------------------------------------------
    def fetch_one(self, hit: Hit) -> tuple[Path, str, int, int, str]:
        """Stream to a temp file, verify with Pillow; returns (tmp path, sha256, w, h, ext)."""
        from PIL import Image

        from pokemon_classifier.images import load_image

        fd, tmp = temp_beside(self.images / DOWNLOAD_TEMP)
        try:
            with os.fdopen(fd, "w+b") as f:
                self.client.get(hit.image_url, stream_to=f, deadline=self.opt.deadline)
                f.flush()
                os.fsync(f.fileno())
            try:
                img = load_image(tmp)
                with Image.open(tmp) as raw:
                    fmt = raw.format or ""
            except ImageError as e:
                raise FetchError("not an image", str(e).split(": ", 1)[-1]) from None
            if min(img.size) < self.opt.min_size:
                raise FetchError("too small", f"{img.size[0]}x{img.size[1]}")
            if fmt not in FORMAT_EXT:
                raise FetchError("unsupported format", fmt)
            return tmp, sha256_file(tmp), img.size[0], img.size[1], FORMAT_EXT[fmt]
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def run_class(self, dex: int, dry_run: bool = False) -> int:
        numbered = class_files(self.images, dex)
        existing = [p for p, _ in numbered]
        need = self.opt.per_class - len(existing)
        if need <= 0:
            return 0
        frame = self.manifest.frame()
        mf = frame[frame["pokemon_id"].astype(str) == str(dex)]
        seen_urls = set(mf["image_url"])
        hashes = set(mf["sha256"]) | {sha256_file(p) for p in existing if p.name not in set(mf["img_name"])}
        hits, provider = self.find_hits(dex, need, seen_urls)
        if dry_run:
            self.plan.append(f"{pokedex.display_name(dex)}: need {need}, {len(hits)} candidates "
                             f"from {provider or 'nobody'}")
            self.plan += [f"  {h.image_url}" for h in hits[:need]]
            return 0
        state = {"last": max((n for _, n in numbered), default=0), "saved": 0, "inflight": 0}
        # a top-up fetches what is missing plus a small margin for failures, not one image per worker
        margin = max(1, need // 10)
        cond = threading.Condition(self._lock)
        bar = tqdm(total=need, desc=pokedex.display_name(dex), unit="img", disable=not self.opt.progress, leave=False)

        def work(hit: Hit):
            with cond:
                while state["saved"] < need and state["saved"] + state["inflight"] >= need + margin:
                    cond.wait()
                if state["saved"] >= need:
                    return
                state["inflight"] += 1
            try:
                tmp, sha, w, h, ext = self.fetch_one(hit)
            except FetchError as e:
                with cond:
                    self.failures[e.reason] += 1
                    state["inflight"] -= 1
                    cond.notify_all()
                return
            with cond:
                state["inflight"] -= 1
                cond.notify_all()
                if sha in hashes or state["saved"] >= need:
                    tmp.unlink(missing_ok=True)
                    if sha in hashes:
                        self.failures["duplicate (sha256)"] += 1
                    return
                hashes.add(sha)
                state["last"] += 1
                name = f"{pokedex.name(dex)}{state['last']:03d}{ext}"
                # journal first: a kill between the two leaves a row without an image (dropped on
                # load), never an image without its provenance
                self.manifest.add(Manifest.row(name, dex, provider, hit, sha, w, h))
                os.replace(tmp, self.images / name)
                state["saved"] += 1
                bar.update()

        with ThreadPoolExecutor(self.opt.workers) as ex:
            list(ex.map(work, hits))
        bar.close()
        with self._lock:
            self.manifest.save()
        return state["saved"]

    def run(self, classes: list[int], dry_run: bool = False) -> int:
        self.images.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(self.images, [DOWNLOAD_TEMP], time.time())  # from a killed run
        if not dry_run:
            self.manifest.reconcile(self.images)
        total = 0
        for dex in tqdm(classes, desc="classes", unit="class", disable=not self.opt.progress):
            total += self.run_class(dex, dry_run)
        return total


def add_arguments(p) -> None:
    from pokemon_classifier.runtime import nonnegative_float, nonnegative_int, positive_float, positive_int

    p.add_argument("data", type=Path, help="data folder; images go to DATA/images/<name><NNN>.<ext>")
    p.add_argument("--provider", default="bing,duckduckgo",
                   help="bing, duckduckgo, urls, or a comma-separated fallback chain")
    p.add_argument("--url-list", type=Path, help="file of URLs (one per line, or url,class) for --provider urls")
    p.add_argument("--classes", nargs="+", help="names or dex ids, spaces or commas between (default: all 151)")
    p.add_argument("--per-class", type=positive_int, default=100, help="target images per class")
    p.add_argument("--query-template", default="{name} pokemon", help="{name}, {slug} and {id} are filled in")
    p.add_argument("--min-size", type=nonnegative_int, default=64, help="minimum width and height in px")
    p.add_argument("--workers", type=positive_int, default=16, help="concurrent downloads")
    p.add_argument("--per-host", type=positive_int, default=8, help="max concurrent requests to one host")
    p.add_argument("--search-interval", type=nonnegative_float, default=1.0, help="seconds between search requests per engine")
    p.add_argument("--timeout", type=positive_float, default=15.0, help="seconds one socket read may wait")
    p.add_argument("--deadline", type=positive_float, default=30.0, help="seconds one image download may take in all")
    p.add_argument("--retries", type=nonnegative_int, default=3)
    p.add_argument("--max-mb", type=positive_float, default=20.0, help="largest body accepted")
    p.add_argument("--user-agent", default=DEFAULT_UA)
    p.add_argument("--base-url", action="append", default=[], metavar="PROVIDER=URL",
                   help="override a provider's base URL (mirrors, tests)")
    p.add_argument("--dry-run", action="store_true", help="list what would be fetched, download nothing")
    p.add_argument("--no-progress", dest="progress", action="store_false")


def main(args) -> int:
    client = HttpClient(args.user_agent, timeout=(5.0, args.timeout), retries=args.retries,
                        max_bytes=int(args.max_mb * 1024 * 1024), per_host=args.per_host)
    bases = {}
    for spec in args.base_url:
        k, _, v = spec.partition("=")
        bases[k.strip()] = v.strip()
    providers: list[Provider] = []
    for name in [n.strip() for n in args.provider.split(",") if n.strip()]:
        if name == "urls":
            if not args.url_list:
                raise UserError("--provider urls needs --url-list FILE")
            providers.append(UrlListProvider(client, args.url_list))
        elif name in PROVIDERS:
            prov = PROVIDERS[name](client, bases.get(name))
            client.limiter.intervals[urlparse(prov.base_url).netloc] = args.search_interval
            providers.append(prov)
        elif name == "google":
            raise UserError("google: Google Images needs JavaScript since 2025 and cannot be scraped over plain "
                            "HTTP; use bing or duckduckgo")
        else:
            raise UserError(f"--provider {name!r}: choose from bing, duckduckgo, urls")
    names = [c.strip() for arg in args.classes or [] for c in str(arg).split(",") if c.strip()]
    classes = list(dict.fromkeys(pokedex.to_id(c) for c in names)) if names else list(pokedex.IDS)
    for prov in providers:
        prov.check_classes(classes)
    opts = DownloadOptions(args.per_class, args.min_size, args.workers, args.query_template,
                           progress=args.progress, deadline=args.deadline)
    dl = Downloader(args.data, providers, client, opts)
    n = dl.run(classes, args.dry_run)
    for line in dl.plan:
        print(line)
    if not args.dry_run:
        print(f"saved {n} images into {args.data / 'images'}; manifest: {args.data / 'manifest.csv'}")
        if not dl.dead:
            print(f"next: pokemon-classifier annotate {args.data}")
    if dl.failures:
        print("failures by reason:")
        for reason, c in dl.failures.most_common():
            print(f"  {reason}: {c}")
    if dl.dead:
        shown = ", ".join(pokedex.display_name(d) for d in dl.dead[:10]) + (" ..." if len(dl.dead) > 10 else "")
        print(f"error: {len(dl.dead)} class{'' if len(dl.dead) == 1 else 'es'} got nothing because every search engine failed ({shown}); "
              f"check the network or --base-url, then run the same command again", file=sys.stderr)
        return 1
    return 0
