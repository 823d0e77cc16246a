"""What the metrics need from an X.509 certificate, read without `cryptography`.

The daemon never imports `cryptography` (about 8 MB of RSS for as long as it runs), yet it
exports its certificates' validity (`havip_x509_cert_not_after` and `_not_before`). A
certificate's subject and issuer CN, serial number and validity sit at fixed places in its
TBSCertificate (RFC 5280 section 4.1), so a small DER walker reads them. It checks nothing:
the TLS layer verifies certificates; this only describes them.

Every malformed input ends in a `ValueError` (never an IndexError or the like), so a broken
file or peer certificate costs a metric, not the daemon.
"""

from __future__ import annotations

import binascii
import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

# Universal tags (X.690).
_INTEGER = 0x02
_OID = 0x06
_SEQUENCE = 0x30
_SET = 0x31
_UTC_TIME = 0x17
_GENERALIZED_TIME = 0x18
_VERSION = 0xA0  # [0] EXPLICIT Version in TBSCertificate

_CN_OID = bytes((0x55, 0x04, 0x03))  # 2.5.4.3 commonName

# DirectoryString and its relatives: how to turn each string type into text.
_STRING_CODECS = {
    0x0C: "utf-8",  # UTF8String
    0x13: "ascii",  # PrintableString
    0x14: "latin-1",  # TeletexString (T.61: latin-1 is what every reader settles for)
    0x16: "ascii",  # IA5String
    0x1A: "ascii",  # VisibleString
    0x1C: "utf-32-be",  # UniversalString
    0x1E: "utf-16-be",  # BMPString
}

_PEM = re.compile(
    rb"-----BEGIN (X509 |TRUSTED )?CERTIFICATE-----(.*?)-----END (X509 |TRUSTED )?CERTIFICATE-----",
    re.DOTALL,
)
_UTC = re.compile(r"(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})?Z")
_GENERALIZED = re.compile(r"(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})?(?:[.,](\d+))?Z")
_MAX_FILE = 1 << 20  # a CA bundle is a few hundred kB; anything bigger is not a certificate


@dataclass(frozen=True, kw_only=True)
class CertInfo:
    """The parts of one certificate that the x509-certificate-exporter labels use.

    `subject_cn`/`issuer_cn` are "" when the name has no CN; `not_before`/`not_after` are
    aware UTC datetimes.
    """

    subject_cn: str
    issuer_cn: str
    serial_number: int
    not_before: dt.datetime
    not_after: dt.datetime

    @property
    def not_before_timestamp(self) -> float:
        """`not_before` in Unix seconds."""
        return self.not_before.timestamp()

    @property
    def not_after_timestamp(self) -> float:
        """`not_after` in Unix seconds."""
        return self.not_after.timestamp()


def from_der(der: bytes) -> CertInfo:
    """Read one DER certificate (exactly one: no bytes may follow it)."""
    cert, end = _tlv(der, 0, len(der), _SEQUENCE, "certificate")
    if end != len(der):
        raise ValueError(f"{len(der) - end} bytes after the certificate")
    return _from_certificate(der, cert)


class _Transport(Protocol):
    def get_extra_info(self, name: str, default: object = None) -> object: ...


def peer_certificate(transport: _Transport | None) -> CertInfo | None:
    """The certificate the TLS peer presented on an asyncio `transport`; None without TLS,
    without a peer certificate, or if it cannot be read (the TLS layer verified it already:
    a metric is all that is lost)."""
    ssl_object = None if transport is None else transport.get_extra_info("ssl_object")
    getpeercert = getattr(ssl_object, "getpeercert", None)
    if getpeercert is None:
        return None
    try:
        der = getpeercert(binary_form=True)
        return None if not der else from_der(der)
    except (ValueError, OSError):  # before the handshake, a closed connection, a bad DER
        return None


