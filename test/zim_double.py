#!/usr/bin/env python3
"""zim_double.py -- an HTTPS test double of ZEGOCLOUD's ZIM server API.

Python 3.11 standard library only. It implements the parts of the vendor API
that zim_pin needs (see spec/zim-server-api.md): the signed gateway, the
Actions UserRegister, ConvPinned, QueryConversationList and
SilenceConvNotification, the per-Action rate limit, plus test controls for
latency, fault injection and inspecting what clients did.

Usage
-----
    zim_double.py --port 0 --port-file /tmp/zim.port \\
                  --cert server.crt --key server.key \\
                  --app-id 1234567890 --secret SECRET \\
                  [--rate-limit 20] [--max-convs 20] [--log /tmp/zim.log]
    zim_double.py --self-test

The server listens on 127.0.0.1 only; with --port 0 it picks a free port and
writes it (atomically) to --port-file once listening. SIGTERM and SIGINT make
it exit cleanly with status 0. ``make_certs.sh DIR`` creates the certificates.

Endpoints
---------
``POST /?Action=..&AppId=..&SignatureNonce=..&Timestamp=..&SignatureVersion=2.0&Signature=..``
    The vendor API, JSON body. Gateway errors and business errors are HTTP 200
    with ``{"Code": N, "Message": "...", "RequestId": "..."}``.

    The Actions TestReset, TestConfig, TestFault and TestState are the test
    controls, signed like any other call (so they prove signing works) but
    exempt from rate limits, faults and latency and absent from the request log.

``POST /_test/reset|config|fault|state``
    The same controls without a signature, JSON body (may be empty), for shell
    scripts (``curl --cacert ca.crt -d '{}' https://127.0.0.1:PORT/_test/state``).
    Bad input is HTTP 400 with Code 2 so that ``curl -f`` fails.

Anything else is HTTP 404 (JSON body).

Test controls
-------------
reset   ``{}``: forget users, pins, conversations, nonces, the request log,
        pending faults and counters; restore LatencyMs 0, JitterMs 0 and the
        command-line RateLimit and MaxConvs. Open connections stay open.
config  ``{"LatencyMs"?, "JitterMs"?, "RateLimit"?, "MaxConvs"?, "SecretRotated"?}``;
        JitterMs N delays each request on its way in by a random 0..N ms
        (uniform, independently per request) before it is received: a
        network whose delays vary, so requests can arrive closer together
        than they left, and in another order.
        SecretRotated true makes every Action but the test controls expect
        another secret (as if it were changed in the console): clients then
        get 100000005, without anyone setting a wrong secret in a session.
fault   ``{"Fault": kind, "Count"?: 1, "Action"?: filter, "Match"?: substring of
        the body, "Code"?, "Message"?, "Ms"?}``
        appends a fault; ``{"Fault": "clear"}`` empties the queue. Kinds:
        hang, reset, http500, http503, nonjson, truncated, oversized,
        wrongtypes, code, slow; slow and vanishing peers: drip (a success
        answer whose body comes one byte every "Ms", default 200), stall
        (the headers of an answer, then nothing until the client leaves or
        "Ms" pass), vanish (the connection closed at once, no answer); and,
        for hostile answers of any shape:
        body (``"Body"``: sent as a 200 application/json answer, UTF-8) and
        raw (``"Raw"``: the whole answer -- status line, headers, framing,
        body -- written as UTF-8 bytes exactly as given, then the connection
        is closed; ``"RepeatHeader"``: n adds n bytes of one header line);
        with ``"Base64": true`` the text is base64 of any bytes instead.
        Every ``POST /`` request whose Action does not
        start with "Test" consumes one count of the first matching fault,
        before any gateway check.  Connection faults -- conndrop (closed
        before the TLS handshake), connreset (reset then), connstall (no
        handshake until the client leaves or "Ms" pass) -- are consumed by
        each new connection instead.
state   ``{"UserId"?}``: Connections, Requests, RateLimited, MaxInAnyWindow,
        Config, Faults, and for a UserId: Registered, Pins, PinCount.

Choices where the vendor is silent
----------------------------------
* Requests lists every ``POST /`` call whose Action does not start with
  "Test" -- including those refused by the gateway, rate-limited or faulted --
  with the time of receipt (T, time.monotonic) and the connection it came on.
  MaxInAnyWindow counts these per Action in any sliding 1 s window.
* Connection ids are unique for the life of the process (1, 2, 3, ...), so a
  connection opened before a reset is never confused with one opened after
  it; Connections counts the connections accepted since the last reset.
* Every SignatureNonce received since the last reset counts as seen, even
  from a faulted or refused request: a client must re-sign every retry.
* Rate limiting uses a sliding 1 s window per Action over accepted calls.
* JitterMs is slept before anything else of a request whose Action does not
  start with "Test": its time of receipt (T), the rate limit and faults all
  see it after the delay, as the vendor would behind a jittery network.
* LatencyMs is slept after the call is processed, before the answer is sent
  (the state change happens even if the client gives up waiting).
* The "nonjson" fault is sent as Content-Type application/json; the http500
  and http503 faults as text/html.
"""

from __future__ import annotations

import argparse
import base64
import bisect
import gc
import hashlib
import hmac
import json
import os
import random
import re
import secrets
import select
import signal
import socket
import socketserver
import ssl
import struct
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

