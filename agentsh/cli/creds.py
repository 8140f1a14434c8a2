"""ab-creds: the encrypted credential cache, and which projects receive what."""

import os
import sys

from agentsh.base.errors import AgentshError, UsageError
from agentsh.base.state import Store
from agentsh.cli import options
from agentsh.cli.common import notice, print_json, run
from agentsh.cli.ls import print_table
from agentsh.cli.options import APPEND, CREDENTIAL, DIR, FILE, FLAG, OPTIONAL, Arg, Command, Option
from agentsh.creds import vault as creds
from agentsh.creds.delivery import SSH_AGENT_SOCKET, ssh_agent_socket
from agentsh.host import project

EXAMPLES = [
    "ab-creds set GITHUB_TOKEN                      # prompts without echo (or reads stdin)",
    "printf %s \"$KEY\" | ab-creds set OPENAI_API_KEY",
    "ab-creds set CLAUDE_CREDENTIALS --file ~/.claude/.credentials.json --writeback \\",
    "    --from-file ~/.claude/.credentials.json",
    "ab-creds set DB_PASSWORD --project ~/src/app --ttl 12h --from-env DB_PASSWORD",
    "ab-creds set VAULT_TOKEN --from-command 'vault print token'   # run at each injection",
    "ab-creds grant GITHUB_TOKEN ~/src/app          # ab-exec there now receives $GITHUB_TOKEN",
    "ab-creds import claude && ab-creds grant CLAUDE_CREDENTIALS",
    "ab-creds ls --json",
    "ab-creds get GITHUB_TOKEN | gh auth login --with-token",
    "ab-creds ssh-agent ~/src/app                   # forward the SSH agent socket (never the keys)",
]
COLUMNS = ("name", "scope", "target", "source", "updated", "expires")


def _project(directory):
    return project.find(directory)


def _scope_project(args):
    return _project(args.project) if args.project else None


def _target_text(clear):
    return f"env ${clear['target']}" if clear["type"] == "env" else f"file {clear['target']}"


def _read_value(args, to_env):
    """The value for `set`: --from-*, else stdin (a no-echo prompt on a terminal)."""
    if args.from_command:
        return args.from_command.encode()
    if args.from_env:
        if args.from_env not in os.environ:
            raise UsageError(f"--from-env {args.from_env}: not set on this host")
        value = os.environb.get(os.fsencode(args.from_env), b"")
    elif args.from_file:
        try:
            with open(os.path.expanduser(args.from_file), "rb") as f:
                value = f.read(creds.MAX_VALUE + 1)
        except OSError as e:
            raise UsageError(f"--from-file {args.from_file}: {e.strerror}") from None
    elif sys.stdin.isatty():
        import getpass  # lazy: only to prompt on a terminal

        value = getpass.getpass(f"value for {args.name} (not echoed): ").encode()
    else:
        value = sys.stdin.buffer.read(creds.MAX_VALUE + 1)
    if to_env:
        value = value.rstrip(b"\r\n")
    if not value.strip():
        raise UsageError(f"empty value for {args.name}", "give the value on stdin, or with --from-env/--from-file")
    return value


def cmd_set(args):
    creds.check_name(args.name)
    project = _scope_project(args)
    if args.file:
        type_, target = creds.FILE, creds.sandbox_path(args.file)
    else:
        type_, target = creds.ENV, args.env or args.name
    source = creds.COMMAND if args.from_command else creds.VALUE
    ttl = creds.parse_duration(args.ttl) if args.ttl else None
    fmt, hosts = creds.RAW, args.bind_host or ()
    if args.oauth:
        from agentsh.creds import oauth  # lazy: only for an OAuth token file

        if not args.file:
            raise UsageError("--oauth is for a token file", "give --file PATH (e.g. ~/.claude/.credentials.json)")
        fmt = f"{args.oauth}-oauth"
        hosts = hosts or oauth.HOSTS[fmt]
    clear = creds.meta(type_, target, source=source, fmt=fmt, writeback=args.writeback, project=project, ttl=ttl,
                       bind_hosts=hosts, bind_header=args.bind_header, inject=args.inject,
                       bind_query=args.bind_query, bind_body=args.bind_body)
    key = creds.load_key(create=True)  # before reading a value: a wrong passphrase fails first
    value = _read_value(args, to_env=type_ == creds.ENV)
    record = creds.put(Store(), args.name, creds.scope_of(project), clear, value, key=key)
    record.update(_name=args.name, _scope=record["scope"])
    if args.json:
        print_json(creds.describe(record))
        return 0
    who = f"project {project.root}" if project else "projects you grant it to ('ab-creds grant')"
    if fmt in creds.OAUTH_FORMATS:
        bound = (f"; its tokens sent only to {', '.join(clear['bind_hosts'])}"
                 + (" (the sandbox sees placeholders in modes allow and learn)" if clear.get("inject") != creds.ENV
                    else ""))
    else:
        bound = (f"; sent only to {', '.join(clear['bind_hosts'])} in {creds.where_text(clear)}"
                 + (" (the sandbox sees a placeholder)" if clear.get("inject") != creds.ENV and type_ == creds.ENV
                    else "") if clear.get("bind_hosts") else "")
    print(f"stored {args.name}: {_target_text(clear)} in the sandboxes of {who}{bound}")
    return 0


