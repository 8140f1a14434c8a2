"""The credential cache: sealing, the key, records, bad input (in-process and through ab-creds)."""

import json
import os
import pty
import stat
import subprocess

import pytest

from agentsh.base import paths
from agentsh.base.errors import UsageError
from agentsh.base.state import Store
from agentsh.creds import vault as creds
from agentsh.creds.vault import CredentialError


def store_value(name, value, scope=creds.GLOBAL, **meta):
    clear = creds.meta(meta.pop("type_", creds.ENV), meta.pop("target", name), **meta)
    return creds.put(Store(), name, scope, clear, value)


def ab_creds(*args, input=b"", env=None):
    return subprocess.run(["ab-creds", *args], input=input, capture_output=True, env=env, timeout=60)


def one_line_failure(proc, *words):
    err = proc.stderr.decode()
    assert proc.returncode != 0 and err.count("\n") == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, err
    return err


def test_round_trip_and_key_file_is_private():
    store_value("TOKEN", b"s3cret-value")
    record = creds.read_record("TOKEN", creds.GLOBAL)
    assert creds.reveal(record) == b"s3cret-value"
    key_path = os.path.join(paths.config_dir(), creds.KEY_FILE)
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600 and os.path.getsize(key_path) == 32
    raw = open(creds.record_path("TOKEN", creds.GLOBAL), "rb").read()
    assert b"s3cret-value" not in raw and json.loads(raw)["meta"]["target"] == "TOKEN"


def test_every_write_uses_a_fresh_nonce():
    first = store_value("A", b"same")
    second = store_value("A", b"same")
    assert first["nonce"] != second["nonce"] and first["ciphertext"] != second["ciphertext"]


@pytest.mark.parametrize("change", ["rename", "rescope", "meta", "ciphertext"])
def test_moved_or_edited_records_do_not_open(change, tmp_path):
    store_value("A", b"value-a")
    src = creds.record_path("A", creds.GLOBAL)
    record = json.load(open(src))
    name, scope = "A", creds.GLOBAL
    if change == "rename":
        name = "B"
    elif change == "rescope":
        scope = "0123abcd"
    elif change == "meta":
        record["meta"]["target"] = "LD_PRELOAD"
    else:
        sealed = bytearray(__import__("base64").b64decode(record["ciphertext"]))
        sealed[0] ^= 1
        record["ciphertext"] = __import__("base64").b64encode(bytes(sealed)).decode()
    dest = creds.record_path(name, scope)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    with open(dest, "w") as f:
        json.dump(record, f)
    with pytest.raises(CredentialError, match="fails its integrity check"):
        creds.reveal(creds.read_record(name, scope))


@pytest.mark.parametrize("content", [b"", b'{"version": 1, "meta": {"ty', b"\x00\xff", b'{"version": 9}'])
def test_truncated_or_garbage_record_is_one_clear_line(content):
    store_value("A", b"v")
    path = creds.record_path("A", creds.GLOBAL)
    with open(path, "wb") as f:
        f.write(content)
    proc = ab_creds("get", "A")
    one_line_failure(proc, "is damaged", "ab-creds rm A")
    assert open(path, "rb").read() == content  # untouched
    assert ab_creds("ls", "--json").returncode == 0  # still listable, shown as damaged
    assert ab_creds("rm", "A").returncode == 0


def test_tampered_ciphertext_through_the_cli_leaves_the_cache_alone():
    store_value("A", b"v")
    path = creds.record_path("A", creds.GLOBAL)
    record = json.load(open(path))
    first = record["ciphertext"][0]
    record["ciphertext"] = ("B" if first == "A" else "A") + record["ciphertext"][1:]  # always a change
    data = json.dumps(record).encode()
    open(path, "wb").write(data)
    one_line_failure(ab_creds("get", "A"), "integrity check")
    assert open(path, "rb").read() == data


def test_wrong_key_file_is_named():
    store_value("A", b"v")
    key_path = os.path.join(paths.config_dir(), creds.KEY_FILE)
    os.unlink(key_path)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, os.urandom(32))
    os.close(fd)
    one_line_failure(ab_creds("get", "A"), "sealed with another key")


