#!/usr/bin/env python3
"""zim_double.py -- an HTTPS test double of ZEGOCLOUD's ZIM server API.

Python 3.11 standard library only. It implements the parts of the vendor API
that zim_pin needs (see spec/zim-server-api.md): the signed gateway, the
Actions UserRegister and every Action of "Conversation related" --
ConvPinned, SilenceConvNotification, SetConvMark, DeleteConv,
ClearConversationUnread (GET), QueryConversationList, QueryPeerMsg and
QueryGroupMsg -- with state per user, the per-Action rate limit, plus test
controls for seeding state, latency, fault injection and inspecting what
clients did.

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
``test/double-check.py`` is a client test of the double itself.

Endpoints
---------
``POST /?Action=..&AppId=..&SignatureNonce=..&Timestamp=..&SignatureVersion=2.0&Signature=..``
    The vendor API, JSON body. Gateway errors and business errors are HTTP 200
    with ``{"Code": N, "Message": "...", "RequestId": "..."}``.

``GET /?Action=ClearConversationUnread&FromUserId=..&ConvId=..&ConvType=..&<public parameters>``
    The one Action that the vendor documents as GET: its parameters are in the
    query string next to the signed public parameters, decoded as
    application/x-www-form-urlencoded (``%XX`` is a UTF-8 byte, ``+`` is a
    space, so a literal ``+`` must be sent as ``%2B``); a body is ignored.
    A POST of ClearConversationUnread, a GET of any other Action (the test
    controls included) answers the gateway's Code 100000007 ("Action is not
    supported"), as an unknown Action does, after the signature checks.

    The Actions TestReset, TestConfig, TestFault, TestState and TestSeed are
    the test controls, POST only, signed like any other call (so they prove
    signing works) but exempt from rate limits, faults and latency and absent
    from the request log.

``POST /_test/reset|config|fault|state|seed``
    The same controls without a signature, JSON body (may be empty), for shell
    scripts (``curl --cacert ca.crt -d '{}' https://127.0.0.1:PORT/_test/state``).
    Bad input is HTTP 400 with Code 2 so that ``curl -f`` fails (seed also
    says why, in "Error").

Anything else (another path, another method) is HTTP 404 (JSON body).

Test controls
-------------
reset   ``{}``: forget users, groups, pins, mutes, marks, conversations,
        messages, Next cursors, nonces, the request log, pending faults and
        counters, and restart MsgIds (the first message after a reset is
        971503777289036701); restore LatencyMs 0, JitterMs 0, the command-line RateLimit
        and MaxConvs, MaxMutes 500, NextMode "normal", OmitC2cType true,
        AsciiJson true and the default Messages. Open connections stay open.
config  ``{"LatencyMs"?, "JitterMs"?, "RateLimit"?, "MaxConvs"?, "MaxMutes"?, "NextMode"?,
        "OmitC2cType"?, "SecretRotated"?, "AsciiJson"?, "Messages"?}``;
        JitterMs N delays each request on its way in by a random 0..N ms
        (uniform, independently per request) before it is received: a
        network whose delays vary, so requests can arrive closer together
        than they left, and in another order.
        MaxConvs (>= 1) is ConvPinned's ConvList limit; MaxMutes (>= 0, 500
        by default, as the vendor) is how many one-to-one conversations a user
        may mute, to reach 660800030 quickly.
        NextMode is how QueryConversationList, QueryPeerMsg and QueryGroupMsg
        page: "normal" (default); "stuck": every page, whatever Next it is
        given (any integer >= 0), is the first page and carries the same
        non-zero Next; "endless": pages as normal, but where Next would be 0 a
        new non-zero Next is given, whose pages are empty.
        OmitC2cType (default true): QueryConversationList's one-to-one entries
        have no ConvType (the vendor's "absent means 0"); false writes
        ``"ConvType": 0``.
        SecretRotated true makes every Action but the test controls expect
        another secret (as if it were changed in the console): clients then
        get 100000005, without anyone setting a wrong secret in a session.
        AsciiJson (default true) is how answers carry text beyond ASCII:
        true writes ``\\uXXXX`` escapes (surrogate pairs beyond U+FFFF), as
        json.dumps does by default; false writes raw UTF-8
        (ensure_ascii=False).  Control characters are escaped either way.
        Messages ``{"<code>": text}`` replaces the double's text for those
        Codes wherever it answers with them (Message, SubMessage), e.g. in
        another script, as the vendor may; ``{}`` restores the defaults.
        (SetConvMark's small codes 1 keep their fixed texts, see below.)
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
        Every ``POST /`` or ``GET /`` request whose Action does not
        start with "Test" consumes one count of the first matching fault,
        before any gateway check; for a GET, "Match" is looked for in the
        query string as received and in its decoded form. The answers of
        code, truncated, oversized, drip and wrongtypes have the ErrorList
        field whatever the Action (as they always had).  Connection faults -- conndrop (closed
        before the TLS handshake), connreset (reset then), connstall (no
        handshake until the client leaves or "Ms" pass) -- are consumed by
        each new connection instead.
state   ``{"UserId"?, "PeerId"?, "GroupId"?}``: Connections, Requests,
        RateLimited, MaxInAnyWindow, Config, Faults; for a UserId also
        Registered, Pins, PinCount, Mutes ``[{ConvId, ConvType}]``, Marks
        ``[{ConvId, ConvType, Marks: [ascending ints]}]``, Conversations
        ``[{ConvId, ConvType, UpdateTime, Unread}]`` (all of them, ascending
        UpdateTime, ConvType always written) and ConversationCount; with a
        PeerId too, PeerMsgCount (the messages between the two, empty ones
        included); for a GroupId, GroupExists, Members (in the order they
        were given) and GroupMsgCount.
seed    builds state quickly; every part optional, the whole body checked
        before anything is applied (bad: HTTP 400 / Code 2 and "Error"),
        then applied in this order::

          {"Users": ["u1", "u2"],
           "Groups": {"g1": ["u1", "u2"]},
           "Conversations": [{"UserId": "u1", "ConvId": "u2", "ConvType"?: 0,
                              "UpdateTime"?: ms, "Unread"?: n}],
           "GenerateConversations": {"UserId": "u1", "Count": 1200,
                                     "Prefix"?: "c", "GroupEvery"?: 3,
                                     "RegisterPeers"?: true, "StartTime"?: ms,
                                     "StepMs"?: 1000, "Unread"?: 0},
           "PeerMsgs": [{"From": "u1", "To": "u2", "MsgType"?: 1,
                         "SubMsgType"?: 0, "MsgBody"?: text,
                         "Media"?: {...}, "Payload"?: "", "IsEmpty"?: 0,
                         "MsgTime"?: ms}],
           "GroupMsgs": [{"GroupId": "g1", "From": "u1", ...the same}],
           "GenerateMessages": {"From": "u1", "To": "u2" | "GroupId": "g1",
                                "Count": 250, "MediaEvery"?: 5,
                                "RecalledEvery"?: 7, "DeletedEvery"?: 0}}

        Users registers those not yet registered (UserName = the id, no
        avatar).  Groups creates each group or replaces its member list (no
        one is registered by it, and no conversation is created).
        Conversations creates or updates the user's conversation (UpdateTime
        defaults to now, Unread to 0; given values replace the stored ones).
        GenerateConversations (an object or a list of them) gives UserId
        Count conversations named Prefix + 1, 2, ... Count; every GroupEvery-th
        (0: none) is a group (ConvType 2), which is created if missing with
        UserId added to its members; the others are one-to-one, whose peers
        are registered unless RegisterPeers is false.  Conversation i gets
        UpdateTime StartTime + (i-1) * StepMs (StartTime defaults to now minus
        Count * StepMs), so Prefix+Count is the latest, and Unread.
        PeerMsgs and GroupMsgs add messages; a group message needs an
        existing group (or one of this seed); its sender need not be a member.
        MsgType is 1 (text), 10..14 (media) or 200 (custom); SubMsgType
        0..200.  A media message takes "Media" (any JSON), which the double
        URL-encodes into MsgBody (see Choices), or a "MsgBody" that is sent as
        given (for hostile bodies), or neither: then a body of the double's
        own for that type.  Text and custom messages take MsgBody (default
        "") and no Media.  IsEmpty 1 (deleted) or 2 (recalled) stores the
        message with MsgBody and Payload "".  MsgTime defaults to now, kept
        increasing.  GenerateMessages (an object or a list of them) adds
        Count messages from From: the n-th (1-based) is text "message n"
        unless n is a multiple of MediaEvery (then media, cycling 11, 12, 13,
        14, 10, with the double's own bodies), recalled if n is a multiple of
        RecalledEvery, else deleted if one of DeletedEvery (0 or absent:
        never).  Every message makes or updates the conversation of its sender
        and of its receiver(s) -- for a group, the sender and every member --
        with UpdateTime = MsgTime, and adds 1 to the receivers' Unread unless
        it is empty.  The answer is ``{"Code": 0, ..., "MsgIds": [...]}``, the
        ids given to the seeded messages in order.

The Actions and their state
---------------------------
Every Action but UserRegister and QueryGroupMsg (which have none) checks
FromUserId like ConvPinned: 660000002 for a bad one, 660500002 for an
unregistered one, after the body's other checks.  Conversation ids are 1..32
bytes; ConvType 0 or 2.  The business answers of a whole-call failure (bad
input, unregistered, rate limited) carry the Action's failure list, empty:
ErrorList (UserRegister, ConvPinned, SilenceConvNotification) or FailList
(SetConvMark); the other Actions have none, and neither have the gateway's
answers.

UserRegister, ConvPinned
    As they always were: partial success, ``ErrorList`` entries
    ``{UserId | ConvId, ConvType, SubCode, SubMessage}``; all failed: Code =
    the first entry's SubCode.  ConvPinned also remembers each conversation
    with a valid id and type for the user (see "touch" below), failed or not.
SilenceConvNotification ``{FromUserId, ConvType, ConvIds (1..10), Enable}``
    Per id in order: group: 660600001 if it does not exist, 660600024 if
    FromUserId is not a member; one-to-one: 660700015 if the peer is not
    registered; then 660800051 (Enable true, already muted) or 660800052
    (false, not muted); then, muting one-to-one, 660800030 if the user
    already has MaxMutes of them; else the mute changes and the conversation
    is touched.  ``ErrorList: [{ConvId, SubCode, SubMessage}]`` (no ConvType).
    Code 0 if at least one id changed; otherwise every id is listed and Code
    is the first entry's SubCode -- so a call whose peers are all
    unregistered answers 660700015, and a call whose ids all were already
    in the requested state answers 660800051/660800052 with every id listed.
    A bad body (ids not all valid, more than 10, no Enable) fails the whole
    call: 660000002.  Groups have no mute cap.
SetConvMark ``{FromUserId, ConvMarkInfoList: [{UserId, SetMarkC2c?,
    SetMarkGroup?, Action}]}``
    1..100 entries; each map ``{"<conv id>": {"MarkContent": m}}`` at most
    100 conversations; an entry needs at least one conversation; anything else
    malformed (UserId not a valid id, a map or map value not an object,
    Action not a boolean, a bad conv id) fails the whole call: 660000002.
    Entries are applied in order, each on its own (two entries for the same
    UserId: the second sees the first's effect, and each has its own
    FailList entry).  An unregistered UserId: ``{UserId, SubCode: 1,
    SubMessage: "user not exist"}`` with no inner list.  Otherwise each
    conversation (SetMarkC2c first, ConvType 0, then SetMarkGroup, 2, in map
    order): MarkContent not an integer 1..30: inner ``{ConvId, ConvType, Code:
    1, Message: "mark content is invalid"}``; else Action true adds the mark
    (a conversation carries a set of marks, at most the 30 possible ones; a
    mark already set is success) and touches the conversation, false removes
    it (one not set is success).  The peer or group is not checked.  An entry
    with inner failures is ``{UserId, SubCode: 0, FailList}`` if some of its
    conversations succeeded, ``{UserId, SubCode: 660800054, SubMessage,
    FailList}`` if none did; entries without failure are not listed.  Code 0
    if any mark operation succeeded, else 660800054 with every entry listed.
DeleteConv ``{FromUserId, ConvId, ConvType}``
    Removes that conversation (its UpdateTime and Unread) for that user only;
    others keep theirs.  Deleting a conversation that does not exist answers
    Code 0 (the requested state holds).  Messages, pins, mutes and marks stay;
    a later message, pin, mute or mark brings the conversation back.
ClearConversationUnread (GET: FromUserId, ConvId, ConvType)
    Sets the conversation's Unread to 0.  660800002 if the user has no such
    conversation or it is not among the user's latest 1000 (by UpdateTime).
    A parameter missing, given twice or invalid: 660000002.
QueryConversationList ``{FromUserId, Limit?, Next?}``
    Limit: absent 100, <= 0 becomes 100, > 500 becomes 500 (not an integer:
    660000002).  Only the user's latest 1000 conversations (by UpdateTime) are
    listed, in ascending UpdateTime: ``List: [{ConvId, ConvType, UpdateTime}]``
    with ConvType absent for one-to-one entries (OmitC2cType).  TotalCount is
    the number of all the user's conversations, even beyond the 1000 that List
    reaches.  Groups are never disbanded in the double, so every group
    conversation is listed.
QueryPeerMsg ``{FromUserId, ToUserId, Limit?, Next?, WithEmptyMsg?}``,
QueryGroupMsg ``{GroupId, Limit?, Next?, WithEmptyMsg?}``
    Limit: absent 10, <= 0 becomes 10, > 100 becomes 100 (the vendor is silent:
    the conversation list's rule).  WithEmptyMsg 0 (default) or 1 (else
    660000002); 0 leaves out deleted (IsEmpty 1) and recalled (IsEmpty 2)
    messages, and Limit counts the messages returned.  QueryPeerMsg returns
    the messages between the two users, both ways (ToUserId need not be
    registered); QueryGroupMsg 660600001 if the group does not exist.
    ``List`` newest first, each ``{Sender, MsgType, SubMsgType, MsgBody, MsgId,
    MsgSeq, Payload, MsgTime, IsEmpty}``; no TotalCount.
Next (all three)
    0 asks for the first page; an answer's Next is 0 on the last page, else
    an opaque cursor: a random integer in 1..2^53-1 that the double maps to
    the position after the page's last entry (not an offset: a client cannot
    compute one).  A Next that the double did not give for the same Action
    and the same user (QueryPeerMsg: the same FromUserId and ToUserId;
    QueryGroupMsg: the same GroupId) answers 660000002.  Cursors stay valid
    until reset (the oldest of more than 100000 is forgotten) and survive
    changes: the next page continues after the position, so an entry that
    moved past it (a conversation with a new message) shows up again, and a
    deleted one is not shown.
Touch
    A conversation is "touched" for a user by ConvPinned (every item with a
    valid id and type), a SilenceConvNotification that changes it, and a
    SetConvMark that sets a mark: if the user does not have it, it is created
    with UpdateTime now and Unread 0; an existing one is left as it is (a
    setting is not a message; only messages and seed move UpdateTime).

Choices where the vendor is silent
----------------------------------
* Requests lists every ``POST /`` and ``GET /`` call whose Action does not
  start with "Test" -- including those refused by the gateway, rate-limited or
  faulted -- with the time of receipt (T, time.monotonic), the connection it
  came on, Method ("POST"/"GET"), User (FromUserId, from the body or for a GET
  the query string; None for QueryGroupMsg) and Convs (how many conversations
  it names: ConvPinned's ConvList, SilenceConvNotification's ConvIds,
  SetConvMark's maps together, 1 for DeleteConv and ClearConversationUnread;
  None for the others or a malformed body).
  MaxInAnyWindow counts these per Action in any sliding 1 s window.
* Connection ids are unique for the life of the process (1, 2, 3, ...), so a
  connection opened before a reset is never confused with one opened after
  it; Connections counts the connections accepted since the last reset.
* Every SignatureNonce received since the last reset counts as seen, even
  from a faulted or refused request: a client must re-sign every retry.
* Rate limiting uses a sliding 1 s window per Action over accepted calls;
  every Action has its own (RateLimit calls each).  Over it: 660700001 for
  UserRegister, 660300005 for every other Action.
* JitterMs is slept before anything else of a request whose Action does not
  start with "Test": its time of receipt (T), the rate limit and faults all
  see it after the delay, as the vendor would behind a jittery network.
* LatencyMs is slept after the call is processed, before the answer is sent
  (the state change happens even if the client gives up waiting).
* The "nonjson" fault is sent as Content-Type application/json; the http500
  and http503 faults as text/html.
* Ids (UserId, FromUserId, ConvId) are at most 32 bytes of UTF-8, as they
  come on the wire: the vendor writes "32 characters", and zim_pin's
  contract holds them to 32 bytes, the stricter reading.  A user id's
  characters are all ASCII, so for it the two readings agree.
* MsgIds are 971503777289036700 + n for the n-th message since reset (all
  beyond 2^53, written as exact JSON integers); MsgSeq counts 1, 2, ... per
  conversation; MsgTime (ms) is now, or one more than the last message's if
  that is not later.  Ordering (newest first) is by MsgSeq.
* A media MsgBody is ``urllib.parse.quote(json.dumps(media,
  ensure_ascii=False, separators=(",", ":")), safe="")``: UTF-8, every byte
  but ``A-Z a-z 0-9 _ . - ~`` as %XX (what encodeURIComponent gives, save
  ``! ' ( ) *``).  The double's own media bodies: 11 image {FileName,
  FileSize, FileMd5, FileUrl, ThumbnailUrl, LargeImageUrl, OriginalImageWidth,
  OriginalImageHeight}, 12 file {FileName, FileSize, FileMd5, FileUrl}, 13
  audio (+ AudioDuration), 14 video (+ VideoDuration, VideoFirstFrameUrl,
  VideoFirstFrameWidth, VideoFirstFrameHeight), 10 combined {Title, Summary,
  multi_msg: [{MsgType, MsgBody}, ...]}; their file names hold a space,
  ``& % + #`` and text beyond ASCII.  The field names are the double's: the
  vendor lists what a body holds, not how it is spelled.
* An unsupported method (a POST of ClearConversationUnread, a GET of another
  Action) answers 100000007, checked where an unknown Action is: after the
  signature, before the body.
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
from urllib.parse import parse_qs, quote, unquote, unquote_plus, urlsplit

# ---------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------

REAL_ACTIONS = ("UserRegister", "ConvPinned", "SilenceConvNotification",
                "SetConvMark", "DeleteConv", "ClearConversationUnread",
                "QueryConversationList", "QueryPeerMsg", "QueryGroupMsg")
# The method of each Action; the others, and the test controls, are POST.
ACTION_METHODS = {"ClearConversationUnread": "GET"}
# The failure list of the partial-success Actions (empty in a whole-call failure)
FAILURE_LISTS = {"UserRegister": "ErrorList", "ConvPinned": "ErrorList",
                 "SilenceConvNotification": "ErrorList", "SetConvMark": "FailList"}
TEST_ACTIONS = {"TestReset": "reset", "TestConfig": "config",
                "TestFault": "fault", "TestState": "state", "TestSeed": "seed"}
FAULT_KINDS = ("hang", "reset", "http500", "http503", "nonjson", "truncated",
               "oversized", "wrongtypes", "code", "slow", "raw", "body",
               "drip", "stall", "vanish")
# faults of a new connection, before its TLS handshake
CONN_FAULT_KINDS = ("conndrop", "connreset", "connstall")

MAX_PINS = 100                   # per user, fixed by the vendor
MAX_SILENCE_CONVS = 10           # ConvIds per SilenceConvNotification
MAX_MUTES = 500                  # one-to-one mutes per user (config MaxMutes)
MAX_MARK_ENTRIES = 100           # ConvMarkInfoList entries per SetConvMark
MAX_MARK_CONVS = 100             # conversations per SetMarkC2c / SetMarkGroup
MAX_MARK = 30                    # MarkContent is 1..MAX_MARK
LATEST_CONVS = 1000              # what QueryConversationList and
                                 # ClearConversationUnread reach
CONV_LIST_LIMIT = (100, 500)     # QueryConversationList Limit: default, max
MSG_LIST_LIMIT = (10, 100)       # QueryPeerMsg / QueryGroupMsg Limit
FIRST_MSG_ID = 971503777289036700  # MsgIds are this + n (beyond 2^53)
MAX_CURSORS = 100000             # Next cursors remembered (oldest forgotten)
MEDIA_TYPES = (10, 11, 12, 13, 14)
MEDIA_CYCLE = (11, 12, 13, 14, 10)  # GenerateMessages' media types in turn
MSG_TYPES = (1, 200) + MEDIA_TYPES
NEXT_MODES = ("normal", "stuck", "endless")
MAX_SEED_COUNT = 100000          # Count of a Generate* seed
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
    660600001: "the group does not exist",
    660600009: "failed to query the group",
    660600024: "the user is not a member of the group",
    660700015: "the peer user is not registered",
    660800002: "the conversation does not exist",
    660800030: "the muted conversation count would exceed the limit",
    660800051: "the conversation is already muted, no action needed",
    660800052: "the conversation is already unmuted, no action needed",
    660800053: "query failed",
    660800054: "all mark operations failed",
}
# SetConvMark's small codes, fixed texts (code 1 of MESSAGES is the gateway's)
MARK_INVALID = "mark content is invalid"
USER_NOT_EXIST = "user not exist"

# Errors that only mean "the client went away"; they are swallowed quietly.
CLIENT_GONE = (ConnectionError, TimeoutError, ssl.SSLError, OSError)


# Texts that the "Messages" option of config puts in place of those of
# MESSAGES (guarded by State.lock; emptied by reset).
MESSAGE_OVERRIDES: dict[int, str] = {}


def message(code: int) -> str:
    return MESSAGE_OVERRIDES.get(code, MESSAGES.get(code, "error"))


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
    """1..32 bytes of UTF-8 (see "Choices" above), not 32 code points."""
    return (isinstance(v, str)
            and 0 < len(v.encode("utf-8", "surrogatepass")) <= 32)


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


def encode_media(media) -> str:
    """A media message's MsgBody: its JSON, URL-encoded (UTF-8, every byte but
    A-Z a-z 0-9 _ . - ~ as %XX)."""
    return quote(json.dumps(media, ensure_ascii=False, separators=(",", ":")),
                 safe="")


def default_media(msg_type: int, n: int) -> dict:
    """The double's own media body of type `msg_type` for the n-th message."""
    if msg_type == 10:
        return {"Title": f"combined {n}", "Summary": "a & b: 2 messages",
                "multi_msg": [{"MsgType": 1, "MsgBody": f"first of {n}"},
                              {"MsgType": 1, "MsgBody": "second, été 100% + #1"}]}
    ext = {11: "jpg", 12: "pdf", 13: "m4a", 14: "mp4"}[msg_type]
    name = f"file {n} \u00e9t\u00e9 & 100% + #{n}.{ext}"
    url = "https://media.example.com/" + quote(f"{n}/{name}")
    media = {"FileName": name, "FileSize": 1000 + n,
             "FileMd5": hashlib.md5(name.encode()).hexdigest(), "FileUrl": url}
    if msg_type == 11:
        media.update(ThumbnailUrl=url + "?thumb", LargeImageUrl=url + "?large",
                     OriginalImageWidth=1920, OriginalImageHeight=1080)
    elif msg_type == 13:
        media["AudioDuration"] = n % 60 + 1
    elif msg_type == 14:
        media.update(VideoDuration=n % 600 + 1, VideoFirstFrameUrl=url + "?frame",
                     VideoFirstFrameWidth=1280, VideoFirstFrameHeight=720)
    return media


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
        self.groups: dict[str, dict] = {}             # GroupId -> {member: None}
        self.pins: dict[str, dict] = {}               # UserId -> {(ConvId, ConvType): None}
        self.mutes: dict[str, dict] = {}              # UserId -> {(ConvId, ConvType): None}
        self.marks: dict[str, dict] = {}              # UserId -> {(ConvId, ConvType): {mark}}
        # UserId -> {(ConvId, ConvType): {"UpdateTime": ms, "Unread": n, "Seq": n}};
        # Seq breaks ties of UpdateTime (the later write sorts later)
        self.convs: dict[str, dict] = {}
        self.conv_seq = 0
        self.peer_msgs: dict[tuple, list] = {}        # sorted (a, b) -> messages, oldest first
        self.group_msgs: dict[str, list] = {}         # GroupId -> messages, oldest first
        self.last_msg_id = FIRST_MSG_ID
        self.last_msg_time = 0
        self.cursors: dict[int, dict] = {}            # Next -> {Action, Scope, Pos}
        self.stuck_next = self.new_token()            # NextMode "stuck"
        self.max_mutes = MAX_MUTES
        self.next_mode = "normal"
        self.omit_c2c_type = True
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
        self.ascii_json = True                        # \u escapes, as json.dumps
        MESSAGE_OVERRIDES.clear()

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
        """Create `user`'s conversation `key` if missing, UpdateTime now; an
        existing one is left alone (locked)."""
        if key not in self.convs.get(user, {}):
            self.set_conv(user, key, now_ms())

    def set_conv(self, user: str, key: tuple, update_time: int | None = None,
                 unread: int | None = None, add_unread: int = 0) -> None:
        """Create or update `user`'s conversation `key` (locked)."""
        rec = self.convs.setdefault(user, {}).setdefault(
            key, {"UpdateTime": now_ms(), "Unread": 0, "Seq": 0})
        if update_time is not None:
            rec["UpdateTime"] = update_time
        if unread is not None:
            rec["Unread"] = unread
        rec["Unread"] += add_unread
        self.conv_seq += 1
        rec["Seq"] = self.conv_seq

    def sorted_convs(self, user: str) -> list:
        """[(key, record)] of `user`, ascending UpdateTime (locked)."""
        return sorted(self.convs.get(user, {}).items(),
                      key=lambda kv: (kv[1]["UpdateTime"], kv[1]["Seq"]))

    def is_latest_conv(self, user: str, key: tuple) -> bool:
        """Is `key` among `user`'s LATEST_CONVS latest conversations (locked)?"""
        convs = self.convs.get(user, {})
        rec = convs.get(key)
        if rec is None:
            return False
        mine = (rec["UpdateTime"], rec["Seq"])
        later = sum(1 for r in convs.values() if (r["UpdateTime"], r["Seq"]) > mine)
        return later < LATEST_CONVS

    # -- messages ----------------------------------------------------------

    def add_msg(self, msgs: list, sender: str, msg_type: int, sub_type: int,
                body: str, payload: str, is_empty: int, msg_time: int | None) -> dict:
        """Append a message to the conversation `msgs` (locked)."""
        self.last_msg_id += 1
        if msg_time is None:
            msg_time = max(now_ms(), self.last_msg_time + 1)
        self.last_msg_time = max(self.last_msg_time, msg_time)
        if is_empty:
            body = payload = ""
        msg = {"Sender": sender, "MsgType": msg_type, "SubMsgType": sub_type,
               "MsgBody": body, "MsgId": self.last_msg_id, "MsgSeq": len(msgs) + 1,
               "Payload": payload, "MsgTime": msg_time, "IsEmpty": is_empty}
        msgs.append(msg)
        return msg

    def add_peer_msg(self, sender: str, to: str, **kw) -> dict:
        msgs = self.peer_msgs.setdefault(tuple(sorted((sender, to))), [])
        msg = self.add_msg(msgs, sender, **kw)
        self.set_conv(sender, (to, 0), msg["MsgTime"])
        if to != sender:
            self.set_conv(to, (sender, 0), msg["MsgTime"], add_unread=0 if msg["IsEmpty"] else 1)
        return msg

    def add_group_msg(self, group: str, sender: str, **kw) -> dict:
        msg = self.add_msg(self.group_msgs.setdefault(group, []), sender, **kw)
        for member in [sender] + [m for m in self.groups.get(group, {}) if m != sender]:
            unread = 0 if member == sender or msg["IsEmpty"] else 1
            self.set_conv(member, (group, 2), msg["MsgTime"], add_unread=unread)
        return msg

    # -- Next cursors ------------------------------------------------------

    def new_token(self) -> int:
        """A fresh opaque Next: random in 1..2^53-1, never 0 (locked)."""
        while True:
            token = secrets.randbelow((1 << 53) - 1) + 1
            if token not in getattr(self, "cursors", {}):
                return token

    def page(self, action: str, scope, nxt: int, items: list, keys: list,
             limit: int) -> tuple[list, int] | None:
        """One page of `items` (in answer order; `keys` increase along it).
        Returns (page, Next), or None for a Next that is not ours (locked)."""
        if self.next_mode == "stuck":
            return items[:limit], self.stuck_next
        pos = None
        if nxt:
            cur = self.cursors.get(nxt)
            if cur is None or cur["Action"] != action or cur["Scope"] != scope:
                return None
            pos = cur["Pos"]
        start = 0 if pos is None else bisect.bisect_right(keys, pos)
        page = items[start:start + limit]
        end = start + len(page)
        if end >= len(items) and self.next_mode == "normal":
            return page, 0
        token = self.new_token()
        self.cursors[token] = {"Action": action, "Scope": scope,
                               "Pos": keys[end - 1] if page else pos}
        if len(self.cursors) > MAX_CURSORS:
            del self.cursors[next(iter(self.cursors))]
        return page, token


