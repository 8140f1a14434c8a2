"""ab-hook: print the cd hook for a shell, and act when that hook enters a project.

`ab-hook bash|zsh|xonsh` prints the hook source (from shellhooks/) with the
absolute path of this command filled in, so the hook keeps working whatever
PATH the shell has later. The hidden `--enter DIR` is what the hook runs on
entering a project: it decides, acts, and answers with an exit status
(agentsh.app.hooks.ENTER_*), so the shell never parses or evaluates output.
The hidden `--recheck DIR` is the same, run by a hook that was blocked in the
project once an ab-allow of its session left word (agentsh.app.enter.recheck_file):
still blocked, it says nothing more.
"""

import os
import sys

import agentsh
from agentsh.base.errors import UsageError
from agentsh.cli import options
from agentsh.cli.common import notice, run
from agentsh.cli.options import DIR, FLAG, OPTIONAL, Arg, Command, Option

SHELLS = ("bash", "zsh", "xonsh")
EXAMPLES = [
    'eval "$(ab-hook bash)"      # in ~/.bashrc',
    'eval "$(ab-hook zsh)"       # in ~/.zshrc',
    "xontrib load agentsh        # in ~/.xonshrc (or: execx($(ab-hook xonsh)))",
    "ab-hook --disable           # this shell session: no more cd hook (AGENTSH_HOOK=off)",
]
BIN_LINE = "_agentsh_bin=ab-hook"  # in agentsh.bash/.zsh: replaced by the absolute path
STATE_LINE = "_agentsh_state="  # in agentsh.bash/.zsh: replaced by the state directory
XONSH_PATHS_LINE = "_agentsh_paths = []"  # in agentsh.xsh: where agentsh and its xontrib live
XONSH_BIN_LINE = "_agentsh_bin = None"  # in agentsh.xsh: the absolute path of ab-hook


COMMAND = Command(
    "ab-hook",
    "Print the shell code that makes `cd` into an allowed project enter its sandbox (as its [hook] on_enter "
    "says). Add it to the shell's startup file.",
    EXAMPLES,
    args=(Arg("shell", nargs=OPTIONAL, choices=SHELLS, help="the shell to print the hook for"),),
    options=(
        Option("--disable", kind=FLAG,
               help="turn the hook off for this shell session (the loaded hook handles it in the shell; "
                    "run directly, prints code to eval)"),
        Option("--enable", kind=FLAG, help="turn it back on (as --disable)"),
        Option("--completions", kind=FLAG, group="what",
               help="print only the completions for SHELL (ab-hook SHELL prints the hook and them)"),
        Option("--no-completions", kind=FLAG, group="what", help="print only the hook"),
        Option("--enter", metavar="DIR", hidden=True, value=DIR),
        Option("--recheck", metavar="DIR", hidden=True, value=DIR),
        Option("--decide", metavar="DIR", hidden=True, value=DIR),
    ),
)


def body(argv):
    if argv[:1] == ["--complete"]:
        return complete(argv[1:])
    if argv[:1] in (["--enter"], ["--recheck"]) and len(argv) == 2:  # the hook's hot path: no parser to build
        return enter(argv[1], recheck=argv[0] == "--recheck")
    p = options.argparser(COMMAND)
    args = p.parse_args(argv)

    if args.enter is not None or args.recheck is not None:
        return enter(args.enter if args.enter is not None else args.recheck, recheck=args.enter is None)
    if args.decide is not None:
        from agentsh.app import hooks  # lazy: only for --decide

        decision = hooks.decide(args.decide)
        if decision.action == hooks.BLOCKED:
            sys.stderr.write(hooks.BLOCKED_MESSAGE + "\n")
        print(decision.action)
        return 0
    if args.disable or args.enable:
        # A child process cannot change its shell: this is for shells without the
        # hook's own ab-hook function, as eval "$(ab-hook --disable)".
        print("AGENTSH_HOOK=off; export AGENTSH_HOOK" if args.disable else "unset AGENTSH_HOOK")
        if sys.stdout.isatty():
            notice('run it as eval "$(ab-hook --disable)", or load the hook, whose ab-hook does it in the shell')
        return 0
    if not args.shell:
        p.error("name a shell: bash, zsh or xonsh")
    parts = [] if args.completions else [hook_source(args.shell)]
    if not args.no_completions:
        parts.append(completion_source(args.shell))
    sys.stdout.write("\n".join(parts))
    return 0


def complete(argv):
    """`--complete INDEX -- WORDS...`: the completion candidates for WORDS[INDEX], one a line."""
    from agentsh.cli.completion import candidates  # lazy: json and re; only for --complete, not on --enter's path

    if len(argv) < 2 or not argv[0].isdigit() or argv[1] != "--":
        raise UsageError("--complete needs INDEX -- WORDS...")
    for value in candidates(argv[2:], int(argv[0])):
        print(value)
    return 0


