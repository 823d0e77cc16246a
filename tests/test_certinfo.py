"""havip.shell.certinfo: the certificate facts read without `cryptography`, checked against
what `cryptography` itself reads from the same certificates."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import os
import re
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from havip.pki import init_pki, parse_node_spec
from havip.shell.certinfo import CertInfo, from_der, peer_certificate, read_pem_file

UTC = dt.UTC
SCALE = float(os.environ.get("HAVIP_TEST_TIME_SCALE", "1"))


def expected(cert: x509.Certificate) -> CertInfo:
    """What `cryptography` says, in certinfo's terms."""

    def cn(name: x509.Name) -> str:
        attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
        return str(attrs[0].value) if attrs else ""

    return CertInfo(
        subject_cn=cn(cert.subject),
        issuer_cn=cn(cert.issuer),
        serial_number=cert.serial_number,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
    )


def der_of(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def mint(
    *,
    not_before: dt.datetime,
    not_after: dt.datetime,
    subject: str | None = "n1",
    issuer: str | None = "a CA",
    serial: int = 0x1234_5678_9ABC_DEF0,
) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())

    def name(cn: str | None) -> x509.Name:
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "havip tests")]
        if cn is not None:
            attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
        return x509.Name(attrs)

    return (
        x509.CertificateBuilder()
        .subject_name(name(subject))
        .issuer_name(name(issuer))
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )


# -- against real certificates -------------------------------------------------------------------


def test_havip_pki_certificates_read_as_cryptography_reads_them(tmp_path: Path) -> None:
    init_pki(tmp_path, [parse_node_spec("n1=198.18.0.1"), parse_node_spec("n2")])
    for name in ("ca.crt", "n1.crt", "n2.crt"):
        path = tmp_path / name
        want = expected(x509.load_pem_x509_certificate(path.read_bytes()))
        assert read_pem_file(path) == [want], name
    n1 = read_pem_file(tmp_path / "n1.crt")[0]
    assert (n1.subject_cn, n1.issuer_cn) == ("n1", "havip CA")
    assert n1.not_before < n1.not_after
    assert n1.not_after_timestamp == n1.not_after.timestamp()
    assert n1.not_before_timestamp == n1.not_before.timestamp()


def test_trustme_certificates_and_a_bundle(tmp_path: Path) -> None:
    root = trustme.CA()
    intermediate = root.create_child_ca()
    leaf = intermediate.issue_cert("n1.example", common_name="n1.example")
    chain = tmp_path / "chain.pem"
    leaf.private_key_and_cert_chain_pem.write_to_path(str(chain))  # key, leaf, intermediate
    got = read_pem_file(chain)
    want = [expected(x509.load_pem_x509_certificate(blob.bytes())) for blob in leaf.cert_chain_pems]
    assert got == want
    assert len(got) == 2
    assert got[0].subject_cn == "n1.example"
    # trustme's CAs have no CN (only O and OU): the label is empty, not an error.
    assert got[0].issuer_cn == got[1].subject_cn == ""
    ca = expected(x509.load_pem_x509_certificate(root.cert_pem.bytes()))
    assert from_der(der_of(x509.load_pem_x509_certificate(root.cert_pem.bytes()))) == ca


def test_a_der_file_and_a_trusted_certificate_block(tmp_path: Path) -> None:
    cert = mint(not_before=dt.datetime(2024, 1, 1, tzinfo=UTC), not_after=dt.datetime(2034, 1, 1))
    (tmp_path / "c.der").write_bytes(der_of(cert))
    assert read_pem_file(tmp_path / "c.der") == [expected(cert)]
    # OpenSSL's TRUSTED CERTIFICATE: the certificate followed by its trust settings.
    aux = bytes.fromhex("3006 0604 2b060105".replace(" ", ""))
    body = base64.encodebytes(der_of(cert) + aux)
    trusted = (
        b"-----BEGIN TRUSTED CERTIFICATE-----\n" + body + b"-----END TRUSTED CERTIFICATE-----\n"
    )
    (tmp_path / "t.pem").write_bytes(trusted)
    assert read_pem_file(str(tmp_path / "t.pem")) == [expected(cert)]


