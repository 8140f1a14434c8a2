"""The options tables: one declaration that the fast parser, argparse and completion all read."""

import contextlib
import io
import os
import random
import subprocess
import sys

import pytest

from agentsh.cli import ENTRY_POINTS, completion, options, up
from agentsh.cli import exec as exec_cli
from agentsh.cli.options import APPEND, FLAG, OFF, OPTIONAL, REST, Arg, Command, Option

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TABLES = {name: completion.table(name) for name in ENTRY_POINTS if name.startswith("ab-")}


def argparse_result(command, argv):
    """vars() of argparse's result, or None when argparse refuses argv (usage error or --help)."""
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return vars(options.parse(command, argv))
    except SystemExit:
        return None


TOKENS = {
    "ab-exec": ["--", "-", "make", "-j4", "--dir", "/x", "--dir=/y", "-e", "A=1", "--env=B", "-t", "-T", "--tty",
                "--no-tty", "--image", "img", "--wt", "feat", "--network", "allow", "bad", "--lockdown", "--help",
                "--bogus", "--lock", "-x", ""],
    "ab-up": ["--", "-", "d", "e", "--json", "--recreate", "--lockdown", "--image", "img", "--wt", "w", "-p", "80",
              "--publish=1:2", "--network", "none", "--network=bad", "--help", "--js", "-1", "-q", ""],
}


@pytest.mark.parametrize("name", ["ab-exec", "ab-up"])
def test_fast_parse_never_disagrees_with_argparse(name):
    """Whatever the hand parser returns, argparse returns too; it gives up on the rest."""
    command, pool, rng = TABLES[name], TOKENS[name], random.Random(11)
    handled = 0
    for _ in range(1500):
        argv = [rng.choice(pool) for _ in range(rng.randint(0, 6))]
        fast = options.fast_parse(command, argv)
        if fast is not None:
            handled += 1
            assert vars(fast) == argparse_result(command, argv), argv
    assert handled > 150  # the common lines do take the fast path


def test_common_lines_take_the_fast_path():
    assert exec_cli.fast_parse(["--", "true"]).cmd == ["true"]
    assert up.fast_parse(["--json"]).json is True


def test_defaults_follow_argparse():
    cmd = Command("t", options=(
        Option("-t", "--tty", kind=FLAG, default=None, group="g"), Option("-T", dest="tty", kind=OFF, group="g"),
        Option("--no-x", dest="x", kind=OFF), Option("-e", kind=APPEND, default=[]), Option("--v"),
        Option("--hidden", hidden=True)),
        args=(Arg("dir", nargs=OPTIONAL),))
    fast = options.fast_parse(cmd, [])
    assert vars(fast) == argparse_result(cmd, []) == {"tty": None, "x": True, "e": [], "v": None, "hidden": None,
                                                      "dir": None}
    assert options.fast_parse(cmd, ["-t", "-T"]) is None and argparse_result(cmd, ["-t", "-T"]) is None
    assert options.fast_parse(cmd, ["--no-x=1"]) is None


def test_a_required_positional_and_choices():
    cmd = Command("t", args=(Arg("name"), Arg("shell", nargs=OPTIONAL, choices=("bash", "zsh"))))
    assert options.fast_parse(cmd, []) is None and argparse_result(cmd, []) is None
    assert vars(options.fast_parse(cmd, ["n", "zsh"])) == argparse_result(cmd, ["n", "zsh"])
    assert options.fast_parse(cmd, ["n", "fish"]) is None and argparse_result(cmd, ["n", "fish"]) is None


def test_rest_takes_everything_after_the_first_word():
    cmd = Command("t", options=(Option("--dir"),), args=(Arg("cmd", nargs=REST),))
    assert options.fast_parse(cmd, ["--dir", "d", "ls", "--dir", "x"]).cmd == ["ls", "--dir", "x"]
    assert options.fast_parse(cmd, ["--", "--dir"]).cmd == ["--dir"]


def test_hidden_options_are_parsed_but_not_shown():
    text = options.argparser(TABLES["ab-hook"]).format_help()
    assert "--enter" not in text and "--decide" not in text
    assert options.argparser(TABLES["ab-hook"]).parse_args(["--enter", "/x"]).enter == "/x"


def every_table():
    for name, cmd in TABLES.items():
        yield name, cmd
        for sub in cmd.subcommands.values():
            yield sub.name, sub


@pytest.mark.parametrize("name", sorted(TABLES))
def test_every_command_has_a_table_and_help_shows_each_option(name):
    cmd = TABLES[name]
    assert cmd is not None and cmd.name == name
    for label, table in every_table():
        if not label.startswith(name):
            continue
        text = options.argparser(table).format_help()
        for opt in table.options:
            if not opt.hidden:
                assert all(flag in text for flag in opt.flags), (label, opt.flags)
        for arg in table.args:
            assert (arg.metavar or arg.dest) in text


def test_every_value_kind_is_completed():
    known = set(completion.LIVE) | set(completion.PATHS)
    for label, table in every_table():
        for item in (*table.options, *table.args):
            assert item.value is None or item.value in known, (label, item.value)


def test_tables_spell_the_same_choices_as_the_core():
    from agentsh.cli import creds
    from agentsh.creds.importers import SOURCES
    from agentsh.policy.config import SCHEMA
    from agentsh.policy.rules import MODES
    from agentsh.sandbox.isolation import CHOICES

    assert options.NETWORK_MODES == MODES
    assert creds.SOURCES == SOURCES
    assert options.ISOLATIONS == CHOICES
    for choice in CHOICES:  # the config key takes the same words
        SCHEMA["isolation"][0](choice, "isolation")


def test_the_hot_paths_import_no_argparse_re_json_or_enum():
    code = ("import sys; sys.path.insert(0, sys.argv[1]); before = set(sys.modules)\n"
            "from agentsh.cli import exec, up\n"
            "exec.fast_parse(['--dir', '/x', '-e', 'A', '--', 'true']); up.fast_parse(['--json'])\n"
            "print(sorted({'argparse', 're', 'json', 'enum'} & (set(sys.modules) - before)))")
    out = subprocess.run([sys.executable, "-S", "-c", code, REPO], capture_output=True, text=True, check=True)
    assert out.stdout == "[]\n"
