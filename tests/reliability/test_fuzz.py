"""Fuzzed config files and argument vectors: a clear error or success, never a traceback.

Seeded (AGENTSH_FUZZ_SEED picks another run) and bounded in time: each fuzzer stops after its count or
FUZZ_SECONDS, whichever comes first, so the suite pays a few seconds for each.
"""

import os
import random
import string
import subprocess
import time

import pytest

from agentsh.base.errors import AgentshError
from tests.conftest import BIN

SEED = int(os.environ.get("AGENTSH_FUZZ_SEED", "19"))
FUZZ_SECONDS = float(os.environ.get("AGENTSH_FUZZ_SECONDS", "5"))

KEYS = ["image", "engine", "env", "ca_bundle", "cap_add", "pids", "memory", "cpus", "mounts", "shell",
        "lockdown", "git_identity", "credentials", "ports", "caches", "agents", "network", "hook", "nope"]
TABLE_KEYS = {"network": ["mode", "allow", "x"], "hook": ["on_enter", "y"],
              "agents": ["claude", "codex", "bogus"]}


def _string(rng):
    pools = [string.ascii_letters, string.digits + ":/.-_~", "\x00\x1b\n\t\x7f\u202e", "é漢字", "ALL CAP_ NET_RAW"]
    text = "".join(rng.choice(rng.choice(pools)) for _ in range(rng.randrange(0, 24)))
    return rng.choice([text, "/tmp/" + text, "~/" + text, "localhost/x:" + text, f"{text}:/data:ro", "8g",
                       "1b", "NOT_A_CAP", "ALL", "full", "allow", "host", "-x", ""])