@pytest.mark.parametrize(
    ("when", "tag"),
    [
        (dt.datetime(1950, 1, 1, 0, 0, 0, tzinfo=UTC), 0x17),  # UTCTime "50...": 1950
        (dt.datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC), 0x17),
        (dt.datetime(2000, 1, 1, 0, 0, 0, tzinfo=UTC), 0x17),
        (dt.datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC), 0x17),  # UTCTime "49...": 2049
        (dt.datetime(2050, 1, 1, 0, 0, 0, tzinfo=UTC), 0x18),  # from here GeneralizedTime
        (dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC), 0x18),
    ],
)
def test_time_boundaries_as_minted_by_cryptography(when: dt.datetime, tag: int) -> None:
    start = dt.datetime(1950, 1, 1, tzinfo=UTC)  # cryptography's earliest: UTCTime "50..."
    cert = mint(not_before=start, not_after=when)
    der = der_of(cert)
    encoded = when.strftime("%y%m%d%H%M%SZ" if tag == 0x17 else "%Y%m%d%H%M%SZ").encode()
    assert bytes((tag, len(encoded))) + encoded in der  # the encoding this case is about
    assert b"\x17\x0d500101000000Z" in der
    info = from_der(der)
    assert info == expected(cert)
    assert (info.not_before, info.not_after) == (start, when)


# -- synthetic DER: the forms cryptography does not mint -----------------------------------------


def tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(size))) + size + content


def name(*attrs: tuple[bytes, int, bytes]) -> bytes:
    return tlv(0x30, b"".join(tlv(0x31, tlv(0x30, tlv(0x06, o) + tlv(t, v))) for o, t, v in attrs))


CN = bytes.fromhex("550403")
O_ = bytes.fromhex("55040a")
ALG = tlv(0x30, tlv(0x06, bytes.fromhex("2a8648ce3d040302")))  # ecdsa-with-SHA256


def synthetic(
    *,
    serial: bytes = b"\x01",
    issuer: bytes = name((CN, 0x0C, b"issuer")),
    subject: bytes = name((CN, 0x0C, b"subject")),
    not_before: bytes = tlv(0x17, b"240101000000Z"),
    not_after: bytes = tlv(0x18, b"20340101000000Z"),
    version: bool = True,
) -> bytes:
    tbs = (
        (tlv(0xA0, tlv(0x02, b"\x02")) if version else b"")
        + tlv(0x02, serial)
        + ALG
        + issuer
        + tlv(0x30, not_before + not_after)
        + subject
        + tlv(0x30, b"")  # stands in for the public key: not read
    )
    return tlv(0x30, tlv(0x30, tbs) + ALG + tlv(0x03, b"\x00"))


def test_synthetic_certificate_fields() -> None:
    info = from_der(synthetic())
    assert info == CertInfo(
        subject_cn="subject",
        issuer_cn="issuer",
        serial_number=1,
        not_before=dt.datetime(2024, 1, 1, tzinfo=UTC),
        not_after=dt.datetime(2034, 1, 1, tzinfo=UTC),
    )
    assert from_der(synthetic(version=False)) == info  # a v1 certificate has no version field


@pytest.mark.parametrize(
    ("serial", "value"),
    [
        (b"\x00\xff", 255),  # the leading zero keeps it positive
        (b"\xff", -1),  # negative serials exist in the wild
        (b"\x80\x00", -32768),
        (bytes(range(1, 21)), int.from_bytes(bytes(range(1, 21)), "big")),  # 20 octets
    ],
)
def test_serial_numbers_are_signed_integers(serial: bytes, value: int) -> None:
    assert from_der(synthetic(serial=serial)).serial_number == value


