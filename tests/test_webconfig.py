"""The exporter-toolkit web-config file: parsing, one-line errors, reloads, the config key."""

from __future__ import annotations

import base64
import builtins
import os
import ssl
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import trustme

from havip.config import ConfigError, load_config
from havip.shell import webconfig
from havip.shell.webconfig import (
    MissingExtra,
    TlsServerConfig,
    WebConfigError,
    WebSecurity,
    load_web_config,
)

HASH = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """A folder with a server certificate, its key and a client CA."""
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "server.crt"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.crt"))
    return tmp_path


def _write(folder: Path, text: str) -> Path:
    path = folder / "web-config.yml"
    path.write_text(text)
    return path


TLS = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"


def test_full_file(files: Path) -> None:
    path = _write(
        files,
        TLS + "  client_auth_type: RequireAndVerifyClientCert\n"
        f"  client_ca_file: {files / 'ca.crt'}\n"  # absolute names are kept
        "  min_version: TLS13\n"
        f"basic_auth_users:\n  prometheus: {HASH}\n",
    )
    cfg = load_web_config(path)
    assert cfg.tls == TlsServerConfig(
        cert_file=files / "server.crt",
        key_file=files / "server.key",
        client_auth_type="RequireAndVerifyClientCert",
        client_ca_file=files / "ca.crt",
        min_version="TLS13",
        max_version="TLS13",
    )
    assert cfg.users == {"prometheus": HASH.encode()}
    assert cfg.files() == (path, files / "server.crt", files / "server.key", files / "ca.crt")
    ctx = cfg.ssl_context()
    assert ctx is not None
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3


def test_empty_file_means_plain_and_open(tmp_path: Path) -> None:
    cfg = load_web_config(_write(tmp_path, ""))
    assert (cfg.tls, dict(cfg.users), cfg.ssl_context()) == (None, {}, None)


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("tls_server_config: [1\n", "", "not valid YAML (line 2)"),
        ("- a\n", "top level", "must be a mapping"),
        ("tls_config: {}\n", "tls_config", "unknown key"),
        ("http_server_config: {}\n", "http_server_config", "exporter-toolkit key havip does not"),
        (TLS + "  cert: x\n", "tls_server_config.cert", "does not support"),
        (TLS + "  cipher_suites: []\n", "tls_server_config.cipher_suites", "does not support"),
        (TLS + "  certfile: x\n", "tls_server_config.certfile", "unknown key"),
        ("tls_server_config:\n  key_file: server.key\n", "tls_server_config.cert_file", "required"),
        ("tls_server_config:\n  cert_file: nope.crt\n  key_file: server.key\n",
         "tls_server_config.cert_file", "no such file"),
        (TLS + "  cert_file: 3\n", "tls_server_config.cert_file", "non-empty string"),
        (TLS + "  client_auth_type: Sometimes\n", "tls_server_config.client_auth_type",
         "must be one of NoClientCert"),
        (TLS + "  client_auth_type: RequireAnyClientCert\n", "tls_server_config.client_auth_type",
         "not supported"),
        (TLS + "  client_auth_type: RequireAndVerifyClientCert\n",
         "tls_server_config.client_ca_file", "required with client_auth_type"),
        (TLS + "  client_ca_file: ca.crt\n", "tls_server_config.client_ca_file",
         "client_auth_type is NoClientCert"),
        (TLS + "  min_version: TLS14\n", "tls_server_config.min_version", "must be one of TLS10"),
        (TLS + "  min_version: TLS13\n  max_version: TLS12\n", "tls_server_config.min_version",
         "above max_version"),
        ("basic_auth_users:\n  prometheus: hunter2\n", "basic_auth_users.prometheus",
         "must be a bcrypt hash"),
        ("basic_auth_users:\n  12: " + HASH + "\n", "basic_auth_users.12", "user name"),
        ("basic_auth_users: [a]\n", "basic_auth_users", "must be a mapping"),
    ],
)  # fmt: skip
def test_errors_are_one_line_naming_file_and_key(
    files: Path, text: str, where: str, message: str
) -> None:
    path = _write(files, text)
    with pytest.raises(WebConfigError) as info:
        load_web_config(path)
    line = str(info.value)
    assert "\n" not in line
    assert line.startswith(f"{path}: {where}"), line
    assert message in line, line


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(WebConfigError, match=r"web-config.yml: cannot read: No such file"):
        load_web_config(tmp_path / "web-config.yml")


