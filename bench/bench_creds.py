#!/usr/bin/env python3
"""`ab-creds get NAME`: median wall time, and where its start-up goes.

    .venv/bin/python bench/bench_creds.py [--rounds N] [--json]

Self-contained: a temporary XDG config/data/state home with one stored
credential (random key file mode). Measured, interleaved round by round so
drift hits all alike: `ab-creds get NAME` (stdout to a pipe), `ab-creds ls`
(no decryption) and the bare interpreter. Then one `-X importtime` run of
`ab-creds get`, summarised as the cumulative cost of the top-level imports.
Target: median `ab-creds get` <= 60 ms.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

TARGET_MS = 60.0
BIN = os.path.dirname(sys.executable)


def timed(argv, env):
    start = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                   check=True)
    return (time.perf_counter() - start) * 1000


def import_breakdown(argv, env, top=12):
    """(module, cumulative ms) for the costliest imports, nested ones folded into their parents."""
    proc = subprocess.run([sys.executable, "-X", "importtime", *argv], env=env, capture_output=True, text=True)
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.removeprefix("import time:").split("|")
        name = name.removeprefix(" ")
        depth = (len(name) - len(name.lstrip())) // 2
        rows.append((name.strip(), int(cumulative) / 1000, depth))
    shallowest = min((d for _, _, d in rows), default=0)
    tops = sorted(((n, ms) for n, ms, d in rows if d == shallowest), key=lambda r: -r[1])
    return tops[:top], sum(ms for _, ms in tops)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as home:
        env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}",
                   **{v: os.path.join(home, v.lower()) for v in ("XDG_CONFIG_HOME", "XDG_DATA_HOME",
                                                                   "XDG_STATE_HOME")})
        env.pop("AGENTSH_PASSPHRASE", None)
        subprocess.run([os.path.join(BIN, "ab-creds"), "set", "BENCH_TOKEN"], input=b"bench-value", env=env,
                       check=True, capture_output=True)
        cases = {
            "ab-creds get": [os.path.join(BIN, "ab-creds"), "get", "BENCH_TOKEN"],
            "ab-creds ls": [os.path.join(BIN, "ab-creds"), "ls"],
            "python -c pass": [sys.executable, "-c", "pass"],
        }
        for argv in cases.values():  # warm the page cache and .pyc files
            timed(argv, env)
        samples = {k: [] for k in cases}
        for r in range(args.rounds):
            order = list(cases) if r % 2 == 0 else list(reversed(cases))
            for k in order:
                samples[k].append(timed(cases[k], env))
        medians = {k: round(statistics.median(v), 1) for k, v in samples.items()}
        tops, total = import_breakdown([os.path.join(BIN, "ab-creds"), "get", "BENCH_TOKEN"], env)
    result = {"rounds": args.rounds, "median_ms": medians, "target_ms": TARGET_MS,
              "ok": medians["ab-creds get"] <= TARGET_MS,
              "imports_ms": {n: round(ms, 1) for n, ms in tops}, "imports_total_ms": round(total, 1)}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0 if result["ok"] else 1
    for k, ms in medians.items():
        print(f"{k:<16} median {ms:6.1f} ms")
    verdict = "ok" if result["ok"] else "OVER TARGET"
    print(f"target: ab-creds get <= {TARGET_MS:.0f} ms: {verdict}")
    print(f"\nimport time of ab-creds get (-X importtime, cumulative, top level; total {total:.1f} ms):")
    for name, ms in tops:
        print(f"  {ms:6.1f} ms  {name}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
