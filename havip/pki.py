"""A private CA and one certificate per node, for havip's mutual-TLS link.

Pure functions over a directory of PEM files (ca.crt, ca.key, <node>.crt, <node>.key); nothing
here prints. Keys are ECDSA P-256 (accepted by every stdlib ``ssl`` build), certificates carry
subject and authority key identifiers so Python 3.13's strict X.509 verification passes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import re
import secrets
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_NAME = "havip CA"
CA_CERT = "ca.crt"
CA_KEY = "ca.key"
DEFAULT_DAYS = 365
DEFAULT_CA_DAYS = 3650
# Certificates start slightly in the past so a peer whose clock lags a little still accepts
# a freshly minted certificate.
BACKDATE = dt.timedelta(hours=1)
KEY_MODE = 0o600
CERT_MODE = 0o644
DIR_MODE = 0o700

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,62}")
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class PkiError(Exception):
    """A PKI operation failed; the message is one line naming the file or input at fault."""


def _check_name(name: str) -> None:
    if not _NAME_RE.fullmatch(name):
        raise PkiError(
            f"invalid node name {name!r}: use 1-63 characters from A-Z a-z 0-9 . -, "
            "starting with a letter or digit"
        )
    if name.endswith((".", "-")) or ".." in name:
        raise PkiError(f"invalid node name {name!r}: it must not end with '.' or '-' or hold '..'")
    # TLS clients match an IP-looking server_hostname against IP SANs, never DNS SANs.
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(name)
        raise PkiError(f"invalid node name {name!r}: a node name must not be an IP address")
    if name.lower() == "ca":
        raise PkiError("invalid node name 'ca': reserved for the CA's own files")


@dataclass(frozen=True, kw_only=True)
class NodeSpec:
    """A node to certify: its name (DNS SAN, file stem) and optionally its address (IP SAN)."""

    name: str
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None

    def __post_init__(self) -> None:
        _check_name(self.name)
        if self.address is not None and not isinstance(self.address, _Address):
            raise PkiError(f"node {self.name}: address must be an IP address object")


def parse_node_spec(text: str) -> NodeSpec:
    """Parse ``NAME`` or ``NAME=ADDRESS`` (as given to ``--node``)."""
    name, sep, addr_text = text.strip().partition("=")
    address: _Address | None = None
    if sep:
        if not addr_text:
            raise PkiError(f"invalid node {text!r}: missing address after '='")
        try:
            address = ipaddress.ip_address(addr_text)
        except ValueError:
            raise PkiError(f"invalid node {text!r}: {addr_text!r} is not an IP address") from None
        if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
            raise PkiError(f"invalid node {text!r}: a certificate cannot carry a zone id")
    return NodeSpec(name=name, address=address)


# ---------------------------------------------------------------------------------------------
# Building certificates (no file I/O)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _build_ca(
    key: ec.EllipticCurvePrivateKey, *, not_before: dt.datetime, not_after: dt.datetime
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )


def _load_ca(
    ca_cert_pem: bytes,
    ca_key_pem: bytes,
    *,
    cert_label: str = "CA certificate",
    key_label: str = "CA key",
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate(ca_cert_pem)
    except ValueError:
        raise PkiError(f"{cert_label}: not a PEM certificate") from None
    if not _is_ca(cert):
        raise PkiError(f"{cert_label}: not a CA certificate (basicConstraints CA:TRUE missing)")
    try:
        key = serialization.load_pem_private_key(ca_key_pem, password=None)
    except (ValueError, TypeError):
        raise PkiError(f"{key_label}: not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{key_label}: not an ECDSA key")
    if _spki(key.public_key()) != _spki(cert.public_key()):
        raise PkiError(f"{key_label}: does not match {cert_label}")
    return cert, key


def issue_node_cert_pem(
    ca_cert_pem: bytes,
    ca_key_pem: bytes,
    node: NodeSpec,
    *,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> tuple[bytes, bytes]:
    """Mint a fresh key and a node certificate signed by the CA; returns (cert_pem, key_pem).

    The validity window is taken as given (tests use it to make expired certificates).
    """
    if not_after <= not_before:
        raise PkiError(f"node {node.name}: not_after must be later than not_before")
    ca_cert, ca_key = _load_ca(ca_cert_pem, ca_key_pem)
    key = _new_key()
    public = key.public_key()
    sans: list[x509.GeneralName] = [x509.DNSName(node.name)]
    if node.address is not None:
        sans.append(x509.IPAddress(node.address))
    try:
        ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski)
    except x509.ExtensionNotFound:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node.name)]))
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(aki, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


# ---------------------------------------------------------------------------------------------
# Files


def _write_atomic(path: Path, data: bytes, mode: int, *, replace: bool) -> None:
    """Write via a same-directory temp file created with ``mode``, fsync, then move into place.

    Without ``replace`` the final step is a hard link, so a file that appeared after our
    up-front check is still never overwritten.
    """
    try:
        _write_atomic_unchecked(path, data, mode, replace=replace)
    except OSError as e:
        raise PkiError(f"{path}: cannot write: {e.strerror}") from None


def _write_atomic_unchecked(path: Path, data: bytes, mode: int, *, replace: bool) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        try:
            os.fchmod(fd, mode)  # the umask may have taken bits away
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise PkiError(f"{path}: already exists; use --force to replace it") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _node_files(directory: Path, name: str) -> tuple[Path, Path]:
    return directory / f"{name}.crt", directory / f"{name}.key"


def _refuse_existing(targets: Sequence[Path], force: bool) -> None:
    if force:
        return
    existing = [str(p) for p in targets if p.exists() or p.is_symlink()]
    if existing:
        what = existing[0] if len(existing) == 1 else ", ".join(existing)
        verb = "exists" if len(existing) == 1 else "exist"
        raise PkiError(f"{what} already {verb}; use --force to replace")


def _ensure_dir(directory: Path) -> None:
    if directory.exists():
        if not directory.is_dir():
            raise PkiError(f"{directory}: not a directory")
        return
    try:
        directory.mkdir(mode=DIR_MODE, parents=True)
        os.chmod(directory, DIR_MODE)
    except OSError as e:
        raise PkiError(f"{directory}: cannot create directory: {e.strerror}") from None


def _check_days(days: int, what: str) -> None:
    if days < 1:
        raise PkiError(f"{what} must be at least 1 day, got {days}")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_node(
    directory: Path, node: NodeSpec, cert_pem: bytes, key_pem: bytes, force: bool
) -> list[Path]:
    cert_path, key_path = _node_files(directory, node.name)
    # Key first: a crash in between leaves a detectable key/cert mismatch, never a cert
    # whose key is missing.
    _write_atomic(key_path, key_pem, KEY_MODE, replace=force)
    _write_atomic(cert_path, cert_pem, CERT_MODE, replace=force)
    return [key_path, cert_path]


def init_pki(
    directory: Path,
    nodes: Sequence[NodeSpec],
    *,
    days: int = DEFAULT_DAYS,
    ca_days: int = DEFAULT_CA_DAYS,
    force: bool = False,
) -> list[Path]:
    """Create a CA and one certificate+key per node in ``directory``; return the files written.

    Without ``force``, refuses before writing anything if any target file already exists.
    """
    _check_days(days, "node validity")
    _check_days(ca_days, "CA validity")
    seen: set[str] = set()
    for node in nodes:
        if node.name in seen:
            raise PkiError(f"node {node.name} given twice")
        seen.add(node.name)
    targets = [directory / CA_CERT, directory / CA_KEY]
    for node in nodes:
        targets.extend(_node_files(directory, node.name))
    _refuse_existing(targets, force)

    now = _now()
    ca_key = _new_key()
    ca_cert = _build_ca(
        ca_key, not_before=now - BACKDATE, not_after=now + dt.timedelta(days=ca_days)
    )
    ca_cert_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    ca_key_pem = _key_pem(ca_key)
    issued = [
        (node, *_issue_pem(ca_cert_pem, ca_key_pem, node, days=days, now=now)) for node in nodes
    ]

    _ensure_dir(directory)
    written = [directory / CA_KEY, directory / CA_CERT]
    _write_atomic(directory / CA_KEY, ca_key_pem, KEY_MODE, replace=force)
    _write_atomic(directory / CA_CERT, ca_cert_pem, CERT_MODE, replace=force)
    for node, cert_pem, key_pem in issued:
        written.extend(_write_node(directory, node, cert_pem, key_pem, force))
    return written


def _issue_pem(
    ca_cert_pem: bytes, ca_key_pem: bytes, node: NodeSpec, *, days: int, now: dt.datetime
) -> tuple[bytes, bytes]:
    ca_not_after = x509.load_pem_x509_certificate(ca_cert_pem).not_valid_after_utc
    # A certificate outliving its CA would only fail later, and more confusingly.
    not_after = min(now + dt.timedelta(days=days), ca_not_after)
    return issue_node_cert_pem(
        ca_cert_pem, ca_key_pem, node, not_before=now - BACKDATE, not_after=not_after
    )


def issue_node(
    directory: Path, node: NodeSpec, *, days: int = DEFAULT_DAYS, force: bool = False
) -> list[Path]:
    """Add (or, with ``force``, renew) one node's certificate+key from the CA in ``directory``."""
    _check_days(days, "node validity")
    _refuse_existing(_node_files(directory, node.name), force)
    pems: list[bytes] = []
    for name in (CA_CERT, CA_KEY):
        path = directory / name
        try:
            pems.append(path.read_bytes())
        except FileNotFoundError:
            raise PkiError(f"{path}: not found; create the CA with `havip pki init`") from None
        except OSError as e:
            raise PkiError(f"{path}: cannot read: {e.strerror}") from None
    now = _now()
    ca_cert, _ = _load_ca(
        pems[0], pems[1], cert_label=str(directory / CA_CERT), key_label=str(directory / CA_KEY)
    )
    if ca_cert.not_valid_after_utc <= now:
        raise PkiError(
            f"{directory / CA_CERT}: expired on {ca_cert.not_valid_after_utc:%Y-%m-%d}; "
            "create a new CA with `havip pki init --force`"
        )
    cert_pem, key_pem = _issue_pem(pems[0], pems[1], node, days=days, now=now)
    return _write_node(directory, node, cert_pem, key_pem, force)


