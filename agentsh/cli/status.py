"""ab-status: the project here, whether its .agentsh.toml is trusted and why, its sandbox."""

from agentsh.cli import options
from agentsh.cli.common import print_json, run
from agentsh.cli.options import DIR, FLAG, OFF, OPTIONAL, Arg, Command, Option

EXAMPLES = [
    "ab-status                    # the project holding .",
    "ab-status --json ~/src/app   # keys: project, project_file, trust, reason, widens, on_enter, sandbox, ...",
    "ab-status --no-engine        # no engine call: state from agentsh's records only",
    "PS1='$(ab-status --prompt)'$PS1   # a prompt segment: ab:allowed, ab:blocked, ... (no engine call)",
]
LABELS = (("project", "project"), ("project_file", "file"), ("trust", "trust"), ("on_enter", "on enter"),
          ("sandbox", "sandbox"), ("ports", "ports"), ("credentials", "credentials"), ("hook", "cd hook"))
COMMAND = Command(
    "ab-status",
    "Show the project holding DIR (default: .): its .agentsh.toml and whether it is trusted (allowed, allowed "
    "for this session, blocked, denied) and why, what it widens (host mounts, credentials, capabilities, "
    "network, ports, CA bundle, env names, a devcontainer build), what the cd hook does on entering it, its "
    "sandbox and state, and the credentials it receives.",
    EXAMPLES,
    args=(Arg("dir", nargs=OPTIONAL, help="a directory inside the project (default: .)", value=DIR),),
    options=(
        Option("--json", kind=FLAG, help="a JSON object with stable keys"),
        Option("--no-engine", dest="engine", kind=OFF,
               help="do not ask the container engine (state: 'unknown' if agentsh made the sandbox, else 'absent')"),
        Option("--prompt", kind=FLAG,
               help="one short word for a prompt (ab:TRUST), nothing outside projects with a project file; "
                    "implies --no-engine"),
    ),
)


def body(argv):
    args = options.parse(COMMAND, argv)

    from agentsh.app import hooks  # lazy: not for --help or completion, which read only COMMAND

    report = hooks.status_report(args.dir, engine=args.engine and not args.prompt, deep=not args.prompt)
    if args.prompt:
        if report["trust"] not in (None, hooks.TRUST_NONE):
            print(f"ab:{report['trust']}")
        return 0
    if args.json:
        print_json(report)
        return 0
    print(render(report))
    return 0


def render(report):
    """The report as aligned `label  value` lines."""
    values = dict(report)
    if report["trust"]:
        values["trust"] = f"{report['trust']}: {report['reason']}"
    elif report["reason"]:
        values["project"] = f"none ({report['reason']})"
    if report["sandbox"]:
        stale = (f", stale: it predates the config; run '{report.get('apply') or 'ab up'}' to recreate it"
                 if report.get("stale") else "")
        values["sandbox"] = f"{report['sandbox']} ({report['state']}{stale})"
        if report.get("exec"):
            values["exec"] = ("the sandbox's exec server" if report["exec"] == "server"
                              else "the engine's exec (no exec server in this sandbox; 'ab doctor' says why)")
    values["ports"] = ", ".join(f"{p['ip']}:{p['host']}->{p['container']}/{p['proto']}"
                                for p in report.get("ports") or ())
    if report["project"]:
        values["credentials"] = ", ".join(report["credentials"]) or "none"
    if report["inside_sandbox"]:
        values["hook"] = f"{report['hook']} (inside sandbox {report['inside_sandbox']}: it never nests)"
    lines = [f"{label:<12} {values[key]}" for key, label in LABELS if values.get(key) not in (None, "")]
    if report.get("devcontainers"):
        used = report.get("devcontainer")
        names = ", ".join(f"{d['name']}{' (in use)' if d['path'] == used else ''}" for d in report["devcontainers"])
        lines.append(f"{'devcontainer':<12} {names}" + ("" if used else " (none in use: choose with --devcontainer "
                                                          "NAME or config devcontainer)"))
    for i, sib in enumerate(report.get("siblings") or ()):
        ports = f", {sib['ports']}" if sib.get("ports") else ""
        lines.append(f"{'siblings' if i == 0 else '':<12} {sib['service']} ({sib['container']}, {sib['state']}{ports})")
    if report.get("widens") is not None:
        from agentsh.policy.config import widen_lines  # lazy: only for the text report

        widens = widen_lines(report["widens"]) or [("", "nothing beyond your own config")]
        lines += [f"{'widens' if i == 0 else '':<12} {f'{label}: ' if label else ''}{value}"
                  for i, (label, value) in enumerate(widens)]
    if report["error"]:
        lines.append(f"{'error':<12} {report['error']}")
    return "\n".join(lines)


def main():
    run("ab-status", body)