def cmd_get(args):
    creds.check_name(args.name)
    if sys.stdout.isatty() and not args.reveal:
        raise UsageError("refusing to print a secret to a terminal", "pipe it, or add --reveal")
    project = _scope_project(args)
    scope = creds.scope_of(project)
    record = creds.read_record(args.name, scope)
    if record is None:
        raise creds.unknown(args.name, scope)
    value = creds.reveal(record)
    if record["meta"]["type"] == creds.ENV:
        value += b"\n"
    sys.stdout.buffer.write(value)
    sys.stdout.flush()
    return 0


def cmd_ls(args):
    rows = creds.listing(Store())
    if args.json:
        print_json(rows)
        return 0
    shown = [{**r, "target": f"{r['type']}:{r['target']}" if r["type"] != "damaged" else "DAMAGED",
              "scope": r["scope"] if not r["project"] else f"{r['scope']} ({r['project']})",
              "updated": r["updated"] or "-",
              "expires": ("expired " if r["expired"] else "") + (r["expires"] or "-")} for r in rows]
    print_table(shown, COLUMNS)
    return 0


def cmd_rm(args):
    creds.check_name(args.name)
    project = _scope_project(args)
    creds.remove(Store(), args.name, creds.scope_of(project))
    print(f"removed {args.name}")
    return 0


def cmd_grant(args, revoke=False):
    project = _project(args.dir)
    store = Store()
    if revoke:
        creds.revoke(store, project, args.name)
        print(f"revoked {args.name} from {project.root}")
        return 0
    creds.grant(store, project, args.name)
    record = creds.find(args.name, project)
    print(f"granted {args.name} to {project.root}: {_target_text(record['meta'])} on its next ab-exec")
    return 0


def cmd_import(args):
    from agentsh.creds import importers  # lazy: subprocess and configparser, only for `import`

    project = _scope_project(args)
    found = importers.find(args.source)
    key = creds.load_key(create=True)
    store = Store()
    rows = []
    for item in found:
        clear = creds.meta(item.type, item.target, source=item.source, fmt=item.format,
                           writeback=item.writeback, project=project, bind_hosts=item.bind_hosts,
                           bind_header=item.bind_header if item.type == creds.ENV else None)
        record = creds.put(store, item.name, creds.scope_of(project), clear, item.value, key=key)
        record.update(_name=item.name, _scope=record["scope"])
        rows.append({**creds.describe(record), "origin": item.origin})
    if args.json:
        print_json(rows)
        return 0
    for item in found:
        print(f"imported {item.name} from {item.origin}: {_target_text({'type': item.type, 'target': item.target})}"
              + (" (written back when the tool refreshes it)" if item.writeback else ""))
    if not project:
        names = " ".join(item.name for item in found)
        notice(f"grant to a project with: ab-creds grant NAME [DIR]  (imported: {names})")
    return 0


def cmd_ssh_agent(args):
    project = _project(args.dir)
    if args.revoke:
        creds.set_ssh_agent(Store(), project, None)
        print(f"SSH agent forwarding revoked for {project.root}; the next ab-up recreates its sandbox")
        return 0
    socket = os.environ.get("SSH_AUTH_SOCK")
    if not ssh_agent_socket({"socket": socket}):
        raise AgentshError("no SSH agent socket here ($SSH_AUTH_SOCK is unset or not a socket)",
                           "start one (eval $(ssh-agent); ssh-add), then run this again")
    creds.set_ssh_agent(Store(), project, socket)
    print(f"SSH agent forwarded to {project.root} at {SSH_AGENT_SOCKET} (keys stay on the host); "
          "the next ab-up recreates its sandbox")
    return 0


def cmd_init(args):
    creds.create_key(with_passphrase=args.passphrase)
    print(f"credential cache key created in {creds.paths.config_dir()} "
          f"({'passphrase' if args.passphrase else 'random key file, mode 0600'})")
    return 0


def body(argv):
    args = options.parse(COMMAND, argv)
    if args.command in ("grant", "revoke"):
        return cmd_grant(args, revoke=args.command == "revoke")
    return HANDLERS[args.command](args)


HANDLERS = {"set": cmd_set, "get": cmd_get, "ls": cmd_ls, "rm": cmd_rm, "import": cmd_import,
            "ssh-agent": cmd_ssh_agent, "init": cmd_init}
