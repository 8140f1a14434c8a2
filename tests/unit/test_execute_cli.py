import subprocess

import pytest

from agentsh.base.errors import UsageError
from agentsh.host.engine import is_gone_message
from agentsh.sandbox import execute


def _commands():
    """Every ab-* command the package installs (its launchers in scripts/bin)."""
    import tomllib
    from pathlib import Path

    data = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    names = [Path(p).name for p in data["tool"]["setuptools"]["script-files"]]
    return sorted(name for name in names if name.startswith("ab-"))


def test_launchers_match_the_entry_points():
    import importlib
    from pathlib import Path

    from agentsh.cli import ENTRY_POINTS

    bin_dir = Path(__file__).resolve().parents[2] / "scripts" / "bin"
    assert sorted(p.name for p in bin_dir.iterdir()) == sorted(ENTRY_POINTS) == sorted(["ab", *COMMANDS])
    for name, target in ENTRY_POINTS.items():
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func)), name
        assert (bin_dir / name).read_text() == f"#!python\nimport sys\nfrom {module} import {func}\nsys.exit({func}())\n"


COMMANDS = _commands()


def test_host_env_allowlist():
    env = {"TERM": "xterm", "LANG": "C", "LC_ALL": "C", "COLORTERM": "1", "TZ": "UTC",
           "HOME": "/root", "AWS_SECRET_ACCESS_KEY": "x", "PATH": "/bin", "SSH_AUTH_SOCK": "/s"}
    assert sorted(execute.host_env_names(env)) == ["COLORTERM", "LANG", "LC_ALL", "TERM", "TZ"]


def test_env_flags():
    names, values = execute.parse_env_args(["A=1", "B", "MISSING", "C="], {"B": "2"})
    assert names == ["A", "B", "C"] and values == {"A": "1", "C": ""}
    with pytest.raises(UsageError, match="not a valid variable name"):
        execute.parse_env_args(["1BAD=x"], {})


def test_engine_gone_detection():
    assert is_gone_message(b'Error: no container with name or ID "x" found: no such container\n')
    assert is_gone_message(b"Error: can only create exec sessions on running containers: "
                                   b"container state improper\n")
    assert not is_gone_message(b"no such container\n")  # the command's own words
    assert not is_gone_message(b"Error: something else\n")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command):
    proc = subprocess.run([command, "--help"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout and "example" in proc.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_bad_flags_exit_2(command):
    proc = subprocess.run([command, "--no-such-flag"], capture_output=True, text=True)
    assert proc.returncode == 2 and "usage:" in proc.stderr and "Traceback" not in proc.stderr


def test_ab_lists_commands_and_dispatches():
    proc = subprocess.run(["ab"], capture_output=True, text=True)
    assert proc.returncode == 0
    for name in (c.removeprefix("ab-") for c in COMMANDS):
        assert f"  {name} " in proc.stdout, name
    proc = subprocess.run(["ab", "up", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: ab-up")
    proc = subprocess.run(["ab", "nosuch"], capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown command 'nosuch'" in proc.stderr
    proc = subprocess.run(["ab", "../../bin/sh"], capture_output=True, text=True)
    assert proc.returncode == 2 and "is not a command" in proc.stderr


def test_config_error_is_one_line_without_traceback(user_config, tmp_path):
    path = user_config("image = [\n")
    proc = subprocess.run(["ab-up", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 125
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert str(path) in proc.stderr and "line" in proc.stderr


def test_torn_state_record_is_one_line_without_traceback(tmp_path, isolated_dirs):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / ".agentsh.toml").write_text("")
    from pathlib import Path

    from agentsh.base import layout
    from agentsh.base.state import Store
    from agentsh.policy import trust

    record = Path(Store().path(layout.trust_allow_record(trust._path_key(str(tmp_path / "p" / ".agentsh.toml")))))
    assert record.is_relative_to(isolated_dirs["XDG_STATE_HOME"])
    record.parent.mkdir(parents=True)
    record.write_text('{"schema": 1, "path"')
    proc = subprocess.run(["ab-up", str(tmp_path / "p")], capture_output=True, text=True)
    assert proc.returncode == 125 and "Traceback" not in proc.stderr
    assert str(record) in proc.stderr and "not valid JSON" in proc.stderr


def test_missing_engine_is_one_line(tmp_path, monkeypatch):
    import os
    import sys

    monkeypatch.setenv("PATH", os.path.dirname(sys.executable))  # our scripts, no podman
    proc = subprocess.run(["ab-up", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 125
    assert proc.stderr == ("ab-up: podman is not installed (not found on PATH); install it (Debian/Ubuntu: "
                           "sudo apt-get install podman; Fedora: sudo dnf install podman)\n")
