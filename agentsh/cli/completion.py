"""Completion candidates for `ab` and every `ab-*` command, for bash, zsh and xonsh.

Subcommands and flags are read from each command's own argparse parser (so a
flag added to a command is completed without touching this file); values that
name things (credentials, worktrees, sandboxes, images) are read from the
state store and the credential directory as they are on disk now, never from
the engine. Every directory is read defensively: a missing or half-written
one means no candidates, never an error on the user's terminal.

The shells call `ab-hook --complete INDEX -- WORDS...` and get one candidate
per line, already filtered by the word being completed; a lone line `@dirs`
asks the shell to complete directory names itself.
"""

import json
import os

DIRS = "@dirs"
# What a positional or option names, by its dest, option or metavar.
CREDENTIAL, WORKTREE, SANDBOX, IMAGE, DIRECTORY = "credential", "worktree", "sandbox", "image", "directory"
KIND_BY_WORD = {
    "cred": CREDENTIAL, "creds": CREDENTIAL, "credential": CREDENTIAL,
    "wt": WORKTREE, "worktree": WORKTREE,
    "sandbox": SANDBOX,
    "image": IMAGE, "img": IMAGE, "tag": IMAGE, "base": IMAGE,
    "dir": DIRECTORY, "directory": DIRECTORY, "project": DIRECTORY,
}
# A positional called NAME names a credential in ab-creds, a worktree in ab-wt.
NAME_KIND = {"ab-creds": CREDENTIAL, "ab-wt": WORKTREE, "ab-down": SANDBOX}
# Subcommands whose NAME is a new one, so existing names are no help.
NEW_NAME = {("ab-wt", "new")}


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


LIVE = {CREDENTIAL: credentials, WORKTREE: worktrees, SANDBOX: sandboxes, IMAGE: images}


def _store(store):
    if store is not None:
        return store
    from agentsh.base.state import Store

    return Store()


# -- the commands' parsers ----------------------------------------------------------


class _Captured(BaseException):
    """Raised from parse_args to hand back the parser a command built."""

    def __init__(self, parser):
        self.parser = parser


def commands():
    """{'ab-up': 'agentsh.cli.up:main', ...}: every installed agentsh command."""
    from agentsh.cli import ENTRY_POINTS

    return {name: target for name, target in ENTRY_POINTS.items() if name.startswith("ab-")}


def capture_parser(target, argv):
    """The argparse parser the command at `target` ('module:function') builds for argv.

    The command runs only up to its parse_args call, which is intercepted;
    None when it never parses (a usage screen) or cannot be imported.
    """
    import argparse
    import contextlib
    import importlib
    import io
    import sys

    module_name, _, function = target.partition(":")
    try:
        func = getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError):
        return None, None
    module = sys.modules[module_name]
    saved = (argparse.ArgumentParser.parse_args, argparse.ArgumentParser.parse_known_args, sys.argv)

    def capture(self, *a, **kw):
        raise _Captured(self)

    # Commands with a hand-parsed fast path (ab-exec, ab-up) would run for real
    # on plain arguments: their `parse` builds the parser and does nothing else.
    parse = getattr(module, "parse", None)
    call = (lambda: parse(list(argv))) if callable(parse) else func
    argparse.ArgumentParser.parse_args = argparse.ArgumentParser.parse_known_args = capture
    sys.argv = [sys.argv[0], *argv]
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            call()
    except _Captured as c:
        return c.parser, module
    except (Exception, SystemExit):
        pass
    finally:
        argparse.ArgumentParser.parse_args, argparse.ArgumentParser.parse_known_args, sys.argv = saved
    return None, module


def _subcommands(parser, module):
    """Subcommand names: argparse subparsers, or a module's SUBCOMMANDS table."""
    import argparse

    if parser is not None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                return list(action.choices)
    table = getattr(module, "SUBCOMMANDS", None)
    return list(table) if isinstance(table, dict) else []


def _kind(command, action, subcommand):
    """What an argparse action's value names (a KIND), or None."""
    words = [s.lstrip("-").lower() for s in action.option_strings]
    words += [str(action.dest or "").lower(), str(action.metavar or "").lower()]
    for w in words:
        if w in KIND_BY_WORD:
            return KIND_BY_WORD[w]
    if not action.option_strings and "name" in words and (command, subcommand) not in NEW_NAME:
        return NAME_KIND.get(command)
    return None


def candidates(words, index):
    """Completions for words[index] of the command line `words` (words[0] is the command)."""
    current = words[index] if index < len(words) else ""
    before = words[1:index]
    command = os.path.basename(words[0]) if words else "ab"
    if command == "ab":
        if not before:
            return _filter(_ab_commands(), current)
        command, before = f"ab-{before[0]}", before[1:]
    target = commands().get(command)
    if target is None:
        return []
    return _filter(_complete(command, target, before, current), current)


def _ab_commands():
    from agentsh.cli.ab import COMMANDS

    return sorted(set(COMMANDS) | {name[3:] for name in commands()})


def _complete(command, target, before, current):
    import argparse

    parser, module = capture_parser(target, before)
    subs = _subcommands(parser, module)
    subcommand = None
    if subs:
        # The first word that names a subcommand selects it; complete within it.
        chosen = next((i for i, w in enumerate(before) if w in subs), None)
        if chosen is None:
            return subs if not current.startswith("-") else _flags(parser)
        subcommand = before[chosen]
        argparse_subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)] if parser else []
        if argparse_subs:
            parser = argparse_subs[0].choices[subcommand]
        else:  # dispatched by the command itself: it builds the subcommand's parser
            parser, _ = capture_parser(target, before[: chosen + 1])
        before = before[chosen + 1:]
    if parser is None:
        return []
    actions = parser._actions
    if before:
        option = next((a for a in actions if before[-1] in a.option_strings), None)
        if option is not None and option.nargs != 0:
            return list(option.choices or ()) or _values(_kind(command, option, subcommand))
    if current.startswith("-"):
        return _flags(parser)
    positionals = [a for a in actions if not a.option_strings and not isinstance(a, argparse._SubParsersAction)]
    given = _count_positionals(actions, before)
    if given < len(positionals):
        wanted = positionals[given]
        return list(wanted.choices or ()) or _values(_kind(command, wanted, subcommand))
    return []


def _count_positionals(actions, words):
    """How many positional words `words` already holds (skipping options and their values)."""
    takes_value = {s for a in actions if a.option_strings and a.nargs != 0 for s in a.option_strings}
    count, skip = 0, False
    for w in words:
        if skip:
            skip = False
        elif w.startswith("-"):
            skip = w in takes_value
        else:
            count += 1
    return count


def _flags(parser):
    return sorted({s for a in parser._actions for s in a.option_strings if s.startswith("--") or len(s) == 2})


def _values(kind):
    if kind == DIRECTORY:
        return [DIRS]
    source = LIVE.get(kind)
    return source() if source else []


def _filter(values, current):
    if values == [DIRS]:
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
    if not found or found == [DIRS]:
        return None  # let xonsh's own path completion answer
    return set(found)


def register_xonsh():
    """Add the completer to the running xonsh (`completer list` shows it as 'agentsh')."""
    from xonsh.completers.completer import add_one_completer
    from xonsh.completers.tools import contextual_command_completer

    add_one_completer("agentsh", contextual_command_completer(xonsh_completer), "start")
