"""An API server's listening socket at a drain: the connections the kernel had queued are answered.

Every API server serves the one listening socket (shared since the fork), and the kernel completes
handshakes and queues connections until the last copy of that socket is closed. Closing it then
resets whatever was queued: the clients had connected and sent their requests, and see them lost.
``ServesQueuedConnections.shutdown`` keeps a copy of the socket while uvicorn stops accepting on it,
accepts everything queued, and closes the copy straight after the last accept, with no event-loop turn
in between. Those connections are served like every connection open at the drain
(``DirectHttpProtocol.shutdown``: answered with ``Connection: close``), and a connection that arrives
after the close is refused by the kernel, which a client can retry safely.

This relies on uvicorn internals (``servers``, ``server_state``, ``lifespan.state``, the protocol
arguments); ``tests/service/http/test_uvicorn_contract.py`` pins them.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

import uvicorn


class ServesQueuedConnections(uvicorn.Server):
    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        copies = [listening.dup() for listening in sockets or []]
        for server in self.servers:  # uvicorn's first step, then its close of each socket
            server.close()
        for listening in sockets or []:
            listening.close()
        await asyncio.sleep(0)  # the event loop's own copy is closed now: nothing else accepts here
        queued = [connection for copy in copies for connection in _accept_all(copy)]
        loop = asyncio.get_running_loop()
        for connection in queued:
            with contextlib.suppress(OSError):  # its client may have gone meanwhile
                await loop.connect_accepted_socket(self._new_connection, connection)
        await super().shutdown(sockets)  # asks every connection, these too, to finish

    def _new_connection(self) -> asyncio.Protocol:
        """A protocol as uvicorn's ``startup`` makes one for each accepted connection."""
        return self.config.http_protocol_class(  # type: ignore[call-arg]
            config=self.config, server_state=self.server_state, app_state=self.lifespan.state
        )


def _accept_all(listening: socket.socket) -> list[socket.socket]:
    """Every connection queued on ``listening``, which is then closed."""
    accepted: list[socket.socket] = []
    with listening:
        listening.setblocking(False)
        while True:
            try:
                connection, _ = listening.accept()
            except OSError:  # BlockingIOError: none left
                return accepted
            accepted.append(connection)
