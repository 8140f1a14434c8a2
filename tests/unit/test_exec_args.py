import pytest

from agentsh.cli import exec as exec_cli


@pytest.mark.parametrize("argv", [
    ["--", "make", "test"],
    ["make", "-j4"],
    ["--dir", "/x", "-e", "A=1", "--env=B", "-T", "--", "sh", "-c", "echo -e"],
    ["--dir=/x", "-t", "ls", "--dir", "y"],
    ["--image", "img", "--wt", "feat", "--"],
    [],
    ["-e", "A", "-e", "B=2", "--", "--weird-command"],
])
def test_fast_parse_agrees_with_argparse(argv):
    fast = exec_cli.fast_parse(argv)
    slow = exec_cli.parse(argv)
    assert fast is not None
    for key in ("dir", "env", "image", "wt", "tty", "cmd"):
        assert getattr(fast, key) == getattr(slow, key), key


@pytest.mark.parametrize("argv", [["--help"], ["--bogus", "x"], ["--dir"], ["-t", "-T", "x"], ["--dir", "a", "--dir", "b"],
                                  ["-x"]])
def test_unusual_arguments_go_to_argparse(argv):
    assert exec_cli.fast_parse(argv) is None


@pytest.mark.parametrize("argv", [[], ["dir"], ["--json"], ["d", "--json", "--recreate"], ["--lockdown", "x"]])
def test_up_fast_parse_agrees_with_argparse(argv):
    from agentsh.cli import up

    fast, slow = up.fast_parse(argv), up.parse(argv)
    assert fast is not None
    for key in ("dir", "wt", "image", "network", "publish", "recreate", "json", "lockdown"):
        assert getattr(fast, key) == getattr(slow, key), key


@pytest.mark.parametrize("argv", [["--help"], ["a", "b"], ["--image", "x"], ["-p", "80"], ["--bogus"]])
def test_up_unusual_arguments_go_to_argparse(argv):
    from agentsh.cli import up

    assert up.fast_parse(argv) is None