# ---------------------------------------------------------------------------------------------
# Inspection


@dataclass(frozen=True, kw_only=True)
class CertInfo:
    """What an operator wants to know about one certificate file."""

    path: Path
    subject: str
    issuer: str
    sans: tuple[str, ...]
    sha256: str
    not_before: dt.datetime
    not_after: dt.datetime
    days_left: int
    is_ca: bool


def _spki(public: PublicKeyTypes) -> bytes:
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _utc(now: dt.datetime | None) -> dt.datetime:
    if now is None:
        return _now()
    return now if now.tzinfo is not None else now.replace(tzinfo=dt.UTC)


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _sans(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    dns = [f"DNS:{n}" for n in ext.get_values_for_type(x509.DNSName)]
    ips = [f"IP:{a}" for a in ext.get_values_for_type(x509.IPAddress)]
    return (*dns, *ips)


def cert_names(cert: x509.Certificate) -> set[str]:
    """The DNS names in the certificate's SAN (compared exactly against node names)."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return set(ext.get_values_for_type(x509.DNSName))


def _days_left(not_after: dt.datetime, now: dt.datetime) -> int:
    return int((not_after - now).total_seconds() // 86400)


def show(directory: Path, now: dt.datetime | None = None) -> list[CertInfo]:
    """Describe every ``*.crt`` in ``directory``, CA certificates first."""
    when = _utc(now)
    if not directory.is_dir():
        raise PkiError(f"{directory}: no such directory")
    infos: list[CertInfo] = []
    for path in sorted(directory.glob("*.crt")):
        try:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
        except OSError as e:
            raise PkiError(f"{path}: cannot read: {e.strerror}") from None
        except ValueError:
            raise PkiError(f"{path}: not a PEM certificate") from None
        not_after = cert.not_valid_after_utc
        infos.append(
            CertInfo(
                path=path,
                subject=cert.subject.rfc4514_string(),
                issuer=cert.issuer.rfc4514_string(),
                sans=_sans(cert),
                sha256=cert.fingerprint(hashes.SHA256()).hex(":").upper(),
                not_before=cert.not_valid_before_utc,
                not_after=not_after,
                days_left=_days_left(not_after, when),
                is_ca=_is_ca(cert),
            )
        )
    infos.sort(key=lambda i: (not i.is_ca, i.path.name != CA_CERT, i.path.name))
    return infos


def format_info(info: CertInfo) -> str:
    """A few human-readable lines describing one certificate."""
    if info.days_left < 0:
        left = f"EXPIRED {-info.days_left} days ago"
    else:
        left = f"{info.days_left} days left"
    lines = [
        f"{info.path}{' (CA)' if info.is_ca else ''}",
        f"  subject: {info.subject}",
        f"  issuer:  {info.issuer}",
        f"  SANs:    {', '.join(info.sans) or '(none)'}",
        f"  sha256:  {info.sha256}",
        f"  valid:   {info.not_before:%Y-%m-%d %H:%M}Z to {info.not_after:%Y-%m-%d %H:%M}Z"
        f" ({left})",
    ]
    return "\n".join(lines)


def _validity_problems(path: Path, cert: x509.Certificate, now: dt.datetime) -> list[str]:
    if now < cert.not_valid_before_utc:
        return [f"{path}: not valid until {cert.not_valid_before_utc:%Y-%m-%d %H:%M}Z"]
    if now > cert.not_valid_after_utc:
        return [f"{path}: expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M}Z"]
    return []


def _read_cert(path: Path, problems: list[str]) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except OSError as e:
        problems.append(f"{path}: cannot read: {e.strerror}")
    except ValueError:
        problems.append(f"{path}: not a PEM certificate")
    return None


def verify_node_files(
    ca: Path, cert: Path, key: Path, node: str, now: dt.datetime | None = None
) -> list[str]:
    """Check one node's TLS files; return the problems found, one line each naming the file."""
    when = _utc(now)
    problems: list[str] = []

    ca_cert = _read_cert(ca, problems)
    if ca_cert is not None:
        if not _is_ca(ca_cert):
            problems.append(f"{ca}: not a CA certificate (basicConstraints CA:TRUE missing)")
        problems.extend(_validity_problems(ca, ca_cert, when))

    node_cert = _read_cert(cert, problems)
    if node_cert is not None:
        if node not in cert_names(node_cert):
            named = ", ".join(sorted(cert_names(node_cert))) or "no DNS name"
            problems.append(f"{cert}: does not name node {node} (it names {named})")
        problems.extend(_validity_problems(cert, node_cert, when))
        if ca_cert is not None:
            try:
                node_cert.verify_directly_issued_by(ca_cert)
            except (ValueError, TypeError, InvalidSignature):
                problems.append(f"{cert}: not signed by the CA in {ca}")

    try:
        mode = stat.S_IMODE(os.stat(key).st_mode)
        key_pem = key.read_bytes()
    except OSError as e:
        problems.append(f"{key}: cannot read: {e.strerror}")
        return problems
    if mode & 0o077:
        problems.append(f"{key}: readable by group or others (mode {mode:04o}); chmod 600 it")
    try:
        private = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        problems.append(f"{key}: not an unencrypted PEM private key")
        return problems
    if node_cert is not None and _spki(private.public_key()) != _spki(node_cert.public_key()):
        problems.append(f"{key}: does not match the certificate {cert}")
    return problems
