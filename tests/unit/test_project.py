import os
import re

import pytest

from agentsh.base.digest import sha256_hex
from agentsh.base.errors import AgentshError
from agentsh.host import project
from tests.conftest import git_init


def test_nearest_project_file_wins(tmp_path):
    repo = git_init(tmp_path / "mono")
    (repo / "svc" / "deep").mkdir(parents=True)
    (repo / "svc" / ".agentsh.toml").write_text("")
    p = project.find(str(repo / "svc" / "deep"))
    assert p.root == str(repo / "svc") and p.config_file == str(repo / "svc" / ".agentsh.toml")


def test_git_top_level_without_project_file(tmp_path):
    repo = git_init(tmp_path / "r")
    (repo / "a" / "b").mkdir(parents=True)
    p = project.find(str(repo / "a" / "b"))
    assert p.root == str(repo) and p.config_file is None


def test_plain_directory_is_its_own_project(tmp_path):
    (tmp_path / "plain").mkdir()
    assert project.find(str(tmp_path / "plain")).root == str(tmp_path / "plain")


def test_symlinks_resolve_to_the_real_path(tmp_path):
    repo = git_init(tmp_path / "r")
    os.symlink(repo, tmp_path / "link")
    assert project.find(str(tmp_path / "link")).sandbox == project.find(str(repo)).sandbox


def test_names_and_key(tmp_path):
    d = tmp_path / "My Project!"
    d.mkdir()
    p = project.find(str(d))
    assert p.key == sha256_hex(str(d))[:8]
    assert p.sandbox == f"ab-my-project-{p.key}"
    assert re.fullmatch(r"ab-[a-z0-9][a-z0-9_.-]*-[0-9a-f]{8}", p.sandbox)
    assert p.home_volume == p.sandbox + "-home"


@pytest.mark.parametrize("name, slug", [("..", "project"), ("$(rm -rf ~)", "rm-rf"), ("a" * 60, "a" * 24),
                                        ("-x-", "x"), ("日本", "project")])
def test_slug_is_engine_safe(name, slug):
    assert project.slugify(name) == slug


def test_home_and_root_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(AgentshError, match="home directory, which is never a project"):
        project.find(str(tmp_path))
    with pytest.raises(AgentshError, match="/ is never a project"):
        project.find("/")


def test_project_file_in_home_does_not_swallow_everything(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".agentsh.toml").write_text("")
    (tmp_path / "work").mkdir()
    assert project.find(str(tmp_path / "work")).root == str(tmp_path / "work")


def test_missing_directory(tmp_path):
    with pytest.raises(AgentshError, match="does not exist"):
        project.find(str(tmp_path / "nope"))
