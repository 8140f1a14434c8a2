#!/usr/bin/env python3
"""What isolation = "gvisor" costs: the same workloads on runc and on runsc, in one run, as ratios.

    .venv/bin/python bench/bench_gvisor.py [--rounds N] [--files N] [--json]

Two projects with the same content, one sandbox each, from the default image
(localhost/agentsh:latest; `ab-image build` makes it): one on the host's
kernel (isolation = "container", runc), one on gVisor's (`--isolation
gvisor`). Each workload runs on both sides, interleaved round by round (the
order flips every round), and the ratio is gVisor's median over runc's:

  up-cold   `ab-up`, image present, no container (removed untimed before each sample)
  exec      `ab-exec -- true`, sandbox running
  git       `ab-exec -- git status` in a repository of N files (default 5,000), committed
  build     `ab-exec -- python3 -m compileall -q -f` over the same N files (a build-like workload)
  io        `ab-exec -- sh -c 'dd 100 MiB to a file in the project, fsync, read it back, remove it'`

Self-contained: a temporary XDG home and projects; the sandboxes and their
home volumes are removed at the end, also on Ctrl-C or SIGTERM.
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
IMAGE = "localhost/agentsh:latest"
IO = ("dd if=/dev/zero of=bench.bin bs=1M count=100 conv=fsync 2>/dev/null && cat bench.bin > /dev/null "
      "&& rm bench.bin")


def timed(argv, cwd, env):
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    took = (time.perf_counter() - start) * 1000
    if proc.returncode != 0:
        raise SystemExit(f"bench: {' '.join(argv)} exited {proc.returncode}: {proc.stderr.decode()[-300:]}")
    return took


def make_project(path, files):
    """A git repository of `files` small Python modules in 50 directories, committed."""
    os.makedirs(path)
    for i in range(files):
        d = os.path.join(path, f"pkg{i % 50}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"m{i}.py"), "w") as f:
            f.write(f"def f{i}(x):\n    return [x * k for k in range({i % 17 + 1})]\n")
    git = ["git", "-C", path, "-c", "user.name=b", "-c", "user.email=b@e"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "bench"], check=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=7, help="timed samples per workload and side (default 7)")
    p.add_argument("--files", type=int, default=5000, help="files in the project (default 5000)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    args = p.parse_args()
    if subprocess.run(["podman", "image", "exists", IMAGE]).returncode != 0:
        raise SystemExit(f"bench: {IMAGE} is missing: build it with 'ab-image build'")
    tmp = tempfile.mkdtemp(prefix="agentsh-bench-gvisor-")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    for var in ("XDG_STATE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME"):
        env[var] = os.path.join(tmp, var.lower())
        os.makedirs(env[var])
    env.pop("AGENTSH_ENGINE", None)
    os.makedirs(os.path.join(env["XDG_CONFIG_HOME"], "agentsh"))
    with open(os.path.join(env["XDG_CONFIG_HOME"], "agentsh", "config.toml"), "w") as f:
        f.write(f'image = "{IMAGE}"\n')
    sides = {"runc": ("container", os.path.join(tmp, "runc")), "gvisor": ("gvisor", os.path.join(tmp, "gvisor"))}
    names = {}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        for side, (iso, path) in sides.items():
            make_project(path, args.files)
            out = subprocess.run([os.path.join(BIN, "ab-up"), "--json", "--isolation", iso, path], env=env,
                                 capture_output=True, text=True, check=True).stdout
            names[side] = json.loads(out)["name"]

        def ab(side, tool, *rest):
            iso, path = sides[side]
            return [os.path.join(BIN, tool), "--isolation", iso, *rest], path

        def remove(side):
            subprocess.run(["podman", "rm", "-f", "-t", "0", names[side]], capture_output=True, check=True)
            record = os.path.join(env["XDG_STATE_HOME"], "agentsh", "sandboxes", names[side] + ".json")
            if os.path.exists(record):
                os.unlink(record)

        workloads = {
            "up-cold": (lambda s: ab(s, "ab-up", sides[s][1]), remove),
            "exec": (lambda s: ab(s, "ab-exec", "--", "true"), None),
            "git": (lambda s: ab(s, "ab-exec", "--", "git", "status", "--porcelain"), None),
            "build": (lambda s: ab(s, "ab-exec", "--", "python3", "-m", "compileall", "-q", "-f", "."), None),
            "io": (lambda s: ab(s, "ab-exec", "--", "sh", "-c", IO), None),
        }
        results = {}
        for label, (argv_of, before) in workloads.items():
            samples = {"runc": [], "gvisor": []}
            for r in range(-1, args.rounds):  # one untimed warm-up round
                for side in (("runc", "gvisor") if r % 2 == 0 else ("gvisor", "runc")):
                    if before:
                        before(side)
                    argv, cwd = argv_of(side)
                    took = timed(argv, cwd, env)
                    if r >= 0:
                        samples[side].append(took)
            med = {k: statistics.median(v) for k, v in samples.items()}
            results[label] = {"runc_ms": round(med["runc"], 1), "gvisor_ms": round(med["gvisor"], 1),
                              "ratio": round(med["gvisor"] / med["runc"], 2)}
            if not args.json:
                print(f"{label:8} runc {med['runc']:8.1f} ms   gvisor {med['gvisor']:8.1f} ms   "
                      f"{med['gvisor'] / med['runc']:.2f}x", flush=True)
        load = os.getloadavg()[0]
        if args.json:
            print(json.dumps({"rounds": args.rounds, "files": args.files, "load": load, "results": results},
                             indent=2))
        else:
            print(f"({args.rounds} rounds, {args.files} files, load average {load:.1f} at the end)")
    finally:
        for name in names.values():
            subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True)
            subprocess.run(["podman", "volume", "rm", "-f", f"{name}-home"], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.path.insert(0, REPO)
    main()
