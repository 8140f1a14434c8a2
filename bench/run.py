#!/usr/bin/env python3
"""Start-up benchmarks: agentsh's hot paths against the raw engine command.

Each target is timed against the engine command it wraps, measured in the
same run and interleaved round by round (ours first on even rounds, raw first
on odd ones), so machine drift and cache effects hit both sides alike. The
verdict compares median(ours) / median(raw) with the target ratio.

    .venv/bin/python bench/run.py [--rounds N] [--json] [--profile] [--install plain] [--engine docker]

Self-contained: a temporary XDG state/config/data home, a tiny busybox image
(localhost/agentsh-bench-tiny:latest, imported if missing and kept), a user
config.toml naming it, and a temporary git repository as the project. Its
container and home volume are removed at the end. Needs Podman (or, with
--engine docker, a Docker daemon: DOCKER_HOST, e.g. scripts/test-dockerd's);
set CONTAINERS_CONF first where the engine needs it (see docs/performance.md).
The raw commands are then Docker's own (`docker exec`, `docker run -d`...).

Also measured, for the analysis: the same ab-* commands against a stub
engine that answers at once (agentsh's own cost), the bare interpreter, and
with --profile, `-X importtime` per module plus a wall-time "ladder" adding
one top-level import at a time.

Targets:
  exec      `ab-exec -- true` on a running sandbox    <= 0.25 x `podman exec NAME true`
            (through the sandbox's exec server; the engine's exec, the fallback, is shown too)
  up-warm   `ab-up` on a running, unchanged sandbox   <= 1.10 x `podman container inspect NAME`
  up-cold   `ab-up` with the image present and no     <= 1.20 x `podman run -d` with the same flags
            container (removed before every sample,   (spec(...).full_run_args())
            for ours and for the raw command)
"""

import argparse
import io
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

IMAGE = "localhost/agentsh-bench-tiny:latest"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGETS = {"exec": 0.25, "up-warm": 1.10, "up-cold": 1.20}

# A reference point, not agentsh: the essential work of `ab-exec -- CMD`
# (find the project, find the engine, spawn `exec -i -w DIR -e MARKER NAME
# CMD` in its own process group, relay stderr, return the status) in a
# Python that imports only what a pip-made console script already has (re,
# sys) plus os. It shows how close to the raw engine a Python launcher can get.
REFERENCE_LAUNCHER = r'''import re, sys
import os


def main():
    argv = sys.argv[1:]
    if argv[:1] == ["--"]:
        argv = argv[1:]
    workdir = os.path.realpath(os.getcwd())
    d = workdir
    while d != "/" and not os.path.lexists(os.path.join(d, ".git")):
        d = os.path.dirname(d)
    engine = next(c for c in (os.path.join(p, os.environ.get("BENCH_ENGINE", "podman"))
                              for p in os.environ["PATH"].split(os.pathsep))
                  if os.access(c, os.X_OK))
    env = dict(os.environ, AGENTSH_EXEC_ID=f"{os.getpid()}-{os.urandom(6).hex()}")
    args = [engine, "exec", "-i", "-w", workdir, "-e", "AGENTSH_EXEC_ID", os.environ["BENCH_SANDBOX"], *argv]
    r, w = os.pipe()
    pid = os.posix_spawn(engine, args, env, setpgroup=0,
                         file_actions=[(os.POSIX_SPAWN_DUP2, w, 2), (os.POSIX_SPAWN_CLOSE, r)])
    os.close(w)
    while chunk := os.read(r, 65536):
        os.write(2, chunk)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


sys.exit(main())
'''


# -- setup ------------------------------------------------------------------


def busybox_rootfs_tar(busybox="/bin/busybox"):
    """A tar of a rootfs: /bin/busybox, its applet links, /tmp."""
    applets = subprocess.run([busybox, "--list-full"], check=True, capture_output=True, text=True).stdout.split()
    buf = io.BytesIO()
    dirs = {"tmp"}
    for path in applets:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]))
    dirs.add("bin")
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in sorted(dirs):
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        with open(busybox, "rb") as f:
            data = f.read()
        info = tarfile.TarInfo("bin/busybox")
        info.size = len(data)
        info.mode = 0o755
        tar.addfile(info, io.BytesIO(data))
        for path in applets:
            if path == "bin/busybox":
                continue
            info = tarfile.TarInfo(path)
            info.type = tarfile.SYMTYPE
            info.linkname = "/bin/busybox"
            tar.addfile(info)
    return buf.getvalue()


