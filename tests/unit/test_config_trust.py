import pytest

from agentsh import config, project, trust
from agentsh.errors import ConfigError
from agentsh.state import Store


def test_defaults(user_config):
    cfg = config.load()
    assert cfg["image"] == config.DEFAULT_IMAGE
    assert cfg["engine"] == "podman"
    assert cfg["hook"]["on_enter"] == "shell"
    assert cfg["network"]["mode"] == "full"


def allowed_project(path, text):
    path.mkdir(parents=True, exist_ok=True)
    (path / ".agentsh.toml").write_text(text)
    proj = project.find(str(path))
    trust.allow(Store(), proj.config_file)
    return proj


def test_precedence_flags_over_project_over_user(tmp_path, user_config):
    user_config('image = "user"\npids = 10\nenv = ["A"]\n[hook]\non_enter = "up"\n')
    proj = allowed_project(tmp_path / "p", 'image = "project"\nenv = ["B"]\n')
    cfg = config.load(proj)
    assert (cfg["image"], cfg["pids"], cfg["env"], cfg["hook"]["on_enter"]) == ("project", 10, ["A", "B"], "up")
    assert config.load(proj, flags={"image": "flag", "pids": None})["image"] == "flag"


def test_agentsh_engine_variable_overrides_config(user_config, monkeypatch):
    user_config('engine = "podman"\n')
    monkeypatch.setenv("AGENTSH_ENGINE", "docker")
    assert config.load()["engine"] == "docker"
    monkeypatch.setenv("AGENTSH_ENGINE", "lxc")
    with pytest.raises(ConfigError, match="AGENTSH_ENGINE: key 'engine' must be one of"):
        config.load()


@pytest.mark.parametrize("text, message", [
    ('imag = "x"\n', "unknown key 'imag'"),
    ('[hook]\non_entr = "up"\n', "unknown key 'hook.on_entr'"),
    ('image = 3\n', "key 'image' must be a string, not an integer"),
    ('pids = "many"\n', "key 'pids' must be a positive integer"),
    ('env = ["OK", "not ok"]\n', "'not ok' is not a valid environment variable name"),
    ('hook = "up"\n', "key 'hook' must be a table"),
    ('[hook]\non_enter = "boom"\n', "must be one of shell, up, none"),
    ('memory = "lots"\n', "key 'memory' must be a size"),
    ('mounts = ["relative"]\n', "is not HOST:SANDBOX"),
])
def test_bad_keys_name_file_and_key(user_config, text, message):
    path = user_config(text)
    with pytest.raises(ConfigError) as e:
        config.load()
    assert message in str(e.value)
    assert str(path) in str(e.value)


def test_malformed_toml_gives_file_and_line(user_config):
    path = user_config('image = "x"\n\nthis is not toml\n')
    with pytest.raises(ConfigError) as e:
        config.load()
    assert str(path) in str(e.value) and "line 3" in str(e.value)


def test_untrusted_project_file_is_ignored_with_a_notice(tmp_path, user_config):
    user_config('image = "user"\n')
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / ".agentsh.toml").write_text('image = "evil"\nmounts = ["/:/host"]\n')
    cfg = config.load(project.find(str(tmp_path / "p")))
    assert cfg["image"] == "user" and cfg["mounts"] == []
    assert cfg.project_trust == trust.BLOCKED
    assert len(cfg.notices) == 1 and "not trusted" in cfg.notices[0] and "ab-allow" in cfg.notices[0]


def test_untrusted_malformed_file_is_not_even_parsed(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / ".agentsh.toml").write_text("[[[ nonsense")
    cfg = config.load(project.find(str(tmp_path / "p")))
    assert cfg.project_trust == trust.BLOCKED


def test_edit_blocks_again_and_deny_survives_edits(tmp_path):
    proj = allowed_project(tmp_path / "p", 'image = "a"\n')
    store = Store()
    assert config.load(proj)["image"] == "a"
    (tmp_path / "p" / ".agentsh.toml").write_text('image = "b"\n')
    assert config.load(proj).project_trust == trust.BLOCKED
    trust.allow(store, proj.config_file)
    assert config.load(proj)["image"] == "b"
    trust.deny(store, proj.config_file)
    (tmp_path / "p" / ".agentsh.toml").write_text('image = "c"\n')
    cfg = config.load(proj)
    assert cfg.project_trust == trust.DENIED and cfg["image"] == config.DEFAULT_IMAGE
    assert "denied" in cfg.notices[0]
    trust.allow(store, proj.config_file)
    assert config.load(proj)["image"] == "c"


def test_reverting_to_an_older_allowed_content_needs_allow_again(tmp_path):
    proj = allowed_project(tmp_path / "p", 'image = "a"\n')
    (tmp_path / "p" / ".agentsh.toml").write_text('image = "b"\n')
    trust.allow(Store(), proj.config_file)
    (tmp_path / "p" / ".agentsh.toml").write_text('image = "a"\n')
    assert config.load(proj).project_trust == trust.BLOCKED


def test_trust_is_bound_to_the_real_path(tmp_path):
    a = allowed_project(tmp_path / "a", 'image = "x"\n')
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / ".agentsh.toml").write_text('image = "x"\n')
    assert config.load(a).project_trust == trust.ALLOWED
    assert config.load(project.find(str(tmp_path / "b"))).project_trust == trust.BLOCKED


def test_parsed_config_is_cached_by_content(user_config, isolated_dirs):
    import glob
    import subprocess
    import sys

    user_config('image = "one"\n')
    assert config.load()["image"] == "one"
    caches = glob.glob(str(isolated_dirs["XDG_STATE_HOME"] / "agentsh" / "cache" / "config" / "*.marshal"))
    assert len(caches) == 1
    user_config('image = "two"\n')  # an edit is never served stale
    assert config.load()["image"] == "two"
    for path in glob.glob(str(isolated_dirs["XDG_STATE_HOME"] / "agentsh" / "cache" / "config" / "*")):
        with open(path, "wb") as f:
            f.write(b"\x00garbage")  # a broken cache entry is parsed again
    assert config.load()["image"] == "two"
    code = "import sys; from agentsh import config; config.load(); print('tomllib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"  # the hot path reads the cache, not the TOML parser


def test_a_bad_file_is_never_cached_as_good(user_config):
    user_config("imag = 1\n")
    for _ in range(2):
        with pytest.raises(ConfigError, match="unknown key 'imag'"):
            config.load()
