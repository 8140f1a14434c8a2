"""ab-agent: run a coding agent in the project's sandbox, logged in, with its state and flags."""

import os

from agentsh.app import session
from agentsh.cli import options
from agentsh.cli.common import load_context, notice, print_json, run
from agentsh.cli.ls import print_table
from agentsh.cli.options import AGENT, DIR, FLAG, ISOLATIONS, OPTIONAL, WORKTREE, Arg, Command, Option
from agentsh.creds import delivery as inject
from agentsh.policy import agents, config
from agentsh.sandbox import execute, instructions

EXAMPLES = [
    "ab-agent claude                       # Claude Code, continuing this project's last conversation",
    "ab-agent claude --new                 # a fresh conversation",
    "ab-agent codex --safe                 # keep Codex's own approval prompts",
    "ab-agent gemini -- -p 'explain main.py'",
    "ab-agent claude --wt feature-x        # in worktree feature-x's sandbox (ab-wt)",
    "ab-agent shell                        # an interactive shell, like ab-exec",
    "ab-agent --list --json                # the profiles: command, flags, credentials, state, network",
]
COMMAND = Command(
    "ab-agent",
    "Run agent NAME (claude, codex, gemini, opencode, aider, shell, or one defined in [agents.NAME]) in the "
    "sandbox of the project holding DIR (default: .), starting it if needed. Permission-skipping flags are on "
    "(the sandbox is the safety net; --safe drops them); the last conversation continues when there is one and "
    "no AGENT_ARGS are given (--new starts fresh); the profile's stored credentials reach the sandbox for the "
    "run. Exit status is the agent's (125: agentsh or the engine failed first; 127: the agent is not "
    "installed).",
    EXAMPLES,
    usage="ab-agent [-h] [--dir DIR] [--wt WT] [--new] [--safe] [--isolation I] NAME [-- AGENT_ARGS...] | --list [--json]",
    args=(Arg("name", nargs=OPTIONAL, metavar="NAME", help="the agent profile", value=AGENT),),
    options=(
        Option("--dir", help="run in the project holding DIR, in DIR (default: .)", value=DIR),
        Option("--wt", metavar="WT", help="run in worktree WT (ab-wt) of the repo holding DIR, at its top",
               value=WORKTREE),
        Option("--new", kind=FLAG, help="start a new conversation instead of continuing"),
        Option("--safe", kind=FLAG, help="drop the permission-skipping flags"),
        Option("--lockdown", kind=FLAG,
               help="for untrusted repos: only this agent's credentials and API hosts, ephemeral home, "
                    "project behind a copy-on-write layer (see docs/security.md)"),
        Option("--isolation", choices=ISOLATIONS,
               help="container or gvisor (a second kernel) for the sandbox (overrides config 'isolation'; a "
                    "change recreates it)"),
        Option("--list", kind=FLAG, help="list the profiles instead of running one"),
        Option("--json", kind=FLAG, help="with --list: a JSON list of profiles"),
    ),
)


def body(argv):
    # Everything after the first `--` is the agent's, options included.
    split = argv.index("--") if "--" in argv else len(argv)
    argv, agent_args = argv[:split], argv[split + 1:]
    p = options.argparser(COMMAND)
    args = p.parse_args(argv)
    args.agent_args = agent_args
    if args.list:
        return list_profiles(args)
    if not args.name:
        p.error("give an agent NAME (see ab-agent --list)")
    if args.wt:
        from agentsh.app.worktree import path_of  # lazy: re and git calls, only for --wt

        args.dir = path_of(args.wt, args.dir)

    proj, cfg, engine, store = load_context(args.dir, {"isolation": args.isolation})
    prof = agents.profile(args.name, cfg)
    here = os.path.realpath(args.dir if args.dir else os.getcwd())
    workdir = here if (here + "/").startswith(proj.root + "/") else proj.root
    locked = args.lockdown or cfg.get("lockdown")
    if locked:  # only the agent's API
        from agentsh.policy.lockdown import lockdown  # lazy: re and the network rules, only when locked

        cfg = lockdown(cfg, prof.network)
    run_cfg = agents.with_credentials(cfg, inject.cached_credentials(prof, proj))

    def delivery_for(recover):
        if locked:  # the agent's own credentials (named by naming the agent), no project grants
            return inject.only_named(inject.prepare(proj, run_cfg, store, notice), proj, prof.credentials)
        return inject.prepare(proj, run_cfg, store, notice)

    targets = instructions.targets(cfg) if instructions.host_file() else ()
    cmd = agents.command(prof, cfg, args.agent_args, safe=args.safe, new=args.new, instructions_targets=targets)
    req = session.Request(cmd, workdir, env_names=[n for n in cfg["env"] if n in os.environ],
                          env_defaults=dict(prof.env), tty=execute.stdio_is_terminal(), locked=locked)
    return session.run(proj, cfg, engine, store, req, notice, delivery_for=delivery_for)


def list_profiles(args):
    cfg = config.load()
    rows = [agents.profile(n, cfg).as_dict() for n in agents.names(cfg)]
    if args.json:
        print_json(rows)
        return 0
    shown = [{"name": r["name"], "command": " ".join(r["command"]) or "(config shell)",
              "flags": " ".join(r["permissive_args"]) or "-", "continue": " ".join(r["continue_args"]) or "-",
              "credentials": ", ".join(r["credentials"]) or "-"} for r in rows]
    print_table(shown, ("name", "command", "flags", "continue", "credentials"))
    return 0


def main():
    run("ab-agent", body)
