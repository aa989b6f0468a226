"""A TCP proxy on 127.0.0.1 that a test can cut, to play a network failure.

Point a database alias at ``proxy.port`` instead of the server's port. Then
``cut()`` closes every open connection at once (both sockets), and
``cut_after(n)`` does the same once ``n`` more bytes went from client to server,
so the cut lands in the middle of whatever the client is sending (a COPY,
say). After a cut new connections are closed on arrival until ``restore()``.
"""
from __future__ import annotations

import socket
import threading

CHUNK = 64 * 1024


class TcpProxy:
    def __init__(self, upstream_host: str, upstream_port: int):
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._refusing = False
        self._budget: int | None = None  # client->server bytes left before a cut
        self.cuts = 0
        self._closed = False
        threading.Thread(target=self._accept, name="tcpproxy-accept", daemon=True).start()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def cut(self) -> None:
        """Close both sockets of every connection now and refuse new ones."""
        with self._lock:
            self._refusing = True
            self._budget = None
            self.cuts += 1
            doomed, self._sockets = self._sockets, set()
        for sock in doomed:
            _kill(sock)

    def cut_after(self, nbytes: int) -> None:
        """Cut once ``nbytes`` more bytes have gone from client to server."""
        with self._lock:
            self._budget = nbytes

    def restore(self) -> None:
        with self._lock:
            self._refusing = False

    def close(self) -> None:
        self._closed = True
        self.cut()
        _kill(self._listener)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                refusing = self._refusing
            if refusing:
                _kill(client)
                continue
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                _kill(client)
                continue
            with self._lock:
                self._sockets |= {client, server}
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        while True:
            try:
                data = src.recv(CHUNK)
            except OSError:
                break
            if not data:
                break
            cut_now = False
            if upstream:
                with self._lock:
                    if self._budget is not None:
                        if len(data) >= self._budget:
                            data, cut_now = data[:self._budget], True
                        else:
                            self._budget -= len(data)
            try:
                dst.sendall(data)
            except OSError:
                break
            if cut_now:
                self.cut()
                return
        _kill(src)
        _kill(dst)
        with self._lock:
            self._sockets -= {src, dst}


def _kill(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
