"""The metrics endpoint's security, from a Prometheus exporter-toolkit web-config file.

`[metrics] web_config = "/etc/havip/web-config.yml"` names a YAML file in the format that
node_exporter and every exporter built on the exporter-toolkit read, so operators reuse what
they know::

    tls_server_config:
      cert_file: /etc/havip/metrics.crt
      key_file: /etc/havip/metrics.key
      client_auth_type: RequireAndVerifyClientCert
      client_ca_file: /etc/havip/prometheus-ca.crt
      min_version: TLS12
    basic_auth_users:
      prometheus: $2b$12$...   # a bcrypt hash (htpasswd -nBC 12 prometheus)

Relative file names are relative to the web-config file, as in the toolkit. PyYAML and bcrypt
(the `web` extra) are imported only when a web config is in use. Files are re-read when they
change (certificate rotation without a restart); a change that does not load keeps the last
good settings and is logged.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import ssl
import threading
import time
from base64 import b64decode
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from havip.shell.logs import event

CLIENT_AUTH: Mapping[str, ssl.VerifyMode] = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
# Go's crypto/tls can ask for a certificate and not verify it; Python's ssl cannot.
_UNVERIFIED_AUTH = ("RequestClientCert", "RequireAnyClientCert")
TLS_VERSIONS: Mapping[str, ssl.TLSVersion] = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
_TOP_KEYS = ("tls_server_config", "basic_auth_users")
_TLS_KEYS = (
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "min_version",
    "max_version",
)
# Valid for the exporter-toolkit, not (yet) for havip: named as such rather than "unknown".
_TOOLKIT_ONLY = {
    "": ("http_server_config",),
    "tls_server_config": (
        "cert",
        "key",
        "client_ca",
        "client_allowed_sans",
        "cipher_suites",
        "curve_preferences",
        "prefer_server_cipher_suites",
    ),
}
_BCRYPT_RE = re.compile(r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}")
# Checked when the user is unknown, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = b"$2b$10$bC4p.FBxxdiDeKDRkBBFguUQw8qUlxHjM9zsKy3xZhWJjLRhFRJv2"
_CACHE_MAX = 64  # remembered good credentials (bcrypt is slow on purpose; scrapes are frequent)
RECHECK = 1.0  # seconds between looks at the files' modification times


class WebConfigError(ValueError):
    """A web-config problem, one line: 'FILE: key.path: what is wrong'."""


class MissingExtra(WebConfigError):
    """PyYAML or bcrypt is not installed (pip install 'havip[web]')."""


@dataclass(frozen=True, kw_only=True)
class TlsServerConfig:
    """`tls_server_config`: the endpoint's certificate and how clients are checked."""

    cert_file: Path
    key_file: Path
    client_auth_type: str = "NoClientCert"
    client_ca_file: Path | None = None
    min_version: str = "TLS12"
    max_version: str = "TLS13"


@dataclass(frozen=True, kw_only=True)
class WebConfig:
    """A parsed web-config file: TLS (None: plain HTTP) and basic-auth users (empty: none)."""

    path: Path
    tls: TlsServerConfig | None = None
    users: Mapping[str, bytes] = field(default_factory=dict)  # name -> bcrypt hash

    def files(self) -> tuple[Path, ...]:
        """The web-config file and every file it names (watched for changes)."""
        named: tuple[Path | None, ...] = ()
        if self.tls is not None:
            named = (self.tls.cert_file, self.tls.key_file, self.tls.client_ca_file)
        return (self.path, *(p for p in named if p is not None))

    def ssl_context(self) -> ssl.SSLContext | None:
        """A server context for `tls` (None without it); OSError/ssl.SSLError if files are bad."""
        tls = self.tls
        if tls is None:
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = TLS_VERSIONS[tls.min_version]
        ctx.maximum_version = TLS_VERSIONS[tls.max_version]
        try:
            ctx.load_cert_chain(tls.cert_file, tls.key_file)
        except ssl.SSLError as exc:
            raise ssl.SSLError(
                exc.errno,
                f"{self.path}: tls_server_config: cert_file {tls.cert_file} with key_file "
                f"{tls.key_file}: {exc.reason or exc}",
            ) from exc
        if tls.client_ca_file is not None:
            ctx.load_verify_locations(cafile=tls.client_ca_file)
        ctx.verify_mode = CLIENT_AUTH[tls.client_auth_type]
        return ctx


