"""Fake illumos ipadm, ifconfig and dladm for havip's tests (no illumos here).

Each executable next to this file runs `main(tool, argv)`. The state lives in the folder
named by $HAVIP_FAKE_ILLUMOS: `state.json` (datalinks, address objects, injected failures)
and `calls.log` (one JSON argv per line, in call order). State keys:

- "links": {"e1000g0": "up"}: the datalinks and their dladm state (up, down, unknown);
- "addrs": [{"obj": "e1000g0/v4", "lif": "e1000g0", "addr": "198.18.0.1/24",
  "state": "ok"}]: addresses, with their address object and logical interface;
- "dad": {"198.18.0.100": "duplicate" | "tentative" | "tentative:N"}: the duplicate address
  detection outcome for an address added later ("tentative:N": tentative for N reads, then
  ok); absent means ok;
- "fail": {"ipadm create-addr": "Permission denied"}: make that subcommand fail with that
  libipadm status text (ifconfig: the whole stderr line);
- "sleep": {"ipadm": 30}: sleep that long before answering (a hung tool);
- "default": {"gateway": "198.18.0.254", "interface": "e1000g0"}: the default route that
  `route -n get default` reports (absent: there is none).

Real mode (HAVIP_FAKE_ILLUMOS_REAL=1; for the end-to-end tests in the Linux namespace lab,
tests/test_illumos_e2e.py): ipadm, dladm and route act on the Linux network namespace they
run in, with the same texts. Before each command "links", "addrs" and "default" are read
from the kernel (`ip -j link`, `ip -j addr`, `ip -j -4 route show default`); `ipadm
create-addr` runs `ip addr add`, `ipadm delete-addr` `ip addr del`. The address object
names ipadm created live in "objects" ({"eth0/havip0": {"link": "eth0", "addr":
"198.18.0.100/24", "temporary": true}}); a kernel address no object names shows as "LINK/?",
as ipadm shows an address it did not create, and an object whose address is gone from the
kernel is forgotten. `python fake.py boot` is a reboot of the fake host: temporary objects
and their addresses are gone, persistent ones come back. "fail" and "sleep" still apply;
"dad" does not (Linux runs no IPv4 duplicate address detection). ifconfig has no real mode.

The texts are the real tools' (illumos-gate):
- ipadm: usr/src/cmd/cmd-inet/usr.sbin/ipadm/ipadm.c. die() prints "ipadm: " and the message
  to stderr and its newline with putchar() to *stdout*; do_create_addr: "Could not create
  address: %s", do_delete_addr: "could not delete address: %s", do_show_addr: "-p requires
  -o", "Address object not found". The %s is ipadm_status2str(), the table in
  usr/src/lib/libipadm/common/libipadm.c: IPADM_ADDROBJ_EXISTS "Address object already
  exists", IPADM_NOTFOUND "Object not found", IPADM_ENXIO "Interface does not exist",
  IPADM_ADDR_INUSE "Address already in use", IPADM_EPERM "Permission denied". DAD failure is a
  soft error: create-addr succeeds and the object shows state "duplicate"
  (ipadm_addr.c i_ipadm_create_addr). show-addr -p output is libofmt's: fields joined by ':',
  ':' and '\\' escaped with '\\' (usr/src/lib/libofmt/common/ofmt.c).
- dladm: usr/src/cmd/dladm/dladm.c do_show_link: die_dlerr(status, "link %s is not valid")
  prints "dladm: link X is not valid: object not found" (dladm_status2str of
  DLADM_STATUS_NOTFOUND); states "up", "down", "unknown".
- route: usr/src/cmd/cmd-inet/usr.sbin/route.c print_getmsg(): "   route to: %s",
  "destination: %s", "       mask: %s", "    gateway: %s" (RTF_GATEWAY routes), "  interface:
  %.*s", "      flags: <...>"; an absent route is the kernel's ESRCH, which the BSD-derived
  route reports as "route: writing to routing socket: not in table" (its exit status is not
  to be trusted across route(8)s: havip reads the output only).
- ifconfig: usr/src/cmd/cmd-inet/usr.sbin/ifconfig/ifconfig.c: addif prints "Created new
  logical interface %s"; Perror2() prints "ifconfig: CMD: NAME: no such interface" (ENXIO),
  "...: permission denied" (EPERM), else perror(); in_status() prints "\\tinet %s netmask %x
  broadcast %s"; the flag names are if_flags_tbl's (UP, BROADCAST, RUNNING, MULTICAST, IPv4,
  DUPLICATE, ...). The errno of a removeif for an address that is not there is not in the
  command's source (the kernel picks it); the fake answers ENXIO's text.
"""

