"""PKI: files and modes, certificate contents, and real TLS 1.3 mutual-auth handshakes."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
import ssl
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from havip.config import TlsFiles
from havip.pki import (
    CertInfo,
    NodeSpec,
    PkiError,
    cert_names,
    format_info,
    init_pki,
    issue_node,
    issue_node_cert_pem,
    parse_node_spec,
    show,
    verify_node_files,
)
from havip.shell.transport import client_context, server_context

SCALE = float(os.environ.get("HAVIP_TEST_TIME_SCALE", "1"))
N1 = NodeSpec(name="n1", address=ipaddress.ip_address("198.18.0.1"))
N2 = NodeSpec(name="n2", address=ipaddress.ip_address("198.18.0.2"))
UTC = dt.UTC


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    directory = tmp_path / "pki"
    init_pki(directory, [N1, N2])
    return directory


@pytest.fixture
def other_pki(tmp_path: Path) -> Path:
    directory = tmp_path / "other"
    init_pki(directory, [N1, N2])
    return directory


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


# --- parse_node_spec --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "name", "address"),
    [
        ("n1", "n1", None),
        ("n1=198.18.0.1", "n1", "198.18.0.1"),
        ("node-a.example=2001:db8::1", "node-a.example", "2001:db8::1"),
        ("N2", "N2", None),
        ("a" * 63, "a" * 63, None),
    ],
)
def test_parse_node_spec(text: str, name: str, address: str | None) -> None:
    spec = parse_node_spec(text)
    assert spec.name == name
    assert spec.address == (None if address is None else ipaddress.ip_address(address))


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "invalid node name"),
        ("=198.18.0.1", "invalid node name"),
        ("n1=", "missing address"),
        ("n1=999.1.1.1", "not an IP address"),
        ("n1=host.example", "not an IP address"),
        ("n1=fe80::1%eth0", "zone id"),
        ("-n1", "invalid node name"),
        ("n1/../x", "invalid node name"),
        ("n 1", "invalid node name"),
        ("a" * 64, "invalid node name"),
        ("n1.", "must not end"),
        ("n1..x", "must not end"),
        ("198.18.0.1", "must not be an IP address"),
        ("ca", "reserved"),
        ("CA=198.18.0.9", "reserved"),
    ],
)
def test_parse_node_spec_errors(text: str, needle: str) -> None:
    with pytest.raises(PkiError, match=needle):
        parse_node_spec(text)


def test_nodespec_validates_when_built_directly() -> None:
    with pytest.raises(PkiError, match="invalid node name"):
        NodeSpec(name="bad name", address=None)


# --- files and modes --------------------------------------------------------------------------


@pytest.mark.parametrize("mask", [0o000, 0o022, 0o077])
def test_init_writes_files_with_modes(tmp_path: Path, mask: int) -> None:
    directory = tmp_path / "deep" / "pki"
    old = os.umask(mask)
    try:
        written = init_pki(directory, [N1, N2])
    finally:
        os.umask(old)
    names = {"ca.crt", "ca.key", "n1.crt", "n1.key", "n2.crt", "n2.key"}
    assert {p.name for p in written} == names
    assert {p.name for p in directory.iterdir()} == names  # no temp files left behind
    assert _mode(directory) == 0o700
    for path in written:
        assert _mode(path) == (0o600 if path.suffix == ".key" else 0o644), path
        text = path.read_text()
        assert text.startswith(
            "-----BEGIN PRIVATE KEY-----"
            if path.suffix == ".key"
            else "-----BEGIN CERTIFICATE-----"
        )


def test_init_refuses_to_overwrite_and_writes_nothing(tmp_path: Path, umask: None) -> None:
    directory = tmp_path / "pki"
    directory.mkdir()
    (directory / "n2.key").write_bytes(b"precious")
    with pytest.raises(PkiError, match=r"n2\.key already exists; use --force"):
        init_pki(directory, [N1, N2])
    assert _snapshot(directory) == {"n2.key": b"precious"}


def test_init_twice_refuses_then_force_replaces(pki: Path) -> None:
    before = _snapshot(pki)
    with pytest.raises(PkiError, match="--force"):
        init_pki(pki, [N1])
    assert _snapshot(pki) == before
    written = init_pki(pki, [N1, N2], force=True)
    after = _snapshot(pki)
    assert set(after) == set(before)
    assert all(after[p.name] != before[p.name] for p in written)
    assert _mode(pki / "n1.key") == 0o600
    assert verify_node_files(pki / "ca.crt", pki / "n1.crt", pki / "n1.key", "n1") == []


def test_init_rejects_duplicates_and_bad_days(tmp_path: Path) -> None:
    with pytest.raises(PkiError, match="given twice"):
        init_pki(tmp_path / "a", [N1, N1])
    with pytest.raises(PkiError, match="at least 1 day"):
        init_pki(tmp_path / "b", [N1], days=0)
    assert not (tmp_path / "a").exists()
    assert not (tmp_path / "b").exists()


def test_issue_adds_and_renews(pki: Path) -> None:
    n3 = parse_node_spec("n3=198.18.0.3")
    written = issue_node(pki, n3, days=30)
    assert {p.name for p in written} == {"n3.crt", "n3.key"}
    assert _mode(pki / "n3.key") == 0o600
    assert verify_node_files(pki / "ca.crt", pki / "n3.crt", pki / "n3.key", "n3") == []
    cert = _cert(pki / "n3.crt")
    assert cert.not_valid_after_utc - cert.not_valid_before_utc < dt.timedelta(days=31)

    before = _snapshot(pki)
    with pytest.raises(PkiError, match=r"n1\.crt, .*n1\.key already exist; use --force"):
        issue_node(pki, N1)
    assert _snapshot(pki) == before

    issue_node(pki, N1, force=True)  # renew
    assert (pki / "n1.crt").read_bytes() != before["n1.crt"]
    assert (pki / "ca.crt").read_bytes() == before["ca.crt"]
    assert verify_node_files(pki / "ca.crt", pki / "n1.crt", pki / "n1.key", "n1") == []


def test_write_failure_is_a_pki_error(pki: Path) -> None:
    # A directory squatting on the target name makes the final rename fail, even as root.
    (pki / "n3.key").mkdir()
    with pytest.raises(PkiError, match=r"n3\.key: cannot write"):
        issue_node(pki, NodeSpec(name="n3"), force=True)
    assert not list(pki.glob(".*.tmp"))


def test_issue_without_ca(tmp_path: Path) -> None:
    with pytest.raises(PkiError, match=r"ca\.crt: not found"):
        issue_node(tmp_path, N1)


def test_issue_with_mismatched_ca_key(pki: Path, other_pki: Path) -> None:
    (pki / "ca.key").write_bytes((other_pki / "ca.key").read_bytes())
    with pytest.raises(PkiError, match=r"ca\.key: does not match .*ca\.crt"):
        issue_node(pki, NodeSpec(name="n3"))


def test_issue_is_capped_by_ca_lifetime(tmp_path: Path) -> None:
    init_pki(tmp_path, [], ca_days=10)
    issue_node(tmp_path, N1, days=365)
    assert (
        _cert(tmp_path / "n1.crt").not_valid_after_utc
        == _cert(tmp_path / "ca.crt").not_valid_after_utc
    )


# --- certificate contents ---------------------------------------------------------------------


def test_node_certificate_contents(pki: Path) -> None:
    ca = _cert(pki / "ca.crt")
    cert = _cert(pki / "n1.crt")
    ext = cert.extensions
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "n1"
    assert cert.issuer == ca.subject
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    public = cert.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert public.curve.name == "secp256r1"

    san = ext.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["n1"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("198.18.0.1")]
    assert cert_names(cert) == {"n1"}

    eku = ext.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}

    bc = ext.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    ku = ext.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign

    ski = ext.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(public)
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest

    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=365) <= life <= dt.timedelta(days=366)


def test_ca_certificate_contents(pki: Path) -> None:
    ca = _cert(pki / "ca.crt")
    assert ca.subject.rfc4514_string() == "CN=havip CA"
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = ca.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    assert ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    life = ca.not_valid_after_utc - ca.not_valid_before_utc
    assert dt.timedelta(days=3650) <= life <= dt.timedelta(days=3651)


def test_node_without_address_has_dns_san_only(tmp_path: Path) -> None:
    init_pki(tmp_path, [parse_node_spec("solo")])
    san = _cert(tmp_path / "solo.crt").extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert list(san.value) == [x509.DNSName("solo")]


# --- real TLS 1.3 mutual authentication -------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Side:
    ca: Path
    cert: Path
    key: Path


def _files(side: Side) -> TlsFiles:
    return TlsFiles(ca=side.ca, cert=side.cert, key=side.key)


@dataclass(kw_only=True)
class Outcome:
    server_error: BaseException | None = None
    client_error: BaseException | None = None
    client_got: bytes = b""
    client_cert_der: bytes | None = None


def _handshake(server: Side, client: Side, server_hostname: str) -> Outcome:
    """One TLS 1.3 mutual-auth exchange over a socketpair, with the daemon's own contexts (those
    that `havip run` builds from the same files); the server speaks first."""
    server_ctx = server_context(_files(server))
    client_ctx = client_context(_files(client))
    outcome = Outcome()
    s_sock, c_sock = socket.socketpair()
    for sock in (s_sock, c_sock):
        sock.settimeout(5 * SCALE)

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(s_sock, server_side=True) as tls:
                outcome.client_cert_der = tls.getpeercert(binary_form=True)
                tls.sendall(b"hi")
        except (OSError, ssl.SSLError) as e:
            outcome.server_error = e
        finally:
            s_sock.close()

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client_ctx.wrap_socket(c_sock, server_hostname=server_hostname) as tls:
            # With TLS 1.3 a rejected client certificate only shows up on this read.
            outcome.client_got = tls.recv(2)
    except (OSError, ssl.SSLError) as e:
        outcome.client_error = e
    finally:
        c_sock.close()
        thread.join(10 * SCALE)
    assert not thread.is_alive()
    return outcome


def _side(directory: Path, node: str, ca_dir: Path | None = None) -> Side:
    return Side(
        ca=(ca_dir or directory) / "ca.crt",
        cert=directory / f"{node}.crt",
        key=directory / f"{node}.key",
    )


def test_mutual_tls_handshake_succeeds(pki: Path) -> None:
    out = _handshake(_side(pki, "n1"), _side(pki, "n2"), server_hostname="n1")
    assert out.server_error is None and out.client_error is None
    assert out.client_got == b"hi"
    assert out.client_cert_der is not None
    assert cert_names(x509.load_der_x509_certificate(out.client_cert_der)) == {"n2"}


def test_client_rejects_wrong_server_name(pki: Path) -> None:
    out = _handshake(_side(pki, "n1"), _side(pki, "n2"), server_hostname="n2")
    assert isinstance(out.client_error, ssl.SSLCertVerificationError)
    assert "Hostname mismatch" in str(out.client_error)


def test_server_rejects_client_from_other_ca(pki: Path, other_pki: Path) -> None:
    out = _handshake(_side(pki, "n1"), _side(other_pki, "n2", ca_dir=pki), server_hostname="n1")
    assert isinstance(out.server_error, ssl.SSLCertVerificationError)
    assert out.server_error.verify_message == "unable to get local issuer certificate"
    assert out.client_got != b"hi"


def test_client_rejects_server_from_other_ca(pki: Path, other_pki: Path) -> None:
    out = _handshake(_side(other_pki, "n1", ca_dir=pki), _side(pki, "n2"), server_hostname="n1")
    assert isinstance(out.client_error, ssl.SSLCertVerificationError)
    assert out.client_error.verify_message in {
        "unable to get local issuer certificate",
        "certificate signature failure",
    }


def _write_expired_n1(pki: Path) -> None:
    now = dt.datetime.now(UTC)
    cert_pem, key_pem = issue_node_cert_pem(
        (pki / "ca.crt").read_bytes(),
        (pki / "ca.key").read_bytes(),
        N1,
        not_before=now - dt.timedelta(days=30),
        not_after=now - dt.timedelta(days=1),
    )
    (pki / "n1.crt").write_bytes(cert_pem)
    (pki / "n1.key").write_bytes(key_pem)


def test_expired_certificate_fails_verification(pki: Path) -> None:
    _write_expired_n1(pki)
    out = _handshake(_side(pki, "n1"), _side(pki, "n2"), server_hostname="n1")
    assert isinstance(out.client_error, ssl.SSLCertVerificationError)
    assert out.client_error.verify_message == "certificate has expired"
    problems = verify_node_files(pki / "ca.crt", pki / "n1.crt", pki / "n1.key", "n1")
    assert len(problems) == 1 and "n1.crt: expired on" in problems[0]


def test_issue_node_cert_pem_rejects_empty_window(pki: Path) -> None:
    now = dt.datetime.now(UTC)
    with pytest.raises(PkiError, match="not_after must be later"):
        issue_node_cert_pem(
            (pki / "ca.crt").read_bytes(),
            (pki / "ca.key").read_bytes(),
            N1,
            not_before=now,
            not_after=now,
        )


# --- verify_node_files ------------------------------------------------------------------------


def _verify(pki: Path, cert: str = "n1", key: str = "n1", node: str = "n1") -> list[str]:
    return verify_node_files(pki / "ca.crt", pki / f"{cert}.crt", pki / f"{key}.key", node)


def test_verify_ok(pki: Path) -> None:
    assert _verify(pki) == []
    assert _verify(pki, "n2", "n2", "n2") == []


def test_verify_mismatched_key(pki: Path) -> None:
    problems = _verify(pki, key="n2")
    assert len(problems) == 1
    assert "n2.key: does not match the certificate" in problems[0]


def test_verify_wrong_node(pki: Path) -> None:
    problems = _verify(pki, node="n2")
    assert problems == [f"{pki / 'n1.crt'}: does not name node n2 (it names n1)"]


def test_verify_key_mode(pki: Path) -> None:
    os.chmod(pki / "n1.key", 0o644)
    problems = _verify(pki)
    assert problems == [f"{pki / 'n1.key'}: readable by group or others (mode 0644); chmod 600 it"]


def test_verify_other_ca(pki: Path, other_pki: Path) -> None:
    problems = verify_node_files(pki / "ca.crt", other_pki / "n1.crt", other_pki / "n1.key", "n1")
    assert problems == [f"{other_pki / 'n1.crt'}: not signed by the CA in {pki / 'ca.crt'}"]


def test_verify_ca_not_a_ca(pki: Path) -> None:
    problems = verify_node_files(pki / "n2.crt", pki / "n1.crt", pki / "n1.key", "n1")
    assert any("n2.crt: not a CA certificate" in p for p in problems)
    assert any("n1.crt: not signed by the CA" in p for p in problems)


def test_verify_unreadable_and_garbage(pki: Path) -> None:
    (pki / "n1.crt").write_text("not a certificate\n")
    problems = verify_node_files(pki / "missing.crt", pki / "n1.crt", pki / "nope.key", "n1")
    assert len(problems) == 3
    assert "missing.crt: cannot read" in problems[0]
    assert "n1.crt: not a PEM certificate" in problems[1]
    assert "nope.key: cannot read" in problems[2]


def test_verify_not_yet_valid(pki: Path) -> None:
    past = dt.datetime.now(UTC) - dt.timedelta(days=2)
    problems = verify_node_files(pki / "ca.crt", pki / "n1.crt", pki / "n1.key", "n1", now=past)
    assert len(problems) == 2  # both the CA and the node certificate
    assert all("not valid until" in p for p in problems)


# --- show -------------------------------------------------------------------------------------


def test_show_lists_days_left(pki: Path) -> None:
    issue_node(pki, parse_node_spec("a0"), days=10)  # sorts before ca.crt by name
    when = dt.datetime.now(UTC) + dt.timedelta(days=100)
    infos = show(pki, now=when)
    assert [i.path.name for i in infos] == ["ca.crt", "a0.crt", "n1.crt", "n2.crt"]
    ca, a0, n1, _ = infos
    assert ca.is_ca and not n1.is_ca
    assert ca.subject == ca.issuer == "CN=havip CA"
    assert n1.subject == "CN=n1" and n1.issuer == "CN=havip CA"
    assert n1.sans == ("DNS:n1", "IP:198.18.0.1")
    assert n1.days_left == (n1.not_after - when).days
    assert 263 <= n1.days_left <= 265
    assert a0.days_left < 0
    fingerprint = _cert(pki / "n1.crt").fingerprint(hashes.SHA256()).hex(":").upper()
    assert n1.sha256 == fingerprint and len(n1.sha256) == 95

    text = format_info(n1)
    assert "CN=n1" in text and "DNS:n1, IP:198.18.0.1" in text and fingerprint in text
    assert f"{n1.days_left} days left" in text
    assert "EXPIRED" in format_info(a0)
    assert "(CA)" in format_info(ca)


def test_show_errors(tmp_path: Path) -> None:
    with pytest.raises(PkiError, match="no such directory"):
        show(tmp_path / "missing")
    (tmp_path / "junk.crt").write_text("junk")
    with pytest.raises(PkiError, match=r"junk\.crt: not a PEM certificate"):
        show(tmp_path)


def test_certinfo_is_frozen(pki: Path) -> None:
    info: CertInfo = show(pki)[0]
    with pytest.raises(AttributeError):
        info.days_left = 0  # type: ignore[misc]