def load_web_config(path: Path) -> WebConfig:
    """Read and check a web-config file: it exists, parses, has only known keys and sound
    values, and the files it names exist. Raises WebConfigError (one line) otherwise."""
    yaml = _import("yaml", "PyYAML")
    _import("bcrypt", "bcrypt")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise WebConfigError(f"{path}: cannot read: {reason}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise WebConfigError(f"{path}: not valid YAML{line}: {problem}") from exc
    if data is None:
        data = {}
    top = _mapping(data, path, "")
    _check_keys(top, path, "", _TOP_KEYS)
    tls = _tls(top.get("tls_server_config"), path)
    users = _users(top.get("basic_auth_users"), path)
    return WebConfig(path=path, tls=tls, users=users)


class BasicAuth:
    """Checks `Authorization: Basic` headers against bcrypt hashes; thread-safe."""

    def __init__(self, users: Mapping[str, bytes]) -> None:
        self._users = dict(users)
        self._good: set[bytes] = set()
        self._lock = threading.Lock()

    def check(self, header: str | None) -> bool:
        """Whether `header` (the Authorization value, or None) names a user and their password."""
        import bcrypt

        if header is None:
            return False
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, colon, password = b64decode(token.strip(), validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        if not colon:
            return False
        hashed = self._users.get(user)
        # Keyed by everything checked, so a changed hash never matches an old entry.
        key = hashlib.sha256(b"\0".join((user.encode(), password.encode(), hashed or b""))).digest()
        with self._lock:
            if hashed is not None and key in self._good:
                return True
        try:
            ok = bcrypt.checkpw(password.encode(), hashed or _DUMMY_HASH)
        except ValueError:  # bcrypt >= 5 refuses passwords over 72 bytes
            ok = False
        ok = ok and hashed is not None
        if ok:
            with self._lock:
                if len(self._good) >= _CACHE_MAX:
                    self._good.clear()
                self._good.add(key)
        return ok


class WebSecurity:
    """The endpoint's current TLS context and basic auth, re-read when the files change.

    `load` raises (WebConfigError, or OSError for certificate files) so that a bad file
    at start-up keeps the endpoint closed; later a bad change keeps the last good settings.
    """

    def __init__(self, config: WebConfig, *, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._install(config)

    @classmethod
    def load(cls, path: Path) -> WebSecurity:
        """Load `path` and build its TLS context now (errors raise)."""
        return cls(load_web_config(path))

    def _install(self, config: WebConfig) -> None:
        context = config.ssl_context()  # may raise: then nothing changes
        self.config = config
        self.context = context
        self.auth = BasicAuth(config.users) if config.users else None
        self._stamp = _stamp(config.files())
        self._checked = self._clock()

    def current(self) -> tuple[ssl.SSLContext | None, BasicAuth | None]:
        """The TLS context (None: plain HTTP) and basic auth (None: open) to use now."""
        with self._lock:
            now = self._clock()
            if now - self._checked >= RECHECK:
                self._checked = now
                stamp = _stamp(self.config.files())
                if stamp != self._stamp:
                    self._reload(stamp)
            return self.context, self.auth

    def _reload(self, stamp: tuple[tuple[int, int] | None, ...]) -> None:
        path = self.config.path
        try:
            self._install(load_web_config(path))
        except (WebConfigError, OSError) as exc:
            self._stamp = stamp  # reported once per change, not on every connection
            event(
                "web_config_reload_failed",
                f"{exc}; keeping the previous settings",
                level=logging.ERROR,
                path=str(path),
            )
            return
        event("web_config_reloaded", "metrics endpoint security re-read", path=str(path))


def _stamp(paths: tuple[Path, ...]) -> tuple[tuple[int, int] | None, ...]:
    out: list[tuple[int, int] | None] = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            out.append(None)
        else:
            out.append((st.st_mtime_ns, st.st_size))
    return tuple(out)


def _import(module: str, dist: str) -> Any:
    try:
        return __import__(module)
    except ImportError as exc:
        raise MissingExtra(
            f"metrics.web_config needs the Python package {dist}: pip install 'havip[web]'"
        ) from exc


def _mapping(value: object, path: Path, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        kind = "empty" if value is None else type(value).__name__
        raise WebConfigError(f"{path}: {where or 'top level'}: must be a mapping, got {kind}")
    return value


def _check_keys(table: dict[str, Any], path: Path, section: str, allowed: tuple[str, ...]) -> None:
    prefix = f"{section}." if section else ""
    for key in table:
        if key in _TOOLKIT_ONLY.get(section, ()):
            raise WebConfigError(
                f"{path}: {prefix}{key}: an exporter-toolkit key havip does not support; remove it"
            )
        if not isinstance(key, str) or key not in allowed:
            raise WebConfigError(
                f"{path}: {prefix}{key}: unknown key (known: {', '.join(allowed)})"
            )


def _tls(value: object, path: Path) -> TlsServerConfig | None:
    if value is None:
        return None
    table = _mapping(value, path, "tls_server_config")
    _check_keys(table, path, "tls_server_config", _TLS_KEYS)

    def text(key: str, default: str | None) -> str | None:
        got = table.get(key, default)
        if got is not None and (not isinstance(got, str) or not got):
            raise WebConfigError(f"{path}: tls_server_config.{key}: must be a non-empty string")
        return got

    def file(key: str) -> Path | None:
        name = text(key, None)
        if name is None:
            return None
        found = path.parent / name  # an absolute name replaces the folder
        if not found.is_file():
            raise WebConfigError(f"{path}: tls_server_config.{key}: no such file {found}")
        return found

    cert, key = file("cert_file"), file("key_file")
    for name, named in (("cert_file", cert), ("key_file", key)):
        if named is None:
            raise WebConfigError(f"{path}: tls_server_config.{name}: required key missing")
    assert cert is not None and key is not None
    auth = text("client_auth_type", "NoClientCert")
    assert auth is not None
    if auth in _UNVERIFIED_AUTH:
        raise WebConfigError(
            f"{path}: tls_server_config.client_auth_type: {auth} (a client certificate "
            "that is not verified) is not supported; use VerifyClientCertIfGiven or "
            "RequireAndVerifyClientCert with client_ca_file"
        )
    if auth not in CLIENT_AUTH:
        raise WebConfigError(
            f"{path}: tls_server_config.client_auth_type: must be one of "
            f"{', '.join(CLIENT_AUTH)}, got {auth!r}"
        )
    ca = file("client_ca_file")
    if auth != "NoClientCert" and ca is None:
        raise WebConfigError(
            f"{path}: tls_server_config.client_ca_file: required with client_auth_type {auth}"
        )
    if auth == "NoClientCert" and ca is not None:
        raise WebConfigError(
            f"{path}: tls_server_config.client_ca_file: set, but client_auth_type is "
            "NoClientCert (add client_auth_type: RequireAndVerifyClientCert)"
        )
    versions: dict[str, str] = {}
    for name, default in (("min_version", "TLS12"), ("max_version", "TLS13")):
        got = text(name, default)
        assert got is not None
        if got not in TLS_VERSIONS:
            raise WebConfigError(
                f"{path}: tls_server_config.{name}: must be one of {', '.join(TLS_VERSIONS)}, "
                f"got {got!r}"
            )
        versions[name] = got
    if TLS_VERSIONS[versions["min_version"]] > TLS_VERSIONS[versions["max_version"]]:
        raise WebConfigError(
            f"{path}: tls_server_config.min_version: {versions['min_version']} is above "
            f"max_version {versions['max_version']}"
        )
    return TlsServerConfig(
        cert_file=cert,
        key_file=key,
        client_auth_type=auth,
        client_ca_file=ca,
        min_version=versions["min_version"],
        max_version=versions["max_version"],
    )


def _users(value: object, path: Path) -> dict[str, bytes]:
    if value is None:
        return {}
    table = _mapping(value, path, "basic_auth_users")
    users: dict[str, bytes] = {}
    for user, hashed in table.items():
        where = f"{path}: basic_auth_users.{user}"
        if not isinstance(user, str) or not user or ":" in user:
            raise WebConfigError(f"{where}: a user name must be a non-empty string without ':'")
        if not isinstance(hashed, str) or not _BCRYPT_RE.fullmatch(hashed):
            raise WebConfigError(
                f"{where}: must be a bcrypt hash ($2b$..., 60 characters), not a password; "
                "make one with: htpasswd -nBC 12 USER"
            )
        users[user] = hashed.encode()
    return users
