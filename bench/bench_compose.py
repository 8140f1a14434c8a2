#!/usr/bin/env python3
"""`ab-up` of a compose-based devcontainer (a sandbox service and one sibling), against podman-compose itself.

Two measurements, each interleaved round by round in the same run:

  cold    `ab-up` from nothing (the sibling via podman-compose, then the
          sandbox agentsh makes) against `podman-compose up -d` of the same
          compose file by hand (both services made by podman-compose);
          each round removes what the previous one made first (not timed)
  warm    `ab-up` with everything running, against `ab-up` of a plain
          image-based project (what the siblings' check adds to a warm
          ab-up: no engine call, a record and /proc), interleaved; then,
          apart (its processes linger), `podman-compose up -d` on the
          running raw project

Targets: cold/raw <= 2.5 (agentsh's sandbox is more than a container: exec
server, git bridge, hardening); warm compose/plain <= 1.10.

    .venv/bin/python bench/bench_compose.py [--rounds N] [--cold-rounds N] [--json]

Self-contained: temporary XDG dirs, the bench's busybox image
(bench/run.py). Needs Podman and podman-compose (CONTAINERS_CONF where the
engine needs it). Removes its sandboxes, siblings, networks and volumes.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from run import IMAGE, ensure_image, summary  # noqa: E402  (the bench image, the shared summary)

COLD_TARGET = 2.5
WARM_TARGET = 1.10
BIN = os.path.join(os.path.dirname(sys.executable))
COMPOSE = f"""services:
  app:
    image: {IMAGE}
    command: ["sleep", "infinity"]
  web:
    image: {IMAGE}
    command: ["httpd", "-f", "-p", "8080", "-h", "/"]
