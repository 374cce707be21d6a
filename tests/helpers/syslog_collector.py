"""A real TCP syslog collector on 127.0.0.1 for tests: accepts connections and keeps every RFC 6587
octet-counted frame it receives, decoded."""

from __future__ import annotations

import socket
import threading

__all__ = ["SyslogCollector"]


class SyslogCollector:
    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.server.getsockname()[1]}"
        self.frames: list[str] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def messages(self) -> list[str]:
        with self._lock:
            return list(self.frames)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        with conn:
            buf = b""
            while chunk := conn.recv(65536):
                buf += chunk
                while b" " in buf:
                    length, _, rest = buf.partition(b" ")
                    if len(rest) < int(length):
                        break
                    with self._lock:
                        self.frames.append(rest[: int(length)].decode())
                    buf = rest[int(length) :]

    def close(self) -> None:
        self.server.close()
