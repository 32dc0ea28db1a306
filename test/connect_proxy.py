#!/usr/bin/env python3
"""connect_proxy.py -- a small HTTP CONNECT proxy for zim_pin's tests.

The standard library only.  It listens on 127.0.0.1, answers CONNECT only
(anything else gets 405), checks Basic credentials when --auth is given,
and relays bytes both ways once the tunnel is up.  What it does with each
new connection is its mode, read from --mode-file at every connection (so a
test changes it without restarting the proxy), else --mode:

  tunnel          a normal proxy (the default)
  refuse          answer the CONNECT with 403 Forbidden
  bad-gateway     answer it with 502 Bad Gateway
  drop            read the CONNECT and close without answering
  drop-after-200  answer 200, then close before relaying anything
  hang            read the CONNECT and never answer (until the client goes)

It writes one JSON line per CONNECT to --log, when it has decided:
  {"target": "127.0.0.1:5443", "auth": "ok"|"missing"|"wrong"|"none",
   "mode": ..., "answer": 200|403|407|502|null, "headers": [...names...]}
and, for a tunnel, one more when the connection ends:
  {"target": ..., "tunnel": true, "up": N, "down": N, "tls": true|false,
   "plain": true|false}
where up/down are the bytes relayed each way, "tls" says the client's first
byte through the tunnel began a TLS handshake record (0x16), and "plain"
says any of the marks of zim_pin's request in clear text (the Action's
query parameter, "Signature", an HTTP request line) was in what the client
sent through it.  Credentials are never written anywhere.

  python3 connect_proxy.py --port 0 --port-file F --log F [--auth USER:PASS]
                           [--mode MODE] [--mode-file F]
  python3 connect_proxy.py --self-test
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import select
import socket
import sys
import threading
import time

MODES = ("tunnel", "refuse", "bad-gateway", "drop", "drop-after-200", "hang")
PLAIN_MARKS = (b"Action=", b"Signature", b"HTTP/1.1\r\n", b"ConvPinned")
MAX_HEAD = 16384


class Proxy:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.lock = threading.Lock()
        self.want_auth = None
        if args.auth:
            self.want_auth = "Basic " + base64.b64encode(args.auth.encode()).decode()

    def mode(self) -> str:
        if self.args.mode_file:
            try:
                with open(self.args.mode_file) as f:
                    m = f.read().strip()
                if m in MODES:
                    return m
            except OSError:
                pass
        return self.args.mode

    def log(self, record: dict) -> None:
        if not self.args.log:
            return
        with self.lock, open(self.args.log, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")

    def serve(self) -> None:
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", self.args.port))
        srv.listen(64)
        if self.args.port_file:
            tmp = self.args.port_file + ".tmp"
            with open(tmp, "w") as f:
                f.write(str(srv.getsockname()[1]))
            os.rename(tmp, self.args.port_file)
        while True:
            conn, _ = srv.accept()
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    @staticmethod
    def read_head(conn: socket.socket) -> bytes | None:
        data = b""
        conn.settimeout(10)
        while b"\r\n\r\n" not in data:
            try:
                chunk = conn.recv(4096)
            except OSError:
                return None
            if not chunk:
                return None
            data += chunk
            if len(data) > MAX_HEAD:
                return None
        conn.settimeout(None)
        return data

    def handle(self, conn: socket.socket) -> None:
        try:
            self.handle1(conn)
        except OSError:
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def handle1(self, conn: socket.socket) -> None:
        head = self.read_head(conn)
        if head is None:
            return
        text, _, rest = head.partition(b"\r\n\r\n")
        lines = text.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        mode = self.mode()
        record = {"target": parts[1] if len(parts) > 1 else "", "mode": mode,
                  "headers": sorted(headers), "method": parts[0]}
        if self.want_auth is None:
            record["auth"] = "none"
        elif "proxy-authorization" not in headers:
            record["auth"] = "missing"
        elif headers["proxy-authorization"] == self.want_auth:
            record["auth"] = "ok"
        else:
            record["auth"] = "wrong"

        def answer(code: int, reason: str, extra: str = "") -> None:
            record["answer"] = code
            self.log(record)
            conn.sendall(f"HTTP/1.1 {code} {reason}\r\n{extra}Content-Length: 0\r\n\r\n".encode())

        if len(parts) != 3 or parts[0] != "CONNECT":
            answer(405, "Method Not Allowed")
            return
        if record["auth"] in ("missing", "wrong"):
            answer(407, "Proxy Authentication Required",
                   'Proxy-Authenticate: Basic realm="zim_pin test"\r\n')
            return
        if mode == "refuse":
            answer(403, "Forbidden")
            return
        if mode == "bad-gateway":
            answer(502, "Bad Gateway")
            return
        if mode in ("drop", "hang"):
            record["answer"] = None
            self.log(record)
            if mode == "hang":
                # until the client gives up
                while conn.recv(4096):
                    pass
            return
        host, _, port = parts[1].rpartition(":")
        try:
            upstream = socket.create_connection((host.strip("[]"), int(port)), timeout=10)
        except (OSError, ValueError):
            answer(502, "Bad Gateway")
            return
        upstream.settimeout(None)
        answer(200, "Connection established")
        if mode == "drop-after-200":
            upstream.close()
            return
        self.relay(conn, upstream, rest, record["target"])

    def relay(self, conn: socket.socket, upstream: socket.socket, first: bytes, target: str) -> None:
        up = down = 0
        sent = bytearray(first)
        if first:
            upstream.sendall(first)
            up += len(first)
        try:
            while True:
                r, _, _ = select.select([conn, upstream], [], [], 60)
                if not r:
                    break
                if conn in r:
                    d = conn.recv(65536)
                    if not d:
                        break
                    if len(sent) < 1 << 20:
                        sent += d
                    upstream.sendall(d)
                    up += len(d)
                if upstream in r:
                    d = upstream.recv(65536)
                    if not d:
                        break
                    conn.sendall(d)
                    down += len(d)
        except OSError:
            pass
        finally:
            upstream.close()
        self.log({"target": target, "tunnel": True, "up": up, "down": down,
                  "tls": bool(sent) and sent[0] == 0x16,
                  "plain": any(m in sent for m in PLAIN_MARKS)})


def self_test() -> int:
    """Start a proxy and an echo server in this process and try each mode."""
    import tempfile

    tmp = tempfile.mkdtemp()
    echo = socket.socket()
    echo.bind(("127.0.0.1", 0))
    echo.listen(8)

    def echo_loop() -> None:
        while True:
            c, _ = echo.accept()
            d = c.recv(100)
            c.sendall(d)
            c.close()

    threading.Thread(target=echo_loop, daemon=True).start()
    args = argparse.Namespace(port=0, port_file=os.path.join(tmp, "port"), log=os.path.join(tmp, "log"),
                              auth="u:p w", mode="tunnel", mode_file=os.path.join(tmp, "mode"))
    threading.Thread(target=Proxy(args).serve, daemon=True).start()
    for _ in range(100):
        if os.path.exists(args.port_file):
            break
        time.sleep(0.05)
    port = int(open(args.port_file).read())
    target = f"127.0.0.1:{echo.getsockname()[1]}"
    good = "Proxy-Authorization: Basic " + base64.b64encode(b"u:p w").decode() + "\r\n"
    failures = 0

    def attempt(mode: str, auth: str, payload: bytes) -> bytes:
        with open(args.mode_file, "w") as f:
            f.write(mode)
        s = socket.create_connection(("127.0.0.1", port))
        s.settimeout(1)
        s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{auth}\r\n".encode())
        out = b""
        try:
            time.sleep(0.1)
            if payload:
                s.sendall(payload)
            while True:
                d = s.recv(4096)
                if not d:
                    break
                out += d
        except OSError:
            pass
        s.close()
        return out

    cases = [
        ("tunnel", good, b"\x16hello", b"200 Connection established", b"\x16hello"),
        ("tunnel", "", b"", b"407 Proxy Authentication Required", None),
        ("tunnel", "Proxy-Authorization: Basic eDp5\r\n", b"", b"407", None),
        ("refuse", good, b"", b"403 Forbidden", None),
        ("bad-gateway", good, b"", b"502 Bad Gateway", None),
        ("drop", good, b"", None, None),
        ("drop-after-200", good, b"x", b"200 Connection established", None),
        ("hang", good, b"", None, None),
    ]
    for mode, auth, payload, want, echoed in cases:
        out = attempt(mode, auth, payload)
        ok = (out == b"") if want is None else (want in out)
        if echoed is not None:
            ok = ok and out.endswith(echoed)
        if mode == "drop-after-200":
            ok = ok and out.endswith(b"\r\n\r\n")
        if not ok:
            failures += 1
            print(f"self-test: mode {mode}: got {out[:80]!r}")
    time.sleep(0.2)
    log = [json.loads(line) for line in open(args.log)]
    auths = [r.get("auth") for r in log if "auth" in r]
    if auths[:3] != ["ok", "missing", "wrong"]:
        failures += 1
        print(f"self-test: auth outcomes {auths[:3]}")
    tunnels = [r for r in log if r.get("tunnel")]
    if not tunnels or not tunnels[0]["tls"] or tunnels[0]["plain"]:
        failures += 1
        print(f"self-test: tunnel record {tunnels}")
    if "p w" in open(args.log).read() or "cCB3" in open(args.log).read():
        failures += 1
        print("self-test: the log holds the password")
    print(f"self-test: {len(cases) + 3 - failures} of {len(cases) + 3} checks as expected")
    return 1 if failures else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--port-file")
    p.add_argument("--log")
    p.add_argument("--auth", help="USER:PASSWORD the proxy requires (Basic)")
    p.add_argument("--mode", choices=MODES, default="tunnel")
    p.add_argument("--mode-file")
    p.add_argument("--self-test", action="store_true")
    args = p.parse_args()
    if args.self_test:
        return self_test()
    Proxy(args).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