def ensure_image(podman):
    if subprocess.run([podman, "image", "inspect", IMAGE], stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL).returncode == 0:
        return False
    if not os.access("/bin/busybox", os.X_OK):
        sys.exit(f"bench: {IMAGE} is missing and there is no /bin/busybox to make it from "
                 "(Debian/Ubuntu: apt-get install busybox-static)")
    subprocess.run([podman, "import", "-", IMAGE], input=busybox_rootfs_tar(), check=True,
                   stdout=subprocess.DEVNULL)
    return True


def plain_install(tmp):
    """A throwaway venv that finds agentsh on a plain path entry (no import hook).

    The dev venv's editable install imports a finder (pathlib, re, urllib...)
    from a .pth file at every interpreter start; a regular install (pip,
    pipx) does not. This venv reaches the same source tree and the dev venv's
    dependencies through one .pth of plain paths; the ab-* scripts are the
    dev venv's, re-pointed at its interpreter. Returns its bin directory.
    """
    import sysconfig

    venv = os.path.join(tmp, "venv")
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", venv], check=True)
    purelib = sysconfig.get_paths()["purelib"]
    rel = os.path.relpath(purelib, sys.prefix)
    with open(os.path.join(venv, rel, "agentsh-bench.pth"), "w") as f:
        f.write(f"{REPO}\n{purelib}\n")
    bindir = os.path.join(venv, "bin")
    for tool in ("ab-exec", "ab-up", "ab-creds"):
        with open(os.path.join(os.path.dirname(sys.executable), tool)) as f:
            body = f.read().split("\n", 1)[1]
        path = os.path.join(bindir, tool)
        with open(path, "w") as f:
            f.write(f"#!{os.path.join(bindir, 'python')}\n{body}")
        os.chmod(path, 0o755)
    return bindir


