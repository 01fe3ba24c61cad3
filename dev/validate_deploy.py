"""The checks behind dev/validate-deploy (run it, not this file: it installs the tools).

1. docker-compose.yml through `docker-compose config` (Debian's docker-compose: the
   Compose file schema, YAML, interpolation), in an empty environment: a `${VAR:?}` the
   operator must set gets a placeholder, and a `${VAR}` that would be blank is an error.
2. every file in k8s/ through kubernetes-validate, strict (unknown fields are errors),
   against the pinned Kubernetes version.
3. policy: every container of a Deployment/StatefulSet/DaemonSet has liveness and
   readiness probes on a port it declares, CPU and memory requests and a memory limit
   (no CPU limit is required: throttling hurts latency more than it protects); every
   compose service built from this repository has a healthcheck; each of our
   workloads listens on a non-loopback address whose port its probes/healthcheck use;
   every deployable binary has a compose service and a k8s workload.
4. environment: what each deployed binary reads, from its Rust source (below), against
   what its compose service or k8s workload sets (env, envFrom ConfigMaps in k8s/, the
   Secret keys a workload declares in its `threadline/secret-keys` annotation, ENV of
   the Dockerfile): a variable read without a default must be set; a variable set that
   no binary reads is reported too (a typo, or a setting that was removed).

How the Rust source is read (crates/common/src/config.rs has the helpers):
- `config::var("X")` is optional (None when unset or empty), unless the result goes
  straight into `.ok_or(..)`, `.expect(..)`, `.unwrap()` or `.context(..)`;
  `config::parse_or("X", default)` has a default; `config::required("X")` and a literal
  `ConfigError::Missing { name: "X" }` are required ("A or B" in a Missing name: one of
  them). A helper called with its own parameter as the name (`Rate::from_env(name, ..)`)
  reads the literal its callers pass.
- Which binary reads what: from each binary's main file, functions are followed by name
  (`Type::f`, `module::f`, `Self::f`, `.f(` to every method f, bare names of the file or
  of its `use`s), only into the workspace crates the binary depends on (Cargo.toml
  [dependencies]); tests, benches, examples and `#[cfg(test)]` items are not read. This
  over-approximates (a read reachable by name counts), so it errs towards "required".
- A read inside an arm of `match config::var("SEL")...` (or `if config::parse_or("SEL",
  bool)? {`, `if let Some(..) = config::var("SEL")`, after `let Some(..) =
  config::var("SEL") else {..};`) counts only when SEL has that value:
  `QDRANT_URL` only with `VECTOR_STORE=qdrant`, `EMBEDDING_MODEL_DIR` only with the local
  embedder, Kafka in command-api only with the relay on. Conditions add up along calls.
- The LLM providers (crates/llm/src/config.rs) read names built at run time
  (`LLM_<NAME>_KIND`, ...): that file is modelled here (see check_llm), and a fingerprint
  of the code it mirrors is checked so that a change there fails until this model follows.
- Any other direct read of the process environment (std::env::var, vars, ...) or a
  `required` whose name cannot be resolved is an error: add it to this model.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
# Packages whose binaries are deployed (the others are development tools: dev-token, the e2e
# benchmarks).
DEPLOYED_PACKAGES = ("command-api", "query-api", "projectors")
SECRET_KEYS_ANNOTATION = "threadline/secret-keys"
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")
LLM_CONFIG = "crates/llm/src/config.rs"
# Lines of crates/llm/src/config.rs that check_llm mirrors: if one of them changes, the
# model below must be checked against the new code (and this list updated).
LLM_FINGERPRINT = (
    'const VAR: &str = "LLM_PROVIDERS";',
    'return Ok(vec!["local".to_owned()]);',
    'let var = |suffix: &str| format!("LLM_{}_{suffix}", name.to_ascii_uppercase());',
    'None if name == "local" => "local".to_owned(),',
    "None => return Err(ConfigError::Missing { name: kind_var }),",
    'model: env.required(&var("MODEL"))?.to_owned(),',
    '"local" => ProviderKind::Local,',
    '"openai" => ProviderKind::OpenAi(OpenAiConfig {',
    '"anthropic" => ProviderKind::Anthropic(AnthropicConfig {',
    'k.starts_with("LLM_ROUTE_")',
)
LLM_KINDS_WITH_MODEL = ("openai", "anthropic")


class Report:
    def __init__(self) -> None:
        self.errors: list[str] = []
        self.notes: list[str] = []

    def error(self, where: str, msg: str) -> None:
        self.errors.append(f"{where}: {msg}")

    def note(self, msg: str) -> None:
        self.notes.append(msg)


# --- Rust source, read by name ---------------------------------------------------------

CHAR_LIT = re.compile(r"'(\\(x[0-9a-fA-F]{2}|u\{[0-9a-fA-F]+\}|.)|[^\\'\n])'")


def lex(text: str) -> tuple[str, str]:
    """(code, skel): comments blanked in both; in skel string and char literals are blanked
    too, so braces and commas there are structure. Same length and lines as text."""
    code, skel = list(text), list(text)
    i, n = 0, len(text)

    def blank(a: int, b: int, both: bool) -> None:
        for k in range(a, b):
            if text[k] != "\n":
                skel[k] = " "
                if both:
                    code[k] = " "

    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            blank(i, j, True)
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            blank(i, j, True)
            i = j
        elif c in "rb" and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")) and (
            m := re.compile(r'b?r(#*)"').match(text, i)
        ):
            end = text.find('"' + m.group(1), m.end())
            end = n if end < 0 else end
            blank(m.end(), end, False)
            i = end + 1 + len(m.group(1))
        elif c == '"' or (c == "b" and text.startswith('b"', i) and (i == 0 or not text[i - 1].isalnum())):
            j = i + (2 if c == "b" else 1)
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            blank(i + (2 if c == "b" else 1), j, False)
            i = j + 1
        elif c == "'" and (m := CHAR_LIT.match(text, i)):
            blank(i + 1, m.end() - 1, False)
            i = m.end()
        else:
            i += 1
    return "".join(code), "".join(skel)


def matching(skel: str, open_at: int) -> int:
    """Index of the bracket closing the one at open_at (skel has no literals)."""
    pairs = {"{": "}", "(": ")", "[": "]"}
    stack = [pairs[skel[open_at]]]
    i = open_at + 1
    while i < len(skel) and stack:
        ch = skel[i]
        if ch in pairs:
            stack.append(pairs[ch])
        elif ch in ")}]":
            stack.pop()
        i += 1
    return i - 1


def split_top(skel: str, a: int, b: int) -> list[tuple[int, int]]:
    """Ranges of skel[a:b] split at commas outside brackets."""
    parts, depth, start = [], 0, a
    for i in range(a, b):
        ch = skel[i]
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append((start, i))
            start = i + 1
    if skel[start:b].strip():
        parts.append((start, b))
    return parts


@dataclass
class Fn:
    crate: str  # package name
    file: Path
    module: str
    owner: str | None  # impl/trait type
    name: str
    start: int
    body: tuple[int, int]  # braces, inclusive
    params: list[str]
    src: "Source"

    @property
    def key(self) -> tuple[str, int]:
        return (str(self.file), self.start)

    def where(self, pos: int) -> str:
        return f"{self.file.relative_to(ROOT)}:{self.src.line(pos)}"


@dataclass
class Source:
    path: Path
    crate: str
    lib: str
    module: str
    code: str
    skel: str
    imports: set[str]
    helpers_imported: bool  # `use common::config::{var, required, parse_or}` style
    fns: list[Fn] = field(default_factory=list)

    def line(self, pos: int) -> int:
        return self.code.count("\n", 0, pos) + 1


def strip_cfg_test(code: str, skel: str) -> tuple[str, str]:
    code, skel = list(code), list(skel)
    s = "".join(skel)
    for m in re.finditer(r"#\[cfg\(test\)\]", s):
        i = m.end()
        while i < len(s) and s[i] not in "{;":
            i += 1
        end = matching(s, i) if i < len(s) and s[i] == "{" else i
        for k in range(m.start(), min(end + 1, len(s))):
            if s[k] != "\n":
                code[k] = skel[k] = " "
    return "".join(code), "".join(skel)


def item_level(skel: str, pos: int) -> bool:
    j = pos - 1
    while j >= 0 and skel[j].isspace():
        j -= 1
    if j < 0 or skel[j] in "};]{":
        return True
    word = re.search(r"(\w+)$", skel[: j + 1])
    return bool(word and word.group(1) in ("unsafe", "pub", "default"))


def parse_source(path: Path, crate: str, lib: str) -> Source:
    text = path.read_text()
    code, skel = strip_cfg_test(*lex(text))
    stem = path.stem
    if stem in ("lib", "main"):
        module = lib
    elif stem == "mod":
        module = path.parent.name
    else:
        module = stem
    imports: set[str] = set()
    helpers = False
    for m in re.finditer(r"\buse\s+([^;]+);", skel):
        words = set(re.findall(r"\b\w+\b", m.group(1)))
        imports |= words
        if "config" in words and words & {"var", "required", "parse_or"}:
            helpers = True
    src = Source(path, crate, lib, module, code, skel, imports, helpers)
    # impl / trait blocks: (start, end, type)
    blocks = []
    for m in re.finditer(r"\b(impl|trait)\b", skel):
        if not item_level(skel, m.start()):
            continue
        i = m.end()
        while i < len(skel) and skel[i] not in "{;":
            i += 1
        if i >= len(skel) or skel[i] != "{":
            continue
        header = skel[m.end() : i]
        if m.group(1) == "trait":
            t = re.match(r"\s*(\w+)", header)
            name = t.group(1) if t else None
        else:
            h = header.strip()
            if h.startswith("<"):
                depth, k = 0, 0
                for k, ch in enumerate(h):
                    depth += ch == "<"
                    depth -= ch == ">"
                    if depth == 0:
                        break
                h = h[k + 1 :]
            h = re.split(r"\bwhere\b", h)[0]
            if re.search(r"\bfor\b", h):
                h = re.split(r"\bfor\b", h)[-1]
            names = re.findall(r"(\w+)\s*(?:<|$)", h.strip())
            name = names[0] if names else None
        blocks.append((i, matching(skel, i), name))
    for m in re.finditer(r"\bfn\s+([A-Za-z_]\w*)", skel):
        i = m.end()
        # parameters: the first ( after the name (past generics)
        while i < len(skel) and skel[i] not in "({;":
            i += 1
        if i >= len(skel) or skel[i] != "(":
            continue
        pclose = matching(skel, i)
        params = []
        for a, b in split_top(skel, i + 1, pclose):
            p = skel[a:b].split(":")[0].strip()
            p = re.sub(r"^(mut\s+|&\s*(mut\s+)?)", "", p).strip()
            if p not in ("self",) and not p.endswith("self"):
                params.append(p)
        j = pclose + 1
        while j < len(skel) and skel[j] not in "{;":
            j += 1
        if j >= len(skel) or skel[j] != "{":
            continue
        owner = None
        for a, b, name in blocks:
            if a < m.start() < b and (owner is None or a > owner[0]):
                owner = (a, name)
        src.fns.append(
            Fn(crate, path, module, owner[1] if owner else None, m.group(1), m.start(),
               (j, matching(skel, j)), params, src)
        )
    return src


@dataclass
class Crate:
    name: str
    lib: str
    dir: Path
    deps: list[str]
    sources: list[Source] = field(default_factory=list)
    bins: dict[str, Path] = field(default_factory=dict)


def load_workspace() -> dict[str, Crate]:
    ws = tomllib.loads((ROOT / "Cargo.toml").read_text())
    members = ws["workspace"]["members"]
    crates: dict[str, Crate] = {}
    for member in members:
        d = ROOT / member
        manifest = tomllib.loads((d / "Cargo.toml").read_text())
        name = manifest["package"]["name"]
        deps = list(manifest.get("dependencies", {}).keys())
        crates[name] = Crate(name, name.replace("-", "_"), d, deps)
    for c in crates.values():
        c.deps = [d for d in c.deps if d in crates]
        src = c.dir / "src"
        if (src / "main.rs").exists():
            c.bins[c.name] = src / "main.rs"
        for b in sorted((src / "bin").glob("*.rs")) if (src / "bin").is_dir() else []:
            c.bins[b.stem] = b
        skip = set(c.bins.values())
        # Files of `#[cfg(test)] mod name;` are test code.
        for f in src.rglob("*.rs"):
            for m in re.finditer(r"#\[cfg\(test\)\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", f.read_text()):
                base = f.parent if f.name in ("lib.rs", "main.rs", "mod.rs") else f.parent / f.stem
                skip |= {base / f"{m.group(1)}.rs"} | set((base / m.group(1)).rglob("*.rs"))
        for f in sorted(src.rglob("*.rs")):
            if f in skip:
                continue
            c.sources.append(parse_source(f, c.name, c.lib))
    return crates


def closure(crates: dict[str, Crate], name: str) -> set[str]:
    seen, todo = set(), [name]
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(crates[n].deps)
    return seen


# A condition: (selector variable, "in" | "not_in", frozenset of values; None = unset).
Cond = tuple[str, str, frozenset]

HELPER = re.compile(r"(?:\b(?:crate|platform|common)::)?\bconfig::(var|required|parse_or)\s*\(")
BARE_HELPER = re.compile(r"(?<![\w.:])(var|required|parse_or)\s*\(")
MISSING = re.compile(r"ConfigError::Missing\s*\{\s*name\s*:\s*")
DIRECT_ENV = re.compile(r"\b(?:std::)?env::(var|var_os|vars|vars_os)\b|\bdotenv")
ENV_FILTER = re.compile(r"EnvFilter::(?:try_)?from_default_env")
LITERAL = re.compile(r'^\s*"([^"]*)"\s*$')


def selector_of(code: str) -> str | None:
    m = re.fullmatch(r"\s*(?:(?:crate|platform|common)::)?(?:config::)?var\s*\(\s*\"(\w+)\"\s*\)\s*(\.as_deref\(\)|\.as_ref\(\)\.map\(String::as_str\))?\s*", code)
    return m.group(1) if m else None


def conditions(src: Source, a: int, b: int) -> list[tuple[int, int, Cond]]:
    """Ranges of skel[a:b] that run only under a condition on a variable."""
    out = []
    skel, code = src.skel, src.code
    for m in re.finditer(r"\bmatch\b", skel[a:b]):
        i = a + m.end()
        k = i
        while k < b and skel[k] != "{":
            if skel[k] in "([":
                k = matching(skel, k)
            k += 1
        if k >= b:
            continue
        sel = selector_of(code[i:k])
        if not sel:
            continue
        close = matching(skel, k)
        seen: set = set()
        p = k + 1
        while p < close:
            arrow = skel.find("=>", p, close)
            if arrow < 0:
                break
            pattern = code[p:arrow]
            values = set(re.findall(r'Some\(\s*"([^"]*)"\s*\)', pattern))
            if re.search(r"\bNone\b", pattern):
                values.add(None)
            wildcard = re.search(r"Some\(\s*[a-z_]\w*\s*\)|(^|\|)\s*_\s*($|\|)", pattern)
            q = arrow + 2
            while q < close and skel[q].isspace():
                q += 1
            if q < close and skel[q] == "{":
                end = matching(skel, q) + 1
                while end < close and skel[end] in " \t\n,":
                    end += 1
            else:
                end = q
                while end < close and skel[end] != ",":
                    if skel[end] in "([{":
                        end = matching(skel, end)
                    end += 1
                end += 1
            cond = (sel, "not_in", frozenset(seen)) if wildcard else (sel, "in", frozenset(values))
            out.append((q, end, cond))
            seen |= values
            p = end
    for m in re.finditer(r"\bif\s+", skel[a:b]):
        i = a + m.end()
        k = i
        while k < b and skel[k] != "{":
            if skel[k] in "([":
                k = matching(skel, k)
            k += 1
        if k >= b:
            continue
        cond_code = code[i:k]
        then_end = matching(skel, k)
        pm = re.fullmatch(r"\s*(?:(?:crate|platform|common)::)?(?:config::)?parse_or\s*\(\s*\"(\w+)\"\s*,\s*(true|false)\s*\)\s*\?\s*", cond_code)
        lm = re.fullmatch(r"\s*let\s+Some\s*\(.*\)\s*=\s*(.*)", cond_code, re.S)
        if pm:
            sel, default = pm.group(1), pm.group(2) == "true"
            yes = frozenset({"true"} | ({None} if default else set()))
            out.append((k, then_end, (sel, "in", yes)))
            em = re.match(r"\s*else\s*\{", skel[then_end + 1 :])
            if em:
                e = then_end + 1 + em.end() - 1
                out.append((e, matching(skel, e), (sel, "not_in", yes)))
        elif lm and (sel := selector_of(lm.group(1))):
            out.append((k, then_end, (sel, "not_in", frozenset({None}))))
    # `let Some(..) = config::var("SEL") else { .. };`: the rest of the block has SEL set.
    for m in re.finditer(r"\blet\s+Some\s*\(", skel[a:b]):
        i = a + m.end() - 1
        eq = skel.find("=", matching(skel, i), b)
        k = eq + 1
        while k < b and skel[k] not in "{;":
            if skel[k] in "([":
                k = matching(skel, k)
            k += 1
        em = re.search(r"\belse\s*$", skel[eq + 1 : k])
        if eq < 0 or k >= b or skel[k] != "{" or not em:
            continue
        sel = selector_of(code[eq + 1 : eq + 1 + em.start()])
        if not sel:
            continue
        # the innermost block around the statement
        depth, o = 0, m.start() + a - 1
        while o > a:
            if skel[o] == "}":
                depth += 1
            elif skel[o] == "{":
                if depth == 0:
                    break
                depth -= 1
            o -= 1
        out.append((matching(skel, k), matching(skel, o), (sel, "not_in", frozenset({None}))))
    return out


@dataclass
class Read:
    var: str  # a name, or "A or B" (one of them)
    kind: str  # required | default | optional
    where: str
    default: str | None = None


@dataclass
class FnScan:
    reads: list[tuple[int, Read]]
    forwards: list[tuple[int, str, int]]  # (pos, kind, param index): reads its parameter
    calls: list[tuple[int, str, str | None, int]]  # (pos, name, qualifier|"."|None, paren)
    direct: list[tuple[int, str]]  # unmodelled environment access
    env_filter: list[int]
    conds: list[tuple[int, int, Cond]]


def scan_fn(fn: Fn, rep: Report) -> FnScan:
    src = fn.src
    code, skel = src.code, src.skel
    a, b = fn.body
    s = FnScan([], [], [], [], [], conditions(src, a, b))
    helper_file = src.path == ROOT / "crates/common/src/config.rs"
    modelled = src.path == ROOT / LLM_CONFIG
    if not helper_file and not modelled:
        hits = [(m, HELPER) for m in HELPER.finditer(skel, a, b)]
        if src.helpers_imported:
            hits += [(m, BARE_HELPER) for m in BARE_HELPER.finditer(skel, a, b)]
        for m, _ in hits:
            kind = m.group(1)
            paren = m.end() - 1
            close = matching(skel, paren)
            args = split_top(skel, paren + 1, close)
            if not args:
                continue
            first = code[args[0][0] : args[0][1]]
            lit = LITERAL.match(first)
            if kind == "var":
                tail = skel[close + 1 : close + 200].split(";")[0]
                required = re.match(r"\s*(\.\s*(as_deref|as_ref|clone)\(\)\s*)*\.\s*(ok_or|ok_or_else|expect|unwrap|context|with_context)\s*\(", tail)
                kind = "required" if required else "optional"
            elif kind == "parse_or":
                kind = "default"
            default = code[args[1][0] : args[1][1]].strip() if len(args) > 1 else None
            if lit:
                s.reads.append((m.start(), Read(lit.group(1), kind, fn.where(m.start()), default)))
            elif first.strip() in fn.params:
                s.forwards.append((m.start(), kind, fn.params.index(first.strip())))
            elif kind == "required":
                rep.error(fn.where(m.start()), f"required variable with a name that cannot be resolved ({first.strip()}): model it in dev/validate_deploy.py")
        for m in MISSING.finditer(skel, a, b):
            lit = re.match(r'"([^"]*)"', code[m.end() :])
            if lit:
                s.reads.append((m.start(), Read(lit.group(1), "required", fn.where(m.start()))))
            elif not re.match(r"name\b", code[m.end() :]) or "name" not in fn.params:
                rep.error(fn.where(m.start()), "ConfigError::Missing with a name that cannot be resolved: model it in dev/validate_deploy.py")
        for m in DIRECT_ENV.finditer(skel, a, b):
            s.direct.append((m.start(), m.group(0)))
    for m in ENV_FILTER.finditer(skel, a, b):
        s.env_filter.append(m.start())
    # calls and references
    for m in re.finditer(r"((?:\b\w+\s*::\s*)+)([a-z_]\w*)\b", skel[a:b]):
        quals = [q.strip() for q in m.group(1).split("::") if q.strip()]
        pos = a + m.start(2)
        after = skel[a + m.end() : a + m.end() + 1]
        if after == "!":
            continue
        s.calls.append((pos, m.group(2), quals[-1], a + m.end()))
    for m in re.finditer(r"\.\s*([a-z_]\w*)\s*(?:::\s*<[^>]*>\s*)?\(", skel[a:b]):
        s.calls.append((a + m.start(1), m.group(1), ".", a + m.end() - 1))
    for m in re.finditer(r"(?<![\w.:])([a-z_]\w*)\b(?!\s*!)(?!\s*::)", skel[a:b]):
        s.calls.append((a + m.start(), m.group(1), None, a + m.end()))
    return s


@dataclass
class Requirement:
    var: str
    kind: str
    where: str
    conds: frozenset  # of Cond, all must hold
    default: str | None = None


class Program:
    """What one binary reads from the environment."""

    def __init__(self, binary: str, root: Path, crates: dict[str, Crate], scans: dict, rep: Report):
        self.binary = binary
        pkg = next(c for c in crates.values() if c.bins.get(binary) == root)
        allowed = closure(crates, pkg.name)
        main_src = parse_source(root, pkg.name, pkg.lib)
        fns = [f for c in allowed for src in crates[c].sources for f in src.fns] + main_src.fns
        by_name: dict[str, list[Fn]] = {}
        for f in fns:
            by_name.setdefault(f.name, []).append(f)
        libs = {crates[c].lib for c in allowed}
        self.reads: list[Requirement] = []
        self.llm: list[frozenset] = []
        self.env_filter = False
        self.direct: list[str] = []

        def scan(f: Fn) -> FnScan:
            if f.key not in scans:
                scans[f.key] = scan_fn(f, rep)
            return scans[f.key]

        def resolve(caller: Fn, name: str, qual: str | None) -> list[Fn]:
            cands = by_name.get(name, [])
            if qual == ".":
                return [f for f in cands if f.owner]
            if qual == "Self":
                return [f for f in cands if f.owner == caller.owner and f.file == caller.file] or [
                    f for f in cands if f.owner == caller.owner
                ]
            if qual is not None:
                if qual in ("crate", "self", "super"):
                    return [f for f in cands if f.crate == caller.crate and not f.owner]
                hit = [f for f in cands if f.owner == qual or (not f.owner and (f.module == qual or (qual in libs and f.src.module == qual)))]
                if not hit and re.fullmatch(r"[A-Z]", qual):
                    hit = [f for f in cands if f.owner]  # a generic parameter: any method
                return hit
            local = [f for f in cands if f.file == caller.file and not f.owner]
            if name in caller.src.imports:
                local += [f for f in cands if not f.owner and f.crate in allowed]
            return local

        def conds_at(sc: FnScan, pos: int) -> frozenset:
            return frozenset(c for a, b, c in sc.conds if a <= pos <= b)

        seen: dict[tuple, list[frozenset]] = {}
        todo = [(f, frozenset()) for f in main_src.fns if f.name == "main"]
        while todo:
            f, conj = todo.pop()
            prior = seen.setdefault(f.key, [])
            if any(p <= conj for p in prior):
                continue
            prior.append(conj)
            sc = scan(f)
            if f.file == ROOT / LLM_CONFIG and f.owner == "LlmConfig" and f.name == "from_env":
                self.llm.append(conj)
            for pos, r in sc.reads:
                self.reads.append(Requirement(r.var, r.kind, r.where, conj | conds_at(sc, pos), r.default))
            for pos, what in sc.direct:
                self.direct.append(f"{f.where(pos)}: {what}")
            if sc.env_filter:
                self.env_filter = True
            for pos, name, qual, paren in sc.calls:
                for g in resolve(f, name, qual):
                    if g.key == f.key:
                        continue
                    c = conj | conds_at(sc, pos)
                    todo.append((g, c))
                    gs = scan(g)
                    # A helper reading its parameter: the literal this call passes.
                    if gs.forwards and paren < len(f.src.skel) and f.src.skel[paren] == "(":
                        args = split_top(f.src.skel, paren + 1, matching(f.src.skel, paren))
                        for fpos, kind, idx in gs.forwards:
                            if idx < len(args):
                                lit = LITERAL.match(f.src.code[args[idx][0] : args[idx][1]])
                                if lit:
                                    self.reads.append(Requirement(lit.group(1), kind, f.where(pos), c | conds_at(gs, fpos)))
                                elif kind == "required":
                                    rep.error(f.where(pos), "required variable with a name that cannot be resolved: model it in dev/validate_deploy.py")
        for d in sorted(set(self.direct)):
            rep.error(d, f"{binary} reads the environment directly: use common::config, or model it in dev/validate_deploy.py")

    def names(self) -> set[str]:
        out = set()
        for r in self.reads:
            out |= set(r.var.split(" or "))
        if self.env_filter:
            out.add("RUST_LOG")
        return out


def holds(conj: frozenset, env: dict) -> bool:
    for sel, mode, values in conj:
        v = env.get(sel) or None
        if (v in values) != (mode == "in"):
            return False
    return True


def describe(conj: frozenset) -> str:
    parts = []
    for sel, mode, values in sorted(conj, key=str):
        if values == frozenset({None}):
            parts.append(f"{sel} is {'unset' if mode == 'in' else 'set'}")
            continue
        vals = " or ".join(sorted("unset" if v is None else v for v in values)) or "anything"
        parts.append(f"{sel} {'is' if mode == 'in' else 'is not'} {vals}")
    return " and ".join(parts)


# --- the LLM providers' settings (crates/llm/src/config.rs) -------------------------------

def llm_fingerprint(rep: Report) -> set[str]:
    text = (ROOT / LLM_CONFIG).read_text()
    squashed = re.sub(r"\s+", " ", text)
    for line in LLM_FINGERPRINT:
        if re.sub(r"\s+", " ", line) not in squashed:
            rep.error(LLM_CONFIG, f"no longer has `{line}`: check dev/validate_deploy.py's model of the LLM settings (check_llm) against it, then update LLM_FINGERPRINT")
    fixed = set(re.findall(r'"(LLM_[A-Z0-9_]+)"', text))
    suffixes = set(re.findall(r'var\(\s*"([A-Z_]+)"\s*\)', text))
    return fixed | {f"LLM_*_{s}" for s in suffixes}


def check_llm(env: dict, where: str, rep: Report) -> None:
    names = [n.strip().lower() for n in (env.get("LLM_PROVIDERS") or "local").split(",") if n.strip()]
    for name in names:
        kind_var = f"LLM_{name.upper()}_KIND"
        kind = env.get(kind_var) or ("local" if name == "local" else None)
        if kind is None:
            rep.error(where, f"{kind_var} is required (provider {name!r} in LLM_PROVIDERS) but not set")
        elif kind in LLM_KINDS_WITH_MODEL and not env.get(f"LLM_{name.upper()}_MODEL"):
            rep.error(where, f"LLM_{name.upper()}_MODEL is required (provider {name!r} is {kind}) but not set")
        elif kind not in LLM_KINDS_WITH_MODEL + ("local",):
            rep.error(where, f"{kind_var}={kind!r}: use openai, anthropic or local")
    for var, raw in env.items():
        if var.startswith("LLM_ROUTE_") and raw:
            unknown = [p for p in (x.strip().lower() for x in raw.split(",")) if p and p not in names]
            if unknown:
                rep.error(where, f"{var} names {', '.join(unknown)}, not in LLM_PROVIDERS ({','.join(names)})")


def llm_known(var: str, known: set[str]) -> bool:
    if var in known:
        return True
    return var.startswith("LLM_ROUTE_") or any(
        k.startswith("LLM_*_") and re.fullmatch(r"LLM_[A-Z0-9_]+_" + re.escape(k[len("LLM_*_"):]), var) for k in known
    )


# --- a deployed workload's environment ----------------------------------------------------

@dataclass
class Workload:
    where: str
    binary: str
    env: dict  # name -> value ("" counts as unset, as in common::config)
    maybe: set  # keys a Secret may hold ("A|B": one of them)
    probe_ports: list  # the ports its probes / healthcheck reach
    is_k8s: bool
    own: set = field(default_factory=set)  # names it sets itself (not from a ConfigMap or the image)


def dockerfile_env() -> dict:
    env: dict = {}
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    last = max(i for i, l in enumerate(lines) if re.match(r"\s*FROM\b", l, re.I))
    for line in lines[last:]:
        m = re.match(r"\s*ENV\s+(.*)", line, re.I)
        if m:
            body = m.group(1).strip()
            if "=" in body.split()[0]:
                for k, v in re.findall(r'(\w+)=("[^"]*"|\S+)', body):
                    env[k] = v.strip('"')
            else:
                k, _, v = body.partition(" ")
                env[k] = v.strip()
    return env


def check_env(w: Workload, prog: Program, known: set[str], rep: Report) -> None:
    set_ = {k for k, v in w.env.items() if v not in (None, "")}
    maybe = set()
    for m in w.maybe:
        maybe |= set(m.split("|"))
    env = {k: v for k, v in w.env.items() if v not in (None, "")}
    missing: dict[str, list[Requirement]] = {}
    for r in prog.reads:
        if r.kind != "required" or not holds(r.conds, env):
            continue
        alts = r.var.split(" or ")
        if len(alts) == 1 and r.var in set_:
            continue
        if len(alts) > 1 and set(alts) & (set_ | maybe):
            continue
        missing.setdefault(r.var, []).append(r)
    for var, rs in sorted(missing.items()):
        why = "; ".join(sorted({f"{r.where}" + (f" when {describe(r.conds)}" if r.conds else "") for r in rs}))
        rep.error(w.where, f"{var} is required by {w.binary} but not set (read at {why})")
    if any(holds(c, env) for c in prog.llm):
        check_llm(env, w.where, rep)
    # The address it listens on: reachable by its probes, on the port they use.
    addrs = [r for r in prog.reads if r.var.endswith("_ADDR") and r.kind == "default" and holds(r.conds, env)]
    for r in {r.var: r for r in addrs}.values():
        value = env.get(r.var)
        if value is None:
            m = re.search(r"\[(\d+),\s*(\d+),\s*(\d+),\s*(\d+)\],\s*(\d+)", r.default or "")
            value = f"{'.'.join(m.groups()[:4])}:{m.group(5)}" if m else (r.default or "").strip('"')
            origin = f"{r.var} unset: the default {value}"
        else:
            origin = f"{r.var}={value}"
        host, _, port = value.rpartition(":")
        if host.startswith("127.") or host in ("localhost", "[::1]"):
            rep.error(w.where, f"{w.binary} listens on loopback ({origin}): nothing outside the container reaches it (set {r.var}=0.0.0.0:PORT)")
        if port.isdigit() and w.probe_ports and int(port) not in w.probe_ports:
            rep.error(w.where, f"{w.binary} listens on port {port} ({origin}) but its {'probes use' if w.is_k8s else 'healthcheck uses'} {', '.join(map(str, sorted(set(w.probe_ports))))}")
    for var in sorted(w.own):
        if var not in known and not llm_known(var, known):
            rep.error(w.where, f"{var} is set but no deployed binary reads it (a typo, or a removed setting?)")


# --- docker-compose.yml -----------------------------------------------------------------

def compose_config(path: Path, rep: Report, compose_bin: str) -> dict | None:
    text = path.read_text()
    must = sorted(set(re.findall(r"\$\{(\w+):?\?", text)))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    env.update({k: f"placeholder-for-{k.lower()}-from-the-operator" for k in must})
    with tempfile.NamedTemporaryFile("w", suffix=".env") as empty:
        p = subprocess.run(
            [compose_bin, "--env-file", empty.name, "--project-directory", str(ROOT), "-f", str(path), "config"],
            capture_output=True, text=True, env=env,
        )
    where = str(path.relative_to(ROOT))
    warnings = [l for l in p.stderr.splitlines() if "is not set" in l]
    for w in warnings:
        rep.error(where, f"docker-compose config: {w.strip()} (use ${{VAR:?message}} or ${{VAR:-default}})")
    if p.returncode != 0:
        msg = "\n    ".join(l for l in p.stderr.strip().splitlines() if l.strip() and "is not set" not in l)
        rep.error(where, f"docker-compose config failed:\n    {msg}")
        return None
    return yaml.safe_load(p.stdout)


def compose_workloads(path: Path, cfg: dict, bins: set[str], rep: Report) -> list[Workload]:
    where = str(path.relative_to(ROOT))
    image_env = dockerfile_env()
    out = []
    for name, svc in sorted((cfg.get("services") or {}).items()):
        build = svc.get("build")
        binary = None
        if isinstance(build, dict):
            binary = (build.get("args") or {}).get("BIN")
        elif build:
            binary = None
        if build and not binary:
            rep.error(f"{where} service {name}", "builds from this repository without args.BIN (which binary?)")
            continue
        if not binary:
            continue  # not ours (postgres, kafka, grafana, ...)
        if binary not in bins:
            rep.error(f"{where} service {name}", f"BIN={binary} is not a deployable binary of this workspace ({', '.join(sorted(bins))})")
            continue
        hc = svc.get("healthcheck")
        ports: list[int] = []
        if not hc or hc.get("disable") or (hc.get("test") in (["NONE"], "NONE")):
            rep.error(f"{where} service {name}", "no healthcheck")
        else:
            test = hc.get("test")
            test = " ".join(test) if isinstance(test, list) else str(test)
            ports = [int(p) for p in re.findall(r"(?:/dev/tcp/[\w.\[\]:-]+/|(?:127\.0\.0\.1|localhost):)(\d+)", test)]
        env = dict(image_env)
        environment = svc.get("environment") or {}
        if isinstance(environment, list):
            environment = dict(e.split("=", 1) if "=" in e else (e, None) for e in environment)
        env.update({k: ("" if v is None else str(v)) for k, v in environment.items()})
        own = {k for k, v in environment.items() if v not in (None, "")}
        out.append(Workload(f"{where} service {name}", binary, env, set(), ports, False, own))
    return out


# --- k8s/ ---------------------------------------------------------------------------------

def k8s_docs(paths: list[Path], rep: Report) -> list[tuple[Path, dict]]:
    docs = []
    for p in paths:
        try:
            for d in yaml.safe_load_all(p.read_text()):
                if d:
                    docs.append((p, d))
        except yaml.YAMLError as e:
            rep.error(str(p.relative_to(ROOT)), f"YAML: {e}")
    return docs


def kubernetes_validate(paths: list[Path], version: str, rep: Report) -> None:
    p = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", "-k", version, *map(str, paths)],
        capture_output=True, text=True,
    )
    lines = [l for l in (p.stdout + p.stderr).splitlines() if l.strip()]
    for l in lines:
        if l.startswith(("ERROR", "WARN")) or p.returncode:
            rep.error("kubernetes-validate", l.replace(str(ROOT) + "/", ""))
    if p.returncode and not lines:
        rep.error("kubernetes-validate", f"exited {p.returncode}")


def k8s_workloads(docs: list[tuple[Path, dict]], bins: set[str], rep: Report) -> list[Workload]:
    configmaps = {d["metadata"]["name"]: d.get("data") or {} for _, d in docs if d.get("kind") == "ConfigMap"}
    image_env = dockerfile_env()
    out = []
    for path, d in docs:
        kind = d.get("kind")
        name = (d.get("metadata") or {}).get("name", "?")
        where = f"{path.relative_to(ROOT)} {kind} {name}"
        if kind == "Service":
            sel = (d.get("spec") or {}).get("selector") or {}
            targets = [
                w for _, w in docs if w.get("kind") in WORKLOAD_KINDS
                and sel and sel.items() <= (((w.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels", {}).items()
            ]
            if not targets:
                rep.error(where, f"selector {sel} matches no workload in the same files")
            for port in (d.get("spec") or {}).get("ports") or []:
                tp = port.get("targetPort")
                if isinstance(tp, str) and targets and not any(
                    tp == cp.get("name") for w in targets for c in w["spec"]["template"]["spec"]["containers"] for cp in c.get("ports") or []
                ):
                    rep.error(where, f"targetPort {tp!r} is no named port of the workload it selects")
            continue
        if kind not in WORKLOAD_KINDS:
            continue
        spec = ((d.get("spec") or {}).get("template") or {}).get("spec") or {}
        annotations = (d.get("metadata") or {}).get("annotations") or {}
        for c in spec.get("containers") or []:
            cw = f"{where} container {c.get('name')}"
            named = {p.get("name"): p.get("containerPort") for p in c.get("ports") or [] if p.get("name")}
            declared = {p.get("containerPort") for p in c.get("ports") or []}
            probe_ports = []
            for probe in ("livenessProbe", "readinessProbe"):
                pr = c.get(probe)
                if not pr:
                    rep.error(cw, f"no {probe}")
                    continue
                action = pr.get("httpGet") or pr.get("tcpSocket") or pr.get("grpc")
                if action is None:
                    continue  # exec: nothing to check
                port = action.get("port")
                if isinstance(port, str):
                    if port not in named:
                        rep.error(cw, f"{probe} uses port {port!r}, which the container does not name")
                        continue
                    port = named[port]
                elif port not in declared:
                    rep.error(cw, f"{probe} uses port {port}, which the container does not declare")
                probe_ports.append(port)
            res = c.get("resources") or {}
            for section, key in (("requests", "cpu"), ("requests", "memory"), ("limits", "memory")):
                if not (res.get(section) or {}).get(key):
                    rep.error(cw, f"no resources.{section}.{key}")
            image = c.get("image", "")
            m = re.match(r"(?:.*/)?threadline/([\w-]+)(?::|@|$)", image)
            if not m:
                continue  # not ours
            binary = m.group(1)
            if binary not in bins:
                rep.error(cw, f"image {image}: {binary} is not a deployable binary of this workspace")
                continue
            env = dict(image_env)
            maybe: set = set()
            own: set = set()
            for src in c.get("envFrom") or []:
                prefix = src.get("prefix", "")
                if "configMapRef" in src:
                    ref = src["configMapRef"]["name"]
                    if ref not in configmaps:
                        if not src["configMapRef"].get("optional"):
                            rep.error(cw, f"envFrom ConfigMap {ref!r} is not in k8s/")
                        continue
                    env.update({prefix + k: str(v) for k, v in configmaps[ref].items()})
                elif "secretRef" in src:
                    keys = annotations.get(SECRET_KEYS_ANNOTATION)
                    if keys is None:
                        rep.error(where, f"envFrom Secret {src['secretRef']['name']!r}: say which keys it must hold in the annotation {SECRET_KEYS_ANNOTATION} (space-separated; A|B: one of them)")
                        continue
                    for k in keys.split():
                        if "|" in k:
                            maybe.add(k)
                            own |= {prefix + a for a in k.split("|")}
                        else:
                            env[prefix + k] = "<from the Secret>"
                            own.add(prefix + k)
            for e in c.get("env") or []:
                env[e["name"]] = "<from a reference>" if "valueFrom" in e else str(e.get("value", ""))
                own.add(e["name"])
            out.append(Workload(cw, binary, env, maybe, probe_ports, True, own))
    return out


# --- the whole check ------------------------------------------------------------------------

@dataclass
class Analysis:
    programs: dict  # binary -> Program
    known: set  # every variable some deployed binary reads
    errors: list  # what could not be modelled


def analyse() -> Analysis:
    rep = Report()
    crates = load_workspace()
    bins = {b: p for name in DEPLOYED_PACKAGES if name in crates for b, p in crates[name].bins.items()}
    scans: dict = {}
    programs = {b: Program(b, p, crates, scans, rep) for b, p in sorted(bins.items())}
    known = set().union(*(p.names() for p in programs.values())) | llm_fingerprint(rep)
    known |= {k for k in dockerfile_env() if any(k in p.names() for p in programs.values())}
    for k in dockerfile_env():
        if k not in known:
            rep.error("Dockerfile", f"ENV {k}: no deployed binary reads it")
    return Analysis(programs, known, rep.errors)


def run(a: Analysis, compose: Path | None, k8s: Path | None, version: str, compose_bin: str, coverage: bool) -> Report:
    rep = Report()
    rep.errors += a.errors
    bins = set(a.programs)
    cfg, workloads, k8s_w, k8s_files = None, [], [], []
    if compose:
        cfg = compose_config(compose, rep, compose_bin)
        workloads = compose_workloads(compose, cfg, bins, rep) if cfg else []
    if k8s:
        k8s_files = sorted(p for p in k8s.iterdir() if p.suffix in (".yaml", ".yml", ".json"))
        if not k8s_files:
            rep.error(str(k8s.relative_to(ROOT)), "no manifests")
        else:
            kubernetes_validate(k8s_files, version, rep)
        docs = k8s_docs(k8s_files, rep)
        k8s_w = k8s_workloads(docs, bins, rep)
        for _, d in docs:
            if d.get("kind") == "ConfigMap":
                for k in d.get("data") or {}:
                    if k not in a.known and not llm_known(k, a.known):
                        rep.error(f"k8s ConfigMap {d['metadata']['name']}", f"{k} is set but no deployed binary reads it")
    for w in workloads + k8s_w:
        check_env(w, a.programs[w.binary], a.known, rep)
    if coverage:
        for b in sorted(bins):
            if compose and cfg and not any(w.binary == b for w in workloads):
                rep.error(str(compose.relative_to(ROOT)), f"no service runs {b}")
            if k8s and not any(w.binary == b for w in k8s_w):
                rep.error(str(k8s.relative_to(ROOT)), f"no workload runs {b}")
    for b, p in a.programs.items():
        req = sorted({r.var + (f" (when {describe(r.conds)})" if r.conds else "") for r in p.reads if r.kind == "required"})
        rep.note(f"{b} reads {len(p.names())} variables; required: {', '.join(req) or 'none'}" + ("; LLM_<NAME>_* of its providers" if p.llm else ""))
    if compose:
        rep.note(f"{compose.relative_to(ROOT)}: {len(workloads)} services of ours")
    if k8s:
        rep.note(f"{k8s.relative_to(ROOT)}/: {len(k8s_files)} files, {len(k8s_w)} containers of ours, validated against Kubernetes {version}")
    return rep


def print_report(rep: Report, verbose: bool) -> None:
    if verbose:
        for n in rep.notes:
            print(f"  {n}")
    for e in rep.errors:
        print(f"  FAIL {e}")


# Each fixture must be reported for each of these (a substring of one error line).
SELF_TEST = [
    ("compose-syntax-error.yml", None, ["docker-compose config failed"]),
    ("compose-broken.yml", None, [
        "service read-model-projector: DATABASE_URL is required by read-model-projector but not set",
        "service embeddings-projector: QDRANT_URL is required by embeddings-projector but not set",
        "when VECTOR_STORE is qdrant",
        "service assistant-projector: LLM_OPENAI_KIND is required",
        "service command-api: no healthcheck",
        "service command-api: JWT_HS256_SECRET or JWT_JWKS_URL is required",
        "service query-api: query-api listens on loopback",
        "service notifications-projector: NOTIFY_HTTP_URL is required",
        "service notifications-projector: NOTIFY_CHANELL is set but no deployed binary reads it",
        "The BLANK variable is not set",
    ]),
    (None, "k8s-missing-probes", [
        "Deployment read-model-projector container read-model-projector: no livenessProbe",
        "Deployment read-model-projector container read-model-projector: no resources.limits.memory",
        "Deployment query-api container query-api: readinessProbe uses port 'web', which the container does not name",
        "Deployment query-api container query-api: DATABASE_URL is required by query-api but not set",
        "Deployment command-api: envFrom Secret 'threadline': say which keys",
        "Deployment command-api container command-api: command-api listens on loopback (COMMAND_API_ADDR unset",
        "ConfigMap threadline: KAFKA_BROKER is set but no deployed binary reads it",
    ]),
    (None, "k8s-schema-error", ["kubernetes-validate: ERROR", "replicas"]),
]


def self_test(fixtures: Path, version: str, compose_bin: str) -> int:
    failed = 0
    a = analyse()
    for compose, k8s, expected in SELF_TEST:
        c = fixtures / compose if compose else None
        k = fixtures / k8s if k8s else None
        rep = run(a, c, k, version, compose_bin, coverage=False)
        name = compose or k8s
        for exp in expected:
            if not any(exp in e for e in rep.errors):
                failed += 1
                print(f"  FAIL self-test {name}: expected a report containing {exp!r}; got:")
                for e in rep.errors:
                    print(f"        {e}")
        if all(any(exp in e for e in rep.errors) for exp in expected):
            print(f"  ok   {name}: all {len(expected)} expected findings among its {len(rep.errors)} reports")
    return failed


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--compose", type=Path, default=ROOT / "docker-compose.yml")
    ap.add_argument("--k8s", type=Path, default=ROOT / "k8s")
    ap.add_argument("--kubernetes-version", required=True)
    ap.add_argument("--docker-compose", default="docker-compose")
    ap.add_argument("--self-test", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args()
    if a.self_test:
        failed = self_test(ROOT / "dev/fixtures/deploy", a.kubernetes_version, a.docker_compose)
        print(f"deploy validator self-test: {'FAILED' if failed else 'ok'}")
        return 1 if failed else 0
    rep = run(analyse(), a.compose.resolve(), a.k8s.resolve(), a.kubernetes_version, a.docker_compose, coverage=True)
    print_report(rep, a.verbose)
    print(f"deployment files: {len(rep.errors)} problem(s)" if rep.errors else "deployment files: ok")
    return 1 if rep.errors else 0


if __name__ == "__main__":
    sys.exit(main())
