"""The metrics HTTP server's limits: bounded connections and a busy port that is retried."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket

import pytest

from havip.shell.httpd import MAX_CONNECTIONS, serve_metrics, start_http

SCALE = float(os.environ.get("HAVIP_TEST_TIME_SCALE", "1"))
WAIT = 5 * SCALE
STATUS = {"node": "n1"}


class _Metrics:
    def exposition(self) -> bytes:
        return b"havip_up 1\n"


def _metrics() -> _Metrics:
    return _Metrics()


async def _get(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(WAIT):
            return await reader.read()
    finally:
        writer.close()


def test_connections_beyond_the_bound_are_closed_at_once_and_counted() -> None:
    refused: list[None] = []

    async def main() -> None:
        server = await start_http(
            "127.0.0.1",
            0,
            metrics=_metrics(),
            status=lambda: STATUS,
            timeout=30 * SCALE,  # the silent holders keep their slots for the whole test
            on_refused=lambda: refused.append(None),
        )
        port = server.sockets[0].getsockname()[1]
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(MAX_CONNECTIONS)]
        try:
            # Accepted in order, so the holders take every slot before these arrive.
            for _ in range(3):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                async with asyncio.timeout(WAIT):  # closed at once, not after 30 s
                    with contextlib.suppress(ConnectionResetError):
                        assert await reader.read() == b""
                writer.close()
            assert len(refused) == 3
        finally:
            for _, writer in held:
                writer.close()
        # The holders are gone: served again (bounded wait for the server to see the closes).
        for _ in range(100):
            try:
                answer = await _get(port)
            except ConnectionResetError:
                answer = b""
            if answer.startswith(b"HTTP/1.1 200"):
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("the slots were never freed")
        server.close()
        await server.wait_closed()

    asyncio.run(main())


def test_a_busy_port_is_reported_and_retried_until_free() -> None:
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen(1)
    port = squatter.getsockname()[1]
    errors: list[OSError] = []

    def on_bind_error(exc: OSError) -> None:
        errors.append(exc)
        if len(errors) == 1:
            raise RuntimeError("a broken reporter must not stop the retries")

    async def main() -> None:
        listening = asyncio.Event()
        task = asyncio.create_task(
            serve_metrics(
                "127.0.0.1",
                port,
                metrics=_metrics(),
                status=lambda: STATUS,
                on_bind_error=on_bind_error,
                on_listening=lambda server: listening.set(),
                retry=0.02 * SCALE,
            )
        )
        try:
            for _ in range(500):  # bounded: wait for at least two failed attempts
                if len(errors) >= 2:
                    break
                await asyncio.sleep(0.01)
            assert len(errors) >= 2 and not task.done()
            assert all(e.errno == errno.EADDRINUSE for e in errors)
            assert not listening.is_set()
            squatter.close()
            async with asyncio.timeout(WAIT):
                await listening.wait()
            assert (await _get(port)).startswith(b"HTTP/1.1 200")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert task.cancelled()
        with pytest.raises(OSError):  # cancelled: the port is closed again
            await _get(port)

    try:
        asyncio.run(main())
    finally:
        squatter.close()