# ---------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------

REAL_ACTIONS = ("UserRegister", "ConvPinned", "QueryConversationList",
                "SilenceConvNotification")
TEST_ACTIONS = {"TestReset": "reset", "TestConfig": "config",
                "TestFault": "fault", "TestState": "state"}
FAULT_KINDS = ("hang", "reset", "http500", "http503", "nonjson", "truncated",
               "oversized", "wrongtypes", "code", "slow", "raw", "body",
               "drip", "stall", "vanish")
# faults of a new connection, before its TLS handshake
CONN_FAULT_KINDS = ("conndrop", "connreset", "connstall")

MAX_PINS = 100                   # per user, fixed by the vendor
MAX_SILENCE_CONVS = 10           # ConvIds per SilenceConvNotification
MAX_REGISTER_USERS = 100         # UserInfo items per UserRegister
TIMESTAMP_TOLERANCE = 600        # seconds of clock error accepted
HANG_SECONDS = 120               # longest a "hang" fault keeps a connection
HANDSHAKE_TIMEOUT = 30           # seconds for the TLS handshake
IDLE_TIMEOUT = 300               # seconds a kept-alive connection may idle
MAX_BODY = 16 * 1024 * 1024      # larger request bodies are refused (413)
OVERSIZED_BYTES = 2 * 1024 * 1024

# UserId / FromUserId: 1..32 of 0-9 A-Z a-z and !#$%&()+-:;<=.>?@[]^_ {}|~
USER_ID_RE = re.compile(r"[0-9A-Za-z!#$%&()+\-:;<=.>?@\[\]^_ {}|~]{1,32}")
NONCE_RE = re.compile(r"[0-9a-f]{16}")
DECIMAL_RE = re.compile(r"[0-9]+")
INTEGER_RE = re.compile(r"-?[0-9]+")
# --sig-log: where every received Signature is written, for leak checks.
SIG_LOG = None
SIG_LOG_LOCK = threading.Lock()

# Signature=... in a query string (not SignatureNonce/SignatureVersion).
SIGNATURE_IN_QUERY_RE = re.compile(r"(?<![^?&])Signature=[^&]*")

MESSAGES = {
    0: "success",
    1: "server busy, please retry later",
    2: "input parameter error",
    3: "authentication failed",
    7: "request rate over the system limit, please retry later",
    100000001: "AppId format error",
    100000002: "Timestamp is empty",
    100000003: "Timestamp format error",
    100000004: "signature expired",
    100000005: "signature error",
    100000006: "Action is empty",
    100000007: "Action is not supported",
    100000008: "SignatureNonce is empty",
    100000009: "Signature is empty",
    100000010: "failed to get the ServerSecret of the AppId",
    100000013: "SignatureVersion is empty",
    100000014: "SignatureVersion is not supported",
    100000015: "gateway internal error",
    660000001: "general business error",
    660000002: "input parameter error",
    660000003: "logic processing error",
    660300005: "call rate of the AppId exceeded",
    660500002: "from user not registered",
    660700001: "UserRegister call rate exceeded",
    660700002: "user already exists",
    660800001: "the peer user of the one-to-one conversation is not registered",
    660800048: "the pinned conversation count would exceed the limit",
}

# Errors that only mean "the client went away"; they are swallowed quietly.
CLIENT_GONE = (ConnectionError, TimeoutError, ssl.SSLError, OSError)


def message(code: int) -> str:
    return MESSAGES.get(code, "error")


def request_id() -> str:
    """A fresh random RequestId (32 lower-case hex characters)."""
    return secrets.token_hex(16)


def sign(app_id: str, nonce: str, secret: str, timestamp: str) -> str:
    """Signature version 2.0: md5(AppId + SignatureNonce + secret + Timestamp)."""
    return hashlib.md5((app_id + nonce + secret + timestamp).encode()).hexdigest()


