"""ab-up: create or start the project's sandbox and print its name."""

from agentsh.base.errors import AgentshError
from agentsh.cli import options
from agentsh.cli.common import load_context, notice, print_json, run
from agentsh.cli.options import (
    APPEND,
    DIR,
    FLAG,
    IMAGE,
    ISOLATIONS,
    NETWORK_MODES,
    OPTIONAL,
    WORKTREE,
    Arg,
    Command,
    Option,
)

EXAMPLES = [
    "ab-up                      # sandbox for the current project; prints its name",
    "ab-up ~/src/app --json     # name, id, project, image, state as JSON",
    "ab-up --image localhost/mytools:latest",
    "ab-up -p 5173 -p 127.0.0.1:8080:80   # publish ports (5173: a stable host port; see ab-status)",
    "ab-up --dry-run [--json]   # the resolved plan (image or build, user, env, mounts, ports, devcontainer), "
    "nothing created",
    "ab-up --devcontainer python   # use .devcontainer/python/devcontainer.json",
]


COMMAND = Command(
    "ab-up",
    "Create or start the sandbox of the project holding DIR (default: .) and print its name. Idempotent: an "
    "unchanged running sandbox is reused; a changed spec (config, image name) recreates it.",
    EXAMPLES,
    args=(Arg("dir", nargs=OPTIONAL, help="a directory inside the project (default: .)", value=DIR),),
    options=(
        Option("--wt", metavar="NAME", help="the sandbox of worktree NAME (ab-wt) of the repo holding DIR",
               value=WORKTREE),
        Option("--image", help="image to run (overrides config 'image')", value=IMAGE),
        Option("--recreate", kind=FLAG, help="remove and recreate the sandbox even if unchanged"),
        Option("--json", kind=FLAG, help="print a JSON object instead of the name"),
        Option("--network", choices=NETWORK_MODES,
               help="network mode (overrides config [network] mode; see docs/config.md)"),
        Option("--isolation", choices=ISOLATIONS,
               help="container (the host's kernel) or gvisor (gVisor's runsc: a second kernel); overrides "
                    "config 'isolation'; a change recreates the sandbox"),
        Option("--lockdown", kind=FLAG,
               help="for untrusted repos: no credentials, network only to the agents' APIs, ephemeral home, "
                    "project behind a copy-on-write layer (also config 'lockdown')"),
        Option("--dry-run", kind=FLAG,
               help="print the resolved plan (image or build, user, env names, mounts, ports, features, "
                    "lifecycle commands, what of the devcontainer.json is not applied and why); create nothing"),
        Option("--devcontainer", metavar="NAME",
               help="the devcontainer config .devcontainer/NAME/devcontainer.json (\".\": the top one; "
                    "also config 'devcontainer')"),
        Option("-p", "--publish", kind=APPEND, metavar="[IP:][HOST:]CONTAINER[/PROTO]",
               help="publish a port (repeatable; on 127.0.0.1 unless IP is given; without HOST, a stable host "
                    "port for this project); kept until the next ab-up -p"),
    ),
)


def fast_parse(argv):
    """`ab-up [DIR] [--json] [--recreate] [--lockdown] ...` without argparse (~6 ms on a hot path).

    None for anything unusual (--help, mistakes): argparse handles and explains those.
    """
    return options.fast_parse(COMMAND, argv)


def parse(argv):
    return options.argparser(COMMAND).parse_args(argv)


def body(argv):
    args = fast_parse(argv) or parse(argv)
    if args.wt:
        from agentsh.app.worktree import path_of  # lazy: re and git calls, only for --wt

        args.dir = path_of(args.wt, args.dir)

    from agentsh.sandbox import lifecycle as sandbox  # lazy: not for --help or completion, which read only COMMAND

    proj, cfg, engine, store = load_context(args.dir, {"image": args.image,
                                                      "network": {"mode": args.network} if args.network else None,
                                                      "devcontainer": args.devcontainer,
                                                      "isolation": args.isolation})
    locked = args.lockdown or cfg.get("lockdown")
    if locked:
        from agentsh.policy.lockdown import lockdown  # lazy: not for --help or completion, which read only COMMAND

        cfg = lockdown(cfg)
    if args.publish:
        from agentsh.policy.ports import publish_args  # lazy: not for --help or completion, which read only COMMAND

        publish_args(args.publish, proj.root)  # a bad -p is a usage error (2) before anything runs
    if args.dry_run:
        return dry_run(proj, cfg, engine, store, args)
    record = sandbox.up(proj, cfg, engine, store, recreate=args.recreate, notify=notice, publish=args.publish,
                        attach=True)
    from agentsh.creds import delivery as inject  # lazy: not for --help or completion, which read only COMMAND

    if not locked:
        inject.deliver(proj, cfg, engine, store, notice, files_only=True)  # granted credential files
    if args.json:
        print_json(record)
    else:
        print(record["name"])
    return 0


