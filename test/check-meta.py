#!/usr/bin/env python3
"""check-meta.py -- META.json is valid PGXN metadata (Meta Spec 1.0.0) and in
step with the rest of the checkout.

PGXN reads META.json when a release is uploaded and refuses one that does
not follow the spec (https://pgxn.org/spec/, version 1.0.0).  This checks
every rule of that spec that can be checked from the file alone: the
required keys, the type and form of each key (Terms, semantic versions,
version ranges, licenses, paths, URIs, e-mail addresses, tags, the
release status), and that no key is unknown (custom keys start with x_ or
X_).  Then it checks META.json against the checkout:

  - its version, and the version of the zim_pin extension it provides, are
    zim_pin.control's default_version as a semantic version (1.5 -> 1.5.0);
  - the files it names exist;
  - the majors it supports (the PostgreSQL version range of its runtime
    prerequisites, and the sentence in its description) are the README's:
    the sentence "zim_pin supports PostgreSQL ..." and the rows of the table
    under "Supported PostgreSQL versions", and the majors of run-tests --all.

The standard library only (no JSON Schema module is installed here).

Usage: check-meta.py [--self-test] [META.json]
Prints each problem, then a summary line; exits 1 if there was a problem.
--self-test checks that the checker refuses a set of broken variants of
the checkout's META.json (each must be refused for its own reason) and
accepts the file itself.
"""

from __future__ import annotations

import copy
import json
import os
import re
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

LICENSES = {
    "agpl_3", "apache_1_1", "apache_2_0", "artistic_1", "artistic_2", "bsd",
    "freebsd", "gfdl_1_2", "gfdl_1_3", "gpl_1", "gpl_2", "gpl_3", "lgpl_2_1",
    "lgpl_3_0", "mit", "mozilla_1_0", "mozilla_1_1", "openssl", "perl_5",
    "postgresql", "qpl_1_0", "ssleay", "sun", "zlib", "open_source",
    "restricted", "unrestricted", "unknown",
}
PHASES = {"configure", "build", "test", "runtime", "develop"}
RELATIONS = {"requires", "recommends", "suggests", "conflicts"}
TOP_REQUIRED = ["name", "version", "abstract", "maintainer", "license", "provides", "meta-spec"]
TOP_OPTIONAL = ["description", "generated_by", "tags", "no_index", "prereqs",
                "release_status", "resources"]

_NUM = r"(?:0|[1-9]\d*)"
_PRE = r"(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)"
SEMVER = (rf"{_NUM}\.{_NUM}\.{_NUM}(?:-{_PRE}(?:\.{_PRE})*)?"
          r"(?:\+[0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*)?")
SEMVER_RE = re.compile(rf"^{SEMVER}$")
RANGE_PART_RE = re.compile(rf"^(?:(?:[=!]=|[<>]=?)\s*)?(?:{SEMVER})$")
TERM_RE = re.compile(r"^[^/\\\s\x00-\x1f\x7f]{2,}$")
TAG_RE = re.compile(r"^[^/\\\x00-\x1f\x7f]{2,255}$")
URI_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:[^\s]+$")
EMAIL_RE = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
CUSTOM_RE = re.compile(r"^[xX]_.")


