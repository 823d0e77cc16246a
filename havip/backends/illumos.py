"""The illumos backend (OmniOS, OpenIndiana, SmartOS global zones): VIPs through ipadm (or
the legacy ifconfig addif/removeif), ARP through libdlpi, link state from dladm and PF_ROUTE.

Addresses. A VIP is a temporary static address object named after its place in the config,
`IF/havipN` (`ipadm create-addr -T static -t -a VIP/LEN IF/havipN`): `-t` because a VIP must
never come back by itself at boot, and the name so `ipadm show-addr` says whose it is. ipadm
runs duplicate address detection when the address comes up and parks an address someone else
holds in state `duplicate`, which `create-addr` reports as success (DAD_FOUND is a "soft
error", libipadm ipadm_addr.c i_ipadm_create_addr). So `add` polls `ipadm show-addr -p -o
addrobj,type,state,addr` until the state is `ok`; `duplicate`, or `tentative` past
`dad_timeout`, deletes the object again and is a BackendError, never a success. With
`address_tool = "ifconfig"` (old systems, as the seed tutorial did it) a VIP is a logical
interface, `ifconfig IF addif VIP/LEN up`, removed with `ifconfig IF removeif VIP`; its state
is read from `ifconfig -a4`, whose blocks name each logical interface and give its flags and
`inet ADDR netmask HEX` line: UP without DUPLICATE is a working address, DUPLICATE is a DAD
failure, neither is DAD still running. Every command runs with LC_ALL=C (ipadm translates its
messages), a timeout (a hung ipadm is an error, not a hang) and in its own process group,
killed whole on timeout; its stderr's last line becomes the error's cause.

LAN. Two ways exist to hear the LAN on illumos without a kernel packet filter of our own:
- DLPI (implemented): raw Ethernet through libdlpi (`havip.backends.dlpi`), bound to the ARP
  Ethertype. It sends real RFC 5227 probes (sender 0.0.0.0) and gratuitous ARP, hears any
  host that claims a VIP (a rival's announcement as well as an answer) and asks witnesses by
  ARP, exactly what the Linux backend does. Costs: the `net_rawaccess` privilege; one stream
  per VIP interface; and every ARP frame on the LAN wakes the daemon, since there is no BPF
  filter: frames are classified in user space (`arp.classify`) and only those about our VIPs
  and witnesses are handed on. ARP is low-volume (a few frames a second on a busy /24), so
  the cost is small.
- ICMP echo to the VIP and the witnesses: needs only `net_icmpaccess`, but cannot send a probe
  from 0.0.0.0 (a node without the VIP has no source for it), cannot hear a host that claims
  the VIP unasked, sees nothing a firewall drops (hosts often filter ping), and a reply to a
  ping for the VIP comes from whoever holds it, including ourselves. It would weaken the
  takeover guard to "nobody answered a ping", so it is not implemented.

Links. `link_state` asks `dladm show-link -p -o link,state IF`: a missing link is
exists=False, `down` is no carrier, `up` and `unknown` (drivers that do not report) count as
carrier. `open_link_monitor` listens on a PF_ROUTE socket (AF_INET messages only: IPv6 VIPs
are refused) for RTM_IFINFO messages, whose if_msghdr carries the interface index and flags:
IFF_UP is the administrative state, IFF_RUNNING the carrier (illumos usr/src/uts/common/net/
if.h and route.h). Nothing here imports Linux-only modules; it imports anywhere.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv6Interface
from typing import TYPE_CHECKING

from havip.backends.arp import (
    ETH_P_ARP,
    OP_REQUEST,
    UNSPECIFIED,
    ZERO_MAC,
    build_arp,
    classify,
    gratuitous_frames,
    parse_arp,
    probe_frame,
)
from havip.backends.base import BackendError, BackendOp, Heard, IPAddress, LinkState
from havip.backends.dlpi import DLPI_ENOLINK, DlpiError, DlpiLink, Libdlpi

if TYPE_CHECKING:
    from havip.config import Config, Vip

ADDRESS_TOOLS = ("ipadm", "ifconfig")
OBJECT_PREFIX = "havip"  # address objects are IF/havip0, IF/havip1, ... (config order)
TOOL_DIRS = ("/usr/sbin", "/sbin")  # looked in after PATH (SMF gives a short PATH)
IPV6_REFUSED = "IPv6 VIPs need the Linux backend for now"
ABSENT = LinkState(exists=False, up=False, carrier=False)
_MAX_DRAIN = 256  # frames read per wake-up, as the Linux socket bounds its reads
_KILL_WAIT = 2.0  # seconds to reap a killed command

# net/route.h and net/if.h (illumos-gate usr/src/uts/common/net/): the routing socket's
# interface message, native byte order and alignment.
RTM_VERSION = 3
RTM_IFINFO = 0xE
IFF_UP = 0x1
IFF_RUNNING = 0x40
IF_MSGHDR = struct.Struct("=HBBiiH")  # ifm_msglen, version, type, addrs, flags, index
_ROUTE_RCVBUF = 1 << 18


# --- parsing what the tools print -----------------------------------------------------


def split_parsable(line: str) -> list[str]:
    """The fields of one line of `-p` (parsable) output of ipadm or dladm.

    libofmt (illumos-gate usr/src/lib/libofmt/common/ofmt.c) separates fields with ':' and,
    when there is more than one field, escapes a ':' or '\\' inside a field with a
    backslash, so "e1000g0/v6:static:ok:fe80\\:\\:1/10" is four fields."""
    fields: list[str] = []
    current: list[str] = []
    chars = iter(line)
    for char in chars:
        if char == "\\":
            current.append(next(chars, "\\"))
        elif char == ":":
            fields.append("".join(current))
            current = []
        else:
            current.append(char)
    fields.append("".join(current))
    return fields


@dataclass(frozen=True, kw_only=True)
class AddrRow:
    """One line of `ipadm show-addr -p -o addrobj,type,state,addr`."""

    addrobj: str  # "e1000g0/havip0"; "e1000g0/?" for an address ipadm has no object for
    type: str  # static, dhcp, addrconf, from-gz
    state: str  # ok, tentative, duplicate, down, disabled, inaccessible
    address: IPv4Interface | IPv6Interface | None  # None: "?", or a point-to-point "a->b"

    @property
    def interface(self) -> str:
        return self.addrobj.split("/", 1)[0]


def parse_show_addr(text: str) -> list[AddrRow]:
    """Rows of `ipadm show-addr -p -o addrobj,type,state,addr`; lines of another shape are
    skipped (ValueError-free: the caller judges what is missing)."""
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = split_parsable(line)
        if len(fields) != 4 or "/" not in fields[0]:
            continue
        addrobj, kind, state, addr = fields
        address: IPv4Interface | IPv6Interface | None
        try:
            address = ipaddress.ip_interface(addr) if "->" not in addr else None
        except ValueError:
            address = None
        rows.append(AddrRow(addrobj=addrobj, type=kind, state=state, address=address))
    return rows


@dataclass(frozen=True, kw_only=True)
class LogicalInterface:
    """One block of `ifconfig -a4`: a logical interface (e1000g0, e1000g0:1, ...)."""

    name: str
    flags: frozenset[str]
    address: IPv4Interface | None

    @property
    def interface(self) -> str:
        return self.name.split(":", 1)[0]

    @property
    def state(self) -> str:
        """ipadm's word for it: ok, duplicate, or tentative (DAD running, or down)."""
        if "DUPLICATE" in self.flags:
            return "duplicate"
        return "ok" if "UP" in self.flags else "tentative"


