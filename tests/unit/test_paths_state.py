import os

import platformdirs
import pytest

from agentsh.base import paths, state
from agentsh.base.errors import StateError


def test_dirs_follow_xdg_and_match_platformdirs(isolated_dirs, own_cache):
    assert paths.state_dir() == str(isolated_dirs["XDG_STATE_HOME"] / "agentsh")
    assert paths.config_dir() == str(isolated_dirs["XDG_CONFIG_HOME"] / "agentsh")
    assert paths.data_dir() == str(isolated_dirs["XDG_DATA_HOME"] / "agentsh")
    assert paths.state_dir() == platformdirs.user_state_dir("agentsh", appauthor=False)
    assert paths.config_dir() == platformdirs.user_config_dir("agentsh", appauthor=False)
    assert paths.data_dir() == platformdirs.user_data_dir("agentsh", appauthor=False)
    assert paths.cache_dir() == str(own_cache)
    assert paths.cache_dir() == platformdirs.user_cache_dir("agentsh", appauthor=False)


def test_unset_xdg_falls_back_like_platformdirs(monkeypatch):
    monkeypatch.delenv("XDG_STATE_HOME")
    assert paths.state_dir() == platformdirs.user_state_dir("agentsh", appauthor=False)
    assert paths.state_dir() == os.path.expanduser("~/.local/state/agentsh")


def test_nothing_is_created_before_a_write(isolated_dirs):
    store = state.Store()
    assert store.read("a/b.json") is None
    assert not os.path.exists(paths.state_dir())


def test_write_then_read_round_trips_with_schema():
    store = state.Store()
    store.write("things/x.json", {"a": 1})
    assert store.read("things/x.json") == {"a": 1, "schema": state.SCHEMA}
    assert store.names("things") == ["x"]
    assert oct(os.stat(store.path("things/x.json")).st_mode & 0o777) == "0o600"


def test_leftover_temp_files_are_ignored():
    store = state.Store()
    store.write("things/x.json", {"a": 1})
    open(store.path("things/y.json.tmp.123"), "w").write("{")
    assert store.names("things") == ["x"]


@pytest.mark.parametrize("content, words", [
    (b"", "is empty"),
    (b"   \n", "is empty"),
    (b'{"schema": 1, "a":', "not valid JSON"),
    (b'{"a": 1}', "no schema version"),
    (b'{"schema": 99}', "schema 99"),
    (b"[1, 2]", "no schema version"),
])
def test_bad_records_name_the_file(content, words):
    store = state.Store()
    store.write("things/x.json", {"a": 1})
    with open(store.path("things/x.json"), "wb") as f:
        f.write(content)
    with pytest.raises(StateError) as e:
        store.read("things/x.json")
    assert words in str(e.value)
    assert store.path("things/x.json") in str(e.value)
    assert "rm '" in str(e.value)


def test_lock_is_reentrant_in_one_process():
    store = state.Store()
    with store.lock():
        store.write("x.json", {"v": 1})  # takes the same lock again
    assert store.read("x.json")["v"] == 1