def is_int(v) -> bool:
    """A JSON integer (bool is not one, although Python says it is)."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def valid_user_id(v) -> bool:
    return isinstance(v, str) and USER_ID_RE.fullmatch(v) is not None


def valid_conv_id(v) -> bool:
    return isinstance(v, str) and 0 < len(v) <= 32


def now_ms() -> int:
    return int(time.time() * 1000)


def max_in_any_window(times: list[float]) -> int:
    """Most entries of `times` inside any half-open 1 s window (t-1, t]."""
    times = sorted(times)
    best = lo = 0
    for hi, t in enumerate(times):
        while t - times[lo] >= 1.0:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


# ---------------------------------------------------------------------------
# State
# ---------------------------------------------------------------------------

class State:
    """Everything the double remembers. Guard every access with `lock`."""

    def __init__(self, rate_limit: int, max_convs: int):
        self.lock = threading.Lock()
        self.default_rate_limit = rate_limit
        self.default_max_convs = max_convs
        # Connection ids are unique for the life of the process, so a
        # connection opened before a reset can never be confused with one
        # opened after it; `connections` counts those accepted since reset.
        self.next_conn_id = 0
        self.reset()

    def reset(self) -> None:
        self.users: dict[str, dict] = {}              # UserId -> UserInfo
        self.pins: dict[str, dict] = {}               # UserId -> {(ConvId, ConvType): None}
        self.convs: dict[str, dict] = {}              # UserId -> {(ConvId, ConvType): ms}
        self.nonces: set[str] = set()
        self.requests: list[dict] = []                # log of non-Test requests
        self.faults: list[dict] = []
        self.conn_faults: list[dict] = []
        self.windows: dict[str, list[float]] = {}     # Action -> accepted times
        self.rate_limited: dict[str, int] = {}
        self.connections = 0
        self.latency_ms: float = 0
        self.jitter_ms: float = 0                     # see Handler.api
        self.rate_limit = self.default_rate_limit
        self.max_convs = self.default_max_convs
        self.secret_rotated = False                   # see ctl_config

    def new_connection(self) -> int:
        with self.lock:
            self.next_conn_id += 1
            self.connections += 1
            return self.next_conn_id

    def take_fault(self, action: str, raw: bytes = b"") -> dict | None:
        """Consume one count of the first fault matching `action` and, if the
        fault has a "Match" string, whose body contains it (locked)."""
        for i, f in enumerate(self.faults):
            if (f.get("Action") in (None, action)
                    and (f.get("Match") is None or f["Match"].encode() in raw)):
                f["Count"] -= 1
                if f["Count"] <= 0:
                    del self.faults[i]
                return dict(f)
        return None

    def take_conn_fault(self) -> dict | None:
        """Consume one count of the first connection fault."""
        with self.lock:
            if not self.conn_faults:
                return None
            f = self.conn_faults[0]
            f["Count"] -= 1
            if f["Count"] <= 0:
                del self.conn_faults[0]
            return dict(f)

    def admit(self, action: str, t: float) -> bool:
        """Sliding-window rate limit (locked). False: the call is refused."""
        window = self.windows.setdefault(action, [])   # sorted receipt times
        del window[:bisect.bisect_right(window, t - 1.0)]
        if len(window) >= self.rate_limit:
            self.rate_limited[action] = self.rate_limited.get(action, 0) + 1
            return False
        bisect.insort(window, t)
        return True

    def touch_conv(self, user: str, key: tuple) -> None:
        """Remember a conversation of `user`, keeping first-seen order (locked)."""
        self.convs.setdefault(user, {})[key] = now_ms()


# ---------------------------------------------------------------------------
# The Actions. Each takes (state, body dict) and returns a response dict
# without RequestId. They run with state.lock held.
# ---------------------------------------------------------------------------

def whole_call(code: int, **extra) -> dict:
    return {"Code": code, "Message": message(code), **extra}


def act_user_register(st: State, body: dict) -> dict:
    infos = body.get("UserInfo")
    if (not isinstance(infos, list) or not 1 <= len(infos) <= MAX_REGISTER_USERS
            or not all(isinstance(i, dict) for i in infos)):
        return whole_call(660000002, ErrorList=[])
    errors, registered = [], 0
    for info in infos:
        uid = info.get("UserId")
        name, avatar = info.get("UserName", ""), info.get("UserAvatar", "")
        if (not valid_user_id(uid)
                or not isinstance(name, str) or len(name.encode()) > 256
                or not isinstance(avatar, str) or len(avatar.encode()) > 500):
            sub = 660000002
        elif uid in st.users:
            sub = 660700002
        else:
            st.users[uid] = {"UserName": name, "UserAvatar": avatar}
            registered += 1
            continue
        errors.append({"UserId": uid, "SubCode": sub, "SubMessage": message(sub)})
    code = 0 if registered else errors[0]["SubCode"]
    return {"Code": code, "Message": message(code), "ErrorList": errors}


def act_conv_pinned(st: State, body: dict) -> dict:
    user, convs, pinned = body.get("FromUserId"), body.get("ConvList"), body.get("PinnedType")
    if (not valid_user_id(user) or not isinstance(convs, list)
            or not 1 <= len(convs) <= st.max_convs
            or not is_int(pinned) or pinned not in (0, 1)):
        return whole_call(660000002, ErrorList=[])
    if user not in st.users:
        return whole_call(660500002, ErrorList=[])
    pins = st.pins.setdefault(user, {})
    errors, changed = [], 0
    for item in convs:
        item = item if isinstance(item, dict) else {}
        cid, ctype = item.get("ConvId"), item.get("ConvType")
        key = (cid, ctype)
        if not valid_conv_id(cid) or not is_int(ctype) or ctype not in (0, 2):
            sub = 660000002
        else:
            st.touch_conv(user, key)
            if ctype == 0 and cid not in st.users:
                sub = 660800001
            elif pinned == 1 and key not in pins and len(pins) >= MAX_PINS:
                sub = 660800048
            else:
                if pinned == 1:
                    pins.setdefault(key, None)      # re-pinning: no change
                else:
                    pins.pop(key, None)             # unpinning the unpinned: fine
                changed += 1
                continue
        errors.append({"ConvId": cid, "ConvType": ctype, "SubCode": sub,
                       "SubMessage": message(sub)})
    if changed:
        return {"Code": 0, "Message": "success", "ErrorList": errors}
    first = errors[0]["SubCode"]
    return {"Code": first, "Message": "all conversations failed: " + message(first),
            "ErrorList": errors}


def act_query_conversation_list(st: State, body: dict) -> dict:
    user, limit, nxt = body.get("FromUserId"), body.get("Limit", 100), body.get("Next", 0)
    if (not valid_user_id(user) or not is_int(limit) or not 1 <= limit <= 500
            or not is_int(nxt) or nxt < 0):
        return whole_call(660000002)
    if user not in st.users:
        return whole_call(660500002)
    items = list(st.convs.get(user, {}).items())
    page = items[nxt:nxt + limit]
    end = nxt + len(page)
    return {"Code": 0, "Message": "success", "TotalCount": len(items),
            "Next": end if end < len(items) else 0,
            "List": [{"ConvId": c, "ConvType": t, "UpdateTime": ms}
                     for (c, t), ms in page]}


def act_silence_conv_notification(st: State, body: dict) -> dict:
    user, ctype = body.get("FromUserId"), body.get("ConvType")
    ids, enable = body.get("ConvIds"), body.get("Enable")
    if (not valid_user_id(user) or not is_int(ctype) or ctype not in (0, 2)
            or not isinstance(ids, list) or not 1 <= len(ids) <= MAX_SILENCE_CONVS
            or not all(valid_conv_id(c) for c in ids)
            or not isinstance(enable, bool)):
        return whole_call(660000002, ErrorList=[])
    if user not in st.users:
        return whole_call(660500002, ErrorList=[])
    return {"Code": 0, "Message": "success", "ErrorList": []}


ACTIONS = {
    "UserRegister": act_user_register,
    "ConvPinned": act_conv_pinned,
    "QueryConversationList": act_query_conversation_list,
    "SilenceConvNotification": act_silence_conv_notification,
}


# ---------------------------------------------------------------------------
# Test controls. Each takes (state, body) and returns (ok, response dict);
# they take state.lock themselves.
# ---------------------------------------------------------------------------

def ctl_reset(st: State, body: dict) -> tuple[bool, dict]:
    with st.lock:
        st.reset()
    return True, whole_call(0)


def ctl_config(st: State, body: dict) -> tuple[bool, dict]:
    lat, rate, maxc = body.get("LatencyMs"), body.get("RateLimit"), body.get("MaxConvs")
    rotated, jitter = body.get("SecretRotated"), body.get("JitterMs")
    if rotated is not None and not isinstance(rotated, bool):
        return False, whole_call(2)
    if ((lat is not None and (not is_number(lat) or lat < 0))
            or (jitter is not None and (not is_number(jitter) or jitter < 0))
            or (rate is not None and (not is_int(rate) or rate < 0))
            or (maxc is not None and (not is_int(maxc) or maxc < 1))):
        return False, whole_call(2)
    with st.lock:
        if lat is not None:
            st.latency_ms = lat
        if jitter is not None:
            st.jitter_ms = jitter
        if rate is not None:
            st.rate_limit = rate
        if maxc is not None:
            st.max_convs = maxc
        if rotated is not None:
            st.secret_rotated = rotated
    return True, whole_call(0)


def ctl_fault(st: State, body: dict) -> tuple[bool, dict]:
    kind = body.get("Fault")
    if kind == "clear":
        with st.lock:
            st.faults.clear()
            st.conn_faults.clear()
        return True, whole_call(0)
    if kind in CONN_FAULT_KINDS:
        count, ms = body.get("Count", 1), body.get("Ms", HANG_SECONDS * 1000)
        if not is_int(count) or count < 1 or not is_number(ms) or ms < 0:
            return False, whole_call(2)
        with st.lock:
            st.conn_faults.append({"Fault": kind, "Count": count, "Ms": ms})
        return True, whole_call(0)
    count, action = body.get("Count", 1), body.get("Action")
    code, msg, ms = body.get("Code", 660000001), body.get("Message", "injected"), body.get("Ms")
    if (kind not in FAULT_KINDS or not is_int(count) or count < 1
            or (action is not None and not isinstance(action, str))
            or not is_int(code) or not isinstance(msg, str)
            or (ms is not None and (not is_number(ms) or ms < 0))):
        return False, whole_call(2)
    match = body.get("Match")
    if match is not None and not isinstance(match, str):
        return False, whole_call(2)
    fault = {"Fault": kind, "Count": count, "Action": action, "Match": match}
    if kind == "code":
        fault.update(Code=code, Message=msg)
    if kind == "slow":
        fault["Ms"] = 1000 if ms is None else ms
    if kind in ("hang", "stall") and ms is not None:
        fault["Ms"] = ms                     # optional: shorter than 120 s
    if kind == "drip":
        fault["Ms"] = 200 if ms is None else ms
    if kind in ("raw", "body"):
        text = body.get("Raw" if kind == "raw" else "Body")
        repeat = body.get("RepeatHeader", 0)
        if not isinstance(text, str) or not is_int(repeat) or repeat < 0:
            return False, whole_call(2)
        if body.get("Base64"):
            try:
                data = base64.b64decode(text, validate=True)
            except ValueError:
                return False, whole_call(2)
        else:
            data = text.encode("utf-8", "surrogatepass")
        fault["Data"], fault["RepeatHeader"] = data, repeat
    with st.lock:
        st.faults.append(fault)
    return True, whole_call(0)


def ctl_state(st: State, body: dict) -> tuple[bool, dict]:
    user = body.get("UserId")
    if user is not None and not isinstance(user, str):
        return False, whole_call(2)
    with st.lock:
        requests = [dict(r) for r in st.requests]
        times: dict[str, list[float]] = {}
        for r in requests:
            times.setdefault(r["Action"], []).append(r["T"])
        resp = whole_call(
            0,
            Connections=st.connections,
            Requests=requests,
            RateLimited=dict(st.rate_limited),
            MaxInAnyWindow={a: max_in_any_window(t) for a, t in times.items()},
            Config={"LatencyMs": st.latency_ms, "JitterMs": st.jitter_ms,
                    "RateLimit": st.rate_limit, "MaxConvs": st.max_convs},
            Faults=[{k: (len(v) if k == "Data" else v) for k, v in f.items()}
                    for f in st.faults + st.conn_faults],
        )
        if user is not None:
            pins = st.pins.get(user, {})
            resp.update(Registered=user in st.users,
                        Pins=[{"ConvId": c, "ConvType": t} for c, t in pins],
                        PinCount=len(pins))
    return True, resp


CONTROLS = {"reset": ctl_reset, "config": ctl_config, "fault": ctl_fault,
            "state": ctl_state}


# ---------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------

class Handler(BaseHTTPRequestHandler):
    """One thread per connection: TLS handshake, then HTTP/1.1 keep-alive."""

    protocol_version = "HTTP/1.1"
    server_version = "zim-double/1.0"
    sys_version = ""
    timeout = IDLE_TIMEOUT
    disable_nagle_algorithm = True
    server: "ZimServer"

    # -- connection life cycle -------------------------------------------

    def setup(self) -> None:
        self.conn_id = getattr(self.request, "zim_conn_id", 0)
        self.handshake_ok = False
        fault = self.server.state.take_conn_fault()
        if fault:
            # before any TLS: handle() will do nothing
            super().setup()
            self.server.log(f"conn={self.conn_id} connection fault {fault['Fault']}")
            if fault["Fault"] == "connstall":
                self.wait_for_close(self.connection, fault["Ms"] / 1000)
            if fault["Fault"] == "connreset":
                self.reset_connection()
            else:
                for f in (self.rfile, self.connection):
                    try:
                        f.close()
                    except OSError:
                        pass
            return
        try:
            self.request.settimeout(HANDSHAKE_TIMEOUT)
            self.request.do_handshake()
            self.handshake_ok = True
        except CLIENT_GONE as e:
            self.server.log(f"conn={self.conn_id} TLS handshake failed: {e}")
        super().setup()

    def handle(self) -> None:
        if not self.handshake_ok:
            return
        try:
            super().handle()
        except CLIENT_GONE as e:
            self.server.log(f"conn={self.conn_id} connection error: {e!r}")

    def finish(self) -> None:
        try:
            super().finish()
        except CLIENT_GONE:
            pass

    def version_string(self) -> str:
        return self.server_version

    # Silence the default stderr logging; errors go to --log.
    def log_request(self, code="-", size="-") -> None:
        pass

    def log_message(self, format, *args) -> None:
        self.server.log(f"conn={self.conn_id} " + (format % args))

    # -- sending -----------------------------------------------------------

    def send_raw(self, status: int, body: bytes, ctype: str = "application/json",
                 length: int | None = None, close: bool = False) -> None:
        """Status line, headers and body in a single write (no Nagle stalls).

        `length` overrides Content-Length (for the "truncated" fault)."""
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        if close:
            self.send_header("Connection", "close")   # also sets close_connection
        self._headers_buffer.append(b"\r\n")
        data = b"".join(self._headers_buffer)
        self._headers_buffer = []
        if self.command != "HEAD":
            data += body
        try:
            self.wfile.write(data)
        except CLIENT_GONE:
            self.close_connection = True

    def send_json(self, obj: dict, status: int = 200, close: bool = False) -> None:
        obj.setdefault("RequestId", request_id())
        self.send_raw(status, json.dumps(obj, separators=(",", ":")).encode(), close=close)

    def send_error(self, code, message=None, explain=None) -> None:
        """Protocol errors detected by http.server: JSON, then close."""
        self.close_connection = True
        self.send_json({"Code": code, "Message": message or self.responses.get(code, ("error",))[0]},
                       status=code, close=True)

    # -- receiving ---------------------------------------------------------

    def read_body(self) -> bytes | None:
        """The request body (Content-Length or chunked); None after an error reply."""
        te = self.headers.get("Transfer-Encoding", "")
        if te.lower() == "chunked":
            chunks, total = [], 0
            while True:
                line = self.rfile.readline(1024)
                try:
                    size = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    self.send_error(400, "bad chunked encoding")
                    return None
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass                                  # trailers
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY:
                    self.send_error(413, "request body too large")
                    return None
                chunks.append(self.rfile.read(size))
                self.rfile.readline(1024)                     # CRLF after chunk
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        if not DECIMAL_RE.fullmatch(length.strip()):
            self.send_error(400, "bad Content-Length")
            return None
        n = int(length)
        if n > MAX_BODY:
            self.send_error(413, "request body too large")
            return None
        body = self.rfile.read(n)
        if len(body) != n:                                    # client went away
            self.close_connection = True
            return None
        return body

    # -- dispatch ------------------------------------------------------------

    def __getattr__(self, name: str):
        # Any method other than POST (do_GET, do_PUT, ...) is a 404, not 501.
        if name.startswith("do_"):
            return self.not_found
        raise AttributeError(name)

    def not_found(self) -> None:
        t0 = time.monotonic()
        if self.read_body() is None:
            return
        self.send_json({"Code": 404, "Message": "not found"}, status=404)
        self.log_line(t0, 404, None, None)

    def do_POST(self) -> None:
        t0 = time.monotonic()
        body = self.read_body()
        if body is None:
            return
        url = urlsplit(self.path)
        try:
            if url.path == "/":
                self.api(url.query, body, t0)
            elif url.path.startswith("/_test/") and url.path[7:] in CONTROLS:
                self.unsigned_control(url.path[7:], body, t0)
            else:
                self.send_json({"Code": 404, "Message": "not found"}, status=404)
                self.log_line(t0, 404, None, None)
        except CLIENT_GONE:
            raise
        except Exception:                                     # a bug in the double
            traceback.print_exc()
            self.server.log("internal error:\n" + traceback.format_exc())
            self.send_json({"Code": 100000015, "Message": message(100000015)},
                           status=500, close=True)

    def unsigned_control(self, op: str, raw: bytes, t0: float) -> None:
        try:
            body = json.loads(raw) if raw.strip() else {}
        except (ValueError, RecursionError):
            body = None
        if not isinstance(body, dict):
            ok, resp = False, whole_call(2)
        else:
            ok, resp = CONTROLS[op](self.server.state, body)
        self.send_json(resp, status=200 if ok else 400)
        self.log_line(t0, 200 if ok else 400, resp["Code"], None)

    def api(self, query: str, raw: bytes, t0: float) -> None:
        """POST /?...: faults, gateway checks, rate limit, the Action."""
        st = self.server.state
        params = parse_qs(query, keep_blank_values=True)
        action = params.get("Action", [""])[0]
        nonce = params.get("SignatureNonce", [""])[0]
        is_test = action.startswith("Test")
        if not is_test:
            # the network's jitter: the request arrives late by 0..JitterMs
            with st.lock:
                jitter = st.jitter_ms
            if jitter:
                time.sleep(random.uniform(0, jitter) / 1000)
                t0 = time.monotonic()
        if SIG_LOG is not None:
            # for the leak checks of test/run-tests: every signature a client sent
            with SIG_LOG_LOCK:
                SIG_LOG.write(f"sig={params.get('Signature', [''])[0]}\n")
                SIG_LOG.flush()
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            body = None
        if not isinstance(body, dict):
            body = None
        convs = body.get("ConvList") if body else None

        # Receipt: note nonce reuse, pick a fault, log the request.
        entry, fault = None, None
        with st.lock:
            reused = nonce in st.nonces
            if nonce:
                st.nonces.add(nonce)
            if not is_test:
                fault = st.take_fault(action, raw)
                entry = {"Action": action,
                         "User": body.get("FromUserId") if body else None,
                         "Convs": len(convs) if isinstance(convs, list) else None,
                         "Nonce": nonce, "Connection": self.conn_id,
                         "Fault": fault["Fault"] if fault else None,
                         "Code": None, "T": t0}
                st.requests.append(entry)

        if fault and self.apply_fault(fault, entry, t0):
            return

        resp = self.gateway(params, action, nonce, reused, body)
        if resp is None:
            if is_test:
                resp = CONTROLS[TEST_ACTIONS[action]](st, body)[1]
            else:
                with st.lock:
                    if not st.admit(action, t0):
                        code = 660700001 if action == "UserRegister" else 660300005
                        resp = whole_call(code, ErrorList=[])
                    else:
                        resp = ACTIONS[action](st, body)
        if entry is not None:
            with st.lock:
                entry["Code"] = resp["Code"]
                latency = st.latency_ms
            if latency:
                time.sleep(latency / 1000)
        self.send_json(resp)
        self.log_line(t0, 200, resp["Code"], entry and entry["Fault"])

    def expected_secret(self, action: str) -> str:
        """The secret a request must be signed with: after SecretRotated, the
        console's new one for every Action but the test controls."""
        srv = self.server
        if srv.state.secret_rotated and not action.startswith("Test"):
            return "rotated-" + srv.secret
        return srv.secret

    def gateway(self, params: dict, action: str, nonce: str, reused: bool,
                body: dict | None) -> dict | None:
        """The vendor gateway's checks, in order. None: the request passes."""
        p = lambda k: params.get(k, [""])[0]   # noqa: E731
        srv = self.server
        app_id, ts, sig, ver = p("AppId"), p("Timestamp"), p("Signature"), p("SignatureVersion")
        if not action:
            code = 100000006
        elif not DECIMAL_RE.fullmatch(app_id) or int(app_id) > 0xFFFFFFFF:
            code = 100000001
        elif int(app_id) != srv.app_id:
            code = 100000010
        elif not nonce:
            code = 100000008
        elif not ts:
            code = 100000002
        elif not INTEGER_RE.fullmatch(ts):
            code = 100000003
        elif not sig:
            code = 100000009
        elif not ver:
            code = 100000013
        elif ver != "2.0":
            code = 100000014
        elif abs(time.time() - int(ts)) > TIMESTAMP_TOLERANCE:
            code = 100000004
        elif not hmac.compare_digest(sig.encode(), sign(app_id, nonce, self.expected_secret(action), ts).encode()):
            code = 100000005
        elif not NONCE_RE.fullmatch(nonce) or reused:
            code = 3
        elif action not in ACTIONS and action not in TEST_ACTIONS:
            code = 100000007
        elif body is None:
            code = 2
        else:
            return None
        return whole_call(code)

    # -- faults ----------------------------------------------------------------

    def apply_fault(self, fault: dict, entry: dict, t0: float) -> bool:
        """Act out a fault. True if the request is finished, False to go on."""
        kind = fault["Fault"]
        if kind == "slow":
            time.sleep(fault["Ms"] / 1000)
            return False
        code = {"code": fault.get("Code"), "oversized": 0}.get(kind)
        with self.server.state.lock:
            entry["Code"] = code
        status = 200
        if kind == "hang":
            self.hang(fault.get("Ms", HANG_SECONDS * 1000) / 1000)
        elif kind == "reset":
            self.reset_connection()
        elif kind in ("http500", "http503"):
            status = int(kind[4:])
            text = "Internal Server Error" if status == 500 else "Service Unavailable"
            self.send_raw(status, f"<html><body><h1>{status} {text}</h1></body></html>".encode(),
                          ctype="text/html")
        elif kind == "nonjson":
            self.send_raw(200, b"<html>oops</html>")
        elif kind == "truncated":
            body = json.dumps({"Code": 0, "Message": "success", "RequestId": request_id(),
                               "ErrorList": []}).encode()
            self.send_raw(200, body[:20], length=100)
            self.close_connection = True          # then close, mid-body
        elif kind == "oversized":
            resp = {"Code": 0, "Message": "", "RequestId": request_id(), "ErrorList": []}
            pad = OVERSIZED_BYTES - len(json.dumps(resp, separators=(",", ":")))
            resp["Message"] = "x" * pad           # body is exactly 2 MiB
            self.send_json(resp)
        elif kind == "wrongtypes":
            self.send_raw(200, b'{"Code":"0","Message":1,"RequestId":2,"ErrorList":{}}')
        elif kind == "code":
            self.send_json({"Code": fault["Code"], "Message": fault["Message"],
                            "RequestId": request_id(), "ErrorList": []})
        elif kind == "body":
            self.send_raw(200, fault["Data"])
        elif kind == "drip":
            self.drip(fault["Ms"] / 1000)
        elif kind == "stall":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "100")
            self.end_headers()
            try:
                self.wfile.flush()
            except CLIENT_GONE:
                pass
            self.hang(fault.get("Ms", HANG_SECONDS * 1000) / 1000)
        elif kind == "vanish":
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        elif kind == "raw":
            status = None
            data = fault["Data"]
            if fault["RepeatHeader"]:
                head, sep, rest = data.partition(b"\r\n")
                data = head + sep + b"X-Pad: " + b"p" * fault["RepeatHeader"] + b"\r\n" + rest
            self.close_connection = True
            try:
                self.wfile.write(data)
                self.wfile.flush()
            except CLIENT_GONE:
                pass
        self.log_line(t0, status if kind not in ("hang", "reset", "raw", "stall", "vanish") else None,
                      code, kind)
        return True

    def drip(self, seconds_per_byte: float) -> None:
        """A success answer, its body written one byte at a time."""
        body = json.dumps({"Code": 0, "Message": "success", "RequestId": request_id(),
                           "ErrorList": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.flush()
            for i in range(len(body)):
                if self.server.stopping.wait(seconds_per_byte):
                    return
                self.wfile.write(body[i:i + 1])
                self.wfile.flush()
        except CLIENT_GONE:
            self.close_connection = True

    @staticmethod
    def wait_for_close(sock, seconds: float) -> None:
        """Wait until the peer closes `sock` (before any TLS) or `seconds` pass."""
        deadline = time.monotonic() + seconds
        raw = socket.socket(fileno=os.dup(sock.fileno()))
        try:
            while (remaining := deadline - time.monotonic()) > 0:
                readable, _, _ = select.select([raw], [], [], min(remaining, 0.5))
                if readable and not raw.recv(65536, socket.MSG_PEEK):
                    return                            # client closed
                if readable:
                    time.sleep(0.05)                  # a ClientHello waits unread
        except OSError:
            return
        finally:
            raw.close()

    def hang(self, seconds: float) -> None:
        """Answer nothing until the client closes or `seconds` pass, then close."""
        self.close_connection = True
        sock = self.connection
        deadline = time.monotonic() + seconds
        while not self.server.stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                readable, _, _ = select.select([sock], [], [], min(remaining, 0.5))
                if readable and not sock.recv(65536):
                    return                        # client closed
            except ssl.SSLWantReadError:
                continue
            except (CLIENT_GONE + (ValueError,)):
                return

    def reset_connection(self) -> None:
        """Close at once with SO_LINGER 0, so the client gets a TCP RST."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
        except OSError:
            pass
        # rfile (a makefile()) holds a reference: the fd closes with the last
        # one. wfile is a plain writer without one and must stay usable,
        # since http.server flushes it after every request.
        for f in (self.rfile, self.connection):
            try:
                f.close()
            except OSError:
                pass

    # -- logging ---------------------------------------------------------------

    def log_line(self, t0: float, status, code, fault) -> None:
        """One line per request to --log; the Signature is never written."""
        if self.server.log_file is None:
            return
        path = SIGNATURE_IN_QUERY_RE.sub("Signature=<redacted>", self.path)
        ms = (time.monotonic() - t0) * 1000
        self.server.log(f"conn={self.conn_id} {self.command} {path} -> {status} "
                        f"Code={code} fault={fault} {ms:.1f}ms")


class ZimServer(ThreadingHTTPServer):
    """Threaded HTTPS server; TLS is handshaken in the connection's thread."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, address, ssl_context: ssl.SSLContext, state: State,
                 app_id: int, secret: str, log_path: str | None):
        self.ssl_context = ssl_context
        self.state = state
        self.app_id = app_id
        self.secret = secret
        self.stopping = threading.Event()
        self.log_lock = threading.Lock()
        self.log_file = open(log_path, "a", buffering=1) if log_path else None
        super().__init__(address, Handler)

    def server_bind(self) -> None:
        # Skip HTTPServer's getfqdn() (a reverse DNS lookup) -- not needed.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def get_request(self):
        sock, addr = self.socket.accept()
        conn_id = self.state.new_connection()
        try:
            tls = self.ssl_context.wrap_socket(sock, server_side=True,
                                               do_handshake_on_connect=False)
        except Exception:
            sock.close()
            raise
        tls.zim_conn_id = conn_id
        return tls, addr

    def handle_error(self, request, client_address) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, CLIENT_GONE):
            self.log(f"client {client_address} gone: {exc!r}")
        else:
            traceback.print_exc()
            self.log("error:\n" + traceback.format_exc())

    def log(self, line: str) -> None:
        if self.log_file is None:
            return
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        with self.log_lock:
            try:
                self.log_file.write(f"{stamp} {line.rstrip()}\n")
            except (OSError, ValueError):
                pass


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

