"""A connection flood for tests: silent TCP clients from another loopback address that reconnect
as soon as they are dropped (issue 5, part 11). Used by test_transport and test_loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

SCALE = float(os.environ.get("HAVIP_TEST_TIME_SCALE", "1"))
STRANGER = "127.0.0.2"  # the flood's source address: never the configured peer's (127.0.0.1)

# `count` silent clients that reconnect at once when dropped, for at most `duration` seconds
# (and killed by PID before that). A separate process, so the flood does not share the
# listener's event loop with it, as a real flood would not.
FLOODER = r"""
import asyncio, socket, sys
port, source, count, duration = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])

async def one() -> None:
    loop = asyncio.get_running_loop()
    while True:
        sock = socket.socket()
        sock.setblocking(False)
        sock.bind((source, 0))
        try:
            await loop.sock_connect(sock, ("127.0.0.1", port))
            while await loop.sock_recv(sock, 100):
                pass
        except OSError:
            await asyncio.sleep(0)
        finally:
            sock.close()

async def main() -> None:
    tasks = [asyncio.ensure_future(one()) for _ in range(count)]
    await asyncio.sleep(duration)

asyncio.run(main())
"""


@asynccontextmanager
async def flood(port: int, count: int = 64, duration: float = 30.0) -> AsyncIterator[None]:
    """Flood 127.0.0.1:`port` from STRANGER while the block runs."""
    proc = subprocess.Popen(
        [sys.executable, "-c", FLOODER, str(port), STRANGER, str(count), str(duration * SCALE)]
    )
    try:
        yield
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