# ---------------------------------------------------------------------------
# The Actions. Each takes (state, body dict) and returns a response dict
# without RequestId. They run with state.lock held.
# ---------------------------------------------------------------------------

def count_convs(action: str, body: dict | None) -> int | None:
    """How many conversations a POST body names (the request log's Convs)."""
    if body is None:
        return None
    if action == "ConvPinned":
        v = body.get("ConvList")
    elif action == "SilenceConvNotification":
        v = body.get("ConvIds")
    elif action == "DeleteConv":
        return 1
    elif action == "SetConvMark":
        entries = body.get("ConvMarkInfoList")
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            return None
        maps = [e.get(f) for e in entries for f in ("SetMarkC2c", "SetMarkGroup")]
        if not all(m is None or isinstance(m, dict) for m in maps):
            return None
        return sum(len(m) for m in maps if m)
    else:
        return None
    return len(v) if isinstance(v, list) else None


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
    mutes = st.mutes.setdefault(user, {})
    errors, changed = [], 0
    for cid in ids:
        key = (cid, ctype)
        if ctype == 2 and cid not in st.groups:
            sub = 660600001
        elif ctype == 2 and user not in st.groups[cid]:
            sub = 660600024
        elif ctype == 0 and cid not in st.users:
            sub = 660700015
        elif enable and key in mutes:
            sub = 660800051
        elif not enable and key not in mutes:
            sub = 660800052
        elif enable and ctype == 0 and sum(1 for _, t in mutes if t == 0) >= st.max_mutes:
            sub = 660800030
        else:
            if enable:
                mutes[key] = None
            else:
                del mutes[key]
            st.touch_conv(user, key)
            changed += 1
            continue
        errors.append({"ConvId": cid, "SubCode": sub, "SubMessage": message(sub)})
    if changed:
        return {"Code": 0, "Message": "success", "ErrorList": errors}
    first = errors[0]["SubCode"]
    return {"Code": first, "Message": "all conversations failed: " + message(first),
            "ErrorList": errors}


