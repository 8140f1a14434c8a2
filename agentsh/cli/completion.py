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
(or `@files`) asks the shell to complete directory (or file) names itself.
"""

import json
import os

from agentsh.cli.options import AGENT, CREDENTIAL, DIR, FILE, IMAGE, REST, SANDBOX, WORKTREE, Command

DIRS, FILES = "@dirs", "@files"
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
    from agentsh.base import paths

    root = os.path.join(paths.data_dir(), "creds")
    return sorted({n for scope in _listdir(root) for n in _json_names(os.path.join(root, scope))})


def worktrees(store=None):
    """Worktree names of every repo: Store worktrees/<repo>/<NAME>.json (NAME may hold '/')."""
    root = _store(store).path("worktrees")
    return sorted({n for repo in _listdir(root) for n in _json_names(os.path.join(root, repo), recursive=True)})


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
    from agentsh.policy.config import DEFAULT_IMAGE

    found.add(DEFAULT_IMAGE)
    return sorted(found)


def agent_profiles():
    """Agent profile names: the built-in ones and the config's [agents.NAME] (a broken config: built-in only)."""
    from agentsh.policy import agents

    try:
        from agentsh.policy import config

        return agents.names(config.load())
    except Exception:
        return agents.names()


LIVE = {CREDENTIAL: credentials, WORKTREE: worktrees, SANDBOX: sandboxes, IMAGE: images, AGENT: agent_profiles}


def _store(store):
    if store is not None:
        return store
    from agentsh.base.state import Store

    return Store()


# -- the commands' tables ---------------------------------------------------------


def commands():
    """{'ab-up': 'agentsh.cli.up:main', ...}: every installed agentsh command."""
    from agentsh.cli import ENTRY_POINTS

    return {name: target for name, target in ENTRY_POINTS.items() if name.startswith("ab-")}


def table(command):
    """The options table (agentsh.cli.options.Command) of an installed command, or None."""
    import importlib

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
    before = words[1:index]
    command = os.path.basename(words[0]) if words else "ab"
    if command == "ab":
        if not before:
            return _filter(_ab_commands(), current)
        command, before = f"ab-{before[0]}", before[1:]
    found = table(command)
    if found is None:
        return []
    return _filter(_complete(found, before, current), current)


def _ab_commands():
    from agentsh.cli.ab import COMMANDS

    return sorted(set(COMMANDS) | {name[3:] for name in commands()})


def _complete(command, before, current):
    if command.subcommands:
        # The first word that names a subcommand selects it; complete within it.
        chosen = next((i for i, w in enumerate(before) if w in command.subcommands), None)
        if chosen is None:
            return list(command.subcommands) if not current.startswith("-") else _flags(command)
        command, before = command.subcommands[before[chosen]], before[chosen + 1:]
    if before:
        option = command.option(before[-1])
        if option is not None and option.takes_value:
            return list(option.choices or ()) or _values(option.value)
    if current.startswith("-"):
        return _flags(command)
    given = _count_positionals(command, before)
    if given < len(command.args):
        wanted = command.args[given]
        if wanted.nargs == REST:
            return []  # the command line of another program
        return list(wanted.choices or ()) or _values(wanted.value)
    return []


def _count_positionals(command, words):
    """How many positional words `words` already holds (skipping options and their values)."""
    count, skip = 0, False
    for w in words:
        if skip:
            skip = False
        elif w.startswith("-") and w != "-":
            option = command.option(w)
            skip = option is not None and option.takes_value
        else:
            count += 1
    return count


def _flags(command):
    shown = ["-h", "--help"] + [f for opt in command.options if not opt.hidden for f in opt.flags]
    return sorted({f for f in shown if f.startswith("--") or len(f) == 2})


def _values(kind):
    if kind in PATHS:
        return [PATHS[kind]]
    source = LIVE.get(kind)
    return source() if source else []


def _filter(values, current):
    if len(values) == 1 and values[0] in (DIRS, FILES):
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
    if not found or found in ([DIRS], [FILES]):
        return None  # let xonsh's own path completion answer
    return set(found)


def register_xonsh():
    """Add the completer to the running xonsh (`completer list` shows it as 'agentsh')."""
    from xonsh.completers.completer import add_one_completer
    from xonsh.completers.tools import contextual_command_completer

    add_one_completer("agentsh", contextual_command_completer(xonsh_completer), "start")