class Bench:
    def __init__(self, args):
        self.args = args
        self.engine = args.engine
        self.podman = shutil.which(args.engine)  # (the engine's binary, Podman's or Docker's)
        if not self.podman:
            sys.exit(f"bench: {args.engine} not found on PATH")
        self.rm = [self.podman, "rm", "-f", *(["-t", "0"] if args.engine == "podman" else [])]
        self.bin = os.path.dirname(sys.executable)  # the dev venv's ab-* scripts
        self.tmp = os.path.realpath(tempfile.mkdtemp(prefix="agentsh-bench-"))
        self.env = dict(os.environ)
        for var, sub in (("XDG_STATE_HOME", "state"), ("XDG_CONFIG_HOME", "config"), ("XDG_DATA_HOME", "data")):
            self.env[var] = os.path.join(self.tmp, sub)
            os.makedirs(self.env[var])
        self.env.pop("AGENTSH_ENGINE", None)
        if args.engine != "podman":
            self.env["AGENTSH_ENGINE"] = args.engine
        if not args.no_bytecode_cache:
            # An installed package runs from compiled bytecode; a checkout under
            # PYTHONDONTWRITEBYTECODE would recompile every module on every
            # start. Cache it in the temp dir (the source tree is not written).
            self.env.pop("PYTHONDONTWRITEBYTECODE", None)
            self.env["PYTHONPYCACHEPREFIX"] = os.path.join(self.tmp, "pycache")
        self.env.pop("CONTAINER_HOST", None)
        self.project = os.path.join(self.tmp, "project")
        self.name = None
        self.volume = None
        self.run_args = None

    def setup(self):
        os.makedirs(os.path.join(self.env["XDG_CONFIG_HOME"], "agentsh"))
        with open(os.path.join(self.env["XDG_CONFIG_HOME"], "agentsh", "config.toml"), "w") as f:
            f.write(f'image = "{IMAGE}"\n')
        os.makedirs(self.project)
        subprocess.run(["git", "init", "-q", self.project], check=True)
        with open(os.path.join(self.project, "README"), "w") as f:
            f.write("bench\n")
        ensure_image(self.podman)
        if self.args.install == "plain":
            self.bin = plain_install(self.tmp)
        self.python = os.path.join(self.bin, "python")
        # The run flags exactly as ab-up computes them, from the same config.
        os.environ.update({k: self.env[k] for k in ("XDG_STATE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME")})
        if self.engine != "podman":
            os.environ["AGENTSH_ENGINE"] = self.engine
        sys.path.insert(0, REPO)
        from agentsh.base.state import Store
        from agentsh.host import project
        from agentsh.host.engine import Engine
        from agentsh.policy import config
        from agentsh.sandbox import lifecycle as sandbox

        proj = project.find(self.project)
        cfg = config.load(proj, Store())
        want = sandbox.spec(proj, cfg, Engine(cfg["engine"]))
        self.name = want.name
        self.env["BENCH_SANDBOX"] = self.name  # for the reference launcher
        self.env["BENCH_ENGINE"] = self.engine
        self.volume = proj.home_volume
        self.run_args = want.full_run_args()

    def cleanup(self):
        if self.name:
            subprocess.run([*self.rm, self.name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if self.volume:
            subprocess.run([self.podman, "volume", "rm", "-f", self.volume], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- commands -----------------------------------------------------------

    def ab(self, tool, *args):
        return [os.path.join(self.bin, tool), *args]

    def run(self, argv, check=True, env=None):
        """Wall time of one command (stdin /dev/null, output discarded)."""
        t0 = time.perf_counter()
        proc = subprocess.run(argv, cwd=self.project, env=env or self.env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        dt = time.perf_counter() - t0
        if check and proc.returncode != 0:
            raise SystemExit(f"bench: {' '.join(argv)} exited {proc.returncode}: "
                             f"{proc.stderr.decode(errors='replace').strip()}")
        return dt

    def remove_container(self):
        """The state `ab-down --rm` leaves: no container, and no sandbox record.

        (A container removed behind agentsh's back leaves the record, and
        ab-up then spends one inspect finding out; that is the rarer case.)
        """
        subprocess.run([*self.rm, self.name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        record = os.path.join(self.env["XDG_STATE_HOME"], "agentsh", "sandboxes", self.name + ".json")
        if os.path.exists(record):
            os.unlink(record)

    def ensure_running(self):
        self.run(self.ab("ab-up"))

    def exec_flags_argv(self):
        """`podman exec` with the flags ab-exec passes (informational row)."""
        env_names = [n for n in self.env if n in ("TERM", "LANG", "COLORTERM", "TZ") or n.startswith("LC_")]
        argv = [self.podman, "exec", "-i", "-w", self.project]
        for n in env_names + ["AGENTSH_EXEC_ID"]:
            argv += ["-e", n]
        return argv + [self.name, "true"]

    # -- measurement ----------------------------------------------------------

    def reference_launcher(self):
        path = os.path.join(self.tmp, "reference_launcher.py")
        with open(path, "w") as f:
            f.write(REFERENCE_LAUNCHER)
        return [self.python, path, "--", "true"]

    def stub_engine(self):
        """A PATH whose `podman` answers at once: exec does nothing, inspect
        prints the running sandbox's real inspect output (or, with
        BENCH_STUB_COLD set, "no such container"), run prints an id. ab-*
        against it costs agentsh's own work plus one tiny shell per call."""
        stub_dir = os.path.join(self.tmp, "stub")
        os.makedirs(stub_dir, exist_ok=True)
        canned = os.path.join(stub_dir, "inspect.json")
        with open(canned, "wb") as f:
            f.write(subprocess.run([self.podman, "container", "inspect", self.name], check=True,
                                   capture_output=True).stdout)
        stub = os.path.join(stub_dir, self.engine)
        with open(stub, "w") as f:
            f.write("#!/bin/sh\n"
                    'case "$1" in\n'
                    "container|inspect)\n"
                    '  if [ -n "$BENCH_STUB_COLD" ]; then echo "Error: no such container" >&2; exit 125; fi\n'
                    f"  exec cat {canned};;\n"
                    "run) echo 0123456789abcdef;;\n"
                    "esac\n")
        os.chmod(stub, 0o755)
        return stub, {**self.env, "PATH": stub_dir + os.pathsep + self.env.get("PATH", os.defpath)}

    def compare(self, label, ours, raw, rounds, before=None, warmup=2, extra=(), env=None):
        """Time `ours` and `raw` (and informational `extra`) interleaved."""
        sides = [("ours", ours), ("raw", raw), *extra]
        samples = {k: [] for k, _ in sides}
        for r in range(-warmup, rounds):
            order = sides if r % 2 == 0 else [sides[1], sides[0], *sides[2:]]
            for key, argv in order:
                if before:
                    before()
                dt = self.run(argv, env=env)
                if r >= 0:
                    samples[key].append(dt)
            if sys.stderr.isatty():
                print(f"\r  {label}: round {max(r + 1, 0)}/{rounds}", end="", file=sys.stderr, flush=True)
        if sys.stderr.isatty():
            print("\r" + " " * 60 + "\r", end="", file=sys.stderr, flush=True)
        return samples


def p90(xs):
    """Nearest-rank 90th percentile."""
    s = sorted(xs)
    return s[max(0, math.ceil(0.9 * len(s)) - 1)]


def summary(samples):
    return {"median_ms": statistics.median(samples) * 1e3, "p90_ms": p90(samples) * 1e3,
            "min_ms": min(samples) * 1e3, "n": len(samples)}


# -- profile ------------------------------------------------------------------


def importtime(bench, argv, runs=7, before=None):
    """Median self/cumulative import time (us) per module over `runs` runs."""
    per_module = {}
    order = []
    for _ in range(runs):
        if before:
            before()
        proc = subprocess.run([bench.python, "-X", "importtime", *argv], cwd=bench.project, env=bench.env,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
        for line in proc.stderr.splitlines():
            if not line.startswith("import time:") or "self [us]" in line:
                continue
            self_us, cum_us, name = line[len("import time:"):].split("|", 2)
            self_us, cum_us = int(self_us), int(cum_us)
            depth = (len(name) - len(name.lstrip()) - 1) // 2  # 0: imported by the script itself
            key = name.strip()
            if key not in per_module:
                per_module[key] = {"self": [], "cum": [], "depth": depth}
                order.append(key)
            per_module[key]["self"].append(self_us)
            per_module[key]["cum"].append(cum_us)
    rows = []
    for key in order:
        m = per_module[key]
        rows.append({"module": key, "self_us": int(statistics.median(m["self"])),
                     "cumulative_us": int(statistics.median(m["cum"])), "depth": m["depth"]})
    return rows


def ladder(bench, rows, full_argv, env, rounds=21):
    """Wall time of `python -c "import A, B, ..."`, one more top-level module
    per step in the order the command loads them, then the command itself
    (against the no-op engine). Differences between steps are what each
    import really adds, interpreter start-up included in the first."""
    top = [r["module"] for r in rows if r["depth"] == 0]
    top = top[top.index("site") + 1:] if "site" in top else top
    steps = [("python -c pass", [bench.python, "-c", "pass"])]
    for i, m in enumerate(top):
        steps.append((f"+ import {m}", [bench.python, "-c", "import " + ", ".join(top[: i + 1])]))
    steps.append(("the command itself", full_argv))
    samples = {label: [] for label, _ in steps}
    for r in range(-1, rounds):
        for label, argv in (steps if r % 2 == 0 else steps[::-1]):
            dt = bench.run(argv, env=env)
            if r >= 0:
                samples[label].append(dt)
    return [{"step": label, "median_ms": statistics.median(samples[label]) * 1e3} for label, _ in steps]


def print_profile(title, rows, steps=(), top=15):
    total = sum(r["self_us"] for r in rows)
    print(f"\n{title}: {total / 1000:.1f} ms in imports (sum of self times, median of runs)")
    print("  top-level imports by cumulative time:")
    first = [r for r in rows if r["depth"] == 0]
    for r in sorted(first, key=lambda r: -r["cumulative_us"])[:top]:
        print(f"    {r['cumulative_us'] / 1000:7.2f} ms  {r['module']}")
    print("  modules by self time:")
    for r in sorted(rows, key=lambda r: -r["self_us"])[:top]:
        print(f"    {r['self_us'] / 1000:7.2f} ms  {r['module']}")
    if steps:
        print("  start-up ladder (wall medians; no-op engine):")
        prev = None
        for s in steps:
            delta = "" if prev is None else f"{s['median_ms'] - prev:+6.1f}"
            print(f"    {s['median_ms']:7.1f} ms {delta:>7}  {s['step']}")
            prev = s["median_ms"]


# -- main -----------------------------------------------------------------------


def machine(podman, engine="podman"):
    def out(*argv):
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=60).stdout.strip()
        except OSError:
            return ""

    return {
        "nproc": os.cpu_count(),
        "cpu": next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                    platform.processor()),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "podman": out(podman, "version", "--format", "{{.Client.Version}}"),
        "engine": engine,
        "server": out(podman, "version", "--format", "{{.Server.Version}}") if engine == "docker" else "",
        "runtime": (out(podman, "info", "--format", "{{.Host.OCIRuntime.Version}}" if engine == "podman"
                        else "{{.DefaultRuntime}}").splitlines() or [""])[0],
        "cgroups": out(podman, "info", "--format", "{{.Host.CgroupsVersion}}" if engine == "podman"
                       else "{{.CgroupVersion}}"),
        "rootless": os.geteuid() != 0,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=30, help="timed samples per command (default 30)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--profile", action="store_true", help="also show -X importtime for ab-exec and ab-up")
    p.add_argument("--install", choices=("venv", "plain"), default="venv",
                   help="venv: the ab-* scripts next to this interpreter (default); plain: a throwaway venv "
                        "without the editable-install import hook, as a regular install starts")
    p.add_argument("--no-bytecode-cache", action="store_true",
                   help="keep the caller's PYTHONDONTWRITEBYTECODE / PYTHONPYCACHEPREFIX as they are")
    p.add_argument("--engine", choices=("podman", "docker"), default="podman",
                   help="the engine to measure (docker: the daemon DOCKER_HOST names)")
    p.add_argument("--only", action="append", choices=sorted(TARGETS), help="run only this target (repeatable)")
    args = p.parse_args()
    only = args.only or list(TARGETS)

    bench = Bench(args)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still clean up (finally below)
    load_before = os.getloadavg()
    results = {"machine": machine(bench.podman, args.engine), "rounds": args.rounds, "targets": {}, "info": {}}
    try:
        bench.setup()
        bench.ensure_running()
        podman = bench.podman
        if "exec" in only:
            s = bench.compare("exec", bench.ab("ab-exec", "--", "true"), [podman, "exec", bench.name, "true"],
                              args.rounds, extra=[("raw-same-flags", bench.exec_flags_argv()),
                                                  ("reference", bench.reference_launcher()),
                                                  ("fallback", ["env", "AGENTSH_EXEC_SERVER=0",
                                                                *bench.ab("ab-exec", "--", "true")])])
            results["targets"]["exec"] = (s, "ab-exec -- true", f"{args.engine} exec NAME true")
            results["info"]["ab-exec through the engine's exec (AGENTSH_EXEC_SERVER=0)"] = summary(s["fallback"])
            results["info"][f"{args.engine} exec with ab-exec's flags"] = summary(s["raw-same-flags"])
            results["info"]["reference launcher (os, sys, re only)"] = summary(s["reference"])
        if "up-warm" in only:
            bench.ensure_running()
            s = bench.compare("up-warm", bench.ab("ab-up"), [podman, "container", "inspect", bench.name],
                              args.rounds)
            results["targets"]["up-warm"] = (s, "ab-up (running, unchanged)",
                                             f"{args.engine} container inspect NAME")
        if "up-cold" in only:
            s = bench.compare("up-cold", bench.ab("ab-up"), [podman, "run", "-d", *bench.run_args],
                              args.rounds, before=bench.remove_container)
            results["targets"]["up-cold"] = (s, "ab-up (no container)", f"{args.engine} run -d <same flags>")
        # agentsh's own cost: the same commands against an engine that answers at once.
        bench.ensure_running()
        stub, stub_env = bench.stub_engine()
        if "exec" in only:
            s = bench.compare("stub-exec", bench.ab("ab-exec", "--", "true"), [stub, "exec", bench.name, "true"],
                              args.rounds, env=stub_env, extra=[("reference", bench.reference_launcher())])
            results["info"]["ab-exec, no-op engine"] = summary(s["ours"])
            results["info"]["reference launcher, no-op engine"] = summary(s["reference"])
            results["info"]["no-op engine alone"] = summary(s["raw"])
        if "up-warm" in only or "up-cold" in only:
            s = bench.compare("stub-up", bench.ab("ab-up"), [stub, "container", "inspect", bench.name],
                              args.rounds, env=stub_env)
            results["info"]["ab-up (warm), canned engine"] = summary(s["ours"])
            results["info"]["canned inspect alone"] = summary(s["raw"])
            cold_env = {**stub_env, "BENCH_STUB_COLD": "1"}
            s = bench.compare("stub-up-cold", bench.ab("ab-up"), [stub, "run", "-d", bench.name], args.rounds,
                              env=cold_env)
            results["info"]["ab-up (cold), no-op engine"] = summary(s["ours"])
        if "exec" in only:  # an agent's OAuth login: a file credential, read back after every command
            bench.ensure_running()
            for argv, data in ((bench.ab("ab-creds", "set", "BENCH_LOGIN", "--file", "~/.bench/login.json",
                                         "--writeback"), b'{"token": "bench"}'),
                               (bench.ab("ab-creds", "grant", "BENCH_LOGIN", bench.project), b"")):
                subprocess.run(argv, input=data, env=bench.env, capture_output=True, check=True)
            s = bench.compare("exec-file-credential", bench.ab("ab-exec", "--", "true"),
                              [podman, "exec", bench.name, "true"], args.rounds,
                              extra=[("fallback", ["env", "AGENTSH_EXEC_SERVER=0", *bench.ab("ab-exec", "--", "true")])])
            results["info"]["ab-exec -- true, a file credential granted (--writeback)"] = summary(s["ours"])
            results["info"]["the same through the engine's exec (AGENTSH_EXEC_SERVER=0)"] = summary(s["fallback"])
        # Floors, for the analysis: the interpreter alone, and with its site imports.
        s = bench.compare("python", [bench.python, "-I", "-S", "-c", "pass"], [bench.python, "-c", "pass"],
                          args.rounds)
        results["info"]["python -I -S -c pass"] = summary(s["ours"])
        results["info"]["python -c pass (with site)"] = summary(s["raw"])
        if args.profile:
            bench.ensure_running()
            results["profile"] = {}
            for title, argv, before, env in (
                ("ab-exec -- true", bench.ab("ab-exec", "--", "true"), bench.ensure_running, stub_env),
                ("ab-up (running, unchanged)", bench.ab("ab-up"), bench.ensure_running, stub_env),
                ("ab-up (no container)", bench.ab("ab-up"), bench.remove_container,
                 {**stub_env, "BENCH_STUB_COLD": "1"}),
            ):
                rows = importtime(bench, argv, before=before)
                results["profile"][title] = {"importtime": rows, "ladder": ladder(bench, rows, argv, env)}
    finally:
        bench.cleanup()

    results["machine"]["loadavg_before_after"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
    out = {"machine": results["machine"], "rounds": args.rounds, "install": args.install,
           "bytecode_cache": not args.no_bytecode_cache, "targets": {}, "info": results["info"],
           "run_args": bench.run_args}
    for key, (s, ours_label, raw_label) in results["targets"].items():
        o, r = summary(s["ours"]), summary(s["raw"])
        ratio = o["median_ms"] / r["median_ms"]
        out["targets"][key] = {"ours": {"command": ours_label, **o}, "raw": {"command": raw_label, **r},
                               "ratio": ratio, "target": TARGETS[key], "pass": ratio <= TARGETS[key],
                               "overhead_ms": o["median_ms"] - r["median_ms"]}
    if "profile" in results:
        out["profile"] = results["profile"]

    if args.json:
        json.dump(out, sys.stdout, indent=2)
        print()
    else:
        report(out)
    return 0 if all(t["pass"] for t in out["targets"].values()) else 1


def report(out):
    m = out["machine"]
    engine = f"docker {m['podman']} (daemon {m['server']})" if m.get("engine") == "docker" else f"podman {m['podman']}"
    print(f"machine: {m['nproc']} cpu ({m['cpu']}), kernel {m['kernel']}, {engine}, "
          f"runtime {m['runtime']}, cgroups {m['cgroups']}, {'rootless' if m['rootless'] else 'rootful'}, "
          f"python {m['python']}; {out['rounds']} rounds, interleaved; install: {out['install']}"
          f"{'' if out['bytecode_cache'] else ', bytecode not cached'}; "
          f"load average before/after {m['loadavg_before_after'][0]}/{m['loadavg_before_after'][1]}")
    rows = []
    for key, t in out["targets"].items():
        rows += [(key, t["ours"]["command"], t["ours"]), ("", t["raw"]["command"], t["raw"])]
    info = [("info", label, s) for label, s in out["info"].items()]
    width = max(len(label) for _, label, _ in rows + info)
    print()
    print(f"{'':<9} {'command':<{width}} {'median':>9} {'p90':>9} {'min':>9}")
    for group in (rows, info):
        for key, label, s in group:
            print(f"{key:<9} {label:<{width}} {s['median_ms']:7.1f}ms {s['p90_ms']:7.1f}ms {s['min_ms']:7.1f}ms")
        print()
    for key, t in out["targets"].items():
        print(f"{'PASS' if t['pass'] else 'FAIL'} {key}: median {t['ours']['median_ms']:.1f} ms vs "
              f"{t['raw']['median_ms']:.1f} ms = {t['ratio']:.3f}x (target <= {t['target']:.2f}x; "
              f"overhead {t['overhead_ms']:+.1f} ms)")
    for title, prof in (out.get("profile") or {}).items():
        print_profile(title, prof["importtime"], prof["ladder"])


if __name__ == "__main__":
    sys.exit(main())
