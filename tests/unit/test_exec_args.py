"""ab-exec's and ab-up's hand parsers: the common command lines, and what they leave to argparse."""

import pytest

from agentsh.cli import exec as exec_cli
from agentsh.cli import up


@pytest.mark.parametrize("argv", [
    ["--", "make", "test"],
    ["make", "-j4"],
    ["--dir", "/x", "-e", "A=1", "--env=B", "-T", "--", "sh", "-c", "echo -e"],
    ["--dir=/x", "-t", "ls", "--dir", "y"],
    ["--image", "img", "--wt", "feat", "--"],
    [],
    ["-e", "A", "-e", "B=2", "--", "--weird-command"],
    ["--dir", "a", "--dir", "b"],  # the last one wins, as in argparse
    ["--network", "allow", "--lockdown", "-"],
    ["-t", "--tty", "x"],
])
def test_fast_parse_agrees_with_argparse(argv):
    fast = exec_cli.fast_parse(argv)
    slow = exec_cli.parse(argv)
    assert fast is not None
    assert vars(fast) == vars(slow)


@pytest.mark.parametrize("argv", [["--help"], ["--bogus", "x"], ["--dir"], ["-t", "-T", "x"], ["-x"],
                                  ["--network", "bad"], ["--network=bad", "--", "x"], ["--dir", "-x"],
                                  ["--lock", "x"], ["-eA"], ["--lockdown=yes"]])
def test_unusual_arguments_go_to_argparse(argv):
    assert exec_cli.fast_parse(argv) is None


@pytest.mark.parametrize("argv", [[], ["dir"], ["--json"], ["d", "--json", "--recreate"], ["--lockdown", "x"],
                                  ["--image", "x"], ["-p", "80", "--publish=81", "d"], ["--network", "allow"],
                                  ["--wt", "feat", "--json"]])
def test_up_fast_parse_agrees_with_argparse(argv):
    fast, slow = up.fast_parse(argv), up.parse(argv)
    assert fast is not None
    assert vars(fast) == vars(slow)


@pytest.mark.parametrize("argv", [["--help"], ["a", "b"], ["--bogus"], ["--image"], ["--network", "bad"],
                                  ["-p", "-1"], ["--js"], ["--", "d"]])
def test_up_unusual_arguments_go_to_argparse(argv):
    assert up.fast_parse(argv) is None


@pytest.mark.parametrize("argv", [["--network", "bad", "--", "true"], ["-t", "-T"], ["--dir"]])
def test_exec_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        exec_cli.body(argv)
    assert e.value.code == 2 and "usage: ab-exec" in capsys.readouterr().err