def parse_ifconfig(text: str) -> list[LogicalInterface]:
    """The IPv4 logical interfaces in `ifconfig -a4` output (illumos ifconfig.c: a header
    "NAME: flags=HEX<NAMES> mtu N index N", then "\\tinet ADDR netmask HEX [broadcast ADDR]")."""
    found: list[LogicalInterface] = []
    name: str | None = None
    flags: frozenset[str] = frozenset()
    address: IPv4Interface | None = None

    def flush() -> None:
        if name is not None:
            found.append(LogicalInterface(name=name, flags=flags, address=address))

    for line in text.splitlines():
        if line and not line[0].isspace():
            flush()
            head, sep, rest = line.partition(": flags=")
            name, address = (head, None) if sep else (None, None)
            names = rest[rest.find("<") + 1 : rest.find(">")] if "<" in rest else ""
            flags = frozenset(n for n in names.split(",") if n)
            continue
        words = line.split()
        if name is not None and len(words) >= 4 and words[0] == "inet" and words[2] == "netmask":
            try:
                prefix = bin(int(words[3], 16)).count("1")
                address = IPv4Interface(f"{words[1]}/{prefix}")
            except ValueError:
                address = None
    flush()
    return found


def parse_show_link(text: str) -> dict[str, str]:
    """{link: state} from `dladm show-link -p -o link,state`."""
    links = {}
    for line in text.splitlines():
        fields = split_parsable(line)
        if len(fields) == 2 and fields[0]:
            links[fields[0]] = fields[1]
    return links


