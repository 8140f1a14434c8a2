#!/usr/bin/env python3
"""The cd hook's cost: per prompt in the fast path, and from `cd` to a sandbox prompt.

1. Prompt cost, bash and zsh: an interactive shell reads N command lines
   (default 1000) from a pipe and shows a prompt before each, once with the
   hook loaded and once without; (wall(hook) - wall(plain)) / N is the hook's
   cost per prompt. Three fast-path cases: the directory never changes; a cd
   between two deep directories with no project file above them at every
   prompt; a cd between two subdirectories of one project (already entered)
   at every prompt. Target: <= 1 ms per prompt. Rounds are interleaved and the
   median is reported.
2. cd to a sandbox prompt: in a real interactive bash on a pty (pexpect), the
   time from typing `cd PROJECT` (allowed, sandbox running) to the sandbox
   shell's prompt, against `podman exec -it NAME sh` from spawn to the same
   prompt. Target: <= 1.2x.

    .venv/bin/python bench/bench_hook.py [--prompts N] [--rounds N] [--json]

Self-contained: a temporary XDG home, the tiny busybox image of bench/run.py,
a temporary project; its container and home volume are removed at the end.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import IMAGE, ensure_image, plain_install, summary  # noqa: E402  (shared setup and summary)

PROMPT_TARGET_MS = 1.0
CD_TARGET = 1.2
BIN = os.path.dirname(sys.executable)
SANDBOX_PROMPT = re.compile(rb"\(ash\)\r?\n[^\n]*\r?\n(\r?\n)?[^\n]*[#$] ")  # busybox banner, then its prompt
HOST_PROMPT = "BENCH> "


class Setup:
    def __init__(self, install):
        self.tmp = os.path.realpath(tempfile.mkdtemp(prefix="agentsh-bench-hook-"))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSH_")}
        for var, sub in (("XDG_STATE_HOME", "state"), ("XDG_CONFIG_HOME", "config"), ("XDG_DATA_HOME", "data")):
            self.env[var] = os.path.join(self.tmp, sub)
            os.makedirs(self.env[var])
        self.env["PATH"] = BIN + os.pathsep + self.env.get("PATH", os.defpath)
        self.env["HOME"] = os.path.join(self.tmp, "home")
        os.makedirs(self.env["HOME"])
        os.makedirs(os.path.join(self.env["XDG_CONFIG_HOME"], "agentsh"))
        with open(os.path.join(self.env["XDG_CONFIG_HOME"], "agentsh", "config.toml"), "w") as f:
            f.write(f'image = "{IMAGE}"\n')
        self.plain_a = self.mkdir("plain/a/b/c/d/e/f/g")
        self.plain_b = self.mkdir("plain/h/i/j/k/l/m/n")
        self.project = self.mkdir("project")
        self.sub_a, self.sub_b = self.mkdir("project/src/a"), self.mkdir("project/src/b")
        with open(os.path.join(self.project, ".agentsh.toml"), "w") as f:
            f.write("# bench project\n")
        self.sandbox = None
        self.hooks = {shell: self.ab("ab-hook", shell, "--no-completions") for shell in ("bash", "zsh")}
        if install == "plain":
            # As from pip or pipx: no editable-install finder imported at every start.
            hook_bin = os.path.join(plain_install(self.tmp), "ab-hook")
            with open(hook_bin, "w") as f:
                f.write(f"#!{os.path.join(os.path.dirname(hook_bin), 'python')}\n"
                        "from agentsh.cli.hook import main\nmain()\n")
            os.chmod(hook_bin, 0o755)
            mine = os.path.join(BIN, "ab-hook")
            self.hooks = {k: v.replace(f"_agentsh_bin={mine}", f"_agentsh_bin={hook_bin}")
                          for k, v in self.hooks.items()}

    def mkdir(self, rel):
        path = os.path.join(self.tmp, rel)
        os.makedirs(path)
        return path

    def ab(self, *argv):
        return subprocess.run(argv, env=self.env, check=True, capture_output=True, text=True,
                              cwd=self.project).stdout

    def start_sandbox(self):
        self.ab("ab-allow")
        self.sandbox = self.ab("ab-up").strip()

    def cleanup(self):
        if self.sandbox:
            for args in (["rm", "-f", "-t", "0", self.sandbox], ["volume", "rm", "-f", self.sandbox + "-home"]):
                subprocess.run(["podman", *args], capture_output=True)
        shutil.rmtree(self.tmp, ignore_errors=True)


# -- 1. prompt cost ------------------------------------------------------------------


CASES = {
    "same-dir": "the directory never changes",
    "cd-no-project": "cd between two deep directories with no project file, every prompt",
    "cd-in-project": "cd between two subdirectories of an entered project, every prompt",
}


def rc_text(setup, shell, hooked, case):
    lines = [f"PS1='{HOST_PROMPT}'"]
    if hooked:
        lines.append(setup.hooks[shell])
        if case == "cd-in-project":  # as after entering it: no ab-hook call in the measured prompts
            lines.append(f"_agentsh_dir=; _agentsh_project='{setup.project}'")
    return "\n".join(lines) + "\n"


def commands(setup, case, n):
    if case == "same-dir":
        return ":\n" * n
    a, b = (setup.plain_a, setup.plain_b) if case == "cd-no-project" else (setup.sub_a, setup.sub_b)
    return "".join(f"cd '{a if i % 2 else b}'\n" for i in range(n))


def shell_wall(setup, shell, hooked, case, n):
    """Wall time of an interactive shell reading n lines (each shows a prompt)."""
    rc_dir = os.path.join(setup.tmp, f"rc-{shell}-{int(hooked)}-{case}")
    os.makedirs(rc_dir, exist_ok=True)
    rc = os.path.join(rc_dir, ".zshrc" if shell == "zsh" else "bashrc")
    with open(rc, "w") as f:
        f.write(rc_text(setup, shell, hooked, case))
    argv = ["bash", "--noprofile", "--rcfile", rc, "-i"] if shell == "bash" else ["zsh", "-d", "-i"]
    env = {**setup.env, "ZDOTDIR": rc_dir}
    start_dir = setup.plain_a if case != "cd-in-project" else setup.sub_a
    data = commands(setup, case, n).encode()
    t0 = time.perf_counter()
    proc = subprocess.run(argv, input=data, env=env, cwd=start_dir, capture_output=True)
    wall = time.perf_counter() - t0
    prompts = proc.stdout.count(HOST_PROMPT.encode()) + proc.stderr.count(HOST_PROMPT.encode())
    if prompts < n:
        raise SystemExit(f"bench: {shell} showed {prompts} prompts for {n} lines: {proc.stderr[-300:]!r}")
    return wall


def prompt_cost(setup, prompts, rounds):
    results = {}
    for shell in ("bash", "zsh"):
        for case in CASES:
            walls = {True: [], False: []}
            for r in range(rounds + 1):
                for hooked in ((True, False) if r % 2 else (False, True)):
                    wall = shell_wall(setup, shell, hooked, case, prompts)
                    if r:  # round 0 warms caches
                        walls[hooked].append(wall)
            per_prompt_ms = (statistics.median(walls[True]) - statistics.median(walls[False])) / prompts * 1e3
            results[f"{shell}/{case}"] = {
                "hook_ms_per_prompt": round(per_prompt_ms, 4),
                "plain_wall_ms": round(statistics.median(walls[False]) * 1e3, 1),
                "hook_wall_ms": round(statistics.median(walls[True]) * 1e3, 1),
                "ok": per_prompt_ms <= PROMPT_TARGET_MS,
            }
    return results


# -- 2. cd to a sandbox prompt ---------------------------------------------------------


def cd_to_sandbox(setup, rounds):
    import pexpect

    setup.start_sandbox()
    rc = os.path.join(setup.tmp, "cd-bashrc")
    with open(rc, "w") as f:
        f.write(f"PS1='{HOST_PROMPT}'\n{setup.hooks['bash']}")
    env = {**setup.env, "TERM": "xterm"}
    host = pexpect.spawn("bash", ["--noprofile", "--rcfile", rc, "-i"], env=env, cwd=setup.tmp, timeout=60)
    host.expect_exact(HOST_PROMPT)
    samples = {"ours": [], "raw": []}

    def ours():
        host.sendline(f"cd '{setup.project}'")
        t0 = time.perf_counter()
        host.expect(SANDBOX_PROMPT)
        dt = time.perf_counter() - t0
        host.sendline("exit")
        host.expect_exact(HOST_PROMPT)
        host.sendline(f"cd '{setup.tmp}'")
        host.expect_exact(HOST_PROMPT)
        return dt

    def raw():
        t0 = time.perf_counter()
        child = pexpect.spawn("podman", ["exec", "-it", setup.sandbox, "sh"], env=env, timeout=60)
        child.expect(SANDBOX_PROMPT)
        dt = time.perf_counter() - t0
        child.sendline("exit")
        child.expect(pexpect.EOF)
        return dt

    for r in range(-2, rounds):
        for key, measure in ((("ours", ours), ("raw", raw)) if r % 2 == 0 else (("raw", raw), ("ours", ours))):
            dt = measure()
            if r >= 0:
                samples[key].append(dt)
    host.sendline("exit")
    host.close()
    ratio = statistics.median(samples["ours"]) / statistics.median(samples["raw"])
    return {"ours": summary(samples["ours"]), "raw": summary(samples["raw"]), "ratio": round(ratio, 3),
            "ok": ratio <= CD_TARGET}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prompts", type=int, default=1000, help="prompts per shell run (default 1000)")
    p.add_argument("--prompt-rounds", type=int, default=5, help="runs per case and side (default 5)")
    p.add_argument("--rounds", type=int, default=10, help="cd-to-sandbox samples per side (default 10)")
    p.add_argument("--install", choices=("plain", "dev"), default="plain",
                   help="ab-hook as a regular install runs it (default), or the dev venv's editable one")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    args = p.parse_args()
    for tool in ("podman", "bash", "zsh"):
        if not shutil.which(tool):
            sys.exit(f"bench: {tool} not found on PATH")
    ensure_image("podman")
    setup = Setup(args.install)
    try:
        out = {"prompt": prompt_cost(setup, args.prompts, args.prompt_rounds),
               "cd_to_sandbox": cd_to_sandbox(setup, args.rounds)}
    finally:
        setup.cleanup()
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"install: {args.install}")
    print(f"prompt cost of the hook, {args.prompts} prompts (target <= {PROMPT_TARGET_MS} ms per prompt):")
    for key, row in out["prompt"].items():
        print(f"  {key:<22} {row['hook_ms_per_prompt']:8.4f} ms/prompt   (plain {row['plain_wall_ms']} ms, "
              f"hooked {row['hook_wall_ms']} ms)  {'ok' if row['ok'] else 'OVER'}")
    cd = out["cd_to_sandbox"]
    print(f"cd to a sandbox prompt: {cd['ours']['median_ms']:.0f} ms vs podman exec -it NAME sh "
          f"{cd['raw']['median_ms']:.0f} ms: ratio {cd['ratio']:.3f} (target <= {CD_TARGET})  "
          f"{'ok' if cd['ok'] else 'OVER'}")


if __name__ == "__main__":
    main()
