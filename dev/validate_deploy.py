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
4. environment: each deployed binary is asked what it reads (`<binary> --settings-json`:
   every setting with its variable, default and whether it is required; the binaries'
   settings are clap structs, crates/common/src/config.rs) and whether the environment its
   compose service or k8s workload gives it holds (`<binary> check-settings`, with env,
   envFrom ConfigMaps in k8s/, the Secret keys a workload declares in its
   `threadline/secret-keys` annotation and ENV of the Dockerfile; values an operator
   provides stand in as placeholders of the right form). The binary parses and resolves its
   settings as when it starts, conditions included (QDRANT_URL only with
   VECTOR_STORE=qdrant, an LLM provider's model only for remote kinds), and connects to
   nothing. A variable set that no binary reads is reported too (a typo, or a setting that
   was removed); LLM_* variables are named after providers at run time and count as read by
   the binary that reads LLM_PROVIDERS.
"""

from __future__ import annotations

import argparse
import base64
import json
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
# Packages whose binaries are deployed (the others are tools: the threadline command line, the e2e
# benchmarks).
DEPLOYED_PACKAGES = ("command-api", "query-api", "projectors", "threadline-console")
SECRET_KEYS_ANNOTATION = "threadline/secret-keys"
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")


class Report:
    def __init__(self) -> None:
        self.errors: list[str] = []
        self.notes: list[str] = []

    def error(self, where: str, msg: str) -> None:
        self.errors.append(f"{where}: {msg}")

    def note(self, msg: str) -> None:
        self.notes.append(msg)


# --- what each deployed binary reads: asked of the binary ----------------------------------

@dataclass
class Program:
    binary: str
    path: Path
    settings: list  # each {"env", "default", "required", "secret", ...}: `<binary> --settings-json`

    def names(self) -> set[str]:
        return {s["env"] for s in self.settings}

    def reads_llm(self) -> bool:
        """Its LLM providers are configured by LLM_<NAME>_* and LLM_ROUTE_* variables, named
        at run time (crates/llm/src/config.rs, PROVIDER_VARIABLES): any LLM_ variable counts
        as read, and `check-settings` judges its value."""
        return "LLM_PROVIDERS" in self.names()


def deployed_binaries() -> dict[str, str]:
    """binary -> package, for the packages whose binaries are deployed."""
    ws = tomllib.loads((ROOT / "Cargo.toml").read_text())
    out: dict[str, str] = {}
    for member in ws["workspace"]["members"]:
        d = ROOT / member
        manifest = tomllib.loads((d / "Cargo.toml").read_text())
        name = manifest["package"]["name"]
        if name not in DEPLOYED_PACKAGES:
            continue
        # A binary named in the manifest (`[[bin]]`), else the package's own.
        for b in manifest.get("bin", []):
            out[b["name"]] = name
        if (d / "src/main.rs").exists() and not manifest.get("bin"):
            out[name] = name
        for b in sorted((d / "src/bin").glob("*.rs")) if (d / "src/bin").is_dir() else []:
            out[b.stem] = name
    return out


def load_program(binary: str, bin_dir: Path, rep: Report) -> Program:
    path = bin_dir / binary
    if not path.exists():
        rep.error(binary, f"{path} is missing: build it (dev/validate-deploy does)")
        return Program(binary, path, [])
    p = subprocess.run([str(path), "--settings-json"], capture_output=True, text=True,
                       env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, timeout=60)
    if p.returncode != 0:
        rep.error(binary, f"--settings-json failed: {p.stderr.strip()}")
        return Program(binary, path, [])
    return Program(binary, path, json.loads(p.stdout)["settings"])


# Values that stand for what an operator provides (a Secret key, a `${VAR:?}` of Compose):
# a check of the settings needs a value of the right form, not the real one.
PLACEHOLDERS = {
    "WEBHOOK_SECRET_KEY": base64.b64encode(bytes(32)).decode(),
    "JWT_HS256_SECRET": "placeholder-secret-of-at-least-32-bytes",
}


def check_settings(prog: Program, env: dict) -> str | None:
    """What `<binary> check-settings` says of `env` (None: it holds). The binary parses and
    resolves its settings exactly as when it starts, and connects to nothing."""
    run_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    run_env.update(env)
    p = subprocess.run([str(prog.path), "check-settings"], capture_output=True, text=True,
                       env=run_env, timeout=60)
    if p.returncode == 0:
        return None
    lines = [l.strip() for l in p.stderr.splitlines() if l.strip() and not l.startswith(("For more information", "Usage:"))]
    return " ".join(lines)


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


def check_env(w: Workload, prog: Program, known: set[str], reads_llm: bool, rep: Report) -> None:
    env = {k: v for k, v in w.env.items() if v not in (None, "")}
    for key in w.maybe:
        # A Secret may hold it ("A|B": one of them): the first name stands for it.
        first = key.split("|")[0]
        env.setdefault(first, f"placeholder-for-{first.lower()}-from-a-secret")
    for k, v in list(env.items()):
        if k in PLACEHOLDERS and str(v).startswith(("placeholder-for-", "<from ")):
            env[k] = PLACEHOLDERS[k]
    env = {k: str(v) for k, v in env.items() if k in prog.names() or (prog.reads_llm() and k.startswith("LLM_"))}
    if prog.settings:
        refused = check_settings(prog, env)
        if refused:
            rep.error(w.where, f"{w.binary} refuses its settings: {refused}")
    # The address it listens on: reachable by its probes, on the port they use.
    for setting in prog.settings:
        var = setting["env"]
        if not var.endswith("_ADDR"):
            continue
        value = env.get(var)
        origin = f"{var}={value}" if value is not None else f"{var} unset: the default {setting['default']}"
        value = value if value is not None else (setting["default"] or "")
        host, _, port = value.rpartition(":")
        if host.startswith("127.") or host in ("localhost", "[::1]"):
            rep.error(w.where, f"{w.binary} listens on loopback ({origin}): nothing outside the container reaches it (set {var}=0.0.0.0:PORT)")
        if port.isdigit() and w.probe_ports and int(port) not in w.probe_ports:
            rep.error(w.where, f"{w.binary} listens on port {port} ({origin}) but its {'probes use' if w.is_k8s else 'healthcheck uses'} {', '.join(map(str, sorted(set(w.probe_ports))))}")
    for var in sorted(w.own):
        if var not in known and not (reads_llm and var.startswith("LLM_")) and not read_by_allocator(var):
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

def read_by_allocator(var: str) -> bool:
    """mimalloc, the allocator every service links (crates/platform), reads its options
    from MIMALLOC_* variables at start: the binaries do not list them."""
    return var.startswith("MIMALLOC_")


@dataclass
class Analysis:
    programs: dict  # binary -> Program
    known: set  # every variable some deployed binary reads
    reads_llm: bool  # some deployed binary reads LLM_<NAME>_* variables
    errors: list  # what could not be asked


def analyse(bin_dir: Path) -> Analysis:
    rep = Report()
    programs = {b: load_program(b, bin_dir, rep) for b in sorted(deployed_binaries())}
    known = set().union(*(p.names() for p in programs.values()))
    reads_llm = any(p.reads_llm() for p in programs.values())
    for k in dockerfile_env():
        if k not in known and not read_by_allocator(k):
            rep.error("Dockerfile", f"ENV {k}: no deployed binary reads it")
    return Analysis(programs, known, reads_llm, rep.errors)


# --- the README's configuration table: made from the binaries' own list -------------------

README = ROOT / "README.md"
TABLE_BEGIN = "<!-- settings: made by `dev/validate-deploy --write-readme` from each binary's --settings-json; edit the doc comments in the code, not this table -->"
TABLE_END = "<!-- /settings -->"
PROJECTORS = "projectors"


def settings_table(programs: dict) -> str:
    """One table per settings group, in the order groups first appear; each setting once,
    with the binaries that read it."""
    groups: dict = {}
    readers: dict = {}
    for b, p in sorted(programs.items()):
        for st in p.settings:
            group = groups.setdefault(st["group"] or "Other", {})
            group.setdefault(st["env"], st)
            readers.setdefault(st["env"], []).append(b)
    projectors = sorted(b for b in programs if b.endswith("-projector"))

    def who(names: list) -> str:
        if sorted(names) == sorted(programs):
            return "all"
        rest = [n for n in names if n not in projectors]
        if projectors and set(projectors) <= set(names):
            rest = [PROJECTORS] + rest
        else:
            rest = names
        return ", ".join(rest)

    def cell(text) -> str:
        return (text or "").replace("|", "\\|").replace("\n", " ")

    out = [TABLE_BEGIN]
    for group, settings in groups.items():
        out += ["", f"**{group}**", "", "| variable | default | meaning | read by |", "|---|---|---|---|"]
        for env, st in settings.items():
            default = "required" if st["required"] else (f"`{st['default']}`" if st["default"] not in (None, "") else "unset")
            out.append(f"| `{env}` | {default} | {cell(st['help'])} | {who(readers[env])} |")
    out += ["", TABLE_END]
    return "\n".join(out)


def check_readme(programs: dict, write: bool, rep: Report) -> None:
    text = README.read_text()
    if TABLE_BEGIN not in text or TABLE_END not in text:
        rep.error("README.md", f"no configuration table between {TABLE_BEGIN!r} and {TABLE_END!r}")
        return
    a = text.index(TABLE_BEGIN)
    b = text.index(TABLE_END) + len(TABLE_END)
    table = settings_table(programs)
    if text[a:b] == table:
        return
    if write:
        README.write_text(text[:a] + table + text[b:])
        rep.note("README.md: configuration table rewritten")
    else:
        rep.error("README.md", "the configuration table is not what the binaries say they read: run `dev/validate-deploy --write-readme`")


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
                    if k not in a.known and not (a.reads_llm and k.startswith("LLM_")):
                        rep.error(f"k8s ConfigMap {d['metadata']['name']}", f"{k} is set but no deployed binary reads it")
    for w in workloads + k8s_w:
        check_env(w, a.programs[w.binary], a.known, a.reads_llm, rep)
    if coverage:
        for b in sorted(bins):
            if compose and cfg and not any(w.binary == b for w in workloads):
                rep.error(str(compose.relative_to(ROOT)), f"no service runs {b}")
            if k8s and not any(w.binary == b for w in k8s_w):
                rep.error(str(k8s.relative_to(ROOT)), f"no workload runs {b}")
    for b, p in a.programs.items():
        req = sorted(s["env"] for s in p.settings if s["required"])
        rep.note(f"{b} reads {len(p.names())} variables; required: {', '.join(req) or 'none'}" + ("; LLM_<NAME>_* of its providers" if p.reads_llm() else ""))
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
        "service read-model-projector: read-model-projector refuses its settings: error: the following required arguments were not provided: --database-url <DATABASE_URL>",
        "service embeddings-projector: embeddings-projector refuses its settings: Error: environment variable QDRANT_URL is required but not set",
        "service assistant-projector: assistant-projector refuses its settings: Error: environment variable LLM_OPENAI_KIND is required",
        "service command-api: no healthcheck",
        "service command-api: command-api refuses its settings: Error: environment variable JWT_HS256_SECRET or JWT_JWKS_URL is required",
        "service query-api: query-api listens on loopback",
        "service notifications-projector: notifications-projector refuses its settings: Error: environment variable NOTIFY_HTTP_URL is required",
        "service notifications-projector: NOTIFY_CHANELL is set but no deployed binary reads it",
        "The BLANK variable is not set",
    ]),
    (None, "k8s-missing-probes", [
        "Deployment read-model-projector container read-model-projector: no livenessProbe",
        "Deployment read-model-projector container read-model-projector: no resources.limits.memory",
        "Deployment query-api container query-api: readinessProbe uses port 'web', which the container does not name",
        "Deployment query-api container query-api: query-api refuses its settings: error: the following required arguments were not provided: --database-url <DATABASE_URL>",
        "Deployment command-api: envFrom Secret 'threadline': say which keys",
        "Deployment command-api container command-api: command-api listens on loopback (COMMAND_API_ADDR unset",
        "ConfigMap threadline: KAFKA_BROKER is set but no deployed binary reads it",
    ]),
    (None, "k8s-schema-error", ["kubernetes-validate: ERROR", "replicas"]),
]


def self_test(fixtures: Path, bin_dir: Path, version: str, compose_bin: str) -> int:
    failed = 0
    a = analyse(bin_dir)
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
    ap.add_argument("--bin-dir", type=Path, default=ROOT / "target/debug", help="where the deployed binaries are built")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--write-readme", action="store_true", help="rewrite the README's configuration table from the binaries")
    a = ap.parse_args()
    if a.self_test:
        failed = self_test(ROOT / "dev/fixtures/deploy", a.bin_dir, a.kubernetes_version, a.docker_compose)
        print(f"deploy validator self-test: {'FAILED' if failed else 'ok'}")
        return 1 if failed else 0
    analysis = analyse(a.bin_dir)
    rep = run(analysis, a.compose.resolve(), a.k8s.resolve(), a.kubernetes_version, a.docker_compose, coverage=True)
    check_readme(analysis.programs, a.write_readme, rep)
    print_report(rep, a.verbose)
    print(f"deployment files: {len(rep.errors)} problem(s)" if rep.errors else "deployment files: ok")
    return 1 if rep.errors else 0


if __name__ == "__main__":
    sys.exit(main())