@pytest.mark.parametrize(
    ("encoded", "when"),
    [
        (tlv(0x17, b"491231235959Z"), dt.datetime(2049, 12, 31, 23, 59, 59)),
        (tlv(0x17, b"500101000000Z"), dt.datetime(1950, 1, 1)),
        (tlv(0x17, b"0001010000Z"), dt.datetime(2000, 1, 1)),  # no seconds (pre-RFC 5280)
        (tlv(0x18, b"20491231235959Z"), dt.datetime(2049, 12, 31, 23, 59, 59)),
        (tlv(0x18, b"20500101000000.25Z"), dt.datetime(2050, 1, 1, 0, 0, 0, 250000)),
        (tlv(0x18, b"19000101000000Z"), dt.datetime(1900, 1, 1)),
    ],
)
def test_time_forms(encoded: bytes, when: dt.datetime) -> None:
    assert from_der(synthetic(not_after=encoded)).not_after == when.replace(tzinfo=UTC)


def test_names_first_cn_other_string_types_and_none() -> None:
    two = name((O_, 0x13, b"org"), (CN, 0x13, b"first"), (CN, 0x0C, b"second"))
    assert from_der(synthetic(subject=two)).subject_cn == "first"
    bmp = name((CN, 0x1E, "n\u00e9ud".encode("utf-16-be")))
    assert from_der(synthetic(subject=bmp)).subject_cn == "n\u00e9ud"
    utf8 = name((CN, 0x0C, "\u7bc0\u70b9".encode()))
    assert from_der(synthetic(issuer=utf8)).issuer_cn == "\u7bc0\u70b9"
    assert from_der(synthetic(subject=name((O_, 0x0C, b"only an O")))).subject_cn == ""
    assert from_der(synthetic(issuer=tlv(0x30, b""))).issuer_cn == ""  # an empty Name


@pytest.mark.parametrize(
    ("der", "message"),
    [
        (b"", "truncated certificate"),
        (b"\x30", "truncated certificate"),
        (b"\x30\x80\x00\x00", "certificate: indefinite length"),
        (b"\x30\x85\x01\x00\x00\x00\x00", "certificate: bad length"),
        (b"\x31\x00", "certificate: expected tag 0x30"),
        (synthetic() + b"\x00", "1 bytes after the certificate"),
        (synthetic()[:-1], "truncated certificate"),
        (synthetic(serial=b""), "serial number: empty INTEGER"),
        (synthetic(not_after=tlv(0x17, b"2401010000Z0")), "notAfter: bad UTCTime"),
        (synthetic(not_after=tlv(0x18, b"2024013200000Z")), "notAfter: bad GeneralizedTime"),
        (synthetic(not_after=tlv(0x18, b"20240230000000Z")), "notAfter: '20240230000000Z': day"),
        (synthetic(not_after=tlv(0x17, b"240101000060Z")), "notAfter: '240101000060Z'"),
        (synthetic(not_after=tlv(0x17, b"2401010000\xff0Z")), "notAfter: not ASCII"),
        (synthetic(not_before=tlv(0x04, b"x")), "notBefore: expected UTCTime or Gen"),
        (synthetic(subject=name((CN, 0x04, b"octets"))), "subject: CN has string type 0x04"),
        (synthetic(subject=name((CN, 0x0C, b"\xff"))), "subject: CN is not valid utf-8"),
        (synthetic(issuer=tlv(0x30, tlv(0x30, b""))), "issuer: expected tag 0x31"),
        (synthetic(issuer=tlv(0x02, b"\x01")), "issuer: expected tag 0x30"),
    ],
)
def test_malformed_der_is_one_clear_value_error(der: bytes, message: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        from_der(der)


# -- files and their errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a PEM or DER certificate"),
        (b"hello\n", "not a PEM or DER certificate"),
        (
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "not a PEM or DER certificate",
        ),
        (
            b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
            "certificate 1: bad base64",
        ),
        (
            b"-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n",
            "certificate 1: truncated TBSCertificate",
        ),
        (b"\x30\x03\x02\x01", "truncated certificate"),
    ],
)
def test_bad_files_name_the_file_in_one_line(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "x.pem"
    path.write_bytes(content)
    with pytest.raises(ValueError) as exc:
        read_pem_file(path)
    text = str(exc.value)
    assert text.startswith(f"{path}: {message}"), text
    assert "\n" not in text


def test_the_broken_certificate_of_a_bundle_is_named(tmp_path: Path) -> None:
    good = mint(not_before=dt.datetime(2024, 1, 1), not_after=dt.datetime(2030, 1, 1))
    pem = good.public_bytes(serialization.Encoding.PEM)
    path = tmp_path / "bundle.pem"
    path.write_bytes(pem + pem.replace(b"MI", b"MA", 1))
    with pytest.raises(ValueError, match=r"bundle\.pem: certificate 2: "):
        read_pem_file(path)


def test_unreadable_and_oversized_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^.*missing\.pem: cannot read: No such file"):
        read_pem_file(tmp_path / "missing.pem")
    (tmp_path / "dir").mkdir()
    with pytest.raises(ValueError, match=r"dir: cannot read: Is a directory"):
        read_pem_file(tmp_path / "dir")
    big = tmp_path / "big.pem"
    big.write_bytes(b"\x30" * ((1 << 20) + 1))
    with pytest.raises(ValueError, match=r"big\.pem: larger than 1048576 bytes"):
        read_pem_file(big)


# -- garbage never crashes -----------------------------------------------------------------------

REAL = der_of(mint(not_before=dt.datetime(2024, 1, 1), not_after=dt.datetime(2060, 1, 1)))


def _survives(der: bytes) -> None:
    try:
        info = from_der(der)
    except ValueError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert isinstance(info.not_after_timestamp, float)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_crash(data: bytes) -> None:
    _survives(data)
    _survives(b"\x30" + data)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(REAL) - 1), st.integers(0, 255), st.integers(1, len(REAL)))