def mark_maps(entry) -> list | None:
    """[(ConvType, {conv id: spec})] of a ConvMarkInfoList entry, or None if
    the entry is malformed (a whole-call 660000002)."""
    if (not isinstance(entry, dict) or not valid_user_id(entry.get("UserId"))
            or not isinstance(entry.get("Action"), bool)):
        return None
    maps, total = [], 0
    for ctype, field in ((0, "SetMarkC2c"), (2, "SetMarkGroup")):
        m = entry.get(field)
        if m is None:
            continue
        if (not isinstance(m, dict) or len(m) > MAX_MARK_CONVS
                or not all(valid_conv_id(c) and isinstance(v, dict) for c, v in m.items())):
            return None
        maps.append((ctype, m))
        total += len(m)
    return maps if total else None


def act_set_conv_mark(st: State, body: dict) -> dict:
    user, entries = body.get("FromUserId"), body.get("ConvMarkInfoList")
    if (not valid_user_id(user) or not isinstance(entries, list)
            or not 1 <= len(entries) <= MAX_MARK_ENTRIES):
        return whole_call(660000002, FailList=[])
    all_maps = [mark_maps(e) for e in entries]
    if any(m is None for m in all_maps):
        return whole_call(660000002, FailList=[])
    if user not in st.users:
        return whole_call(660500002, FailList=[])
    fails, done = [], 0
    for entry, maps in zip(entries, all_maps):
        uid, setting = entry["UserId"], entry["Action"]
        if uid not in st.users:
            fails.append({"UserId": uid, "SubCode": 1, "SubMessage": USER_NOT_EXIST})
            continue
        marks = st.marks.setdefault(uid, {})
        inner, ok = [], 0
        for ctype, m in maps:
            for cid, spec in m.items():
                mark, key = spec.get("MarkContent"), (cid, ctype)
                if not is_int(mark) or not 1 <= mark <= MAX_MARK:
                    inner.append({"ConvId": cid, "ConvType": ctype, "Code": 1,
                                  "Message": MARK_INVALID})
                    continue
                if setting:
                    marks.setdefault(key, set()).add(mark)
                    st.touch_conv(uid, key)
                elif key in marks:
                    marks[key].discard(mark)
                    if not marks[key]:
                        del marks[key]
                ok += 1
        done += ok
        if inner and ok:
            fails.append({"UserId": uid, "SubCode": 0, "FailList": inner})
        elif inner:
            fails.append({"UserId": uid, "SubCode": 660800054,
                          "SubMessage": message(660800054), "FailList": inner})
    code = 0 if done else 660800054
    return {"Code": code, "Message": message(code), "FailList": fails}