# The import sources (agentsh.creds.importers.SOURCES, which a test keeps equal), here
# so that the table needs no import.
SOURCES = ("claude", "codex", "gemini", "opencode", "gh", "git", "npm", "aws")
_NAME = Arg("name", metavar="NAME", value=CREDENTIAL)
_PROJECT_DIR = Arg("dir", nargs=OPTIONAL, metavar="DIR", help="a directory inside the project (default: .)", value=DIR)


def _in_project(help):
    return Option("--project", metavar="DIR", help=help, value=DIR)


COMMAND = Command(
    "ab-creds",
    "Encrypted credentials for sandboxes: values sealed with AES-256-GCM under a key only you can read; a "
    "project receives the ones you grant it (env variables on each ab-exec, files on a tmpfs inside), never "
    "anything else.",
    EXAMPLES,
    sub_dest="command", sub_metavar="COMMAND", sub_required=True,
    subcommands=(
        Command("ab-creds set", help="store a credential (value from stdin, a prompt, or --from-*)", args=(_NAME,),
                options=(
                    Option("--env", metavar="VAR", group="where", help="the variable it becomes inside (default: NAME)"),
                    Option("--file", metavar="PATH_IN_SANDBOX", group="where",
                           help="the file it becomes inside (mode 0600, on a tmpfs; ~/ is the sandbox home)"),
                    Option("--writeback", kind=FLAG,
                           help="with --file: store the file again when a command changed it (refreshed OAuth tokens)"),
                    _in_project("for this project only (default: projects that grant it)"),
                    Option("--ttl", metavar="DURATION", help="expire after DURATION (3600, 30m, 12h, 7d, 2w)"),
                    Option("--from-env", metavar="HOSTVAR", group="source",
                           help="take the value from a host variable now"),
                    Option("--from-file", metavar="HOSTFILE", group="source", value=FILE,
                           help="take the value from a host file now"),
                    Option("--from-command", metavar="CMD", group="source",
                           help="run CMD on the host at each injection (timeout 30 s), like credential_process"),
                    Option("--bind-host", metavar="HOST", kind=APPEND,
                           help="a host the value may be sent to (repeatable); in network modes allow and learn "
                                "the sandbox then sees a placeholder the egress proxy replaces toward HOST"),
                    Option("--bind-header", metavar="HEADER",
                           help="the request header carrying it to those hosts (default Authorization, unless "
                                "--bind-query or --bind-body names another place)"),
                    Option("--bind-query", metavar="PARAM",
                           help="the URL query parameter carrying it to those hosts (like ?key=)"),
                    Option("--bind-body", kind=FLAG,
                           help="it travels in request bodies to those hosts (JSON or form fields, up to 1 MiB)"),
                    Option("--oauth", metavar="AGENT", choices=("claude", "codex", "gemini", "opencode"),
                           help="the file is that agent's OAuth login (with --file): behind the proxy its tokens "
                                "are placeholders, refreshes included (default hosts: the agent's provider)"),
                    Option("--inject", metavar="HOW", choices=("proxy", "env"),
                           help="proxy: placeholder inside, value added by the proxy (default with --bind-host); "
                                "env: the value itself inside"),
                    Option("--json", kind=FLAG, help="print the stored record's listing as JSON"),
                )),
        Command("ab-creds get", help="print a value (not to a terminal unless --reveal)", args=(_NAME,),
                options=(_in_project("the credential stored for this project"),
                         Option("--reveal", kind=FLAG, help="print even to a terminal"))),
        Command("ab-creds ls", help="list names, scope, target, updated, expiry (never values)",
                options=(Option("--json", kind=FLAG, help="a JSON list of objects"),)),
        Command("ab-creds rm", help="remove a credential", args=(_NAME,),
                options=(_in_project("the credential stored for this project"),)),
        Command("ab-creds grant", help="let the project holding DIR receive NAME", args=(_NAME, _PROJECT_DIR)),
        Command("ab-creds revoke", help="stop the project holding DIR receiving NAME", args=(_NAME, _PROJECT_DIR)),
        Command("ab-creds import", help="import a host credential: " + ", ".join(SOURCES),
                args=(Arg("source", metavar="SOURCE", choices=SOURCES, help=", ".join(SOURCES)),),
                options=(_in_project("for this project only (default: projects that grant it)"),
                         Option("--json", kind=FLAG, help="a JSON list of what was imported"))),
        Command("ab-creds ssh-agent", help="forward the host SSH agent socket (never keys) to a project",
                args=(_PROJECT_DIR,), options=(Option("--revoke", kind=FLAG, help="stop forwarding"),)),
        Command("ab-creds init", help="create the cache key now (--passphrase: derive it from a passphrase)",
                options=(Option("--passphrase", kind=FLAG,
                                help="scrypt key from AGENTSH_PASSPHRASE or a prompt, asked on every use"),)),
    ),
)


def main():
    run("ab-creds", body)
