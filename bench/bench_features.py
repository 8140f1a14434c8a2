#!/usr/bin/env python3
"""Warm `ab-up` of a sandbox built with a registry (OCI) devcontainer feature, against the raw engine.

A registry feature is resolved on every ab-up from agentsh's pin and its
digest-checked cache (no request); this measures what that costs. Three
commands, interleaved round by round (the order rotating each round):

  oci     `ab-up` in a project whose devcontainer.json names 127.0.0.1:PORT/ns/hello:1
  local   `ab-up` in the same project with the feature as a local folder (./hello)
  raw     `podman container inspect NAME` of the oci project's sandbox

Target: median(oci) <= 1.10 x median(local): resolving from the cache adds
at most a tenth to a warm ab-up. Ratios to `raw` are printed too.

    .venv/bin/python bench/bench_features.py [--rounds N] [--json]

Self-contained: temporary XDG dirs (state, config, data, cache), the bench's
busybox image (bench/run.py), an in-process registry on loopback
(tests/oci_registry.py). Needs Podman (CONTAINERS_CONF where the engine needs
it). Removes its sandboxes, home volumes and built images at the end.
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
sys.path.insert(0, os.path.dirname(HERE))
from run import IMAGE, ensure_image, summary  # noqa: E402  (the bench image, the shared summary)

from tests.oci_registry import FakeRegistry, feature_tar  # noqa: E402  (a registry on loopback)

TARGET = 1.10
FEATURE = {"id": "hello", "version": "1.0.0", "options": {"greeting": {"type": "string", "default": "hey"}}}
INSTALL = '#!/bin/sh\necho "$GREETING" > /hello\n'
BIN = os.path.join(os.path.dirname(sys.executable))


def timed(argv, env, cwd=None):
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"bench: {' '.join(argv)} exited {proc.returncode}: {proc.stderr.decode().strip()}")
    return dt


def project(base, name, features, env):
    repo = os.path.join(base, name)
    subprocess.run(["git", "init", "-q", repo], check=True)
    os.makedirs(os.path.join(repo, ".devcontainer"))
    if "./hello" in features:
        os.makedirs(os.path.join(repo, ".devcontainer", "hello"))
        with open(os.path.join(repo, ".devcontainer", "hello", "devcontainer-feature.json"), "w") as f:
            json.dump(FEATURE, f)
        with open(os.path.join(repo, ".devcontainer", "hello", "install.sh"), "w") as f:
            f.write(INSTALL)
    with open(os.path.join(repo, ".devcontainer", "devcontainer.json"), "w") as f:
        json.dump({"image": IMAGE, "features": features}, f)
    subprocess.run([os.path.join(BIN, "ab-allow"), repo], env=env, check=True, capture_output=True)
    up = subprocess.run([os.path.join(BIN, "ab-up"), "--json", repo], env=env, capture_output=True, timeout=600)
    if up.returncode != 0:
        raise SystemExit(f"bench: ab-up in {repo}: {up.stderr.decode().strip()}")
    return repo, json.loads(up.stdout)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    podman = shutil.which("podman") or sys.exit("bench: podman is missing")
    ensure_image(podman)
    tmp = tempfile.mkdtemp(prefix="agentsh-bench-features-")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    for var in ("XDG_STATE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME"):
        env[var] = os.path.join(tmp, var.lower())
        os.makedirs(env[var])
    os.makedirs(os.path.join(env["XDG_CONFIG_HOME"], "agentsh"))
    with open(os.path.join(env["XDG_CONFIG_HOME"], "agentsh", "config.toml"), "w") as f:
        f.write(f'image = "{IMAGE}"\n')
    registry = FakeRegistry()
    made = []
    try:
        registry.add("ns/hello", "1", feature_tar(FEATURE, INSTALL))
        oci_repo, oci = project(tmp, "oci", {f"{registry.host}/ns/hello:1": {}}, env)
        made.append(oci)
        local_repo, local = project(tmp, "local", {"./hello": {}}, env)
        made.append(local)
        before = len(registry.requests)
        cases = {"oci": [os.path.join(BIN, "ab-up"), oci_repo], "local": [os.path.join(BIN, "ab-up"), local_repo],
                 "raw": [podman, "container", "inspect", oci["name"]]}
        samples = {k: [] for k in cases}
        names = list(cases)
        for r in range(-2, args.rounds):
            order = names[r % 3:] + names[:r % 3]
            for name in order:
                dt = timed(cases[name], env)
                if r >= 0:
                    samples[name].append(dt)
        requests = len(registry.requests) - before
    finally:
        registry.close()
        for record in made:
            subprocess.run([podman, "rm", "-f", "-t", "0", record["name"]], capture_output=True)
            subprocess.run([podman, "volume", "rm", "-f", f"{record['name']}-home"], capture_output=True)
            subprocess.run([podman, "rmi", "-f", record["image"]], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    stats = {k: summary(v) for k, v in samples.items()}
    med = {k: s["median_ms"] for k, s in stats.items()}
    ratio = med["oci"] / med["local"]
    result = {"rounds": args.rounds, "median_ms": {k: round(v, 1) for k, v in med.items()}, "summary": stats,
              "oci_over_local": round(ratio, 3), "oci_over_raw": round(med["oci"] / med["raw"], 3),
              "local_over_raw": round(med["local"] / med["raw"], 3),
              "registry_requests_while_timing": requests, "target": TARGET, "met": ratio <= TARGET}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for k in cases:
            print(f"{k:6} median {result['median_ms'][k]:7.1f} ms")
        print(f"oci/local {ratio:.3f} (target <= {TARGET}), oci/raw {result['oci_over_raw']:.3f}, "
              f"local/raw {result['local_over_raw']:.3f}; registry requests while timing: {requests}")
        print("met" if result["met"] else "NOT MET")
    return 0 if result["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