"""


def timed(argv, env, cwd=None):
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"bench: {' '.join(argv)} exited {proc.returncode}: {proc.stderr.decode().strip()}")
    return dt


def quiet(argv, env=None):
    subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=300)


def make_repo(base, name, devcontainer, env):
    repo = os.path.join(base, name)
    subprocess.run(["git", "init", "-q", repo], check=True)
    os.makedirs(os.path.join(repo, ".devcontainer"))
    with open(os.path.join(repo, "compose.yml"), "w") as f:
        f.write(COMPOSE)
    with open(os.path.join(repo, ".devcontainer", "devcontainer.json"), "w") as f:
        json.dump(devcontainer, f)
    subprocess.run([os.path.join(BIN, "ab-allow"), repo], env=env, check=True, capture_output=True)
    up = subprocess.run([os.path.join(BIN, "ab-up"), "--json", repo], env=env, capture_output=True, timeout=600)
    if up.returncode != 0:
        raise SystemExit(f"bench: ab-up in {repo}: {up.stderr.decode().strip()}")
    return repo, json.loads(up.stdout)["name"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--cold-rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    podman = shutil.which("podman") or sys.exit("bench: podman is missing")
    compose = shutil.which("podman-compose") or sys.exit("bench: podman-compose is missing")
    ensure_image(podman)
    tmp = tempfile.mkdtemp(prefix="agentsh-bench-compose-")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    for var in ("XDG_STATE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME"):
        env[var] = os.path.join(tmp, var.lower())
        os.makedirs(env[var])
    os.makedirs(os.path.join(env["XDG_CONFIG_HOME"], "agentsh"))
    with open(os.path.join(env["XDG_CONFIG_HOME"], "agentsh", "config.toml"), "w") as f:
        f.write(f'image = "{IMAGE}"\n')
    raw_dir = os.path.join(tmp, "raw")
    os.makedirs(raw_dir)
    with open(os.path.join(raw_dir, "compose.yml"), "w") as f:
        f.write(COMPOSE)
    raw_up = [compose, "-p", "agentsh-bench-raw", "-f", os.path.join(raw_dir, "compose.yml"), "up", "-d"]
    sandboxes = []

    def raw_clear():
        out = subprocess.run([podman, "ps", "-aq", "--filter", "label=io.podman.compose.project=agentsh-bench-raw"],
                             capture_output=True, text=True).stdout.split()
        if out:
            quiet([podman, "rm", "-f", "-t", "0", *out])

    try:
        repo, sandbox = make_repo(tmp, "composed", {"dockerComposeFile": "../compose.yml", "service": "app"}, env)
        sandboxes.append(sandbox)
        plain, plain_name = make_repo(tmp, "plain", {"image": IMAGE}, env)
        sandboxes.append(plain_name)
        ab_up = [os.path.join(BIN, "ab-up"), repo]
        timed(raw_up, env)  # the raw project, running, for the warm round
        # compose and plain interleaved, their order flipping; the raw warm up (seconds of podman-compose,
        # whose processes linger) apart, so it slows neither of them
        warm = {"compose": ab_up, "plain": [os.path.join(BIN, "ab-up"), plain]}
        samples = {"compose": [], "plain": [], "raw": []}
        for r in range(-2, args.rounds):
            for name in (("compose", "plain") if r % 2 == 0 else ("plain", "compose")):
                dt = timed(warm[name], env)
                if r >= 0:
                    samples[name].append(dt)
        for _ in range(max(3, args.rounds // 4)):
            samples["raw"].append(timed(raw_up, env))
        cold = {"ab_up": [], "raw": []}
        for r in range(args.cold_rounds):
            for name in (("ab_up", "raw") if r % 2 == 0 else ("raw", "ab_up")):
                if name == "ab_up":
                    quiet([os.path.join(BIN, "ab-down"), "--rm", repo], env)
                    cold[name].append(timed(ab_up, env))
                else:
                    raw_clear()
                    cold[name].append(timed(raw_up, env))
    finally:
        for name, repo_dir in zip(sandboxes, (os.path.join(tmp, "composed"), os.path.join(tmp, "plain"))):
            quiet([os.path.join(BIN, "ab-down"), "--rm", "--volumes", repo_dir], env)
            quiet([podman, "volume", "rm", "-f", f"{name}-home"])
        raw_clear()
        quiet([podman, "network", "rm", "-f", "agentsh-bench-raw_default"])  # what podman-compose made for it
        shutil.rmtree(tmp, ignore_errors=True)
    warm_stats = {k: summary(v) for k, v in samples.items()}
    cold_stats = {k: summary(v) for k, v in cold.items()}
    wmed = {k: s["median_ms"] for k, s in warm_stats.items()}
    cmed = {k: s["median_ms"] for k, s in cold_stats.items()}
    result = {"rounds": args.rounds, "cold_rounds": args.cold_rounds,
              "warm_median_ms": {k: round(v, 1) for k, v in wmed.items()},
              "cold_median_ms": {k: round(v, 1) for k, v in cmed.items()},
              "warm_compose_over_plain": round(wmed["compose"] / wmed["plain"], 3),
              "warm_compose_over_raw": round(wmed["compose"] / wmed["raw"], 3),
              "cold_ab_up_over_raw": round(cmed["ab_up"] / cmed["raw"], 3),
              "targets": {"warm_compose_over_plain": WARM_TARGET, "cold_ab_up_over_raw": COLD_TARGET},
              "summary": {"warm": warm_stats, "cold": cold_stats}}
    result["met"] = (result["warm_compose_over_plain"] <= WARM_TARGET
                     and result["cold_ab_up_over_raw"] <= COLD_TARGET)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for k, v in result["warm_median_ms"].items():
            print(f"warm {k:8} median {v:8.1f} ms")
        for k, v in result["cold_median_ms"].items():
            print(f"cold {k:8} median {v:8.1f} ms")
        print(f"warm compose/plain {result['warm_compose_over_plain']:.3f} (target <= {WARM_TARGET}), "
              f"warm compose/raw {result['warm_compose_over_raw']:.3f}, "
              f"cold ab-up/raw {result['cold_ab_up_over_raw']:.3f} (target <= {COLD_TARGET})")
        print("met" if result["met"] else "NOT MET")
    return 0 if result["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