def act_delete_conv(st: State, body: dict) -> dict:
    user, cid, ctype = body.get("FromUserId"), body.get("ConvId"), body.get("ConvType")
    if (not valid_user_id(user) or not valid_conv_id(cid)
            or not is_int(ctype) or ctype not in (0, 2)):
        return whole_call(660000002)
    if user not in st.users:
        return whole_call(660500002)
    st.convs.get(user, {}).pop((cid, ctype), None)      # missing: Code 0 all the same
    return whole_call(0)


def act_clear_conversation_unread(st: State, query: dict) -> dict:
    """GET: `query` is the parsed query string (name -> [values])."""
    vals = [query.get(k, []) for k in ("FromUserId", "ConvId", "ConvType")]
    if any(len(v) != 1 for v in vals):
        return whole_call(660000002)
    user, cid, ctype = (v[0] for v in vals)
    if not valid_user_id(user) or not valid_conv_id(cid) or ctype not in ("0", "2"):
        return whole_call(660000002)
    if user not in st.users:
        return whole_call(660500002)
    key = (cid, int(ctype))
    if not st.is_latest_conv(user, key):
        return whole_call(660800002)
    st.convs[user][key]["Unread"] = 0
    return whole_call(0)


def page_limit(limit, default_max: tuple[int, int]) -> int | None:
    """A Limit as the vendor reads it: absent or <= 0 the default, over the
    maximum the maximum; None if it is not an integer."""
    default, most = default_max
    if limit is None:
        return default
    if not is_int(limit):
        return None
    return default if limit <= 0 else min(limit, most)