def parse_route_get(text: str, interface: str) -> IPv4Address | None:
    """The gateway `route -n get default` printed, when the route leaves through `interface`
    (illumos' route.c print_getmsg: "    gateway: ADDR", "  interface: NAME"); None when it
    printed no gateway (no default route: "not in table") or it is another interface's."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, colon, value = line.strip().partition(":")
        if colon and key in ("gateway", "interface"):
            fields[key] = value.strip()
    gateway, through = fields.get("gateway"), fields.get("interface")
    if gateway is None or (through is not None and through != interface):
        return None
    try:
        return IPv4Address(gateway)
    except ValueError:
        return None  # a name: route -n prints numbers; anything else is not ours to guess


def parse_ifinfo(data: bytes) -> list[tuple[int, int]]:
    """(interface index, flags) of each RTM_IFINFO message in one PF_ROUTE read. Other
    message types, other versions and truncated messages are skipped."""
    found = []
    offset = 0
    while offset + IF_MSGHDR.size <= len(data):
        length, version, kind, _addrs, flags, index = IF_MSGHDR.unpack_from(data, offset)
        if length < IF_MSGHDR.size or offset + length > len(data):
            break  # malformed: the rest of this read cannot be trusted
        if version == RTM_VERSION and kind == RTM_IFINFO:
            found.append((index, flags & 0xFFFFFFFF))
        offset += length
    return found


def link_state_from_dladm(state: str) -> LinkState:
    """dladm's link state word as a LinkState ("unknown": the driver does not say; counted
    as carrier so a silent driver does not keep the VIP away, the witnesses still guard)."""
    return LinkState(exists=True, up=True, carrier=state != "down")


def link_state_from_flags(flags: int) -> LinkState:
    return LinkState(exists=True, up=bool(flags & IFF_UP), carrier=bool(flags & IFF_RUNNING))


# --- the backend -------------------------------------------------------------------------


class IllumosBackend:
    """VIPs on illumos interfaces (see the module docstring).

    `vips` are the configured VIPs, in order: VIP number N is the address object
    `IF/havipN`. `tools` maps "ipadm", "ifconfig", "dladm" to executables (default: found on
    PATH, then /usr/sbin and /sbin). `libdlpi` is a library path or a loaded `Libdlpi`
    (default: the system's libdlpi.so.1, loaded on first use)."""

    name = "illumos"

    def __init__(
        self,
        *,
        vips: Sequence[Vip] = (),
        address_tool: str = "ipadm",
        tools: Mapping[str, str] | None = None,
        libdlpi: str | Libdlpi | None = None,
        timeout: float = 5.0,
        dad_timeout: float = 2.0,
        dad_poll: float = 0.05,
        garp_rounds: int = 3,
        garp_interval: float = 0.02,
    ) -> None:
        if address_tool not in ADDRESS_TOOLS:
            raise ValueError(f'address_tool must be "ipadm" or "ifconfig", got {address_tool!r}')
        if garp_rounds < 1:
            raise ValueError(f"garp_rounds must be at least 1, got {garp_rounds}")
        self.address_tool = address_tool
        self.tools = dict(tools or {})
        self.timeout = timeout
        self.dad_timeout = dad_timeout
        self.dad_poll = dad_poll
        self.garp_rounds = garp_rounds
        self.garp_interval = garp_interval
        self._objects = {
            (vip.interface, vip.address): f"{vip.interface}/{OBJECT_PREFIX}{index}"
            for index, vip in enumerate(vips)
        }
        self._libdlpi = libdlpi
        self._lib_lock = threading.Lock()

    # --- commands --------------------------------------------------------------------------

    def tool_path(self, tool: str) -> str | None:
        """Where `tool` is: the `tools` mapping, else PATH, then /usr/sbin and /sbin."""
        if tool in self.tools:
            return self.tools[tool]
        search = os.pathsep.join([os.environ.get("PATH", ""), *TOOL_DIRS])
        return shutil.which(tool, path=search)

    def run(
        self, fail: Callable[[str], BackendError], tool: str, *args: str
    ) -> subprocess.CompletedProcess[str]:
        """Run `tool args` with LC_ALL=C and the timeout; what prevented it raises
        `fail(cause)`. A non-zero exit status is returned for the caller to judge."""
        path = self.tool_path(tool)
        if path is None:
            where = ", ".join(["PATH", *TOOL_DIRS])
            raise fail(f"{tool} not found (looked in {where})")
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        try:
            proc = subprocess.Popen(
                [path, *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
                start_new_session=True,  # one process group, killed whole on timeout
            )
        except FileNotFoundError as exc:
            raise fail(f"{tool} not found at {path}") from exc
        except OSError as exc:
            raise fail(f"cannot run {path}: {exc.strerror or exc}") from exc
        try:
            out, err = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired as exc:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.communicate(timeout=_KILL_WAIT)
            what = " ".join([tool, *args[:1]])
            raise fail(f"{what} did not finish within {self.timeout:g}s; killed it") from exc
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    @staticmethod
    def cause(proc: subprocess.CompletedProcess[str], tool: str) -> str:
        """The meaningful line of a failed command: the last line of stderr ("ipadm: Could
        not create address: Permission denied"), else of stdout, else the exit status."""
        for stream in (proc.stderr, proc.stdout):
            lines = [line.strip() for line in (stream or "").splitlines() if line.strip()]
            if lines:
                return lines[-1]
        return f"{tool} failed with exit status {proc.returncode}"

    def _fail(
        self, op: BackendOp, vip: Vip | None, interface: str | None = None
    ) -> Callable[[str], BackendError]:
        return lambda cause: BackendError(op, vip, cause, interface=interface)

    # --- addresses ---------------------------------------------------------------------------

    def address_object(self, vip: Vip) -> str:
        """`IF/havipN` for configured VIP number N; BackendError for a VIP not configured."""
        found = self._objects.get((vip.interface, vip.address))
        if found is None:
            raise BackendError(BackendOp.ADD, vip, "not one of the configured VIPs")
        return found

    def _v4(self, op: BackendOp, vip: Vip) -> None:
        if vip.ip.version != 4:
            raise BackendError(op, vip, IPV6_REFUSED)

    def rows(self, op: BackendOp, vip: Vip | None, interface: str | None = None) -> list[AddrRow]:
        """Every address ipadm knows (`ipadm show-addr -p -o addrobj,type,state,addr`)."""
        fail = self._fail(op, vip, interface)
        proc = self.run(fail, "ipadm", "show-addr", "-p", "-o", "addrobj,type,state,addr")
        if proc.returncode != 0:
            raise fail(self.cause(proc, "ipadm"))
        return parse_show_addr(proc.stdout)

    def logical_interfaces(
        self, op: BackendOp, vip: Vip | None, interface: str | None = None
    ) -> list[LogicalInterface]:
        """Every IPv4 logical interface (`ifconfig -a4`)."""
        fail = self._fail(op, vip, interface)
        proc = self.run(fail, "ifconfig", "-a4")
        if proc.returncode != 0:
            raise fail(self.cause(proc, "ifconfig"))
        return parse_ifconfig(proc.stdout)

    def _holders(self, op: BackendOp, vip: Vip) -> list[tuple[str, str]]:
        """(name, state) of each address object or logical interface on the VIP's interface
        that holds the VIP with its prefix."""
        if self.address_tool == "ipadm":
            return [
                (row.addrobj, row.state)
                for row in self.rows(op, vip)
                if row.interface == vip.interface and row.address == vip.address
            ]
        return [
            (lif.name, lif.state)
            for lif in self.logical_interfaces(op, vip)
            if lif.interface == vip.interface and lif.address == vip.address
        ]

    def present(self, vip: Vip) -> bool:
        """The VIP (address and prefix) is on its interface and usable (state ok); a missing
        interface holds nothing."""
        if vip.ip.version != 4:
            return False
        return any(state == "ok" for _, state in self._holders(BackendOp.PRESENT, vip))

    def add(self, vip: Vip) -> None:
        """Add the VIP and wait for duplicate address detection to say `ok`."""
        self._v4(BackendOp.ADD, vip)
        if self.address_tool == "ipadm":
            self._add_ipadm(vip)
        else:
            self._add_ifconfig(vip)

    def remove(self, vip: Vip) -> None:
        """Take the VIP off; an absent VIP or interface is success. An address object havip
        did not create that still holds the VIP is an error naming it (havip does not delete
        an operator's configuration)."""
        self._v4(BackendOp.REMOVE, vip)
        if self.address_tool == "ipadm":
            self._remove_ipadm(vip)
        else:
            self._remove_ifconfig(vip)

    def _missing_interface(self, vip: Vip) -> bool:
        """Whether dladm says the VIP's interface does not exist (False when it cannot say)."""
        try:
            return not self.link_state(vip.interface).exists
        except BackendError:
            return False

    def _add_ipadm(self, vip: Vip) -> None:
        fail = self._fail(BackendOp.ADD, vip)
        obj = self.address_object(vip)
        proc = self.run(
            fail, "ipadm", "create-addr", "-T", "static", "-t", "-a", str(vip.address), obj
        )
        if proc.returncode != 0:
            cause = self.cause(proc, "ipadm")
            rows = self.rows(BackendOp.ADD, vip)
            ours = next((row for row in rows if row.addrobj == obj), None)
            if ours is not None and ours.address != vip.address:
                held = ours.address or "another address"
                raise fail(
                    f"{obj} already exists and holds {held}, not this VIP; delete it with "
                    f"`ipadm delete-addr {obj}`"
                )
            if ours is None:
                if any(
                    row.interface == vip.interface
                    and row.address == vip.address
                    and row.state == "ok"
                    for row in rows
                ):
                    return  # already there under another object: present, as on Linux
                if self._missing_interface(vip):
                    raise fail(f"interface {vip.interface} does not exist")
                raise fail(cause)
            # Our own object with this address: added before (idempotent); see its state.
        self._settle(vip, obj, lambda: self._state_ipadm(vip, obj), self._delete_ipadm)

    def _state_ipadm(self, vip: Vip, obj: str) -> str | None:
        rows = self.rows(BackendOp.ADD, vip)
        return next((row.state for row in rows if row.addrobj == obj), None)

    def _delete_ipadm(self, vip: Vip, obj: str) -> None:
        with contextlib.suppress(BackendError):
            self.run(self._fail(BackendOp.ADD, vip), "ipadm", "delete-addr", obj)

    def _settle(
        self,
        vip: Vip,
        obj: str,
        state: Callable[[], str | None],
        undo: Callable[[Vip, str], None],
    ) -> None:
        """Poll `state()` until ok. Duplicate, another final state, or tentative past
        `dad_timeout`: undo the half-added address and raise."""
        fail = self._fail(BackendOp.ADD, vip)
        deadline = time.monotonic() + self.dad_timeout
        while True:
            now = state()
            if now == "ok":
                return
            if now is None:
                raise fail(f"{obj} disappeared right after it was added")
            if now == "duplicate":
                undo(vip, obj)
                raise fail(
                    f"duplicate address: another host on the LAN already uses {vip.ip} "
                    f"(duplicate address detection failed); removed {obj} again"
                )
            if now != "tentative":
                undo(vip, obj)
                raise fail(f"{obj} is in state {now!r}, not ok; removed it again")
            if time.monotonic() >= deadline:
                undo(vip, obj)
                raise fail(
                    f"{obj} still tentative after {self.dad_timeout:g}s (duplicate address "
                    "detection did not finish); removed it again"
                )
            time.sleep(self.dad_poll)

    def _remove_ipadm(self, vip: Vip) -> None:
        fail = self._fail(BackendOp.REMOVE, vip)
        obj = self.address_object(vip)
        proc = self.run(fail, "ipadm", "delete-addr", obj)
        rows = self.rows(BackendOp.REMOVE, vip)
        if proc.returncode != 0 and any(row.addrobj == obj for row in rows):
            raise fail(self.cause(proc, "ipadm"))  # "Object not found" is success
        self._refuse_foreign(
            vip,
            [r.addrobj for r in rows if r.interface == vip.interface and r.address == vip.address],
        )

    def _refuse_foreign(self, vip: Vip, holders: Sequence[str]) -> None:
        if not holders:
            return
        name = holders[0]
        how = (
            f"ifconfig {vip.interface} removeif {vip.ip}"
            if name.endswith("/?") or ":" in name or name == vip.interface
            else f"ipadm delete-addr {name}"
        )
        raise BackendError(
            BackendOp.REMOVE,
            vip,
            f"{vip.ip} is still on {vip.interface} as {name}, which havip did not create; "
            f"havip leaves an operator's configuration alone: remove it by hand ({how})",
        )

    def _lif_state(self, vip: Vip) -> str | None:
        for lif in self.logical_interfaces(BackendOp.ADD, vip):
            if lif.interface == vip.interface and lif.address == vip.address:
                return lif.state
        return None

    def _removeif(self, vip: Vip, _obj: str = "") -> None:
        with contextlib.suppress(BackendError):
            self.run(
                self._fail(BackendOp.ADD, vip), "ifconfig", vip.interface, "removeif", str(vip.ip)
            )

    def _add_ifconfig(self, vip: Vip) -> None:
        fail = self._fail(BackendOp.ADD, vip)
        states = [state for _, state in self._holders(BackendOp.ADD, vip)]
        if "ok" in states:
            return
        if states:
            self._removeif(vip)  # a duplicate or stuck leftover: start again
        proc = self.run(fail, "ifconfig", vip.interface, "addif", str(vip.address), "up")
        if proc.returncode != 0:
            cause = self.cause(proc, "ifconfig")
            if self._lif_state(vip) is None:
                if self._missing_interface(vip):
                    raise fail(f"interface {vip.interface} does not exist")
                raise fail(cause)
        self._settle(vip, f"{vip.interface} addif {vip.ip}", lambda: self._lif_state(vip),
                     self._removeif)  # fmt: skip

    def _remove_ifconfig(self, vip: Vip) -> None:
        fail = self._fail(BackendOp.REMOVE, vip)
        if not self._holders(BackendOp.REMOVE, vip):
            return
        proc = self.run(fail, "ifconfig", vip.interface, "removeif", str(vip.ip))
        if proc.returncode != 0 and self._holders(BackendOp.REMOVE, vip):
            raise fail(self.cause(proc, "ifconfig"))

    # --- ARP through libdlpi -----------------------------------------------------------------

    def _lib(self, op: BackendOp, vip: Vip | None, interface: str) -> Libdlpi:
        with self._lib_lock:
            if isinstance(self._libdlpi, Libdlpi):
                return self._libdlpi
            try:
                self._libdlpi = Libdlpi(self._libdlpi)
            except (OSError, AttributeError) as exc:
                cause = f"cannot load libdlpi ({self._libdlpi or 'libdlpi.so.1'}): {exc}"
                raise BackendError(op, vip, cause, interface=interface) from exc
            return self._libdlpi

    def open_link(self, op: BackendOp, vip: Vip | None, interface: str) -> tuple[DlpiLink, bytes]:
        """A raw DLPI stream on `interface` bound to ARP, and the interface's MAC."""
        lib = self._lib(op, vip, interface)
        fail = self._fail(op, vip, interface)
        try:
            link = lib.open(interface)
        except DlpiError as exc:
            if exc.code == DLPI_ENOLINK:
                raise fail(f"interface {interface} does not exist") from exc
            hint = " (needs the net_rawaccess privilege)" if _denied(exc.text) else ""
            raise fail(f"cannot open {interface} with libdlpi: {exc.text}{hint}") from exc
        try:
            link.bind(ETH_P_ARP)
            mac = link.mac()
        except DlpiError as exc:
            link.close()
            raise fail(f"libdlpi on {interface}: {exc}") from exc
        if len(mac) != 6:
            link.close()
            raise fail(f"interface {interface} is not Ethernet ({len(mac)}-byte address), no ARP")
        return link, mac

    def announce(self, vip: Vip) -> int:
        """Gratuitous ARP, request and reply forms, `garp_rounds` times."""
        self._v4(BackendOp.ANNOUNCE, vip)
        assert isinstance(vip.ip, IPv4Address)
        link, mac = self.open_link(BackendOp.ANNOUNCE, vip, vip.interface)
        sent = 0
        try:
            for round_ in range(self.garp_rounds):
                if round_:
                    time.sleep(self.garp_interval)
                for frame in gratuitous_frames(mac, vip.ip):
                    try:
                        link.send(frame)
                    except DlpiError as exc:
                        raise BackendError(
                            BackendOp.ANNOUNCE, vip, f"cannot send ARP: {exc.text}"
                        ) from exc
                    sent += 1
        finally:
            link.close()
        return sent

    def open_lan(
        self, interface: str, vips: Sequence[IPAddress], witnesses: Sequence[IPAddress]
    ) -> IllumosLanSocket:
        """An ARP listener on `interface` (frames classified in user space), and the source
        address each witness request uses: our own non-VIP address in the witness's subnet
        (from ipadm or ifconfig), else 0.0.0.0."""
        op = BackendOp.LISTEN
        if not vips:
            raise BackendError(op, None, "no VIPs to listen for", interface=interface)
        if any(ip.version != 4 for ip in (*vips, *witnesses)):
            raise BackendError(op, None, IPV6_REFUSED, interface=interface)
        vip_list = [ip for ip in dict.fromkeys(vips) if isinstance(ip, IPv4Address)]
        witness_list = [ip for ip in dict.fromkeys(witnesses) if isinstance(ip, IPv4Address)]
        sources = self._witness_sources(interface, vip_list, witness_list) if witnesses else {}
        link, mac = self.open_link(op, None, interface)
        return IllumosLanSocket(
            link, interface=interface, mac=mac, vips=vip_list, witnesses=witness_list,
            sources=sources,
        )  # fmt: skip

    def addresses(self, interface: str) -> list[IPv4Interface]:
        """Our usable IPv4 addresses (with prefix) on `interface`."""
        if self.address_tool == "ipadm":
            return [
                row.address
                for row in self.rows(BackendOp.LISTEN, None, interface)
                if row.interface == interface
                and row.state == "ok"
                and isinstance(row.address, IPv4Interface)
            ]
        return [
            lif.address
            for lif in self.logical_interfaces(BackendOp.LISTEN, None, interface)
            if lif.interface == interface and lif.state == "ok" and lif.address is not None
        ]

    def _witness_sources(
        self, interface: str, vips: Sequence[IPv4Address], witnesses: Sequence[IPv4Address]
    ) -> dict[IPv4Address, IPv4Address]:
        try:
            ours = [a for a in self.addresses(interface) if a.ip not in vips]
        except BackendError:
            return {}  # requests from 0.0.0.0 are answered too (RFC 5227 probes are)
        sources = {}
        for witness in witnesses:
            for address in ours:
                if witness in address.network and witness != address.ip:
                    sources[witness] = address.ip
                    break
        return sources

    # --- links -------------------------------------------------------------------------------

    def default_gateway(self, interface: str) -> IPv4Address | None:
        """The default route's gateway when it leaves through `interface` (the default
        witness), else None. Reads `route -n get default`'s output, never its exit status,
        which BSD-derived route(8)s do not set reliably."""
        fail = self._fail(BackendOp.ROUTE, None, interface)
        proc = self.run(fail, "route", "-n", "get", "default")
        return parse_route_get(proc.stdout, interface)

    def link_state(self, interface: str) -> LinkState:
        """`dladm show-link -p -o link,state IF`; a link dladm does not know is exists=False."""
        fail = self._fail(BackendOp.LINK, None, interface)
        proc = self.run(fail, "dladm", "show-link", "-p", "-o", "link,state", interface)
        if proc.returncode != 0:
            cause = self.cause(proc, "dladm")
            if "is not valid" in cause or "not found" in cause:
                return ABSENT
            raise fail(cause)
        state = parse_show_link(proc.stdout).get(interface)
        if state is None:
            raise fail(f"dladm show-link printed nothing about {interface}")
        return link_state_from_dladm(state)

    def open_link_monitor(self) -> IllumosLinkMonitor:
        """RTM_IFINFO messages from a PF_ROUTE socket, non-blocking."""
        return IllumosLinkMonitor.open()

    def close(self) -> None:
        """Nothing stays open between calls."""


def _denied(text: str) -> bool:
    lowered = text.lower()
    return "permission denied" in lowered or "not owner" in lowered


class IllumosLanSocket:
    """ARP on one interface for the event loop, through a raw DLPI stream: reads what is
    queued and keeps only the frames `arp.classify` finds about our VIPs or witnesses."""

    def __init__(
        self,
        link: DlpiLink,
        *,
        interface: str,
        mac: bytes,
        vips: Sequence[IPv4Address],
        witnesses: Sequence[IPv4Address],
        sources: Mapping[IPv4Address, IPv4Address],
    ) -> None:
        self._link = link
        self.interface = interface
        self.mac = mac
        self.vips = frozenset(vips)
        self.witnesses = frozenset(witnesses)
        self._sources = dict(sources)
        self.frames = 0  # ARP frames read, relevant or not (no kernel filter here)

    def fileno(self) -> int:
        return self._link.fileno()

    def _fail(self, op: BackendOp, cause: str) -> BackendError:
        return BackendError(op, None, cause, interface=self.interface)

    def read(self) -> list[Heard]:
        heard = []
        for _ in range(_MAX_DRAIN):
            try:
                frame = self._link.recv()
            except DlpiError as exc:
                raise self._fail(BackendOp.LISTEN, f"cannot receive ARP: {exc.text}") from exc
            if frame is None:
                break
            self.frames += 1
            packet = parse_arp(frame)
            if packet is None:
                continue
            found = classify(packet, own_mac=self.mac, vips=self.vips, witnesses=self.witnesses)
            if found is not None:
                heard.append(found)
        return heard

    def _send(self, frame: bytes) -> None:
        try:
            self._link.send(frame)
        except DlpiError as exc:
            raise self._fail(BackendOp.PROBE, f"cannot send ARP: {exc.text}") from exc

    def send_probe(self, ip: IPAddress) -> None:
        if not isinstance(ip, IPv4Address):
            raise self._fail(BackendOp.PROBE, IPV6_REFUSED)
        self._send(probe_frame(self.mac, ip))

    def send_request(self, ip: IPAddress) -> None:
        if not isinstance(ip, IPv4Address):
            raise self._fail(BackendOp.PROBE, IPV6_REFUSED)
        source = self._sources.get(ip, UNSPECIFIED)
        self._send(
            build_arp(
                op=OP_REQUEST, sender_mac=self.mac, sender_ip=source, target_mac=ZERO_MAC,
                target_ip=ip,
            )
        )  # fmt: skip

    def close(self) -> None:
        self._link.close()


class IllumosLinkMonitor:
    """Link changes from RTM_IFINFO messages on a PF_ROUTE socket (event-driven, like
    netlink). Each message names the interface by index; the name comes from
    if_indextoname, or, for an interface already gone, from the names seen before, and is
    then reported as absent."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._names: dict[int, str] = {}
        with contextlib.suppress(OSError):
            self._names = {index: name for index, name in socket.if_nameindex()}

    @classmethod
    def open(cls) -> IllumosLinkMonitor:
        family = getattr(socket, "AF_ROUTE", None)
        if family is None or not sys.platform.startswith("sunos"):
            raise BackendError(
                BackendOp.LINK,
                None,
                f"no PF_ROUTE routing socket on this platform ({sys.platform})",
            )
        try:
            sock = socket.socket(family, socket.SOCK_RAW, socket.AF_INET)
        except OSError as exc:
            cause = f"cannot open a PF_ROUTE socket: {exc.strerror or exc}"
            raise BackendError(BackendOp.LINK, None, cause) from exc
        with contextlib.suppress(OSError):  # a smaller buffer still works
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _ROUTE_RCVBUF)
        return cls(sock)

    def fileno(self) -> int:
        return self._sock.fileno()

    def read(self) -> list[tuple[str, LinkState]]:
        changes: list[tuple[str, LinkState]] = []
        for _ in range(_MAX_DRAIN):
            try:
                data = self._sock.recv(1 << 16)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                cause = f"cannot read the routing socket: {exc.strerror or exc}"
                raise BackendError(BackendOp.LINK, None, cause) from exc
            if not data:
                break
            changes += self.changes(data)
        return changes

    def changes(self, data: bytes) -> list[tuple[str, LinkState]]:
        """The link changes in one PF_ROUTE read."""
        found = []
        for index, flags in parse_ifinfo(data):
            try:
                name = socket.if_indextoname(index)
            except OSError:
                gone = self._names.pop(index, None)
                if gone is not None:
                    found.append((gone, ABSENT))
                continue
            old = self._names.get(index)
            if old is not None and old != name:
                found.append((old, ABSENT))
            self._names[index] = name
            found.append((name, link_state_from_flags(flags)))
        return found

    def close(self) -> None:
        self._sock.close()


# --- check-config ------------------------------------------------------------------------


def environment_problems(
    cfg: Config, backend: IllumosBackend | None = None
) -> list[tuple[str, str]]:
    """(config key, problem) for what `havip check-config` finds wrong on this illumos host:
    missing tools, missing interfaces, a VIP in no subnet of its interface, no libdlpi."""
    backend = backend or IllumosBackend(vips=cfg.vips, address_tool=cfg.address_tool)
    problems: list[tuple[str, str]] = []
    for tool in (cfg.address_tool, "dladm"):
        key = "backend.address_tool" if tool != "dladm" else "backend.type"
        path = backend.tool_path(tool)
        if path is None:
            where = ", ".join(["PATH", *TOOL_DIRS])
            problems.append((key, f"{tool} not found (looked in {where})"))
        elif not os.access(path, os.X_OK):
            problems.append((key, f"{tool} at {path} is missing or not executable"))
    if problems:
        return problems
    try:
        backend._lib(BackendOp.LISTEN, None, "-")
    except BackendError as exc:
        problems.append(("backend.type", exc.cause))
    vip_ips = {vip.ip for vip in cfg.vips}
    for index, vip in enumerate(cfg.vips):
        key = f"vip[{index}]"
        try:
            exists = backend.link_state(vip.interface).exists
        except BackendError as exc:
            problems.append((f"{key}.interface", f"cannot ask dladm: {exc.cause}"))
            continue
        if not exists:
            problems.append((f"{key}.interface", f'no interface "{vip.interface}" on this host'))
            continue
        if vip.allow_offlink:
            continue
        try:
            own = [a for a in backend.addresses(vip.interface) if a.ip not in vip_ips]
        except BackendError as exc:
            problems.append((f"{key}.interface", f"cannot read its addresses: {exc.cause}"))
            continue
        if not any(vip.ip in a.network for a in own):
            have = ", ".join(str(a) for a in own) or "no IPv4 address"
            problems.append(
                (
                    f"{key}.address",
                    f"{vip.ip} lies in no subnet configured on {vip.interface} (it has {have}),"
                    " so clients there could not reach it; fix the VIP or the interface, or set "
                    "allow_offlink = true in this [[vip]] if it is routed",
                )
            )
    return problems
