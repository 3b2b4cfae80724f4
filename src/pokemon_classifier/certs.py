"""A self-signed TLS certificate made at start, so phones on the LAN get a secure context.

    pokemon-classifier serve --host 0.0.0.0 --https     # then open https://<this machine's IP>:7860

Browsers only grant the camera to https:// pages (or http://localhost). The certificate is made fresh
at every start with `cryptography`, valid for 30 days for localhost, this host's name and its
addresses; the browser warns once because nobody signed it. Its private temp folder
(pokemon-tls-<pid>-*) lives only until uvicorn has read the files (serve removes it before serving),
and folders a killed server left behind (its pid gone) are removed at the next start.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import socket
import tempfile
from pathlib import Path


def local_names(host: str | None = None) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) this server is likely reached by."""
    dns, ips = {"localhost"}, {"127.0.0.1", "::1"}
    with _quiet():
        dns.add(socket.gethostname())
    with _quiet():
        ips.update(socket.gethostbyname_ex(socket.gethostname())[2])
    with _quiet(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # UDP 'connect' sends nothing; it only picks the LAN interface
        ips.add(s.getsockname()[0])
    if host and host not in ("0.0.0.0", "::"):
        try:
            ips.add(str(ipaddress.ip_address(host)))
        except ValueError:
            dns.add(host)
    return sorted(dns), sorted(ips)


class _quiet:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] is not None and issubclass(exc[0], (OSError, RuntimeError))


def make_self_signed(out_dir=None, host: str | None = None, days: int = 30) -> tuple[Path, Path]:
    """Write cert.pem + key.pem (0600) into out_dir (default: a new private temp folder); returns both paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    out = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))
    dns, ips = local_names(host)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pokemon-classifier (self-signed)")])
    now = dt.datetime.now(dt.timezone.utc)
    san = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = out / "cert.pem", out / "key.pem"
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


PREFIX = "pokemon-tls-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_key_folders(root=None) -> list[Path]:
    """Delete this user's pokemon-tls-<pid>-* folders whose server is gone (kill -9 skips the clean-up),
    and unnumbered ones of older versions a minute after they were made; returns what was removed."""
    import shutil
    import time

    removed = []
    for d in Path(root or tempfile.gettempdir()).glob(PREFIX + "*"):
        with contextlib.suppress(OSError):
            st = d.lstat()
            if not d.is_dir() or d.is_symlink() or st.st_uid != getattr(os, "getuid", lambda: st.st_uid)():
                continue
            pid = d.name[len(PREFIX):].split("-", 1)[0]
            if (not _alive(int(pid))) if pid.isdigit() else time.time() - st.st_mtime > 60:
                shutil.rmtree(d)
                removed.append(d)
    return removed


@contextlib.contextmanager
def uvicorn_tls(enabled: bool, host: str | None = None):
    """uvicorn.run(**kwargs) for `serve --https`: {} when off; else a fresh certificate, removed on exit."""
    if not enabled:
        yield {}
        return
    import signal
    import threading

    def _exit(signum, frame):
        raise SystemExit(128 + signum)

    # uvicorn re-raises the SIGTERM it caught after its graceful shutdown; by default that kills the
    # process before this `with` can remove the private key, so turn it into SystemExit meanwhile.
    main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGTERM, _exit) if main else None
    remove_stale_key_folders()
    try:
        with tempfile.TemporaryDirectory(prefix=f"{PREFIX}{os.getpid()}-") as d:
            cert, key = make_self_signed(d, host)
            yield {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
    finally:
        if main:
            signal.signal(signal.SIGTERM, old)
