#!/usr/bin/env python3
"""check-sql.py -- every operator and function in the extension scripts is
bound to pg_catalog or to the extension's own schema.

CREATE EXTENSION and ALTER EXTENSION UPDATE run sql/zim_pin--*.sql with the
target schema on search_path.  A function or operator there whose argument
types match exactly beats a pg_catalog one that needs a cast, and a view,
default, check or index predicate keeps what it bound then: a view runs it
with the rights of whoever reads it.  So every call in those scripts must
be written pg_catalog.f(...) or @extschema@.f(...), and every operator
OPERATOR(pg_catalog.x), including the ones SQL hides in IN, LIKE, BETWEEN,
NULLIF, IS DISTINCT FROM and CASE x WHEN.

The body of a function whose definition pins search_path to
"pg_catalog, pg_temp" is bound when it runs, with that path, and is not
checked here; any other body is.

Usage: check-sql.py [FILE ...]   (default: sql/zim_pin--*.sql)
Prints each problem as FILE:LINE: text, then a summary line; exits 1 if
there was a problem.
"""

from __future__ import annotations

import glob
import os
import re
import sys

# words followed by "(" that are syntax, not a call of a function that
# search_path could resolve
SYNTAX = {
    "table", "check", "key", "values", "coalesce", "exists", "any", "all",
    "as", "on", "references", "filter", "over", "array", "operator",
    "unique", "primary", "foreign", "index", "using", "with", "where",
    "and", "or", "not", "from", "select", "returns", "setof", "default",
    "interval", "numeric", "decimal", "varchar", "char", "character",
    "timestamp", "timestamptz", "time", "bit", "varbit", "cast", "row",
    "join", "lateral", "in", "include", "partition", "by", "then", "else",
    "when", "end", "case", "is", "null",
}
# SQL constructs that apply an operator found by search_path
HIDDEN_OPERATORS = {"in", "like", "ilike", "similar", "between", "nullif",
                    "distinct"}
OPERATOR_CHARS = set("+-*/<>=~!@#%^&|`?")
PINNED = re.compile(r"\bSET\s+search_path\s*(=|TO)\s*pg_catalog\s*,\s*pg_temp\b", re.I)

TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<comment>--[^\n]*|/\*.*?\*/)
  | (?P<dollar>\$(?P<tag>[A-Za-z_]*)\$.*?\$(?P=tag)\$)
  | (?P<string>[EeBbXxUu]?'(?:[^']|'')*')
  | (?P<extschema>@extschema@)
  | (?P<ident>"(?:[^"]|"")+"|[A-Za-z_][A-Za-z_0-9$]*)
  | (?P<number>\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
  | (?P<cast>::)
  | (?P<named>=>)
  | (?P<op>[-+*/<>=~!@#%^&|`?]+)
  | (?P<punct>[(),;.\[\]:])
  | (?P<meta>\\[^\n]*)
""", re.X | re.S)


def tokens(text: str):
    """(kind, value, line) of every token, comments and whitespace dropped"""
    pos = 0
    line = 1
    while pos < len(text):
        m = TOKEN.match(text, pos)
        if not m:
            yield ("bad", text[pos], line)
            pos += 1
            continue
        kind = m.lastgroup if m.lastgroup != "tag" else "dollar"
        if m.group("dollar") is not None:
            kind = "dollar"
        value = m.group(0)
        if kind not in ("ws", "comment", "meta"):
            yield (kind, value, line)
        line += value.count("\n")
        pos = m.end()


def statements(text: str):
    """each statement as a list of tokens"""
    stmt = []
    for tok in tokens(text):
        if tok[0] == "punct" and tok[1] == ";":
            if stmt:
                yield stmt
            stmt = []
        else:
            stmt.append(tok)
    if stmt:
        yield stmt


def check_tokens(toks, report) -> None:
    """report unqualified calls and bare operators in toks"""
    n = len(toks)
    words = [t[1].lower() if t[0] == "ident" else None for t in toks]
    first = words[0] if words else None
    i = 0
    while i < n:
        kind, value, line = toks[i]
        prev = toks[i - 1] if i > 0 else (None, None, None)
        nxt = toks[i + 1] if i + 1 < n else (None, None, None)
        w = words[i]
        if kind == "ident" and w == "operator" and nxt[1] == "(":
            # OPERATOR(schema.op): the schema must be pg_catalog
            j = i + 2
            if not (j + 3 < n and toks[j][1].lower() == "pg_catalog"
                    and toks[j + 1][1] == "." and toks[j + 2][0] == "op"
                    and toks[j + 3][1] == ")"):
                report(line, "OPERATOR(...) not of pg_catalog")
            i = j + 4
            continue
        if kind == "ident" and nxt[1] == "(" and prev[1] != "." and w not in SYNTAX:
            report(line, f"unqualified call of {value}()")
        if kind == "ident" and nxt[1] == "." and i + 3 < n and toks[i + 3][1] == "(":
            if w not in ("pg_catalog",) and toks[i + 2][0] == "ident":
                report(line, f"call of {value}.{toks[i + 2][1]}() outside pg_catalog")
        if kind == "extschema" and nxt[1] == "." and i + 3 < n and toks[i + 3][1] == "(":
            pass  # the extension's own function
        if kind == "ident" and w in HIDDEN_OPERATORS:
            # "IN (" after a parameter mode is not an operator
            if not (w == "distinct" and (nxt[1] or "").lower() != "from"):
                report(line, f"{value.upper()} applies an operator that search_path resolves")
        if kind == "ident" and w == "case" and nxt[0] == "ident" and words[i + 1] != "when":
            report(line, "CASE x WHEN applies = through search_path")
        if kind == "op":
            allowed = False
            if value == "*" and (prev[1] in ("(", ".") or (words[i - 1] == "select")):
                allowed = True  # count(*), t.*, SELECT *
            if value == "=" and first in ("alter", "set"):
                allowed = True  # ALTER ... SET x = y: a setting, not an operator
            if value in ("=",) and i >= 2 and words[i - 1] == "search_path" and words[i - 2] == "set":
                allowed = True  # a function's SET search_path = ... clause
            if not allowed:
                report(line, f"bare operator {value}")
        i += 1


def check_file(path: str) -> list[str]:
    problems: list[str] = []
    name = os.path.relpath(path)
    text = open(path, encoding="utf-8").read()
    for stmt in statements(text):
        words = [t[1].lower() for t in stmt[:4] if t[0] == "ident"]
        if words[:1] in (["comment"], ["revoke"], ["grant"]):
            continue

        def report(line, what):
            problems.append(f"{name}:{line}: {what}")

        body_pinned = PINNED.search(" ".join(t[1] for t in stmt)) is not None
        outer = []
        for tok in stmt:
            if tok[0] == "dollar":
                if not body_pinned:
                    body = re.match(r"\$([A-Za-z_]*)\$(.*)\$\1\$\Z", tok[1], re.S).group(2)
                    start = tok[2]
                    inner = list(statements(body))
                    for s in inner:
                        check_tokens([(k, v, l + start - 1) for k, v, l in s], report)
                continue
            outer.append(tok)
        check_tokens(outer, report)
    return problems


def main(argv: list[str]) -> int:
    files = argv or sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "sql", "zim_pin--*.sql")))
    problems: list[str] = []
    for f in files:
        problems += check_file(f)
    for p in problems:
        print(p)
    print(f"extension scripts: {len(files)} files, {len(problems)} unqualified operators or functions")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