def act_query_conversation_list(st: State, body: dict) -> dict:
    user, nxt = body.get("FromUserId"), body.get("Next", 0)
    limit = page_limit(body.get("Limit"), CONV_LIST_LIMIT)
    if not valid_user_id(user) or limit is None or not is_int(nxt) or nxt < 0:
        return whole_call(660000002)
    if user not in st.users:
        return whole_call(660500002)
    convs = st.sorted_convs(user)
    latest = convs[-LATEST_CONVS:]
    keys = [(r["UpdateTime"], r["Seq"]) for _, r in latest]
    got = st.page("QueryConversationList", user, nxt, latest, keys, limit)
    if got is None:
        return whole_call(660000002)
    page, nxt = got
    items = []
    for (cid, ctype), rec in page:
        item = {"ConvId": cid, "ConvType": ctype, "UpdateTime": rec["UpdateTime"]}
        if ctype == 0 and st.omit_c2c_type:
            del item["ConvType"]
        items.append(item)
    return {"Code": 0, "Message": "success", "TotalCount": len(convs),
            "Next": nxt, "List": items}


def query_msgs(st: State, action: str, scope, msgs: list, nxt: int, limit: int,
               with_empty: int) -> dict:
    """A page of `msgs` (oldest first), newest first."""
    items = [m for m in reversed(msgs) if with_empty or m["IsEmpty"] == 0]
    got = st.page(action, scope, nxt, items, [-m["MsgSeq"] for m in items], limit)
    if got is None:
        return whole_call(660000002)
    page, nxt = got
    return {"Code": 0, "Message": "success", "Next": nxt, "List": [dict(m) for m in page]}


