"""Which engine `podman` reaches without CONTAINER_HOST: a named connection, or containers.conf's `remote = true`
with its default; read off the files as Podman reads them (real Podman: tests/integration/test_remote_engine.py)."""

import json

import pytest

from agentsh.host import connection
from agentsh.host.engine import Engine

USER_SOCKET = "ssh://alice@server/run/user/1000/podman/podman.sock"
ROOT_SOCKET = "ssh://root@server/run/podman/podman.sock"


@pytest.fixture
def conf(tmp_path, monkeypatch):
    """A containers.conf of the test's own (the only one Podman reads), and an empty config home."""
    path = tmp_path / "containers.conf"
    path.write_text('[engine]\nruntime = "runc"\n')
    monkeypatch.setenv("CONTAINERS_CONF", str(path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("CONTAINER_HOST", raising=False)
    monkeypatch.delenv("CONTAINER_CONNECTION", raising=False)
    monkeypatch.delenv("CONTAINERS_CONF_OVERRIDE", raising=False)
    return path


def destinations(**uris):
    return "".join(f'\n[engine.service_destinations.{name}]\nuri = "{uri}"\nidentity = "/k"\n'
                   for name, uri in uris.items())


def podman():
    return Engine("podman", exe="podman")


def test_no_connection_is_the_local_engine(conf):
    conf.write_text('[engine]\nruntime = "runc"\n# remote = true\n#active_service = "box"\n' + destinations(box=USER_SOCKET))
    assert connection.podman_connection() is None
    assert podman().remote is None and podman().is_local


def test_remote_true_goes_to_the_active_service(conf, monkeypatch):
    """`podman system connection default box` plus `remote = true`: every podman call goes to box."""
    monkeypatch.setattr("os.geteuid", lambda: 0)
    conf.write_text('[engine]\nruntime = "runc"\nremote = true\nactive_service = "box"\n'
                    + destinations(box=USER_SOCKET, other=ROOT_SOCKET))
    assert connection.podman_connection() == ("connection box", USER_SOCKET)
    engine = podman()
    assert engine.remote == "connection box" and not engine.is_local
    assert engine.rootless is True  # alice's own Podman, though we are root


def test_a_named_connection_decides_rootless_by_its_address(conf, monkeypatch):
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    conf.write_text('[engine]\nactive_service = "box"\n' + destinations(box=USER_SOCKET, other=ROOT_SOCKET))
    monkeypatch.setenv("CONTAINER_CONNECTION", "other")
    engine = podman()
    assert engine.remote == "connection other"
    assert engine.rootless is False  # root's engine, though we are an ordinary user


def test_remote_true_without_a_connection_is_the_default_socket(conf, monkeypatch, tmp_path):
    conf.write_text("[engine]\nremote = true\n")
    monkeypatch.setattr("os.geteuid", lambda: 0)
    assert connection.podman_connection() == ("the default podman service", "unix:///run/podman/podman.sock")
    assert podman().rootless is False
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    assert podman().rootless is True and not podman().is_local


def test_podman_5_connections_file_and_its_default_win(conf, tmp_path, monkeypatch):
    conf.write_text('[engine]\nremote = true\nactive_service = "old"\n' + destinations(old=ROOT_SOCKET))
    folder = tmp_path / "config" / "containers"
    folder.mkdir(parents=True)
    (folder / "podman-connections.json").write_text(json.dumps(
        {"Connection": {"Default": "new", "Connections": {"new": {"URI": USER_SOCKET, "Identity": "/k"}}}}))
    assert connection.podman_connection() == ("connection new", USER_SOCKET)
    monkeypatch.setenv("CONTAINER_CONNECTION", "old")
    assert connection.podman_connection() == ("connection old", ROOT_SOCKET)


def test_later_files_win_and_an_override_comes_last(tmp_path, monkeypatch, conf):
    monkeypatch.delenv("CONTAINERS_CONF")
    monkeypatch.setattr(connection, "_conf_dir", lambda path: [])
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    user = tmp_path / "config" / "containers"
    user.mkdir(parents=True)
    (user / "containers.conf").write_text('[engine]\nremote = true\nactive_service = "box"\n'
                                          + destinations(box=USER_SOCKET))
    files = connection.containers_conf_files()
    assert files[-1] == str(user / "containers.conf") and "/etc/containers/containers.conf" in files
    override = tmp_path / "override.conf"
    override.write_text("[engine]\nremote = false\n")
    monkeypatch.setenv("CONTAINERS_CONF_OVERRIDE", str(override))
    assert connection.podman_connection() is None
    override.write_text('[engine]\nactive_service = "other"\n' + destinations(other=ROOT_SOCKET))
    assert connection.podman_connection() == ("connection other", ROOT_SOCKET)


@pytest.mark.parametrize("text", ["[engine\nremote = true\n", "remote = true\n[engine]\nremote = 'yes'\n",
                                  "[engine]\nremote = true\nactive_service = 3\n"])
def test_a_file_podman_would_refuse_or_misread_changes_nothing_here(conf, text):
    """Podman itself refuses a broken file with its own message; agentsh decides nothing from it."""
    conf.write_text(text)
    found = connection.podman_connection()
    assert found is None or found == ("the default podman service", connection.default_podman_socket())


def test_an_unknown_connection_keeps_the_users_kind(conf, monkeypatch):
    monkeypatch.setenv("CONTAINER_CONNECTION", "nowhere")
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert connection.podman_connection() == ("connection nowhere", "")
    assert podman().rootless is True and podman().remote == "connection nowhere"
