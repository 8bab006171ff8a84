"""Raw sockets against a real runner process: what a client that never ends its
head, never reads or floods the server does (the connection tests and
`hack/reliability.py hostile` share them)."""

from __future__ import annotations

import socket

from tests.reliability.procs import RunnerProcess


def connect(runner: RunnerProcess, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(30)
    sock.connect(("127.0.0.1", runner.port))
    return sock


def read_answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def flood(sock: socket.socket, head: bytes, line: bytes, total: int) -> int:
    """Send ``head`` then ``line`` repeatedly up to ``total`` bytes or until the server stops taking them."""
    sent = 0
    try:
        sock.sendall(head)
        while sent < total:
            sock.sendall(line)
            sent += len(line)
    except OSError:
        pass  # the server answered and closed: that is the point
    return sent