def test_loose_key_file_permissions_are_refused_with_the_fix():
    store_value("A", b"v")
    key_path = os.path.join(paths.config_dir(), creds.KEY_FILE)
    os.chmod(key_path, 0o644)
    before = open(creds.record_path("A", creds.GLOBAL), "rb").read()
    err = one_line_failure(ab_creds("get", "A"), "readable by others", f"chmod 600 '{key_path}'")
    assert "644" in err
    one_line_failure(ab_creds("set", "B", input=b"x"), "readable by others")
    assert not os.path.exists(creds.record_path("B", creds.GLOBAL))
    assert open(creds.record_path("A", creds.GLOBAL), "rb").read() == before


def test_missing_key_with_records_is_an_error_not_a_new_key():
    store_value("A", b"v")
    os.unlink(os.path.join(paths.config_dir(), creds.KEY_FILE))
    one_line_failure(ab_creds("get", "A"), "key is missing")
    assert not os.path.exists(os.path.join(paths.config_dir(), creds.KEY_FILE))


def test_passphrase_mode(monkeypatch):
    env = dict(os.environ, AGENTSH_PASSPHRASE="correct horse")
    assert ab_creds("set", "P", input=b"pp-value", env=env).returncode == 0
    assert not os.path.exists(os.path.join(paths.config_dir(), creds.KEY_FILE))
    params = os.path.join(paths.config_dir(), creds.PASSPHRASE_FILE)
    assert stat.S_IMODE(os.stat(params).st_mode) == 0o600
    assert ab_creds("get", "P", env=env).stdout == b"pp-value\n"
    before = open(creds.record_path("P", creds.GLOBAL), "rb").read()
    one_line_failure(ab_creds("get", "P", env=dict(env, AGENTSH_PASSPHRASE="wrong")), "wrong passphrase")
    one_line_failure(ab_creds("set", "P", input=b"other", env=dict(env, AGENTSH_PASSPHRASE="wrong")),
                     "wrong passphrase")
    no_pass = {k: v for k, v in env.items() if k != "AGENTSH_PASSPHRASE"}
    one_line_failure(ab_creds("get", "P", env=no_pass), "AGENTSH_PASSPHRASE")
    assert open(creds.record_path("P", creds.GLOBAL), "rb").read() == before


def test_unknown_name_and_bad_names():
    one_line_failure(ab_creds("get", "NOPE"), "no credential named NOPE")
    one_line_failure(ab_creds("rm", "NOPE"), "no credential named NOPE")
    proc = ab_creds("set", "../evil", input=b"x")
    assert proc.returncode == 2 and "not a valid credential name" in proc.stderr.decode()
    with pytest.raises(UsageError):
        creds.sandbox_path("relative/path")
    with pytest.raises(UsageError):
        creds.sandbox_path("/home/agent/../../etc/passwd")
    assert creds.sandbox_path("~/.codex/auth.json") == "/home/agent/.codex/auth.json"
    assert creds.sandbox_path(paths.home_dir() + "/.codex/auth.json") == "/home/agent/.codex/auth.json"


def test_failing_and_hanging_commands(monkeypatch):
    store_value("FAILS", b"echo oops >&2; exit 3", source=creds.COMMAND)
    store_value("HANGS", b"sleep 30 & sleep 30; echo late", source=creds.COMMAND)
    store_value("WORKS", b"printf 'from-cmd\\n'", source=creds.COMMAND)
    before = {n: open(creds.record_path(n, creds.GLOBAL), "rb").read() for n in ("FAILS", "HANGS")}
    err = one_line_failure(ab_creds("get", "FAILS"), "command failed (exit 3)", "oops")
    assert "echo oops" not in err  # the command itself stays private
    monkeypatch.setattr(creds, "COMMAND_TIMEOUT", 1)
    with pytest.raises(CredentialError, match="did not finish within 1 s"):
        creds.reveal(creds.read_record("HANGS", creds.GLOBAL))
    assert creds.reveal(creds.read_record("WORKS", creds.GLOBAL)) == b"from-cmd"
    assert {n: open(creds.record_path(n, creds.GLOBAL), "rb").read() for n in before} == before


def test_hanging_command_through_the_cli_is_one_line(monkeypatch, capsys):
    from agentsh.cli import creds as cli

    store_value("HANGS", b"sleep 60", source=creds.COMMAND)
    monkeypatch.setattr(creds, "COMMAND_TIMEOUT", 1)
    with pytest.raises(SystemExit) as exit_:
        cli.run("ab-creds", cli.body, ["get", "HANGS"])
    assert exit_.value.code == 125
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did not finish within 1 s" in err