from __future__ import annotations

import contextlib
import fcntl
import getopt
import ipaddress
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

FLAGS_OK = (0x1000843, "UP,BROADCAST,RUNNING,MULTICAST,IPv4")
FLAGS_TENTATIVE = (0x1000842, "BROADCAST,RUNNING,MULTICAST,IPv4")
FLAGS_DUPLICATE = (0x4001000842, "BROADCAST,RUNNING,MULTICAST,IPv4,DUPLICATE")


class Exit(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


def folder() -> Path:
    return Path(os.environ["HAVIP_FAKE_ILLUMOS"])


def real() -> bool:
    """Whether the tools act on the network namespace they run in (real mode)."""
    return os.environ.get("HAVIP_FAKE_ILLUMOS_REAL") == "1"


@contextlib.contextmanager
def state() -> Iterator[dict[str, Any]]:
    """The state, locked, written back on exit."""
    path = folder() / "state.json"
    with open(folder() / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
        for key, empty in (("links", {}), ("addrs", []), ("dad", {}), ("fail", {}), ("sleep", {}),
                           ("objects", {})):  # fmt: skip
            data.setdefault(key, empty)
        yield data
        path.write_text(json.dumps(data, indent=1))


def ipadm_die(message: str) -> None:
    # ipadm.c die(): the message on stderr, its newline on stdout.
    sys.stderr.write(f"ipadm: {message}")
    sys.stdout.write("\n")
    raise Exit(1)


def fail_line(message: str) -> None:
    sys.stderr.write(message + "\n")
    raise Exit(1)


def escape(field: str) -> str:
    return field.replace("\\", "\\\\").replace(":", "\\:")


def settle(addr: dict[str, Any]) -> str:
    """The state a read sees now; a "tentative:N" address counts down to ok."""
    left = addr.get("settle")
    if left is not None:
        if left <= 0:
            addr["state"] = "ok"
            addr.pop("settle")
        else:
            addr["settle"] = left - 1
    return str(addr["state"])


def new_state(data: dict[str, Any], ip: str) -> dict[str, Any]:
    outcome = data["dad"].get(ip, "ok")
    if outcome.startswith("tentative:"):
        return {"state": "tentative", "settle": int(outcome.split(":", 1)[1])}
    return {"state": outcome}


def next_lif(data: dict[str, Any], link: str) -> str:
    used = {a["lif"] for a in data["addrs"]}
    if link not in used:
        return link
    number = 1
    while f"{link}:{number}" in used:
        number += 1
    return f"{link}:{number}"


def holds(addr: dict[str, Any], link: str, ip: str) -> bool:
    return bool(addr["lif"].split(":")[0] == link and addr["addr"].split("/")[0] == ip)


# --- real mode: the kernel of this network namespace ----------------------------------------

# `ip -j link` operstate -> dladm's link state word.
_DLADM_STATE = {"UP": "up", "DOWN": "down", "LOWERLAYERDOWN": "down", "NOTPRESENT": "down"}


def ip_cmd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=False)


def ip_json(*args: str) -> list[dict[str, Any]]:
    proc = ip_cmd("-j", *args)
    if proc.returncode != 0:
        return []
    found: list[dict[str, Any]] = json.loads(proc.stdout or "[]")
    return found


def sync(data: dict[str, Any]) -> None:
    """Real mode: links, addresses (with our object names) and the default route from the
    kernel; objects whose address the kernel no longer has are forgotten."""
    data["links"] = {
        link["ifname"]: _DLADM_STATE.get(link.get("operstate", ""), "unknown")
        for link in ip_json("link", "show")
        if link.get("link_type") != "loopback"  # lo0 is no datalink on illumos
    }
    names = {(o["link"], o["addr"]): obj for obj, o in data["objects"].items()}
    addrs, seen = [], set()
    for link in ip_json("addr", "show"):
        for info in link.get("addr_info", []):
            if info.get("family") not in ("inet", "inet6"):
                continue
            key = (link["ifname"], f"{info['local']}/{info['prefixlen']}")
            seen.add(key)
            state = "duplicate" if info.get("dadfailed") else "ok"
            state = "tentative" if info.get("tentative") and state == "ok" else state
            kind = "addrconf" if info.get("scope") == "link" else "static"
            addrs.append({"obj": names.get(key, f"{key[0]}/?"), "lif": key[0], "addr": key[1],
                          "state": state, "type": kind})  # fmt: skip
    data["addrs"] = addrs
    data["objects"] = {obj: o for obj, o in data["objects"].items()
                       if (o["link"], o["addr"]) in seen}  # fmt: skip
    routes = ip_json("-4", "route", "show", "default")
    via = [r for r in routes if "gateway" in r and "dev" in r]
    data["default"] = {"gateway": via[0]["gateway"], "interface": via[0]["dev"]} if via else None


def ip_failure(proc: subprocess.CompletedProcess[str]) -> str:
    """libipadm's status text for a failed `ip addr` (its last stderr line otherwise)."""
    text = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "ip failed"
    if "File exists" in text:
        return "Address already in use"
    if "Cannot find device" in text or "No such device" in text:
        return "Interface does not exist"
    if "Operation not permitted" in text:
        return "Permission denied"
    return text


def boot(data: dict[str, Any]) -> None:
    """A reboot: temporary address objects are gone, persistent ones are applied again."""
    if real():
        for obj in data["objects"].values():
            if obj.get("temporary"):
                ip_cmd("addr", "del", obj["addr"], "dev", obj["link"])
            else:
                ip_cmd("addr", "replace", obj["addr"], "dev", obj["link"])
        data["objects"] = {k: o for k, o in data["objects"].items() if not o.get("temporary")}
        sync(data)
    else:
        data["addrs"] = [a for a in data["addrs"] if not a.get("temporary")]


# --- ipadm -----------------------------------------------------------------------------------


def ipadm(argv: list[str], data: dict[str, Any]) -> None:
    if not argv:
        fail_line("usage:  ipadm <subcommand> <args> ...")
    sub, args = argv[0], argv[1:]
    injected = data["fail"].get(f"ipadm {sub}")
    if sub == "create-addr":
        opts, rest = getopt.getopt(args, "1T:a:dh:i:p:w:t")
        given = dict(opts)
        if "-T" not in given or len(rest) != 1:
            ipadm_die("Invalid arguments")
        if injected:
            ipadm_die(f"Could not create address: {injected}")
        obj = rest[0]
        link = obj.split("/", 1)[0]
        address = ipaddress.ip_interface(given["-a"])
        if link not in data["links"]:
            ipadm_die("Could not create address: Interface does not exist")
        if any(a["obj"] == obj for a in data["addrs"]):
            ipadm_die("Could not create address: Address object already exists")
        if any(holds(a, link, str(address.ip)) for a in data["addrs"]):
            ipadm_die("Could not create address: Address already in use")
        entry: dict[str, Any] = {"obj": obj, "lif": next_lif(data, link), "addr": str(address)}
        entry |= new_state(data, str(address.ip))
        entry["temporary"] = "-t" in given
        if real():
            done = ip_cmd("addr", "add", str(address), "dev", link)
            if done.returncode != 0:
                ipadm_die(f"Could not create address: {ip_failure(done)}")
            data["objects"][obj] = {"link": link, "addr": str(address),
                                    "temporary": entry["temporary"]}  # fmt: skip
        else:
            data["addrs"].append(entry)
    elif sub == "delete-addr":
        if len(args) != 1:
            ipadm_die("Usage: \tdelete-addr\t[-r] <addrobj>")
        if injected:
            ipadm_die(f"could not delete address: {injected}")
        found = [a for a in data["addrs"] if a["obj"] == args[0]]
        if not found:
            ipadm_die("could not delete address: Object not found")
        if real():
            done = ip_cmd("addr", "del", found[0]["addr"], "dev", found[0]["lif"])
            if done.returncode != 0:
                ipadm_die(f"could not delete address: {ip_failure(done)}")
            data["objects"].pop(args[0], None)
        else:
            data["addrs"].remove(found[0])
    elif sub == "show-addr":
        opts, rest = getopt.getopt(args, "po:")
        given = dict(opts)
        if "-p" in given and "-o" not in given:
            ipadm_die("-p requires -o")
        if injected:
            ipadm_die(f"Could not get address: {injected}")
        fields = given.get("-o", "addrobj,type,state,addr").split(",")
        rows = [a for a in data["addrs"] if not rest or a["obj"] == rest[0]]
        if rest and not rows:
            ipadm_die("Address object not found")
        for addr in rows:
            values = {"addrobj": addr["obj"], "type": addr.get("type", "static"),
                      "state": settle(addr), "addr": addr["addr"]}  # fmt: skip
            out = [values[f] for f in fields]
            sep = ":" if "-p" in given else "  "
            print(sep.join(escape(v) if len(out) > 1 and "-p" in given else v for v in out))
    else:
        fail_line(f"ipadm: unknown subcommand '{sub}'")


# --- dladm -----------------------------------------------------------------------------------


def dladm(argv: list[str], data: dict[str, Any]) -> None:
    if not argv or argv[0] != "show-link":
        fail_line("usage: dladm <subcommand> <args> ...")
    opts, rest = getopt.getopt(argv[1:], "po:")
    given = dict(opts)
    if "-p" in given and "-o" not in given:
        fail_line("dladm: -p requires -o")
    links = data["links"]
    if rest and rest[0] not in links:
        fail_line(f"dladm: link {rest[0]} is not valid: object not found")
    for link in rest or sorted(links):
        values = {"link": link, "state": links[link], "class": "phys", "mtu": "1500"}
        print(":".join(values[f] for f in given.get("-o", "link,class,mtu,state").split(",")))


# --- route -----------------------------------------------------------------------------------


def route(argv: list[str], data: dict[str, Any]) -> None:
    if argv != ["-n", "get", "default"]:
        fail_line("usage: route [-fnpqv] {add|delete|change|get|monitor|flush} ...")
    default: dict[str, str] = data.get("default") or {}
    if not default:
        fail_line("route: writing to routing socket: not in table")
    print("   route to: default")
    print("destination: default")
    print("       mask: default")
    print(f"    gateway: {default['gateway']}")
    print(f"  interface: {default['interface']}")
    print("      flags: <UP,GATEWAY,DONE,STATIC>")
    print(" recvpipe  sendpipe  ssthresh    rtt,ms rttvar,ms  hopcount      mtu     expire")
    print("       0         0         0         0         0         0      1500         0")


# --- ifconfig --------------------------------------------------------------------------------


def ifconfig(argv: list[str], data: dict[str, Any]) -> None:
    if real():
        fail_line("ifconfig: the fake has no real mode (HAVIP_FAKE_ILLUMOS_REAL)")
    if argv == ["-a4"]:
        for index, addr in enumerate(data["addrs"], start=2):
            address = ipaddress.ip_interface(addr["addr"])
            if address.version != 4:
                continue
            flags, names = {"ok": FLAGS_OK, "duplicate": FLAGS_DUPLICATE}.get(
                settle(addr), FLAGS_TENTATIVE
            )
            print(f"{addr['lif']}: flags={flags:x}<{names}> mtu 1500 index {index}")
            mask = int(address.network.netmask)
            print(f"\tinet {address.ip} netmask {mask:x} broadcast "
                  f"{address.network.broadcast_address}")  # fmt: skip
            if ":" not in addr["lif"]:
                print("\tether 2:8:20:0:0:1 ")
        return
    if len(argv) < 3:
        fail_line("usage: ifconfig <interface> | -a[ 4 | 6 | D ][ u | d ][ Z ]")
    link, command, value = argv[0], argv[1], argv[2]
    injected = data["fail"].get(f"ifconfig {command}")
    if injected:
        fail_line(injected)
    if link not in data["links"]:
        fail_line(f"ifconfig: {command}: SIOCLIF{command.upper()}: {link}: no such interface")
    address = ipaddress.ip_interface(value)
    if command == "addif":
        lif = next_lif(data, link)
        if lif == link:
            lif = f"{link}:1"
        print(f"Created new logical interface {lif}")
        if any(holds(a, link, str(address.ip)) for a in data["addrs"]):
            fail_line(f"ifconfig: SIOCSLIFADDR: {lif}: Address already in use")
        letter = chr(ord("a") + sum(a["obj"].startswith(f"{link}/_") for a in data["addrs"]))
        entry: dict[str, Any] = {"obj": f"{link}/_{letter}", "lif": lif, "addr": str(address)}
        if "up" in argv[3:]:
            entry |= new_state(data, str(address.ip))
        else:
            entry["state"] = "down"
        data["addrs"].append(entry)
    elif command == "removeif":
        found = [a for a in data["addrs"] if holds(a, link, str(address.ip))]
        if not found:
            fail_line(f"ifconfig: removeif: SIOCLIFREMOVEIF: {link}: no such interface")
        data["addrs"].remove(found[0])
    else:
        fail_line(f"ifconfig: {command}: not supported by the fake")


def main(tool: str, argv: list[str]) -> int:
    with open(folder() / "calls.log", "a") as log:
        log.write(json.dumps([tool, *argv]) + "\n")
    with state() as data:
        pause = float(data["sleep"].get(tool, 0))
    if pause:
        time.sleep(pause)
    try:
        with state() as data:
            if real():
                sync(data)
            tools = {"ipadm": ipadm, "dladm": dladm, "ifconfig": ifconfig, "route": route}
            tools[tool](argv, data)
    except Exit as done:
        return done.code
    return 0


if __name__ == "__main__":
    if sys.argv[1:] != ["boot"]:
        sys.exit("usage: fake.py boot  (a reboot of the fake host; see the docstring)")
    with state() as host:
        boot(host)
