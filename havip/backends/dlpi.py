"""A small ctypes binding to illumos libdlpi: raw Ethernet frames on one datalink.

Signatures, structure layout and constants are those of illumos-gate
usr/src/lib/libdlpi/common/libdlpi.h (dlpi_open(3DLPI) and its siblings). The link is opened
in raw mode (DLPI_RAW), so what is sent and received is the whole frame, Ethernet header
included, as `havip.backends.arp` builds and parses it. Receiving uses `dlpi_recv` with a
timeout of 0 ms (libdlpi polls the descriptor and answers DLPI_ETIMEDOUT at once when nothing
is queued), so a read never blocks; `fileno()` is the stream for the event loop.

Nothing here is illumos-only at import time: the library is loaded when a `Libdlpi` is made,
which lets the tests load a stand-in built over Linux AF_PACKET.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from typing import Any

DLPI_PHYSADDR_MAX = 64
DLPI_LINKNAME_MAX = 32
DLPI_RAW = 0x0004  # raw mode: frames include the link-layer header
DLPI_SUCCESS = 10000
DLPI_ENOLINK = 10003
DLPI_ETIMEDOUT = 10006
DL_SYSERR = 4  # sys/dlpi.h: the failure is in errno
ETHERTYPE_ARP = 0x0806
LIBRARY = "libdlpi.so.1"
_MAX_FRAME = 2048  # more than an Ethernet frame (1514 bytes, 1518 tagged)


class DlpiInfo(ctypes.Structure):
    """dlpi_info_t. Only the fields up to di_timeout are read; the two QoS structures that
    end it (dl_qos_cl_sel1_t, 20 bytes, and dl_qos_cl_range1_t, 32 bytes, in sys/dlpi.h)
    get a generous opaque tail so that libdlpi never writes past the buffer."""

    _fields_ = (
        ("di_opts", ctypes.c_uint),
        ("di_max_sdu", ctypes.c_uint),
        ("di_min_sdu", ctypes.c_uint),
        ("di_state", ctypes.c_uint),
        ("di_mactype", ctypes.c_uint),
        ("di_linkname", ctypes.c_char * DLPI_LINKNAME_MAX),
        ("di_physaddr", ctypes.c_ubyte * DLPI_PHYSADDR_MAX),
        ("di_physaddrlen", ctypes.c_ubyte),
        ("di_bcastaddr", ctypes.c_ubyte * DLPI_PHYSADDR_MAX),
        ("di_bcastaddrlen", ctypes.c_ubyte),
        ("di_sap", ctypes.c_uint),
        ("di_timeout", ctypes.c_int),
        ("di_qos", ctypes.c_ubyte * 128),
    )


class DlpiError(Exception):
    """A libdlpi call failed: `code` is its return value, the message dlpi_strerror's text."""

    def __init__(self, call: str, code: int, text: str) -> None:
        super().__init__(f"{call}: {text}")
        self.call = call
        self.code = code
        self.text = text