def test_get_refuses_a_terminal_without_reveal():
    store_value("A", b"secret-on-tty")
    master, slave = pty.openpty()
    try:
        proc = subprocess.run(["ab-creds", "get", "A"], stdout=slave, stderr=subprocess.PIPE, timeout=60)
        assert proc.returncode == 2 and b"refusing to print a secret to a terminal" in proc.stderr
        proc = subprocess.run(["ab-creds", "get", "A", "--reveal"], stdout=slave, stderr=subprocess.PIPE, timeout=60)
        assert proc.returncode == 0
        assert b"secret-on-tty" in os.read(master, 1024)
    finally:
        os.close(master)
        os.close(slave)
    assert ab_creds("get", "A").stdout == b"secret-on-tty\n"  # a pipe is fine


def test_set_sources_ttl_and_listing(tmp_path, monkeypatch):
    monkeypatch.setenv("HOST_SECRET", "from-host-env")
    assert ab_creds("set", "E", "--from-env", "HOST_SECRET").returncode == 0
    assert ab_creds("get", "E").stdout == b"from-host-env\n"
    token = tmp_path / "token.json"
    token.write_bytes(b'{"a": 1}\n')
    proc = ab_creds("set", "F", "--file", "~/.tool/token.json", "--writeback", "--ttl", "2h",
                    "--from-file", str(token), "--json")
    row = json.loads(proc.stdout)
    assert row["target"] == "/home/agent/.tool/token.json" and row["writeback"] is True and row["expires"]
    assert ab_creds("get", "F").stdout == b'{"a": 1}\n'  # file values are kept byte for byte
    proc = ab_creds("set", "EMPTY", input=b"\n")
    assert proc.returncode == 2 and "empty value" in proc.stderr.decode()
    proc = ab_creds("set", "W", "--writeback", input=b"x")
    assert proc.returncode == 2 and "--writeback needs --file" in proc.stderr.decode()
    rows = {r["name"]: r for r in json.loads(ab_creds("ls", "--json").stdout)}
    assert set(rows) == {"E", "F"}
    assert set(rows["E"]) == {"name", "scope", "project", "type", "target", "source", "writeback", "updated",
                              "expires", "expired", "granted", "bind_hosts", "bind_header", "bind_query", "bind_body",
                              "inject"}
    listed = ab_creds("ls").stdout.decode()
    assert "from-host-env" not in listed and "file:/home/agent/.tool/token.json" in listed


def test_expired_credential_is_refused():
    record = store_value("OLD", b"v", ttl=60, now=1000)
    assert record["meta"]["expires"] == 1060
    one_line_failure(ab_creds("get", "OLD"), "expired at 1970-01-01T00:17:40Z")


def test_project_scope_grant_and_revoke(tmp_path):
    from agentsh.host import project

    app = tmp_path / "app"
    app.mkdir()
    proj = project.find(str(app))
    assert ab_creds("set", "LOCAL", "--project", str(app), input=b"mine").returncode == 0
    assert os.path.exists(creds.record_path("LOCAL", proj.key))
    assert ab_creds("get", "LOCAL").returncode == 125  # not global
    assert ab_creds("get", "LOCAL", "--project", str(app)).stdout == b"mine\n"
    one_line_failure(ab_creds("grant", "NOPE", str(app)), "no credential named NOPE")
    assert ab_creds("set", "SHARED", input=b"s").returncode == 0
    proc = ab_creds("grant", "SHARED", str(app))
    assert proc.returncode == 0 and b"env $SHARED" in proc.stdout
    assert Store().read(f"grants/{proj.key}.json")["names"] == ["SHARED"]
    rows = {r["name"]: r for r in json.loads(ab_creds("ls", "--json").stdout)}
    assert rows["SHARED"]["granted"] == [str(app)] and rows["LOCAL"]["project"] == str(app)
    assert ab_creds("revoke", "SHARED", str(app)).returncode == 0
    assert Store().read(f"grants/{proj.key}.json")["names"] == []
    one_line_failure(ab_creds("revoke", "SHARED", str(app)), "is not granted")


def test_concurrent_first_use_agrees_on_one_key(tmp_path):
    script = "from agentsh.creds import vault as creds; import sys; sys.stdout.write(creds.load_key(create=True).hex())"
    procs = [subprocess.Popen(["python", "-c", script], stdout=subprocess.PIPE) for _ in range(8)]
    keys = {p.communicate(timeout=60)[0] for p in procs}
    assert len(keys) == 1 and len(keys.pop()) == 64