def hook_source(shell):
    """The hook code for `shell`, ready to eval, naming this installation's files."""
    import shlex  # lazy: shlex brings re; only to print the hook

    from agentsh.app import hooks  # lazy: only to print the hook, not for --complete

    if shell == "xonsh":
        text = hooks.read_resource("shellhooks", "agentsh.xsh")
        text = text.replace(XONSH_PATHS_LINE, f"_agentsh_paths = {xonsh_import_paths()!r}", 1)
        return text.replace(XONSH_BIN_LINE, f"_agentsh_bin = {own_executable()!r}", 1)
    from agentsh.base import paths  # lazy: only to print the hook, not for --complete

    text = hooks.read_resource("shellhooks", f"agentsh.{shell}")
    text = text.replace(STATE_LINE, f"_agentsh_state={shlex.quote(paths.state_dir())}", 1)
    return text.replace(BIN_LINE, f"_agentsh_bin={shlex.quote(own_executable())}", 1)


COMPLETION_FILES = {"bash": "ab.bash", "zsh": "_ab", "xonsh": "ab.xsh"}


def completion_source(shell):
    """The completion code for `shell`, calling this installation's ab-hook."""
    import shlex  # lazy: shlex brings re; only to print the completions

    from agentsh.app import hooks  # lazy: only to print the completions, not for --complete

    text = hooks.read_resource("completions", COMPLETION_FILES[shell])
    if shell == "xonsh":
        return text.replace(XONSH_PATHS_LINE, f"_agentsh_paths = {xonsh_import_paths()!r}", 1)
    return f"_agentsh_complete_bin={shlex.quote(own_executable())}\n{text}"


def own_executable():
    """This ab-hook's absolute path (the hook calls it), else the bare name."""
    from agentsh.host.engine import which  # lazy: only to print the hook, not for --enter or --complete

    me = sys.argv[0] if os.path.basename(sys.argv[0]) == "ab-hook" else "ab-hook"
    found = which(me) if os.sep not in me else me
    return os.path.abspath(found) if found else "ab-hook"


def xonsh_import_paths():
    """Directories xonsh needs on sys.path to import agentsh and xontrib.agentsh."""
    import importlib.util  # lazy: only for the xonsh hook


    wanted = [os.path.dirname(os.path.dirname(os.path.abspath(agentsh.__file__)))]
    spec = importlib.util.find_spec("xontrib.agentsh")
    if spec and spec.origin:
        wanted.append(os.path.dirname(os.path.dirname(spec.origin)))
    return list(dict.fromkeys(wanted))


def enter(directory, recheck=False):
    """What the hook runs on entering a project; returns an ENTER_* status."""
    from agentsh.app import hooks  # lazy: only for --enter, not for --complete
    from agentsh.base.state import Store  # lazy: only for --enter, not for --complete

    store = Store()
    _clear_recheck(hooks, store.root)
    decision = hooks.decide(directory, store)
    if decision.action == hooks.BLOCKED:
        if not recheck:  # a recheck after an ab-allow of some other project: said once already
            sys.stderr.write(hooks.BLOCKED_MESSAGE + "\n")
        return hooks.ENTER_BLOCKED
    if decision.action not in (hooks.UP, hooks.SHELL):
        return hooks.ENTER_NOTHING
    from agentsh.sandbox.execute import (
        stdio_is_terminal,  # lazy: only when the hook enters a project (the cd hook's common path imports none of it)
    )

    if decision.action == hooks.SHELL and not stdio_is_terminal():  # nothing to hand a shell to
        return hooks.ENTER_NOTHING
    from agentsh.app import (
        enter as entering,  # lazy: only when the hook enters a project (the cd hook's common path imports none of it)
    )
    from agentsh.host.engine import (
        Engine,  # lazy: only when the hook enters a project (the cd hook's common path imports none of it)
    )
    from agentsh.sandbox import (
        lifecycle as sandbox,  # lazy: only when the hook enters a project (the cd hook's common path imports none of it)
    )

    engine = Engine(decision.config["engine"])
    stale = entering.stale_spec(decision, engine, store)
    recreate = stale and decision.config["hook"]["on_stale"] == "recreate"
    if stale and not recreate:
        entering.say_stale_once(decision, stale, store, notice)
    if decision.action == hooks.UP:
        if not stale or recreate:  # a stale sandbox is only replaced when [hook] on_stale asks for it
            sandbox.start(decision.project, decision.config, engine, store, notice)
        return hooks.ENTER_UP
    if recreate:
        sandbox.start(decision.project, decision.config, engine, store, notice)  # says "spec changed; ..."
    from agentsh.cli import (
        exec as exec_cli,  # lazy: only when the hook enters a project (the cd hook's common path imports none of it)
    )

    # A sandbox stopped under the shell is said in one line by the session (app.session).
    exec_cli.body(["--dir", directory, "--tty"])
    return hooks.ENTER_LEFT_SHELL


def _clear_recheck(hooks, state_dir):
    """Remove the word an ab-allow left for this session's hook: it is being acted on."""
    path = hooks.recheck_file(os.environ.get("AGENTSH_SESSION"), state_dir)
    if path is not None:
        try:
            os.unlink(path)
        except OSError:
            pass


def main():
    run("ab-hook", body)