def msg_paging(body: dict) -> tuple | None:
    """(Next, Limit, WithEmptyMsg) of a message query, None if malformed."""
    nxt, empty = body.get("Next", 0), body.get("WithEmptyMsg", 0)
    limit = page_limit(body.get("Limit"), MSG_LIST_LIMIT)
    if (limit is None or not is_int(nxt) or nxt < 0
            or not is_int(empty) or empty not in (0, 1)):
        return None
    return nxt, limit, empty


def act_query_peer_msg(st: State, body: dict) -> dict:
    user, peer, paging = body.get("FromUserId"), body.get("ToUserId"), msg_paging(body)
    if not valid_user_id(user) or not valid_user_id(peer) or paging is None:
        return whole_call(660000002)
    if user not in st.users:
        return whole_call(660500002)
    msgs = st.peer_msgs.get(tuple(sorted((user, peer))), [])
    return query_msgs(st, "QueryPeerMsg", (user, peer), msgs, *paging)


def act_query_group_msg(st: State, body: dict) -> dict:
    group, paging = body.get("GroupId"), msg_paging(body)
    if not valid_conv_id(group) or paging is None:
        return whole_call(660000002)
    if group not in st.groups:
        return whole_call(660600001)
    return query_msgs(st, "QueryGroupMsg", group, st.group_msgs.get(group, []), *paging)


ACTIONS = {
    "UserRegister": act_user_register,
    "ConvPinned": act_conv_pinned,
    "SilenceConvNotification": act_silence_conv_notification,
    "SetConvMark": act_set_conv_mark,
    "DeleteConv": act_delete_conv,
    "ClearConversationUnread": act_clear_conversation_unread,
    "QueryConversationList": act_query_conversation_list,
    "QueryPeerMsg": act_query_peer_msg,
    "QueryGroupMsg": act_query_group_msg,
}
assert tuple(ACTIONS) == REAL_ACTIONS


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
    rotated, ascii_json = body.get("SecretRotated"), body.get("AsciiJson")
    jitter = body.get("JitterMs")
    texts = body.get("Messages")
    mutes, mode, omit = body.get("MaxMutes"), body.get("NextMode"), body.get("OmitC2cType")
    if ((rotated is not None and not isinstance(rotated, bool))
            or (ascii_json is not None and not isinstance(ascii_json, bool))
            or (omit is not None and not isinstance(omit, bool))
            or (mutes is not None and (not is_int(mutes) or mutes < 0))
            or (mode is not None and mode not in NEXT_MODES)):
        return False, whole_call(2)
    if texts is not None and (
            not isinstance(texts, dict)
            or not all(DECIMAL_RE.fullmatch(k) and isinstance(v, str)
                       for k, v in texts.items())):
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
        if ascii_json is not None:
            st.ascii_json = ascii_json
        if mutes is not None:
            st.max_mutes = mutes
        if mode is not None:
            st.next_mode = mode
        if omit is not None:
            st.omit_c2c_type = omit
        if texts is not None:
            MESSAGE_OVERRIDES.clear()
            MESSAGE_OVERRIDES.update({int(k): v for k, v in texts.items()})
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
    user, peer, group = body.get("UserId"), body.get("PeerId"), body.get("GroupId")
    if any(v is not None and not isinstance(v, str) for v in (user, peer, group)):
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
                    "RateLimit": st.rate_limit,
                    "MaxConvs": st.max_convs, "MaxMutes": st.max_mutes,
                    "NextMode": st.next_mode, "OmitC2cType": st.omit_c2c_type,
                    "AsciiJson": st.ascii_json,
                    "Messages": {str(k): v for k, v in MESSAGE_OVERRIDES.items()}},
            Faults=[{k: (len(v) if k == "Data" else v) for k, v in f.items()}
                    for f in st.faults + st.conn_faults],
        )
        if user is not None:
            pins = st.pins.get(user, {})
            resp.update(Registered=user in st.users,
                        Pins=[{"ConvId": c, "ConvType": t} for c, t in pins],
                        PinCount=len(pins),
                        Mutes=[{"ConvId": c, "ConvType": t} for c, t in st.mutes.get(user, {})],
                        Marks=[{"ConvId": c, "ConvType": t, "Marks": sorted(m)}
                               for (c, t), m in st.marks.get(user, {}).items()],
                        Conversations=[{"ConvId": c, "ConvType": t,
                                        "UpdateTime": r["UpdateTime"], "Unread": r["Unread"]}
                                       for (c, t), r in st.sorted_convs(user)],
                        ConversationCount=len(st.convs.get(user, {})))
            if peer is not None:
                resp["PeerMsgCount"] = len(st.peer_msgs.get(tuple(sorted((user, peer))), []))
        if group is not None:
            resp.update(GroupExists=group in st.groups,
                        Members=list(st.groups.get(group, {})),
                        GroupMsgCount=len(st.group_msgs.get(group, [])))
    return True, resp


class SeedError(Exception):
    """A seed body that cannot be applied; its text is the answer's Error."""


def seed_list(body: dict, name: str, one_or_many: bool = False) -> list:
    """The list `name` of a seed body (an object too, if `one_or_many`)."""
    v = body.get(name)
    if v is None:
        return []
    if one_or_many and isinstance(v, dict):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(i, dict) for i in v):
        raise SeedError(f"{name} must be a list of objects" +
                        (" or an object" if one_or_many else ""))
    return v


def seed_int(item: dict, name: str, default, lo: int = 0, hi: int | None = None):
    """item[name], an integer lo..hi; absent or null: `default`."""
    v = item.get(name)
    if v is None:
        return default
    if not is_int(v) or v < lo or (hi is not None and v > hi):
        raise SeedError(f"{name} must be an integer in {lo}..{'' if hi is None else hi}")
    return v


def seed_user(item: dict, name: str) -> str:
    v = item.get(name)
    if not valid_user_id(v):
        raise SeedError(f"{name} must be a user id (1..32 of the documented characters)")
    return v


