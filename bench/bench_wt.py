#!/usr/bin/env python3
"""`ab-wt new` against a raw `git worktree add` of the same repo.

Target: median(`ab-wt new NAME`) <= 1.3 x median(`git worktree add -q -b
BRANCH PATH HEAD`), both run in the same repository, interleaved round by
round (ours first on even rounds, raw first on odd ones) so drift and cache
effects hit both sides alike. Every sample makes a new worktree (unique
names), so both sides see the same growing list of worktrees.

    .venv/bin/python bench/bench_wt.py [--rounds N] [--files N ...] [--json]

`ab-wt new` costs a fixed amount on top of git (Python start-up, the
per-repo lock, one `git rev-parse`, the record), while `git worktree add`
grows with the checkout; so the ratio is reported for each repository size
given with --files (default: 10 files, the worst case; 1000 and 5000 files
of about 4 KiB, small and mid-sized projects). The verdict is for the last
size given; the fixed overhead in ms is printed for every size.

Self-contained: a temporary XDG state/config/data home and generated
repositories, removed at the end. No container engine is needed.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import summary  # noqa: E402  (the shared median/p90 summary)

TARGET = 1.30
GIT_ENV = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.invalid",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.invalid"}


def make_repo(path, files):
    """A repository with `files` files of ~4 KiB in a few directories, one commit."""
    subprocess.run(["git", "init", "-q", path], check=True)
    for i in range(files):
        d = os.path.join(path, f"pkg{i % 20}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"mod{i}.py"), "w") as f:
            f.write(f"# module {i}\n" + "x = 1\n" * 680)
    subprocess.run(["git", "-C", path, "add", "-A"], check=True)
    subprocess.run(["git", "-C", path, "commit", "-qm", "bench"], check=True, env={**os.environ, **GIT_ENV})


def timed(argv, cwd, env):
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"bench: {' '.join(argv)} exited {proc.returncode}: {proc.stderr.decode().strip()}")
    return dt


def measure(tmp, files, rounds, warmup, ab_wt, env):
    repo = os.path.join(tmp, f"repo-{files}")
    raw_dir = os.path.join(tmp, f"raw-{files}")
    os.makedirs(raw_dir)
    make_repo(repo, files)
    samples = {"ours": [], "raw": []}
    for r in range(-warmup, rounds):
        n = r + warmup
        sides = [("ours", [ab_wt, "new", f"ab{n}"]),
                 ("raw", ["git", "worktree", "add", "-q", "-b", f"raw{n}", os.path.join(raw_dir, f"raw{n}"), "HEAD"])]
        for key, argv in (sides if r % 2 == 0 else sides[::-1]):
            dt = timed(argv, repo, env)
            if r >= 0:
                samples[key].append(dt)
    ours, raw = summary(samples["ours"]), summary(samples["raw"])
    ratio = ours["median_ms"] / raw["median_ms"]
    return {"files": files, "ours": ours, "raw": raw, "ratio": ratio,
            "overhead_ms": ours["median_ms"] - raw["median_ms"]}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=20, help="timed samples per side and size (default 20)")
    p.add_argument("--files", type=int, nargs="+", default=[10, 1000, 5000],
                   help="repository sizes in files (default: 10 1000 5000); the verdict is for the last")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    args = p.parse_args()

    ab_wt = os.path.join(os.path.dirname(sys.executable), "ab-wt")
    if not os.access(ab_wt, os.X_OK):
        sys.exit(f"bench: {ab_wt} not found (pip install -e . in this venv)")
    tmp = os.path.realpath(tempfile.mkdtemp(prefix="agentsh-bench-wt-"))
    env = dict(os.environ)
    for var in ("XDG_STATE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME"):
        env[var] = os.path.join(tmp, var.lower())
        os.makedirs(env[var])
    # An installed package runs from compiled bytecode; a checkout under
    # PYTHONDONTWRITEBYTECODE would recompile every module at every start.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = os.path.join(tmp, "pycache")
    try:
        rows = [measure(tmp, files, args.rounds, 2, ab_wt, env) for files in args.files]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    last = rows[-1]
    out = {"rounds": args.rounds, "target": TARGET, "sizes": rows, "verdict_files": last["files"],
           "pass": last["ratio"] <= TARGET}
    if args.json:
        json.dump(out, sys.stdout, indent=2)
        print()
    else:
        print(f"{args.rounds} rounds per size, interleaved; python {sys.version.split()[0]}, "
              f"{os.cpu_count()} cpu")
        print(f"{'files':>6} {'ab-wt new':>11} {'git worktree add':>17} {'ratio':>7} {'overhead':>9}")
        for row in rows:
            print(f"{row['files']:>6} {row['ours']['median_ms']:9.1f}ms {row['raw']['median_ms']:15.1f}ms "
                  f"{row['ratio']:6.2f}x {row['overhead_ms']:+8.1f}ms")
        print(f"{'PASS' if out['pass'] else 'FAIL'}: {last['files']} files: {last['ratio']:.2f}x "
              f"(target <= {TARGET:.2f}x)")
    return 0 if out["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
