#!/usr/bin/env python3
"""eyeballs.py -- a test fixture (Python 3 standard library) for 022.

A port P on which 127.0.0.1 never completes a connection (a listener whose
backlog is full: the kernel drops further SYNs) and [::1] relays every
connection to the ZIM double at 127.0.0.1:TARGET.  libcurl resolves
"localhost" to both addresses; it tries 127.0.0.1 first and, after its
happy-eyeballs delay (200 ms), [::1] beside it, so each transfer to
https://localhost:P/ has two sockets at once until [::1] wins.

    eyeballs.py TARGET DIR

writes DIR/port (atomically) once listening and DIR/accepted, the number
of connections relayed so far, after each one.  Stop it with SIGTERM.
"""

import os
import signal
import socket
import sys
import threading
import time


def relay(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    for s in (src, dst):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def write(path: str, text: str) -> None:
    with open(path + ".tmp", "w") as f:
        f.write(text + "\n")
    os.replace(path + ".tmp", path)


def listeners() -> tuple[socket.socket, socket.socket]:
    """[::1]:P and 127.0.0.1:P, the same free P."""
    while True:
        v6 = socket.socket(socket.AF_INET6)
        v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        v6.bind(("::1", 0))
        v4 = socket.socket(socket.AF_INET)
        try:
            v4.bind(("127.0.0.1", v6.getsockname()[1]))
            return v6, v4
        except OSError:
            v6.close()
            v4.close()


def main() -> int:
    target, out = int(sys.argv[1]), sys.argv[2]
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    v6, v4 = listeners()
    port = v6.getsockname()[1]
    # a backlog of 0 holds one connection, never accepted: it is full
    v4.listen(0)
    filler = socket.create_connection(("127.0.0.1", port))
    time.sleep(0.1)
    v6.listen(64)
    write(os.path.join(out, "port"), str(port))
    accepted = 0
    while True:
        conn, _ = v6.accept()
        accepted += 1
        up = socket.create_connection(("127.0.0.1", target))
        for a, b in ((conn, up), (up, conn)):
            threading.Thread(target=relay, args=(a, b), daemon=True).start()
        write(os.path.join(out, "accepted"), str(accepted))
    filler.close()


if __name__ == "__main__":
    sys.exit(main())