def seed_msg(item: dict, n: int = 0) -> dict:
    """The add_msg keywords of a PeerMsgs / GroupMsgs item."""
    mtype = seed_int(item, "MsgType", 1)
    if mtype not in MSG_TYPES:
        raise SeedError(f"MsgType must be one of {MSG_TYPES}")
    body, media = item.get("MsgBody"), item.get("Media")
    if body is not None and not isinstance(body, str):
        raise SeedError("MsgBody must be a string")
    if media is not None and (mtype not in MEDIA_TYPES or body is not None):
        raise SeedError("Media is for MsgType 10..14, without MsgBody")
    if mtype in MEDIA_TYPES and body is None:
        body = encode_media(default_media(mtype, n) if media is None else media)
    payload = item.get("Payload", "")
    if not isinstance(payload, str):
        raise SeedError("Payload must be a string")
    return {"msg_type": mtype, "sub_type": seed_int(item, "SubMsgType", 0, 0, 200),
            "body": body or "", "payload": payload,
            "is_empty": seed_int(item, "IsEmpty", 0, 0, 2),
            "msg_time": seed_int(item, "MsgTime", None)}


def seed_plan(st: State, body: dict) -> list:
    """Check a seed body whole; the steps to apply, in order (locked)."""
    steps = []      # each returns the MsgIds it gave, or None
    users = body.get("Users") or []
    if not isinstance(users, list) or not all(valid_user_id(u) for u in users):
        raise SeedError("Users must be a list of user ids")
    steps.append(lambda: [st.users.setdefault(u, {"UserName": u, "UserAvatar": ""})
                          for u in users] and None)
    groups = body.get("Groups") or {}
    if (not isinstance(groups, dict) or not all(
            valid_conv_id(g) and isinstance(m, list) and all(valid_user_id(u) for u in m)
            for g, m in groups.items())):
        raise SeedError('Groups must be {"<group id>": [user ids]}')
    steps.append(lambda: st.groups.update({g: dict.fromkeys(m) for g, m in groups.items()}))
    known_groups = set(st.groups) | set(groups)
    for c in seed_list(body, "Conversations"):
        user, cid, ctype = seed_user(c, "UserId"), c.get("ConvId"), c.get("ConvType", 0)
        if not valid_conv_id(cid) or not is_int(ctype) or ctype not in (0, 2):
            raise SeedError("a conversation needs a ConvId (1..32 bytes) and ConvType 0 or 2")
        ut, unread = seed_int(c, "UpdateTime", None), seed_int(c, "Unread", None)
        # a new conversation's UpdateTime defaults to now (set_conv)
        steps.append(lambda u=user, k=(cid, ctype), t=ut, n=unread: st.set_conv(u, k, t, n))
    for g in seed_list(body, "GenerateConversations", True):
        steps.append(seed_generate_convs(st, g, known_groups))
    for m in seed_list(body, "PeerMsgs"):
        sender, to, kw = seed_user(m, "From"), seed_user(m, "To"), seed_msg(m)
        steps.append(lambda s=sender, t=to, kw=kw: [st.add_peer_msg(s, t, **kw)["MsgId"]])
    for m in seed_list(body, "GroupMsgs"):
        group, sender, kw = m.get("GroupId"), seed_user(m, "From"), seed_msg(m)
        if group not in known_groups:
            raise SeedError(f"GroupMsgs: no group {group!r}")
        steps.append(lambda g=group, s=sender, kw=kw: [st.add_group_msg(g, s, **kw)["MsgId"]])
    for g in seed_list(body, "GenerateMessages", True):
        steps.append(seed_generate_msgs(st, g, known_groups))
    return steps


def seed_generate_convs(st: State, g: dict, known_groups: set):
    """The step of one GenerateConversations (checked now)."""
    user, count = seed_user(g, "UserId"), seed_int(g, "Count", None, 1, MAX_SEED_COUNT)
    prefix, every = g.get("Prefix", "c"), seed_int(g, "GroupEvery", 3)
    register, step = g.get("RegisterPeers", True), seed_int(g, "StepMs", 1000)
    start, unread = seed_int(g, "StartTime", None), seed_int(g, "Unread", 0)
    if count is None:
        raise SeedError("GenerateConversations needs a Count")
    if not isinstance(prefix, str) or not valid_user_id(prefix + str(count)):
        raise SeedError("Prefix + Count must be a user id")
    if not isinstance(register, bool):
        raise SeedError("RegisterPeers must be a boolean")
    ids = [(f"{prefix}{i}", 2 if every and i % every == 0 else 0) for i in range(1, count + 1)]
    known_groups.update(c for c, t in ids if t == 2)

    def apply():
        t0 = now_ms() - count * step if start is None else start
        for i, (cid, ctype) in enumerate(ids):
            if ctype == 2:
                st.groups.setdefault(cid, {})[user] = None
            elif register:
                st.users.setdefault(cid, {"UserName": cid, "UserAvatar": ""})
            st.set_conv(user, (cid, ctype), t0 + i * step, unread)
    return apply


def seed_generate_msgs(st: State, g: dict, known_groups: set):
    """The step of one GenerateMessages (checked now)."""
    sender, count = seed_user(g, "From"), seed_int(g, "Count", None, 1, MAX_SEED_COUNT)
    to, group = g.get("To"), g.get("GroupId")
    media, recalled, deleted = (seed_int(g, k, 0) for k in ("MediaEvery", "RecalledEvery",
                                                             "DeletedEvery"))
    if count is None:
        raise SeedError("GenerateMessages needs a Count")
    if (to is None) == (group is None):
        raise SeedError("GenerateMessages needs one of To and GroupId")
    if to is not None:
        seed_user(g, "To")
    elif group not in known_groups:
        raise SeedError(f"GenerateMessages: no group {group!r}")

    def apply():
        ids, k = [], 0
        for n in range(1, count + 1):
            mtype, body = 1, f"message {n}"
            if media and n % media == 0:
                mtype = MEDIA_CYCLE[k % len(MEDIA_CYCLE)]
                body, k = encode_media(default_media(mtype, n)), k + 1
            empty = 2 if recalled and n % recalled == 0 else 1 if deleted and n % deleted == 0 else 0
            kw = {"msg_type": mtype, "sub_type": 0, "body": body, "payload": "",
                  "is_empty": empty, "msg_time": None}
            msg = (st.add_peer_msg(sender, to, **kw) if to is not None
                   else st.add_group_msg(group, sender, **kw))
            ids.append(msg["MsgId"])
        return ids
    return apply


def ctl_seed(st: State, body: dict) -> tuple[bool, dict]:
    with st.lock:
        try:
            steps = seed_plan(st, body)
        except SeedError as e:
            return False, whole_call(2, Error=str(e))
        msg_ids = []
        for step in steps:
            msg_ids.extend(step() or [])
    return True, whole_call(0, MsgIds=msg_ids)


