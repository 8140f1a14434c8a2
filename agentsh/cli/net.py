"""ab-net: a project's network policy: show it, allow a host, propose an allowlist from the log."""

from agentsh.cli import options
from agentsh.cli.common import load_context, notice, print_json, run
from agentsh.cli.options import DIR, FLAG, OPTIONAL, Arg, Command, Option

EXAMPLES = [
    "ab-net show                    # mode, allowlist, proxy state for this project",
    "ab-net allow registry.npmjs.org   # effective on the sandbox's next request, no restart",
    "ab-net allow '*.example.com:8443' ~/src/app",
    "ab-net propose                 # turn the log (e.g. of mode = \"learn\") into an allowlist to review",
    "ab-net propose --json",
]
_DIR = Arg("dir", nargs=OPTIONAL, value=DIR)
COMMAND = Command(
    "ab-net",
    "The network policy of the project holding DIR (default: .). Modes and allowlists come from config "
    "[network] (see docs/config.md); 'allow' adds a host for this project at once, without restarting its "
    "sandbox.",
    EXAMPLES,
    sub_dest="cmd", sub_required=True, sub_metavar="{show,allow,propose}",
    subcommands=(
        Command("ab-net show", help="mode, allowlist and proxy state", args=(_DIR,),
                options=(Option("--json", kind=FLAG,
                                help="keys: project, sandbox, mode, lockdown, allow, added, proxy, steering"),)),
        Command("ab-net allow", help="allow HOST (host, *.domain, host:port, IP) for the project",
                args=(Arg("host", metavar="HOST"), _DIR),
                options=(Option("--json", kind=FLAG, help="keys: project, allowed, added"),)),
        Command("ab-net propose", help="an allowlist made from the audit log, for review", args=(_DIR,),
                options=(Option("--json", kind=FLAG,
                                help="keys: allow (patterns), destinations (host, port, count)"),)),
    ),
)


def body(argv):
    args = options.parse(COMMAND, argv)

    from agentsh.egress import network  # lazy: re and ipaddress; not for --help or completion
    from agentsh.policy import rules  # lazy: re and ipaddress; not for --help or completion

    proj, cfg, _, store = load_context(args.dir, quiet=args.cmd != "show")
    if args.cmd == "allow":
        new = network.allow_host(store, proj, args.host)
        if args.json:
            print_json({"project": proj.root, "allowed": args.host, "added": new})
        else:
            print(f"allowed {args.host} for {proj.root}" + ("" if new else " (already allowed)"))
            if cfg["network"]["mode"] not in rules.PROXIED and not cfg.get("lockdown"):
                notice(f"network mode is {cfg['network']['mode']!r}: the allowlist applies in mode \"allow\" "
                       "(set [network] mode = \"allow\", or use --lockdown)")
        return 0
    from agentsh.egress import audit  # lazy: json; only for the log
    from agentsh.egress.audit import ascii_json, printable  # lazy: json; only for the log

    if args.cmd == "propose":
        # The log holds what the sandbox asked for: propose keeps only valid hosts,
        # and what is printed is escaped all the same (JSON strings are valid TOML).
        patterns, counts = rules.propose(audit.read(store.path(network.audit_rel(proj.sandbox))))
        if args.json:
            print(ascii_json({"allow": patterns, "destinations": counts}, indent=2))
        elif not patterns:
            print(f"# no connection attempts logged for {proj.sandbox} yet (run with [network] mode = \"learn\")")
        else:
            print(f"# from the log of {proj.sandbox}: {len(counts)} destination(s); review before use")
            print("[network]\nmode = \"allow\"\nallow = [")
            for pattern in patterns:
                print(f"    {ascii_json(pattern)},")
            print("]")
        return 0
    record = store.read(network.proxy_rel(proj.sandbox)) or {}
    running = network.alive(record.get("pid"), record.get("pid_start"))
    out = {"project": proj.root, "sandbox": proj.sandbox, "mode": record.get("mode") if running else
           cfg["network"]["mode"], "lockdown": bool(record.get("lockdown")) if running else bool(cfg.get("lockdown")),
           "allow": record.get("allow") if running else rules.config_patterns(cfg),
           "added": network.added(store, proj),
           "proxy": {"running": running, "pid": record.get("pid") if running else None,
                     "port": network.PROXY_PORT},
           "steering": network.steering(record, running)}
    if args.json:
        print_json(out)
    else:
        print(f"project   {out['project']}\nsandbox   {out['sandbox']}\nmode      {out['mode']}"
              + ("  (lockdown)" if out["lockdown"] else ""))
        print("allow     " + (", ".join(printable(p) for p in out["allow"] or []) or "-"))
        print("added     " + (", ".join(printable(p) for p in out["added"]) or "-") + "   (ab-net allow)")
        print(f"proxy     {'running, pid ' + str(out['proxy']['pid']) if running else 'not running'}")
        steer = out["steering"]
        if steer["active"]:
            print(f"steering  active: DNS {steer['dns']} answers from {steer['synthetic']}, "
                  f"TCP to it goes to {steer['listener']}")
        else:
            print("steering  not active" + (f" ({printable(steer['problem'])}): only programs using "
                                            "HTTP(S)_PROXY get out" if steer["problem"] else ""))
    return 0


def main():
    run("ab-net", body)