class Libdlpi:
    """The loaded library: `Libdlpi()` finds the system's libdlpi.so.1, `Libdlpi(path)` loads
    that file. OSError if it cannot be loaded."""

    def __init__(self, path: str | None = None) -> None:
        name = path or ctypes.util.find_library("dlpi") or LIBRARY
        self.path = name
        lib = ctypes.CDLL(name, use_errno=True)
        handle_p = ctypes.POINTER(ctypes.c_void_p)
        size_p = ctypes.POINTER(ctypes.c_size_t)
        sigs: dict[str, tuple[Any, list[Any]]] = {
            "dlpi_open": (ctypes.c_int, [ctypes.c_char_p, handle_p, ctypes.c_uint]),
            "dlpi_close": (None, [ctypes.c_void_p]),
            "dlpi_info": (ctypes.c_int, [ctypes.c_void_p, ctypes.POINTER(DlpiInfo), ctypes.c_uint]),
            "dlpi_bind": (
                ctypes.c_int,
                [ctypes.c_void_p, ctypes.c_uint, ctypes.POINTER(ctypes.c_uint)],
            ),
            "dlpi_send": (
                ctypes.c_int,
                [
                    ctypes.c_void_p,
                    ctypes.c_void_p,
                    ctypes.c_size_t,
                    ctypes.c_void_p,
                    ctypes.c_size_t,
                    ctypes.c_void_p,
                ],
            ),
            "dlpi_recv": (
                ctypes.c_int,
                [
                    ctypes.c_void_p,
                    ctypes.c_void_p,
                    size_p,
                    ctypes.c_void_p,
                    size_p,
                    ctypes.c_int,
                    ctypes.c_void_p,
                ],
            ),
            "dlpi_fd": (ctypes.c_int, [ctypes.c_void_p]),
            "dlpi_strerror": (ctypes.c_char_p, [ctypes.c_int]),
        }
        for fname, (restype, argtypes) in sigs.items():
            func = getattr(lib, fname)  # AttributeError names a missing symbol
            func.restype = restype
            func.argtypes = argtypes
        self._lib = lib

    def strerror(self, code: int, errno_value: int = 0) -> str:
        """dlpi_strerror's text; for DL_SYSERR the errno it stands for."""
        if code == DL_SYSERR and errno_value:
            return os.strerror(errno_value)
        text = self._lib.dlpi_strerror(code)
        return text.decode(errors="replace") if text else f"libdlpi error {code}"

    def open(self, link: str) -> DlpiLink:
        """dlpi_open(link, DLPI_RAW); DlpiError (DLPI_ENOLINK for a missing link)."""
        handle = ctypes.c_void_p()
        code = self._lib.dlpi_open(link.encode(), ctypes.byref(handle), DLPI_RAW)
        if code != DLPI_SUCCESS:
            raise DlpiError("dlpi_open", code, self.strerror(code, ctypes.get_errno()))
        return DlpiLink(self, self._lib, handle, link)


class DlpiLink:
    """One open datalink. Thread-safe for close against use (close waits for a call in
    flight), so the event loop and a worker thread may share it."""

    def __init__(self, owner: Libdlpi, lib: Any, handle: ctypes.c_void_p, link: str) -> None:
        self._owner = owner
        self._lib = lib
        self._handle: ctypes.c_void_p | None = handle
        self._lock = threading.Lock()
        self.link = link
        self._buf = ctypes.create_string_buffer(_MAX_FRAME)

    def _live(self, call: str) -> ctypes.c_void_p:
        if self._handle is None:
            raise DlpiError(call, -1, "the link is closed")
        return self._handle

    def _check(self, call: str, code: int) -> None:
        if code != DLPI_SUCCESS:
            raise DlpiError(call, code, self._owner.strerror(code, ctypes.get_errno()))

    def bind(self, sap: int) -> int:
        """dlpi_bind to `sap` (an Ethertype); the SAP actually bound."""
        bound = ctypes.c_uint(0)
        with self._lock:
            self._check(
                "dlpi_bind", self._lib.dlpi_bind(self._live("dlpi_bind"), sap, ctypes.byref(bound))
            )
        return int(bound.value)

    def mac(self) -> bytes:
        """The link's own physical address, from dlpi_info."""
        info = DlpiInfo()
        with self._lock:
            code = self._lib.dlpi_info(self._live("dlpi_info"), ctypes.byref(info), 0)
            self._check("dlpi_info", code)
        length = min(int(info.di_physaddrlen), DLPI_PHYSADDR_MAX)
        return bytes(info.di_physaddr[:length])

    def fileno(self) -> int:
        with self._lock:
            return int(self._lib.dlpi_fd(self._live("dlpi_fd")))

    def send(self, frame: bytes) -> None:
        """dlpi_send of one whole frame (raw mode: no destination address argument)."""
        data = ctypes.create_string_buffer(frame, len(frame))
        with self._lock:
            code = self._lib.dlpi_send(self._live("dlpi_send"), None, 0, data, len(frame), None)
            self._check("dlpi_send", code)

    def recv(self) -> bytes | None:
        """One queued frame, or None when nothing is queued (dlpi_recv with 0 ms)."""
        length = ctypes.c_size_t(_MAX_FRAME)
        with self._lock:
            handle = self._live("dlpi_recv")
            code = self._lib.dlpi_recv(handle, None, None, self._buf, ctypes.byref(length), 0, None)
            if code == DLPI_ETIMEDOUT:
                return None
            self._check("dlpi_recv", code)
            return self._buf.raw[: min(int(length.value), _MAX_FRAME)]

    def close(self) -> None:
        """dlpi_close; harmless twice."""
        with self._lock:
            handle, self._handle = self._handle, None
            if handle is not None:
                self._lib.dlpi_close(handle)