def dry_run(proj, cfg, engine, store, args):
    """The plan ab-up would carry out (docs/agents.md: its JSON keys), without creating anything."""
    from agentsh.base import layout  # lazy: not for --help or completion, which read only COMMAND
    from agentsh.sandbox import spec as specs  # lazy: not for --help or completion, which read only COMMAND

    publish = args.publish
    if publish is None:  # the ports the sandbox was made with, as ab-up would keep them
        try:
            publish = (store.read(layout.sandbox_record(proj.sandbox)) or {}).get("publish", [])
        except AgentshError:
            publish = []
    # topology: from the disk; registry features are fetched into the cache (nothing of the sandbox is made)
    want = specs.build(proj, cfg, engine, specs.gather(proj, cfg, engine, fetch=True, notify=notice), publish)
    plan = specs.plan(want, cfg)
    if args.json:
        print_json(plan)
        return 0
    print(render_plan(plan))
    return 0


def render_plan(plan):
    """The plan as `label  value` lines."""
    lines = [("sandbox", plan["sandbox"]), ("project", plan["project"])]
    if plan["build"]:
        b = plan["build"]
        what = f"from {b['file']} (context {b['context']})" if b["file"] else f"on {b['base']}"
        extra = "".join(f", {k} {v}" for k, v in (("target", b["target"]),) if v)
        lines.append(("build", f"{b['tag']} {what}{extra}"))
        for f in b["features"]:
            lines.append(("feature", f"{f['id']} ({f['resolved'] or f['source']})" + (
                f" {', '.join(f'{k}={v}' for k, v in f['options'].items())}" if f["options"] else "")))
    else:
        lines.append(("image", plan["image"] + (" (pulled if missing)" if plan["pull"] else "")))
    lines.append(("user", plan["user"] or "the image's"))
    lines.append(("env", ", ".join(plan["env"])))
    if plan["env_per_command"]:
        lines.append(("env", ", ".join(plan["env_per_command"]) + " (host values, given to each command)"))
    for m in plan["mounts"]:
        src = f"{m['source']} -> " if m["source"] else ""
        lines.append(("mount", f"{m['type']} {src}{m['target']}{' (ro)' if m['readonly'] else ''}"))
    if plan["ports"]:
        lines.append(("ports", ", ".join(plan["ports"])))
    for name, steps in plan["lifecycle"].items():
        for step in steps:
            label = f"{name}.{step['name']}" if step["name"] else name
            argv = step["argv"]
            lines.append((label, argv[2] if argv[:2] == ["/bin/sh", "-c"] and len(argv) == 3 else " ".join(argv)))
    if plan["wait_for"]:
        lines.append(("waitFor", plan["wait_for"]))
    compose = (plan.get("devcontainer") or {}).get("compose_plan")
    if compose:
        lines.append(("service", f"{compose['service']} (the sandbox; compose files "
                                 f"{', '.join(compose['files'])})"))
        if compose["command"]:
            lines.append(("command", " ".join(compose["command"]) + " (in the background at each start)"))
        for name in compose["siblings"]:
            ports = [p.split(":", 1)[1] for p in compose["forward_ports"] if p.split(":", 1)[0] == name]
            lines.append(("sibling", name + (f" (port {', '.join(ports)} on host loopback)" if ports else "")))
    for item in plan["not_applied"]:
        lines.append(("not applied", f"{item['property']}: {item['why']}"))
    for item in plan["ignored"]:
        lines.append(("ignored", item["property"] + (f": {item['why']}" if item["why"] else "")))
    width = max(len(k) for k, _ in lines)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in lines if v not in (None, ""))


def main():
    run("ab-up", body)
