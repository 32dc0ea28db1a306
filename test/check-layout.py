#!/usr/bin/env python3
"""test/check-layout.py: the rules of CONTRIBUTING.md that a script can check.

- calls between files of src/ go one way, down the layers listed at the top of
  src/zim_pin.h (a file calls only files listed below it, and files on one line
  of CONTRIBUTING.md's table share a layer only in name: they may not call
  each other either, unless listed below);
- no function is over 100 lines, except the GUC definitions;
- no file but src/compat.h tests PG_VERSION_NUM;
- every file opens with a comment naming itself.
Prints one line per violation and exits 1 if there is any.
"""
import os
import re
import sys

src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
header = open(os.path.join(src, "zim_pin.h")).read()
order = re.findall(r"^ \*\t ([a-z_]+\.c)\t", header, re.M)
files = sorted(f for f in os.listdir(src) if f.endswith(".c"))
problems = []
if sorted(order) != files:
    problems.append(f"zim_pin.h lists {order}, src/ has {files}")

text = {f: open(os.path.join(src, f)).read() for f in files}
# functions defined at file level: a name at column 0 followed by "(" whose
# previous line is a return type
defined = {}
for f, t in text.items():
    for m in re.finditer(r"^(?:[A-Za-z_][\w \*]*\n)([A-Za-z_]\w*)\(", t, re.M):
        defined[m.group(1)] = f

for f, t in text.items():
    rank = order.index(f) if f in order else -1
    body = re.sub(r"/\*.*?\*/", "", t, flags=re.S)
    for name in set(re.findall(r"\b(Zim[A-Z]\w*)\s*\(", body)):
        g = defined.get(name)
        if g is None or g == f:
            continue
        if order.index(g) <= rank:
            problems.append(f"{f} calls {name} of {g}, which is not below it")

for f, t in text.items():
    if not t.startswith("/*") or f not in t.split("*/", 1)[0]:
        problems.append(f"{f} does not open with a comment naming itself")
    lines = t.split("\n")
    for i, l in enumerate(lines):
        m = re.match(r"^([A-Za-z_]\w*)\(", l)
        if not m or i == 0 or not lines[i - 1].strip() or lines[i - 1].strip().endswith(";"):
            continue
        j = i
        while j < len(lines) and not lines[j].startswith("{") and not lines[j].rstrip().endswith(";"):
            j += 1
        if j >= len(lines) or not lines[j].startswith("{"):
            continue
        k = j + 1
        while k < len(lines) and not lines[k].startswith("}"):
            k += 1
        if k - i + 1 > 100 and m.group(1) != "ZimDefineSettings":
            problems.append(f"{f}:{i + 1} {m.group(1)} is {k - i + 1} lines")

for f in sorted(os.listdir(src)):
    if not f.endswith((".c", ".h")):
        continue
    if f != "compat.h" and "PG_VERSION_NUM" in open(os.path.join(src, f)).read():
        problems.append(f"{f} tests PG_VERSION_NUM (only compat.h may)")

for p in problems:
    print(p)
print(f"layout: {len(files)} files, {len(defined)} functions, {len(problems)} problems")
sys.exit(1 if problems else 0)
