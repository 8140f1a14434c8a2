"""Completion candidates for `ab` and every `ab-*` command, for bash, zsh and xonsh.

Subcommands, flags, choices and what each value names come from the command's
own table (agentsh.cli.options: each option and positional carries its value
kind), so a flag added to a command is completed without touching this file.
Values that name things (credentials, worktrees, sandboxes, images, agent
profiles) are read from the state store, the credential directory and the
config as they are on disk now, never from the engine. Every directory is
read defensively: a missing or half-written one means no candidates, never an
error on the user's terminal.

The shells call `ab-hook --complete INDEX -- WORDS...` and get one candidate
per line, already filtered by the word being completed; a lone line `@dirs`
(or `@files`) asks the shell to complete directory (or file) names itself, and
`@rest N` says that WORDS[N:] is another program's command line (after
`ab-exec --`), for the shell to complete as such. A word `--opt=val` is
completed as the value of --opt (candidates keep the `--opt=`); a shell that
splits words at `=` joins them again first. Worktree names are those of the
repository holding the command's --dir, else the current directory.
"""

import json
import os

from agentsh.base.errors import AgentshError
from agentsh.cli import ENTRY_POINTS
from agentsh.cli.options import AGENT, CREDENTIAL, DIR, FILE, IMAGE, REST, SANDBOX, WORKTREE, Command

DIRS, FILES, REST_LINE = "@dirs", "@files", "@rest"
PATHS = {DIR: DIRS, FILE: FILES}  # value kinds the shell completes itself


# -- live values -----------------------------------------------------------------


def _listdir(path):
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def _json_names(directory, recursive=False, prefix=""):
    """Record names (without .json) under a directory; temp files skipped."""
    out = []
    for entry in _listdir(directory):
        path = os.path.join(directory, entry)
        if entry.endswith(".json") and ".tmp." not in entry:
            out.append(prefix + entry[:-5])
        elif recursive and os.path.isdir(path):
            out += _json_names(path, True, f"{prefix}{entry}/")
    return out


def credentials():
    """Credential names in every scope: <data dir>/creds/<scope>/<NAME>.json."""
    from agentsh.base import paths  # lazy: only to complete a credential name

    root = os.path.join(paths.data_dir(), "creds")
    return sorted({n for scope in _listdir(root) for n in _json_names(os.path.join(root, scope))})


def worktrees(store=None, directory=None):
    """Worktree names of the repo holding `directory` (default: the current one): Store
    worktrees/<repo id>/<NAME>.json (NAME may hold '/'); none outside a repository."""
    from agentsh.app import worktree  # lazy: re and git calls, only to complete a worktree name

    try:
        repo = worktree.find_repo(directory)
    except (AgentshError, OSError):
        return []
    root = _store(store).path(worktree.RECORDS)
    return _json_names(os.path.join(root, repo.id), recursive=True)


def sandboxes(store=None):
    """Sandbox names agentsh made: Store sandboxes/<name>.json."""
    return _store(store).names("sandboxes")


def images(store=None):
    """Images agentsh built: the `image` field of Store images/*.json."""
    root = _store(store).path("images")
    found = set()
    for name in _json_names(root):
        try:
            with open(os.path.join(root, name + ".json"), "rb") as f:
                record = json.loads(f.read())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and isinstance(record.get("image"), str):
            found.add(record["image"])
    from agentsh.policy.config import DEFAULT_IMAGE  # lazy: only to complete an image

    found.add(DEFAULT_IMAGE)
    return sorted(found)


def agent_profiles():
    """Agent profile names: the built-in ones and the config's [agents.NAME] (a broken config: built-in only)."""
    from agentsh.policy import agents  # lazy: only to complete an agent profile

    try:
        from agentsh.policy import config  # lazy: only to complete an agent profile

        return agents.names(config.load())
    except Exception:
        return agents.names()


LIVE = {CREDENTIAL: credentials, WORKTREE: worktrees, SANDBOX: sandboxes, IMAGE: images, AGENT: agent_profiles}


def _store(store):
    if store is not None:
        return store
    from agentsh.base.state import Store  # lazy: only for names kept in the state store

    return Store()


# -- the commands' tables ---------------------------------------------------------


def commands():
    """{'ab-up': 'agentsh.cli.up:main', ...}: every installed agentsh command."""
    return {name: target for name, target in ENTRY_POINTS.items() if name.startswith("ab-")}


def table(command):
    """The options table (agentsh.cli.options.Command) of an installed command, or None."""
    import importlib  # lazy: only to read a command's table (not for `ab SUBCOMMAND`)

    target = commands().get(command)
    if target is None:
        return None
    try:
        module = importlib.import_module(target.partition(":")[0])
    except ImportError:
        return None
    return next((v for v in vars(module).values() if isinstance(v, Command) and v.name == command), None)


def candidates(words, index):
    """Completions for words[index] of the command line `words` (words[0] is the command)."""
    current = words[index] if index < len(words) else ""
    command = os.path.basename(words[0]) if words else "ab"
    offset = 1  # where `before` starts in words
    if command == "ab":
        if index <= 1:
            return _filter(_ab_commands(), current)
        command, offset = f"ab-{words[1]}", 2
    found = table(command)
    if found is None:
        return []
    return _filter(_complete(found, list(words[offset:index]), current, offset), current)