CONTROLS = {"reset": ctl_reset, "config": ctl_config, "fault": ctl_fault,
            "state": ctl_state, "seed": ctl_seed}


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
        """An answer, with text beyond ASCII as \\u escapes or raw UTF-8
        (config AsciiJson)."""
        obj.setdefault("RequestId", request_id())
        text = json.dumps(obj, separators=(",", ":"),
                          ensure_ascii=self.server.state.ascii_json)
        self.send_raw(status, text.encode("utf-8", "surrogatepass"), close=close)

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
        # Any method other than POST and GET (do_PUT, do_HEAD, ...) is a 404, not 501.
        if name.startswith("do_"):
            return self.not_found
        raise AttributeError(name)

    def not_found(self) -> None:
        t0 = time.monotonic()
        if self.read_body() is None:
            return
        self.send_json({"Code": 404, "Message": "not found"}, status=404)
        self.log_line(t0, 404, None, None)

    def do_GET(self) -> None:
        self.do_POST()

    def do_POST(self) -> None:
        """POST and GET: the API on /, the unsigned controls (POST only)."""
        t0 = time.monotonic()
        body = self.read_body()
        if body is None:
            return
        url = urlsplit(self.path)
        try:
            if url.path == "/":
                self.api(url.query, body, t0)
            elif (self.command == "POST" and url.path.startswith("/_test/")
                    and url.path[7:] in CONTROLS):
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
        """POST or GET /?...: faults, gateway checks, rate limit, the Action."""
        st = self.server.state
        params = parse_qs(query, keep_blank_values=True)
        action = params.get("Action", [""])[0]
        nonce = params.get("SignatureNonce", [""])[0]
        is_test = action.startswith("Test")
        method = self.command
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
        body = None
        if method == "POST":
            try:
                body = json.loads(raw)
            except (ValueError, RecursionError):
                pass
            if not isinstance(body, dict):
                body = None
            user = body.get("FromUserId") if body else None
            convs = count_convs(action, body)
        else:
            # a GET is matched and logged by its query string
            raw = query.encode() + b"\n" + unquote_plus(query).encode("utf-8", "surrogatepass")
            user = params.get("FromUserId", [None])[0]
            convs = 1 if action == "ClearConversationUnread" else None

        # Receipt: note nonce reuse, pick a fault, log the request.
        entry, fault = None, None
        with st.lock:
            reused = nonce in st.nonces
            if nonce:
                st.nonces.add(nonce)
            if not is_test:
                fault = st.take_fault(action, raw)
                entry = {"Action": action, "Method": method, "User": user,
                         "Convs": convs, "Nonce": nonce, "Connection": self.conn_id,
                         "Fault": fault["Fault"] if fault else None,
                         "Code": None, "T": t0}
                st.requests.append(entry)

        if fault and self.apply_fault(fault, entry, t0):
            return

        resp = self.gateway(params, action, nonce, reused, body, method)
        if resp is None:
            if is_test:
                resp = CONTROLS[TEST_ACTIONS[action]](st, body)[1]
            else:
                with st.lock:
                    if not st.admit(action, t0):
                        code = 660700001 if action == "UserRegister" else 660300005
                        resp = whole_call(code)
                        if action in FAILURE_LISTS:
                            resp[FAILURE_LISTS[action]] = []
                    else:
                        resp = ACTIONS[action](st, params if method == "GET" else body)
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
                body: dict | None, method: str) -> dict | None:
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
        elif method != ACTION_METHODS.get(action, "POST"):
            code = 100000007                  # the method is not the Action's
        elif method == "POST" and body is None:
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

def self_test_state() -> list:
    """(ok, name) checks of the state helpers, on a State of its own."""
    st = State(20, 20)
    ok, _ = ctl_seed(st, {"GenerateConversations": {"UserId": "u1", "Count": 1200},
                          "Users": ["u1"]})
    checks = [(ok, "seed GenerateConversations")]
    listed, nxt, tokens, pages = [], 0, [], 0
    while pages < 10:
        r = act_query_conversation_list(st, {"FromUserId": "u1", "Limit": 500, "Next": nxt})
        listed += r["List"]
        nxt, pages = r["Next"], pages + 1
        if not nxt:
            break
        tokens.append(nxt)
    ids = [c["ConvId"] for c in listed]
    checks += [
        (r["TotalCount"] == 1200 and len(listed) == 1000 and pages == 2
         and ids[0] == "c201" and ids[-1] == "c1200", "QueryConversationList: the latest 1000"),
        (all("ConvType" not in c for c in listed if int(c["ConvId"][1:]) % 3)
         and all(c["ConvType"] == 2 for c in listed if int(c["ConvId"][1:]) % 3 == 0),
         "QueryConversationList: no ConvType for one-to-one"),
        (all(a["UpdateTime"] <= b["UpdateTime"] for a, b in zip(listed, listed[1:])),
         "QueryConversationList: ascending UpdateTime"),
        (len(tokens) == 1 and 500 < tokens[0] < 1 << 53
         and act_query_conversation_list(st, {"FromUserId": "u1", "Next": 500})["Code"] == 660000002
         and act_query_conversation_list(st, {"FromUserId": "c1", "Next": tokens[0]})["Code"]
         in (660000002, 660500002),
         "Next is an opaque cursor, not an offset"),
        (act_query_conversation_list(st, {"FromUserId": "u1", "Limit": 0})["List"].__len__() == 100
         and len(act_query_conversation_list(st, {"FromUserId": "u1", "Limit": 900})["List"]) == 500,
         "QueryConversationList: Limit <= 0 is 100, > 500 is 500"),
        (act_clear_conversation_unread(st, {"FromUserId": ["u1"], "ConvId": ["c200"],
                                            "ConvType": ["0"]})["Code"] == 660800002
         and act_clear_conversation_unread(st, {"FromUserId": ["u1"], "ConvId": ["c202"],
                                                "ConvType": ["0"]})["Code"] == 0,
         "ClearConversationUnread: only the latest 1000"),
    ]
    media = {"FileName": "a b&c%+#\u00e9\u6587.jpg", "FileSize": 3}
    body = encode_media(media)
    checks.append((re.fullmatch(r"(?:[A-Za-z0-9_.~-]|%[0-9A-F]{2})+", body) is not None
                   and "%C3%A9" in body and json.loads(unquote(body)) == media,
                   "media bodies are URL-encoded UTF-8 JSON"))
    ok, r = ctl_seed(st, {"Users": ["u2"], "GenerateMessages": {
        "From": "u1", "To": "u2", "Count": 12, "MediaEvery": 2, "RecalledEvery": 7}})
    msgs = act_query_peer_msg(st, {"FromUserId": "u2", "ToUserId": "u1", "Limit": 100})["List"]
    everything = act_query_peer_msg(st, {"FromUserId": "u2", "ToUserId": "u1", "Limit": 100,
                                         "WithEmptyMsg": 1})["List"]
    checks.append((ok and r["MsgIds"] == list(range(FIRST_MSG_ID + 1, FIRST_MSG_ID + 13))
                   and len(msgs) == 11 and len(everything) == 12 and everything[5]["IsEmpty"] == 2
                   and [m["MsgSeq"] for m in everything] == list(range(12, 0, -1))
                   and all(isinstance(json.loads(unquote(m["MsgBody"])), dict)
                           for m in msgs if m["MsgType"] in MEDIA_TYPES)
                   and {m["MsgType"] for m in msgs} == {1, 10, 11, 12, 13, 14},
                   "messages: ids beyond 2^53, newest first, media, recalled"))
    return checks


def self_test() -> int:
    """Check the vendor's signature test vector and a few helpers."""
    checks = self_test_state() + [
        (sign("12345", "4fd24687296dd9f3", "9193cc662a4c0ec135ec71fb57194b38", "1615186943")
         == "43e5cfcca828314675f91b001390566a", "signature test vector"),
        (valid_user_id("a b!#$%&()+-:;<=.>?@[]^_{}|~") and not valid_user_id("a/b")
         and not valid_user_id("") and not valid_user_id("x" * 33), "UserId rule"),
        (valid_conv_id("\u00e9" * 16) and not valid_conv_id("\u00e9" * 17)
         and valid_conv_id("x" * 32) and not valid_conv_id(""), "ConvId rule (UTF-8 bytes)"),
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