def self_test() -> int:
    """Check the vendor's signature test vector and a few helpers."""
    checks = [
        (sign("12345", "4fd24687296dd9f3", "9193cc662a4c0ec135ec71fb57194b38", "1615186943")
         == "43e5cfcca828314675f91b001390566a", "signature test vector"),
        (valid_user_id("a b!#$%&()+-:;<=.>?@[]^_{}|~") and not valid_user_id("a/b")
         and not valid_user_id("") and not valid_user_id("x" * 33), "UserId rule"),
        (max_in_any_window([0, 0.5, 0.99, 1.0, 1.5]) == 3, "sliding window"),
        (SIGNATURE_IN_QUERY_RE.sub("S", "/?SignatureNonce=1&Signature=ab&SignatureVersion=2.0")
         == "/?SignatureNonce=1&S&SignatureVersion=2.0", "log redaction"),
    ]
    failed = [name for ok, name in checks if not ok]
    for name in failed:
        print(f"self-test FAILED: {name}", file=sys.stderr)
    if not failed:
        print("self-test ok")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="HTTPS test double of the ZIM server API.")
    ap.add_argument("--port", type=int, default=0, help="TCP port, 0 = any free port")
    ap.add_argument("--port-file", help="write the chosen port here once listening")
    ap.add_argument("--cert", help="server certificate (PEM)")
    ap.add_argument("--key", help="server private key (PEM)")
    ap.add_argument("--app-id", help="the AppId to accept (decimal, unsigned 32-bit)")
    ap.add_argument("--secret", help="the ServerSecret")
    ap.add_argument("--rate-limit", type=int, default=20, help="calls per Action per sliding second")
    ap.add_argument("--max-convs", type=int, default=20, help="ConvList items per ConvPinned")
    ap.add_argument("--log", help="append one line per request here (no signatures)")
    ap.add_argument("--sig-log", help="append every Signature received here (for leak checks)")
    ap.add_argument("--self-test", action="store_true", help="check the signature vector, exit")
    args = ap.parse_args(argv)

    if args.self_test:
        return self_test()
    if args.sig_log:
        global SIG_LOG
        SIG_LOG = open(args.sig_log, "a", encoding="ascii")
    missing = [o for o in ("cert", "key", "app_id", "secret") if getattr(args, o) is None]
    if missing:
        ap.error("missing: " + ", ".join("--" + m.replace("_", "-") for m in missing))
    if not DECIMAL_RE.fullmatch(args.app_id) or int(args.app_id) > 0xFFFFFFFF:
        ap.error("--app-id must be an unsigned 32-bit decimal integer")

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(args.cert, args.key)
    ctx.set_alpn_protocols(["http/1.1"])

    state = State(args.rate_limit, args.max_convs)
    server = ZimServer(("127.0.0.1", args.port), ctx, state, int(args.app_id),
                       args.secret, args.log)
    port = server.server_address[1]
    if args.port_file:
        tmp = f"{args.port_file}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(f"{port}\n")
        os.replace(tmp, args.port_file)       # readers never see a partial file
    server.log(f"listening on 127.0.0.1:{port}")

    # The double timestamps every request it receives to count the rate; a
    # pause of the whole process while Python collects cyclic garbage would
    # stamp the requests that arrived during it all at once.  Note any pause
    # over 5 ms in the log (for diagnosis).
    gc_started = [0.0]

    def gc_note(phase: str, info: dict) -> None:
        if phase == "start":
            gc_started[0] = time.monotonic()
        elif (ms := (time.monotonic() - gc_started[0]) * 1000) > 5:
            server.log(f"gc generation {info.get('generation')} paused {ms:.1f} ms")
    gc.callbacks.append(gc_note)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                              name="accept", daemon=True)
    thread.start()
    while not stop.wait(0.5):
        pass
    server.stopping.set()
    server.shutdown()
    server.server_close()
    server.log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