def _ab_commands():
    from agentsh.cli.ab import COMMANDS  # lazy: only to complete `ab`'s subcommand

    return sorted(set(COMMANDS) | {name[3:] for name in commands()})


def _complete(command, before, current, offset):
    if command.subcommands:
        # The first word that names a subcommand selects it; complete within it.
        chosen = next((i for i, w in enumerate(before) if w in command.subcommands), None)
        if chosen is None:
            return list(command.subcommands) if not current.startswith("-") else _flags(command)
        command, before, offset = command.subcommands[before[chosen]], before[chosen + 1:], offset + chosen + 1
    rest = _rest_start(command, before, current)
    if rest is not None:
        return [f"{REST_LINE} {offset + rest}"]
    ended = "--" in before  # no options of ours after it
    name, eq, value = current.partition("=")
    option = command.option(name) if eq and name.startswith("--") and not ended else None
    if option is not None and option.takes_value:  # --opt=value
        found = _option_values(option, command, before)
        return found if found[:1] in ([DIRS], [FILES]) else [f"{name}={v}" for v in found]
    if before and not ended:
        option = command.option(before[-1])
        if option is not None and option.takes_value:
            return _option_values(option, command, before[:-1])
    if current.startswith("-") and not ended:
        return _flags(command)
    given = _count_positionals(command, before)
    if given < len(command.args):
        wanted = command.args[given]
        return list(wanted.choices or ()) or _values(wanted.value, command, before)
    return []


def _option_values(option, command, before):
    return list(option.choices or ()) or _values(option.value, command, before)


def _rest_start(command, before, current):
    """Where in `before` another program's command line starts (`before` itself when it is `current`), or None."""
    rest_at = next((i for i, a in enumerate(command.args) if a.nargs == REST), None)
    if rest_at is None:
        return None
    count, skip = 0, False
    for i, w in enumerate(before):
        if skip:
            skip = False
        elif w == "--":
            return i + 1
        elif w.startswith("-") and w != "-":
            option = command.option(w)
            skip = option is not None and option.takes_value
        elif count == rest_at:
            return i
        else:
            count += 1
    return len(before) if not skip and count == rest_at and not current.startswith("-") else None


def _count_positionals(command, words):
    """How many positional words `words` already holds (skipping options and their values)."""
    count, skip, ended = 0, False, False
    for w in words:
        if skip:
            skip = False
        elif w == "--" and not ended:
            ended = True
        elif w.startswith("-") and w != "-" and not ended:
            option = command.option(w)
            skip = option is not None and option.takes_value
        else:
            count += 1
    return count


def _given(command, before, flag):
    """The last value given to option `flag` in `before` (as `--flag V` or `--flag=V`), or None."""
    found = None
    for i, w in enumerate(before):
        if w == "--":
            break
        if w == flag and i + 1 < len(before):
            found = before[i + 1]
        elif w.startswith(flag + "="):
            found = w[len(flag) + 1:]
    return found


def _flags(command):
    shown = ["-h", "--help"] + [f for opt in command.options if not opt.hidden for f in opt.flags]
    return sorted({f for f in shown if f.startswith("--") or len(f) == 2})


def _values(kind, command=None, before=()):
    if kind in PATHS:
        return [PATHS[kind]]
    if kind == WORKTREE:  # of the repo the command will act on
        directory = _given(command, before, "--dir") if command is not None and command.option("--dir") else None
        return worktrees(directory=os.path.expanduser(directory) if directory else None)
    source = LIVE.get(kind)
    return source() if source else []


def _filter(values, current):
    if len(values) == 1 and (values[0] in (DIRS, FILES) or values[0].startswith(REST_LINE + " ")):
        return values
    return [v for v in values if v.startswith(current)]


# -- xonsh ---------------------------------------------------------------------------


def xonsh_completer(command):
    """A xonsh command completer: candidates computed in-process, no fork."""
    if command.arg_index < 1 or not command.args:
        return None
    name = os.path.basename(command.args[0].value)
    if name != "ab" and not name.startswith("ab-"):
        return None
    words = [a.value for a in command.args[: command.arg_index]] + [command.prefix]
    found = candidates(words, command.arg_index)
    if found == [DIRS]:
        from xonsh.completers.path import complete_dir  # lazy: xonsh is optional; only inside xonsh

        return complete_dir(command)  # `--opt=` included: xonsh completes the part after it
    if not found or found == [FILES] or found[0].startswith(REST_LINE + " "):
        return None  # xonsh's own completers answer: paths, or another program's command line
    return set(found)


def register_xonsh():
    """Add the completer to the running xonsh (`completer list` shows it as 'agentsh')."""
    from xonsh.completers.completer import add_one_completer  # lazy: xonsh is optional; only inside xonsh
    from xonsh.completers.tools import contextual_command_completer  # lazy: xonsh is optional; only inside xonsh

    add_one_completer("agentsh", contextual_command_completer(xonsh_completer), "start")
