"""ab-doctor: what works, what does not, and how to fix it."""

from agentsh.cli import options
from agentsh.cli.common import print_json, run
from agentsh.cli.options import FLAG, Command, Option

EXAMPLES = ["ab-doctor", "ab-doctor --json | jq '.[] | select(.status != \"ok\")'"]
MARKS = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}
COMMAND = Command(
    "ab-doctor",
    "Check the engine, what rootless Podman needs from the host (subordinate ids, uidmap, /dev/net/tun, "
    "storage driver), the runtime, the image and its age, the CA bundle, the state dir, the credential key's "
    "permissions, the cd hook in this shell, and each agent profile's program and credentials; each problem "
    "comes with its fix. Exit 1 if any check fails.",
    EXAMPLES,
    options=(Option("--json", kind=FLAG, help="a JSON list of {name, status, detail, fix}"),
             Option("--no-run", kind=FLAG, help="skip starting a throwaway container"),
             Option("--fresh", kind=FLAG, help="start a throwaway container even if one from the same image, "
                                               "engine and boot passed before (that pass is remembered)")),
)


def body(argv):
    args = options.parse(COMMAND, argv)

    from agentsh.app import doctor  # lazy: every check's module (json, re, subprocess); not for --help or completion

    checks = doctor.run_checks(run_container=not args.no_run, fresh=args.fresh)
    if args.json:
        print_json(checks)
    else:
        for c in checks:
            print(f"{MARKS[c['status']]}  {c['name']:<14} {c['detail']}")
            if c["fix"] and c["status"] != "ok":
                print(f"      {'':<14} fix: {c['fix']}")
    return 1 if any(c["status"] == "fail" for c in checks) else 0


def main():
    run("ab-doctor", body)