class Checker:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def bad(self, where: str, what: str) -> None:
        self.problems.append(f"{where}: {what}")

    # --- the forms of the spec --------------------------------------------
    def keys(self, where: str, obj: dict, allowed: set[str], required: list[str] = ()) -> None:
        for k in required:
            if k not in obj:
                self.bad(where, f'the required key "{k}" is missing')
        for k in obj:
            if k not in allowed and not CUSTOM_RE.match(k):
                self.bad(where, f'"{k}" is not a key of the spec (custom keys start with x_)')

    def obj(self, where: str, v, min_props: int = 1) -> bool:
        if not isinstance(v, dict):
            self.bad(where, "must be an object")
            return False
        if len(v) < min_props:
            self.bad(where, "must not be empty")
            return False
        return True

    def string(self, where: str, v, min_len: int = 1) -> bool:
        if not isinstance(v, str) or len(v) < min_len:
            self.bad(where, f"must be a string of at least {min_len} character(s)")
            return False
        return True

    def form(self, where: str, v, pattern: re.Pattern, what: str) -> bool:
        """v is a string matching pattern; else a problem saying it is not `what`."""
        if isinstance(v, str) and pattern.match(v):
            return True
        self.bad(where, f"{v!r} is not {what}")
        return False

    def term(self, where: str, v) -> None:
        self.form(where, v, TERM_RE, "a Term (2 or more characters, no / \\ space or control)")

    def semver(self, where: str, v) -> None:
        self.form(where, v, SEMVER_RE, "a semantic version (like 1.5.0)")

    def version_range(self, where: str, v) -> None:
        if v == 0 or v == "0":
            return
        if not isinstance(v, str):
            self.bad(where, f"{v!r} is not a version range")
            return
        for part in v.split(","):
            if not RANGE_PART_RE.match(part.strip()):
                self.bad(where, f"{v!r} is not a version range ({part.strip()!r})")
                return

    def path(self, where: str, v) -> None:
        if not self.string(where, v, 2):
            return
        if v.startswith("/") or "\\" in v or ".." in v.split("/"):
            self.bad(where, f"{v!r} is not a relative path in Unix form")

    def uri(self, where: str, v) -> None:
        self.form(where, v, URI_RE, "a URI")

    def email(self, where: str, v) -> None:
        self.form(where, v, EMAIL_RE, "an e-mail address")

    # --- the keys ----------------------------------------------------------
    def maintainer(self, v) -> None:
        items = v if isinstance(v, list) else [v]
        if isinstance(v, list) and not v:
            self.bad("maintainer", "must not be empty")
        for i, m in enumerate(items):
            if not self.string(f"maintainer[{i}]", m):
                continue
            # the spec's preferred form is "name <e-mail>"; this project
            # wants a way to reach the maintainer, so it asks for it
            mm = re.match(r"^(.+?)\s*<([^<>]+)>$", m)
            if not mm:
                self.bad(f"maintainer[{i}]", f'{m!r} has no contact: write "name <e-mail>"')
            else:
                self.email(f"maintainer[{i}]", mm.group(2))

    def license(self, v) -> None:
        if isinstance(v, str):
            if v not in LICENSES:
                self.bad("license", f"{v!r} is not one of the spec's license names")
        elif isinstance(v, list):
            if not v:
                self.bad("license", "must not be empty")
            for x in v:
                if x not in LICENSES:
                    self.bad("license", f"{x!r} is not one of the spec's license names")
        elif isinstance(v, dict):
            if not v:
                self.bad("license", "must not be empty")
            for name, url in v.items():
                self.uri(f"license.{name}", url)
        else:
            self.bad("license", "must be a string, an array or an object")

    def provides(self, v) -> None:
        if not self.obj("provides", v):
            return
        for name, ext in v.items():
            where = f"provides.{name}"
            self.term(where, name)
            if not self.obj(where, ext):
                continue
            self.keys(where, ext, {"file", "version", "abstract", "docfile"}, ["file", "version"])
            if "file" in ext:
                self.path(f"{where}.file", ext["file"])
            if "docfile" in ext:
                self.path(f"{where}.docfile", ext["docfile"])
            if "version" in ext:
                self.semver(f"{where}.version", ext["version"])
            if "abstract" in ext:
                self.string(f"{where}.abstract", ext["abstract"])

    def meta_spec(self, v) -> None:
        if not self.obj("meta-spec", v):
            return
        self.keys("meta-spec", v, {"version", "url"}, ["version"])
        ver = v.get("version")
        if "version" in v and (not isinstance(ver, str) or not re.match(r"^1\.0\.\d+$", ver)):
            self.bad("meta-spec.version", f"{ver!r}: this file follows the spec 1.0.0 (1.0.x)")
        if "url" in v and v["url"] not in ("https://pgxn.org/meta/spec.txt", "http://pgxn.org/meta/spec.txt"):
            self.bad("meta-spec.url", f"{v['url']!r} is not the spec's URL")

    def prereqs(self, v) -> None:
        if not self.obj("prereqs", v):
            return
        self.keys("prereqs", v, PHASES)
        for phase, rels in v.items():
            if CUSTOM_RE.match(phase) or phase not in PHASES:
                continue
            where = f"prereqs.{phase}"
            if not self.obj(where, rels):
                continue
            self.keys(where, rels, RELATIONS)
            for rel, deps in rels.items():
                if rel not in RELATIONS:
                    continue
                if not self.obj(f"{where}.{rel}", deps):
                    continue
                for dep, rng in deps.items():
                    self.term(f"{where}.{rel}", dep)
                    self.version_range(f"{where}.{rel}.{dep}", rng)

    def resources(self, v) -> None:
        if not self.obj("resources", v):
            return
        self.keys("resources", v, {"homepage", "bugtracker", "repository"})
        if "homepage" in v:
            self.uri("resources.homepage", v["homepage"])
        bt = v.get("bugtracker")
        if bt is not None and self.obj("resources.bugtracker", bt):
            self.keys("resources.bugtracker", bt, {"web", "mailto"})
            if "web" not in bt and "mailto" not in bt:
                self.bad("resources.bugtracker", 'needs "web" or "mailto"')
            if "web" in bt:
                self.uri("resources.bugtracker.web", bt["web"])
            if "mailto" in bt:
                self.email("resources.bugtracker.mailto", bt["mailto"])
        repo = v.get("repository")
        if repo is not None and self.obj("resources.repository", repo):
            self.keys("resources.repository", repo, {"url", "web", "type"})
            if "web" not in repo and not ("url" in repo and "type" in repo):
                self.bad("resources.repository", 'needs "web", or "url" with "type"')
            for k in ("url", "web"):
                if k in repo:
                    self.uri(f"resources.repository.{k}", repo[k])
            if "type" in repo and (not isinstance(repo["type"], str) or not re.match(r"^[a-z]+$", repo["type"])):
                self.bad("resources.repository.type", f"{repo['type']!r} is not a lowercase VCS name")

    def no_index(self, v) -> None:
        if not self.obj("no_index", v):
            return
        self.keys("no_index", v, {"file", "directory"})
        if "file" not in v and "directory" not in v:
            self.bad("no_index", 'needs "file" or "directory"')
        for k in ("file", "directory"):
            if k not in v:
                continue
            items = v[k] if isinstance(v[k], list) else [v[k]]
            if isinstance(v[k], list) and (not v[k] or len(set(map(str, v[k]))) != len(v[k])):
                self.bad(f"no_index.{k}", "must be a non-empty list without repeats")
            for x in items:
                self.path(f"no_index.{k}", x)

    def tags(self, v) -> None:
        if not isinstance(v, list) or not v:
            self.bad("tags", "must be a non-empty array")
            return
        for t in v:
            self.form("tags", t, TAG_RE, "a tag (2 to 255 characters, no / \\ or control)")

    def spec(self, meta) -> None:
        if not isinstance(meta, dict):
            self.bad("META.json", "must hold one object")
            return
        self.keys("META.json", meta, set(TOP_REQUIRED) | set(TOP_OPTIONAL), TOP_REQUIRED)
        checks = {
            "name": lambda v: self.term("name", v),
            "version": lambda v: self.semver("version", v),
            "abstract": lambda v: self.string("abstract", v),
            "description": lambda v: self.string("description", v),
            "generated_by": lambda v: self.string("generated_by", v),
            "maintainer": self.maintainer,
            "license": self.license,
            "provides": self.provides,
            "meta-spec": self.meta_spec,
            "prereqs": self.prereqs,
            "release_status": self.release_status,
            "resources": self.resources,
            "no_index": self.no_index,
            "tags": self.tags,
        }
        for key, check in checks.items():
            if key in meta:
                check(meta[key])

    def release_status(self, v) -> None:
        if v not in ("stable", "testing", "unstable"):
            self.bad("release_status", f"{v!r} is not stable, testing or unstable")

    # --- in step with the checkout -------------------------------------------
    def checkout(self, meta, root: str) -> None:
        if not isinstance(meta, dict):
            return
        # this project asks for what the spec leaves optional
        for k in ("release_status", "resources", "prereqs", "description"):
            if k not in meta:
                self.bad("META.json", f'"{k}" is missing (zim_pin always states it)')
        control = read(os.path.join(root, "zim_pin.control"))
        m = re.search(r"^default_version\s*=\s*'([^']+)'", control, re.M)
        if not m:
            self.bad("zim_pin.control", "no default_version")
            return
        default = m.group(1)
        want = default + ".0" if re.match(r"^\d+\.\d+$", default) else default
        if meta.get("version") != want:
            self.bad("version", f"{meta.get('version')!r}, but zim_pin.control's default_version is "
                     f"{default!r} ({want})")
        ext = (meta.get("provides") or {}).get("zim_pin")
        if not isinstance(ext, dict):
            self.bad("provides", "does not name the zim_pin extension")
        else:
            if ext.get("version") != want:
                self.bad("provides.zim_pin.version", f"{ext.get('version')!r}, but zim_pin.control's "
                         f"default_version is {default!r} ({want})")
            for k in ("file", "docfile"):
                if isinstance(ext.get(k), str) and not os.path.isfile(os.path.join(root, ext[k])):
                    self.bad(f"provides.zim_pin.{k}", f"{ext[k]!r} is not a file of the checkout")
        self.majors(meta, root)

    def majors(self, meta, root: str) -> None:
        readme = read(os.path.join(root, "README.md"))
        found: dict[str, list[int]] = {}
        m = re.search(r"zim_pin supports PostgreSQL ([0-9, and]+?) from one source", readme)
        found["the README's sentence"] = list_majors(m.group(1)) if m else []
        sec = re.search(r"^## Supported PostgreSQL versions\n(.*?)^## ", readme, re.M | re.S)
        rows = re.findall(r"^\| (\d+) \|", sec.group(1), re.M) if sec else []
        found["the README's table"] = [int(r) for r in rows]
        run_tests = read(os.path.join(root, "test", "run-tests"))
        m = re.search(r"--all\) majors=\(([\d ]+)\)", run_tests)
        found["run-tests --all"] = [int(x) for x in m.group(1).split()] if m else []
        m = re.search(r"Supports PostgreSQL ([0-9, and]+?)\.", str(meta.get("description", "")))
        found["META.json's description"] = list_majors(m.group(1)) if m else []
        rng = (((meta.get("prereqs") or {}).get("runtime") or {}).get("requires") or {}).get("PostgreSQL")
        found["META.json's runtime requirement"] = range_majors(rng)
        want = found["the README's sentence"]
        if not want:
            self.bad("README.md", 'no sentence "zim_pin supports PostgreSQL ... from one source"')
            return
        for what, majors in found.items():
            if majors != want:
                self.bad("majors", f"{what} says {majors or 'nothing'}, the README's sentence {want}")