def test_mutated_certificates_never_crash(pos: int, byte: int, cut: int) -> None:
    _survives(REAL[:pos] + bytes((byte,)) + REAL[pos + 1 :])
    _survives(REAL[:cut])


def test_reading_certificates_leaves_cryptography_out() -> None:
    """The daemon imports certinfo and metrics; neither may pull in `cryptography`."""
    code = (
        "import sys, havip.shell.certinfo, havip.shell.metrics\n"
        "assert 'cryptography' not in sys.modules, 'cryptography was loaded'\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60 * SCALE
    )
    assert proc.returncode == 0, proc.stderr


# -- the peer's certificate from a live TLS connection ------------------------------------------


def test_peer_certificate_from_a_tls_connection() -> None:
    ca = trustme.CA()
    server_cert = ca.issue_cert("n1", common_name="n1")
    client_cert = ca.issue_cert("n2", common_name="n2")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(server_ctx)
    ca.configure_trust(server_ctx)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    client_cert.configure_cert(client_ctx)
    ca.configure_trust(client_ctx)
    seen: dict[str, CertInfo | None] = {}

    def want(leaf: trustme.LeafCert) -> CertInfo:
        return expected(x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes()))

    async def main() -> None:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            seen["server saw"] = peer_certificate(writer.transport)
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        try:
            async with asyncio.timeout(10 * SCALE):
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", port, ssl=client_ctx, server_hostname="n1"
                )
                seen["client saw"] = peer_certificate(writer.transport)
                await reader.read()
                writer.close()
            _, plain_w = await asyncio.open_connection("127.0.0.1", port)
            seen["plain"] = peer_certificate(plain_w.transport)  # no TLS: no certificate
            plain_w.close()
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(main())
    assert seen["client saw"] == want(server_cert)
    assert seen["server saw"] == want(client_cert)
    assert seen["plain"] is None
    assert peer_certificate(None) is None