def read_pem_file(path: Path | str) -> list[CertInfo]:
    """Every certificate in a PEM file (a bundle gives several), or the one in a DER file.

    Raises ValueError, one line naming `path`, if the file cannot be read, holds no
    certificate, or any certificate in it is malformed.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = f.read(_MAX_FILE + 1)
    except OSError as exc:
        raise ValueError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > _MAX_FILE:
        raise ValueError(f"{path}: larger than {_MAX_FILE} bytes: not a certificate file")
    try:
        return _read(data)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def _read(data: bytes) -> list[CertInfo]:
    blocks = _PEM.findall(data)
    if not blocks:
        if data[:1] == bytes((_SEQUENCE,)):
            return [from_der(data)]
        raise ValueError("not a PEM or DER certificate")
    infos = []
    for n, (kind, body, _) in enumerate(blocks, 1):
        try:
            der = binascii.a2b_base64(b"".join(body.split()), strict_mode=True)
        except binascii.Error as exc:
            raise ValueError(f"certificate {n}: bad base64: {exc}") from None
        try:
            if kind == b"TRUSTED ":
                # OpenSSL's trusted form: the certificate, then its trust settings.
                cert, _ = _tlv(der, 0, len(der), _SEQUENCE, "certificate")
                infos.append(_from_certificate(der, cert))
            else:
                infos.append(from_der(der))
        except ValueError as exc:
            raise ValueError(f"certificate {n}: {exc}") from None
    return infos


# ---- the DER walker ---------------------------------------------------------------------------


def _header(data: bytes, pos: int, limit: int, what: str) -> tuple[int, int, int]:
    """The tag, the content's start and its end for the element at `pos`, which must end by
    `limit` (the end of the element that holds it)."""
    if pos + 2 > limit:
        raise ValueError(f"truncated {what}")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise ValueError(f"{what}: high tag numbers are not used in certificates")
    first = data[pos + 1]
    start = pos + 2
    if first < 0x80:
        length = first
    elif first == 0x80:
        raise ValueError(f"{what}: indefinite length is not DER")
    else:
        count = first & 0x7F
        if count > 4 or start + count > limit:
            raise ValueError(f"{what}: bad length")
        length = int.from_bytes(data[start : start + count], "big")
        start += count
    end = start + length
    if end > limit:
        raise ValueError(f"truncated {what}")
    return tag, start, end


def _tlv(data: bytes, pos: int, limit: int, tag: int, what: str) -> tuple[tuple[int, int], int]:
    """The element at `pos`, which must have `tag`: ((content start, end), end)."""
    got, start, end = _header(data, pos, limit, what)
    if got != tag:
        raise ValueError(f"{what}: expected tag 0x{tag:02x}, found 0x{got:02x}")
    return (start, end), end


def _children(data: bytes, span: tuple[int, int], what: str) -> list[tuple[int, int, int]]:
    """The elements inside a constructed element: (tag, content start, end) each."""
    out = []
    pos, end = span
    while pos < end:
        tag, start, stop = _header(data, pos, end, what)
        out.append((tag, start, stop))
        pos = stop
    return out


def _from_certificate(der: bytes, cert: tuple[int, int]) -> CertInfo:
    tbs, _ = _tlv(der, cert[0], cert[1], _SEQUENCE, "TBSCertificate")
    parts = _children(der, tbs, "TBSCertificate")
    if parts and parts[0][0] == _VERSION:
        parts = parts[1:]
    if len(parts) < 5:
        raise ValueError("TBSCertificate: too few fields")
    serial, _algorithm, issuer, validity, subject = parts[:5]
    _expect(serial, _INTEGER, "serial number")
    _expect(issuer, _SEQUENCE, "issuer")
    _expect(validity, _SEQUENCE, "validity")
    _expect(subject, _SEQUENCE, "subject")
    if serial[1] == serial[2]:
        raise ValueError("serial number: empty INTEGER")
    times = _children(der, validity[1:], "validity")
    if len(times) != 2:
        raise ValueError("validity: expected notBefore and notAfter")
    return CertInfo(
        subject_cn=_common_name(der, subject, "subject"),
        issuer_cn=_common_name(der, issuer, "issuer"),
        serial_number=int.from_bytes(der[serial[1] : serial[2]], "big", signed=True),
        not_before=_time(der, times[0], "notBefore"),
        not_after=_time(der, times[1], "notAfter"),
    )


def _expect(element: tuple[int, int, int], tag: int, what: str) -> None:
    if element[0] != tag:
        raise ValueError(f"{what}: expected tag 0x{tag:02x}, found 0x{element[0]:02x}")


def _common_name(der: bytes, name: tuple[int, int, int], what: str) -> str:
    """The first CN in a Name (SEQUENCE OF SET OF AttributeTypeAndValue), "" if none."""
    for rdn in _children(der, name[1:], what):
        _expect(rdn, _SET, what)
        for atv in _children(der, rdn[1:], what):
            _expect(atv, _SEQUENCE, what)
            fields = _children(der, atv[1:], what)
            if len(fields) != 2:
                raise ValueError(f"{what}: an attribute needs a type and a value")
            (oid_tag, oid_start, oid_end), (value_tag, start, end) = fields
            if oid_tag != _OID:
                raise ValueError(f"{what}: attribute type is not an OID")
            if der[oid_start:oid_end] != _CN_OID:
                continue
            codec = _STRING_CODECS.get(value_tag)
            if codec is None:
                raise ValueError(f"{what}: CN has string type 0x{value_tag:02x}")
            try:
                return der[start:end].decode(codec)
            except UnicodeDecodeError:
                raise ValueError(f"{what}: CN is not valid {codec}") from None
    return ""


def _time(der: bytes, element: tuple[int, int, int], what: str) -> dt.datetime:
    tag, start, end = element
    try:
        text = der[start:end].decode("ascii")
    except UnicodeDecodeError:
        raise ValueError(f"{what}: not ASCII") from None
    if tag == _UTC_TIME:
        m = _UTC.fullmatch(text)
        if m is None:
            raise ValueError(f"{what}: bad UTCTime {text!r}")
        yy = int(m[1])
        # RFC 5280 4.1.2.5.1: YY >= 50 is 19YY, else 20YY (from 2050 on, GeneralizedTime).
        year = 1900 + yy if yy >= 50 else 2000 + yy
        fraction = ""
    elif tag == _GENERALIZED_TIME:
        m = _GENERALIZED.fullmatch(text)
        if m is None:
            raise ValueError(f"{what}: bad GeneralizedTime {text!r}")
        year = int(m[1])
        fraction = m[7] or ""
    else:
        raise ValueError(f"{what}: expected UTCTime or GeneralizedTime, found tag 0x{tag:02x}")
    month, day, hour, minute = (int(m[i]) for i in range(2, 6))
    second = int(m[6] or 0)
    micro = int(fraction[:6].ljust(6, "0"))
    try:
        return dt.datetime(year, month, day, hour, minute, second, micro, tzinfo=dt.UTC)
    except ValueError as exc:
        raise ValueError(f"{what}: {text!r}: {exc}") from None