def list_majors(text: str) -> list[int]:
    return sorted(int(x) for x in re.findall(r"\d+", text))


def range_majors(rng) -> list[int]:
    """The majors a range ">= 15.0.0, < 19.0.0" admits (only that form)."""
    if not isinstance(rng, str):
        return []
    m = re.match(r"^>=\s*(\d+)\.0\.0,\s*<\s*(\d+)\.0\.0$", rng.strip())
    if not m:
        return []
    return list(range(int(m.group(1)), int(m.group(2))))


def read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return ""


def check(meta, root: str) -> list[str]:
    c = Checker()
    c.spec(meta)
    c.checkout(meta, root)
    return c.problems


def self_test(meta: dict, root: str) -> int:
    """Each broken variant must be refused, with a problem naming `expect`."""

    def setp(path, value):
        def f(m):
            *head, last = path
            for k in head:
                m = m[k]
            if value is KeyError:
                del m[last]
            else:
                m[last] = value
        return f

    cases = [
        ("meta-spec 1.1.0", setp(["meta-spec", "version"], "1.1.0"), "meta-spec.version"),
        ("no maintainer", setp(["maintainer"], KeyError), '"maintainer" is missing'),
        ("a maintainer without contact", setp(["maintainer"], "zim_pin developers"), "no contact"),
        ("an unknown license", setp(["license"], "PostgreSQL"), "license"),
        ("a two-part version", setp(["version"], "1.5"), "not a semantic version"),
        ("the version not the control file's", setp(["version"], "9.9.9"), "default_version"),
        ("the extension's version not the control file's",
         setp(["provides", "zim_pin", "version"], "1.4.0"), "provides.zim_pin.version"),
        ("a missing file", setp(["provides", "zim_pin", "file"], "sql/nothing.sql"), "not a file"),
        ("an unknown key", setp(["homepage"], "https://example.org/"), '"homepage" is not a key'),
        ("a custom key", setp(["x_comment"], "fine"), None),
        ("a bad release_status", setp(["release_status"], "final"), "release_status"),
        ("no release_status", setp(["release_status"], KeyError), '"release_status" is missing'),
        ("no resources", setp(["resources"], KeyError), '"resources" is missing'),
        ("a bugtracker that is no URI", setp(["resources", "bugtracker", "web"], "issues"), "not a URI"),
        ("a repository url without type", setp(["resources", "repository"], {"url": "https://x.org/r.git"}),
         "resources.repository"),
        ("a bad version range", setp(["prereqs", "runtime", "requires", "PostgreSQL"], ">= 15"), "version range"),
        ("an unknown phase", setp(["prereqs", "install"], {"requires": {"x1": 0}}), '"install" is not a key'),
        ("an unknown relationship", setp(["prereqs", "runtime", "needs"], {"x1": 0}), '"needs" is not a key'),
        ("a range of other majors", setp(["prereqs", "runtime", "requires", "PostgreSQL"], ">= 15.0.0, < 18.0.0"),
         "runtime requirement"),
        ("a description of other majors", setp(["description"], "Supports PostgreSQL 15 and 16."), "description"),
        ("a name with a slash", setp(["name"], "zim/pin"), "not a Term"),
        ("a tag of one character", setp(["tags"], ["x"]), "not a tag"),
        ("an absolute path", setp(["provides", "zim_pin", "docfile"], "/etc/passwd"), "relative path"),
    ]
    failures = 0
    for what, mutate, expect in cases:
        m = copy.deepcopy(meta)
        mutate(m)
        problems = check(m, root)
        if expect is None:
            ok = not problems
        else:
            ok = any(expect in p for p in problems)
        if not ok:
            failures += 1
            print(f"self-test: {what}: expected {'no problem' if expect is None else repr(expect)}, got {problems}")
    problems = check(meta, root)
    if problems:
        failures += 1
        print(f"self-test: the checkout's META.json itself is refused: {problems}")
    print(f"self-test: {len(cases) + 1 - failures} of {len(cases) + 1} cases as expected")
    return 1 if failures else 0


def main(argv: list[str]) -> int:
    args = [a for a in argv if a != "--self-test"]
    path = args[0] if args else os.path.join(ROOT, "META.json")
    root = os.path.dirname(os.path.abspath(path))
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        print(f"{path}: cannot read it as JSON: {e}")
        print("META.json: not valid")
        return 1
    if "--self-test" in argv:
        return self_test(meta, root)
    problems = check(meta, root)
    for p in problems:
        print(p)
    if problems:
        print(f"META.json: {len(problems)} problem(s) against PGXN Meta Spec 1.0.0 and the checkout")
        return 1
    print(f"META.json is valid PGXN Meta Spec 1.0.0 metadata for zim_pin {meta['version']}, "
          "in step with zim_pin.control and the README's majors")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