def _value(rng, depth=0):
    kind = rng.randrange(9 if depth < 2 else 6)
    if kind == 0:
        return rng.choice([0, -1, 1, 7, 4096, 2147483648, 2 ** 63, -(2 ** 63)])
    if kind == 1:
        return rng.choice([0.5, -2.0, 1e308, float("inf"), float("nan")])
    if kind == 2:
        return rng.random() < 0.5
    if kind in (3, 4, 5):
        return _string(rng)
    if kind in (6, 7):
        return [_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    return {rng.choice(["mode", "allow", "env", "credentials", "x"]): _value(rng, depth + 1)
            for _ in range(rng.randrange(0, 3))}


def _toml(value):
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return {"inf": "inf", "-inf": "-inf", "nan": "nan"}.get(repr(value), repr(value))
    if isinstance(value, int):
        return str(value) if abs(value) < 2 ** 63 else json.dumps(str(value))
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + "}"


def config_text(rng):
    lines = []
    for key in rng.sample(KEYS, rng.randrange(0, 6)):
        if key in TABLE_KEYS and rng.random() < 0.6:
            lines.append(f"[{key}]")
            for sub in rng.sample(TABLE_KEYS[key], rng.randrange(0, 3)):
                lines.append(f"{sub} = {_toml(_value(rng))}")
            lines.append("[__end__]" if rng.random() < 0.1 else "")
        else:
            lines.insert(0, f"{key} = {_toml(_value(rng))}")
    data = "\n".join(lines).encode()
    if rng.random() < 0.3 and data:  # byte-level damage: truncation, stray bytes
        i = rng.randrange(len(data))
        data = rng.choice([data[:i], data[:i] + bytes([rng.randrange(256)]) + data[i:], data + b"\xff\xfe"])
    return data


def test_600_fuzzed_config_files(repo, tmp_path):
    from agentsh.host.project import Project
    from agentsh.policy import config
    from agentsh.policy.values import Config
    from agentsh.sandbox import spec as specs
    from tests.unit.fake_engine import fake_engine

    rng = random.Random(SEED)
    project = Project(str(repo))
    engine, _ = fake_engine()
    deadline = time.monotonic() + FUZZ_SECONDS
    done = accepted = 0
    for n in range(600):
        if time.monotonic() > deadline:
            break
        data = config_text(rng)
        source = str(tmp_path / f"config-{n}.toml")
        try:
            layer = config.parse_cached(data, source)
            cfg = Config(config.merge(config.defaults(), layer))
            specs.build(project, cfg, engine, specs.gather(project, cfg, engine))
            accepted += 1
        except AgentshError as e:
            assert e.message and "\n" not in e.message, (data, e.message)
        except Exception as e:  # noqa: BLE001 - the point: nothing but AgentshError
            pytest.fail(f"config {data!r}: {type(e).__name__}: {e}")
        done += 1
    assert done >= 100, f"only {done} configs in {FUZZ_SECONDS} s"
    assert accepted, "no fuzzed config was valid: the generator tests too little"


def _commands():
    """(argv prefix, Command) for every ab-* command and subcommand."""
    import importlib

    from agentsh.cli import ENTRY_POINTS
    from agentsh.cli.options import Command

    found = []
    for prog, target in sorted(ENTRY_POINTS.items()):
        if prog == "ab":
            continue
        module = importlib.import_module(target.split(":")[0])
        for value in vars(module).values():
            if isinstance(value, Command):
                if value.subcommands and value.sub_dest is None:  # dispatched by the command itself (ab-wt)
                    found += [([prog, name], sub) for name, sub in value.subcommands.items()]
                else:
                    found.append(([prog], value))
    return found


def _word(rng, command):
    flags = [f for o in command.options for f in o.flags] + ["--help", "-h", "--json", "--", "-", "--x=1"]
    subs = list(getattr(command, "subcommands", None) or {})
    pools = [flags, subs or flags, ["claude", "codex", "NAME", "A=B", "=x", "-e", "..", "/", "~", "-p", "80:80",
                                    "1.2.3.4:99999:80/udp", "\x00", "é", "x" * 300, "0", "-1"]]
    return rng.choice(rng.choice(pools))


def argv_vector(rng, command):
    return [_word(rng, command) for _ in range(rng.randrange(0, 6))]


def test_400_fuzzed_argument_vectors_parse_or_say_why():
    from agentsh.cli import options

    rng = random.Random(SEED)
    commands = _commands()
    assert len(commands) >= 14
    deadline = time.monotonic() + FUZZ_SECONDS
    done = 0
    devnull = open(os.devnull, "w")
    import contextlib

    for _ in range(400):
        if time.monotonic() > deadline:
            break
        _, command = rng.choice(commands)
        argv = [a for a in argv_vector(rng, command) if "\x00" not in a]
        try:
            with contextlib.redirect_stderr(devnull), contextlib.redirect_stdout(devnull):
                options.parse(command, argv, fast=True)
        except SystemExit as e:
            assert e.code in (0, 2), (command.name, argv, e.code)
        except AgentshError:
            pass
        except Exception as e:  # noqa: BLE001
            pytest.fail(f"{command.name} {argv!r}: {type(e).__name__}: {e}")
        done += 1
    devnull.close()
    assert done >= 100


# Run end to end (a sample): a fake engine that answers every call with an error, HOME of its own.
SAFE = ("ab-allow", "ab-creds", "ab-deny", "ab-doctor", "ab-down", "ab-exec", "ab-hook", "ab-log", "ab-ls",
        "ab-net", "ab-status", "ab-up", "ab-wt")


def test_fuzzed_argument_vectors_end_to_end_print_no_traceback(repo, tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "podman").write_text("#!/bin/sh\necho 'Error: the fake engine says no' >&2\nexit 125\n")
    (fake / "podman").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{BIN}:/usr/bin:/bin", "HOME": str(tmp_path / "home"),
           "AGENTSH_ENGINE_TIMEOUT": "10"}
    (tmp_path / "home").mkdir()
    rng = random.Random(SEED + 1)
    commands = [(p, c) for p, c in _commands() if p[0] in SAFE]
    deadline = time.monotonic() + FUZZ_SECONDS
    done = 0
    while done < 60 and time.monotonic() < deadline:
        prefix, command = rng.choice(commands)
        argv = [a for a in argv_vector(rng, command) if "\x00" not in a]
        if prefix == ["ab-log"]:
            argv = [a for a in argv if a not in ("-f", "--follow")]  # follows the log until stopped, by design
        proc = subprocess.run([str(BIN / prefix[0]), *prefix[1:], *argv], cwd=repo, env=env, capture_output=True,
                              stdin=subprocess.DEVNULL, timeout=60)
        assert b"Traceback" not in proc.stderr and b"internal error" not in proc.stderr, \
            (prefix, argv, proc.stderr.decode(errors="replace")[-2000:])
        assert proc.returncode in (0, 1, 2, 125, 127), (prefix, argv, proc.returncode, proc.stderr[-500:])
        done += 1
    assert done >= 10