def test_mismatched_key_fails_when_the_context_is_built(files: Path) -> None:
    trustme.CA().issue_cert("x").private_key_pem.write_to_path(str(files / "server.key"))
    cfg = load_web_config(_write(files, TLS))
    with pytest.raises(ssl.SSLError, match=r"cert_file .* with key_file"):
        cfg.ssl_context()


@pytest.mark.parametrize("missing", ["yaml", "bcrypt"])
def test_missing_extra_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    real_import = builtins.__import__

    def fake_import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == missing:
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(MissingExtra, match=r"pip install 'havip\[web\]'"):
        load_web_config(_write(tmp_path, ""))


def _auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_changed_files_are_reloaded_and_a_bad_change_keeps_the_last_good(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = [0.0]
    path = _write(tmp_path, f"basic_auth_users:\n  a: {HASH}\n")
    security = WebSecurity(load_web_config(path), clock=lambda: now[0])
    _, auth = security.current()
    assert auth is not None and auth.check(_auth("a", "pw"))

    new = bcrypt.hashpw(b"new", bcrypt.gensalt(rounds=4)).decode()
    path.write_text(f"basic_auth_users:\n  b: {new}\n")
    os.utime(path, ns=(1, 1))  # a different stamp even within one clock tick
    _, auth = security.current()
    assert auth is not None and auth.check(_auth("a", "pw"))  # not looked at again yet
    now[0] += webconfig.RECHECK
    _, auth = security.current()
    assert auth is not None and auth.check(_auth("b", "new"))
    assert not auth.check(_auth("a", "pw"))

    path.write_text("basic_auth_users:\n  b: plaintext\n")
    now[0] += webconfig.RECHECK
    _, auth = security.current()
    assert auth is not None and auth.check(_auth("b", "new"))  # the last good settings
    assert "web_config_reload_failed" in caplog.text
    assert "basic_auth_users.b" in caplog.text


# -- the config key --------------------------------------------------------------------------

CONFIG = """\
node = "n1"
primary = "n1"
listen = "198.18.0.1:7411"
peer = {{ name = "n2", address = "198.18.0.2:7411" }}
tls = {{ ca = "ca.crt", cert = "n1.crt", key = "n1.key" }}
[[vip]]
address = "198.18.0.100/24"
interface = "eth0"
[metrics]
{metrics}
"""


def _config(tmp_path: Path, metrics: str) -> Path:
    path = tmp_path / "havip.toml"
    path.write_text(CONFIG.format(metrics=metrics))
    return path


def test_config_key_default_is_none(tmp_path: Path) -> None:
    assert load_config(_config(tmp_path, "")).metrics_web_config is None


def test_config_key_names_a_checked_file(tmp_path: Path) -> None:
    _write(tmp_path, f"basic_auth_users:\n  a: {HASH}\n")
    cfg = load_config(_config(tmp_path, 'web_config = "web-config.yml"'))  # relative: to here
    assert cfg.metrics_web_config == tmp_path / "web-config.yml"


def test_config_key_reports_the_web_config_error(tmp_path: Path) -> None:
    web = _write(tmp_path, "basic_auth_users:\n  a: hunter2\n")
    path = _config(tmp_path, 'web_config = "web-config.yml"')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.errors == [
        f"{path}: metrics.web_config: {web}: basic_auth_users.a: must be a bcrypt hash "
        "($2b$..., 60 characters), not a password; make one with: htpasswd -nBC 12 USER"
    ]


def test_config_key_missing_file(tmp_path: Path) -> None:
    path = _config(tmp_path, 'web_config = "nope.yml"')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert len(info.value.errors) == 1
    assert info.value.errors[0].startswith(f"{path}: metrics.web_config: {tmp_path}/nope.yml")
