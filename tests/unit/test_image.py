"""ab-image's core against a fake engine: base choice, fallback, build argv, errors, listing."""

import json
import os

import pytest

from agentsh.base.errors import AgentshError, EngineError, UsageError
from agentsh.base.state import Store
from agentsh.cli import image as cli
from agentsh.host.engine import Engine
from agentsh.policy import config
from agentsh.sandbox import image
from tests.unit.fake_engine import FakeRunner


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Own XDG dirs and TMPDIR (also done by tests/conftest.py where present)."""
    for var in ("XDG_STATE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    monkeypatch.delenv("AGENTSH_ENGINE", raising=False)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))


class Host:
    """Fake host commands: debootstrap makes a rootfs skeleton, tar makes the tarball."""

    def __init__(self, status=0):
        self.calls = []
        self.status = status

    def __call__(self, argv, on_line=None):
        self.calls.append(list(argv))
        if self.status:
            return self.status, ["E: Couldn't download packages: libc6"]
        if argv[1] == "--variant=minbase":
            rootfs = argv[3]
            os.makedirs(os.path.join(rootfs, "etc/apt"))
            os.makedirs(os.path.join(rootfs, "var/lib/apt/lists"))
            open(os.path.join(rootfs, "etc/hostname"), "w").write("buildhost\n")
            open(os.path.join(rootfs, "var/lib/apt/lists/x_Packages"), "w").write("junk")
            if on_line:
                on_line("I: Retrieving libc6 2.36-9")
                on_line("I: Base system installed successfully.")
            self.rootfs_seen = rootfs
        elif argv[0] == "tar":
            self.sources = open(os.path.join(argv[argv.index("-C") + 1], "etc/apt/sources.list")).read()
            self.hostname_left = os.path.exists(os.path.join(argv[argv.index("-C") + 1], "etc/hostname"))
            self.lists_left = os.listdir(os.path.join(argv[argv.index("-C") + 1], "var/lib/apt/lists"))
            open(argv[argv.index("-cf") + 1], "wb").write(b"tar")
        return 0, []


class MmHost:
    """Fake mmdebstrap: writes the tarball it is asked for."""

    def __init__(self, status=0):
        self.calls = []
        self.status = status

    def __call__(self, argv, on_line=None):
        self.calls.append(list(argv))
        if self.status:
            return self.status, ["E: Couldn't download packages: libc6"]
        open(argv[6], "wb").write(b"tar")
        if on_line:
            on_line("I: success in 40.2 seconds")
        return 0, []


def builder(runner, host=None, cfg=None, store=True):
    notices, lines = [], []
    b = image.Builder(Engine("podman", runner=runner, exe="/usr/bin/podman", rootless=False),
                      cfg or config.load(), store=Store() if store else None,
                      notify=notices.append, on_line=lines.append, host=host or Host())
    b.notices, b.lines = notices, lines
    return b


@pytest.fixture(autouse=True)
def host_tools(monkeypatch):
    """By default neither mmdebstrap nor debootstrap (tests ask for what they need)."""
    monkeypatch.setattr(image, "have_mmdebstrap", lambda: None)
    monkeypatch.setattr(image, "have_debootstrap", lambda: None)


@pytest.fixture
def root(monkeypatch):
    """Root, with debootstrap and no mmdebstrap."""
    monkeypatch.setattr(image.os, "geteuid", lambda: 0)
    monkeypatch.setattr(image, "have_debootstrap", lambda: "/usr/sbin/debootstrap")


@pytest.fixture
def no_debootstrap(monkeypatch):
    monkeypatch.setattr(image, "have_debootstrap", lambda: None)


@pytest.fixture
def user_with_mmdebstrap(monkeypatch):
    """An ordinary user with mmdebstrap (and debootstrap, which it cannot use), whose user namespace works."""
    from agentsh.host import rootless

    monkeypatch.setattr(image.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(image, "have_mmdebstrap", lambda: "/usr/bin/mmdebstrap")
    monkeypatch.setattr(image, "have_debootstrap", lambda: "/usr/sbin/debootstrap")
    monkeypatch.setattr(rootless, "userns_problems", lambda **kw: [])


# -- choosing the base ---------------------------------------------------------

def test_a_local_registry_base_is_used_without_pulling():
    runner = FakeRunner(images={image.REGISTRY_BASE})
    record = builder(runner).build()
    assert runner.find("pull") == []
    args = runner.build_args()
    assert args[:3] == ["build", "-t", "localhost/agentsh:latest"]
    assert "--pull=never" in args
    assert runner.build_arg_values()["BASE"] == image.REGISTRY_BASE
    assert record["base"] == image.REGISTRY_BASE and record["base_source"] == "local"


def test_a_missing_registry_base_is_pulled_first():
    runner = FakeRunner(pull_ok=True)
    b = builder(runner)
    record = b.build()
    assert runner.find("pull") == [["pull", image.REGISTRY_BASE]]
    assert runner.calls.index(["pull", image.REGISTRY_BASE]) < runner.calls.index(runner.build_args())
    assert record["base_source"] == "pulled"
    assert runner.build_arg_values()["BASE"] == image.REGISTRY_BASE


def test_unreachable_registry_falls_back_to_debootstrap(root):
    runner, host = FakeRunner(), Host()
    b = builder(runner, host)
    record = b.build()
    assert any("cannot pull docker.io/library/debian:bookworm-slim" in n and "debootstrap instead" in n
               for n in b.notices)
    deboot = host.calls[0]
    assert deboot[:3] == ["/usr/sbin/debootstrap", "--variant=minbase", "bookworm"]
    assert deboot[4] == image.DEFAULT_MIRROR
    assert deboot[3].startswith(os.environ["TMPDIR"])
    (imp,) = runner.find("import")
    assert imp[-1] == image.LOCAL_BASE and imp[-2].endswith("rootfs.tar")
    assert "--change" in imp and any(c.startswith("ENV=PATH=") for c in imp)
    assert runner.build_arg_values()["BASE"] == image.LOCAL_BASE
    assert record["base_source"] == "bootstrap"
    assert not os.listdir(os.environ["TMPDIR"])  # the root filesystem is cleaned up


def test_the_bootstrapped_rootfs_is_tidied_and_gets_updates_and_security(root):
    host = Host()
    builder(FakeRunner(), host).build(bootstrap=True)
    assert host.sources.splitlines() == [
        "deb http://deb.debian.org/debian bookworm main",
        "deb http://deb.debian.org/debian bookworm-updates main",
        "deb http://deb.debian.org/debian-security bookworm-security main",
    ]
    assert not host.hostname_left and host.lists_left == []


def test_unreachable_registry_without_a_bootstrap_tool_says_what_to_install(monkeypatch):
    monkeypatch.setattr(image.os, "geteuid", lambda: 0)
    runner = FakeRunner()
    with pytest.raises(EngineError) as e:
        builder(runner).build()
    text = str(e.value)
    assert "cannot pull docker.io/library/debian:bookworm-slim" in text
    assert "neither is installed" in text and "install -y mmdebstrap" in text and "--base IMAGE" in text
    assert "\n" not in text and e.value.code == 125
    assert runner.find("build") == []


def test_unreachable_registry_as_a_user_makes_the_base_with_mmdebstrap_unshare(user_with_mmdebstrap):
    runner, host = FakeRunner(), MmHost()
    b = builder(runner, host)
    record = b.build()
    assert any("making a local Debian base with mmdebstrap instead" in n for n in b.notices)
    (mm,) = host.calls
    assert mm[:5] == ["/usr/bin/mmdebstrap", "--mode=unshare", "--variant=minbase", "--format=tar",
                      image.MMDEBSTRAP_HOOK]
    assert mm[5] == "bookworm" and mm[6].startswith(os.environ["TMPDIR"]) and mm[6].endswith("rootfs.tar")
    assert mm[7:] == ["deb http://deb.debian.org/debian bookworm main",
                      "deb http://deb.debian.org/debian bookworm-updates main",
                      "deb http://deb.debian.org/debian-security bookworm-security main"]
    (imp,) = runner.find("import")
    assert imp[-2] == mm[6] and imp[-1] == image.LOCAL_BASE
    assert record["base_source"] == "bootstrap" and runner.build_arg_values()["BASE"] == image.LOCAL_BASE
    assert not os.listdir(os.environ["TMPDIR"])


def test_mmdebstrap_runs_in_root_mode_as_root_and_is_preferred_to_debootstrap(root, monkeypatch):
    monkeypatch.setattr(image, "have_mmdebstrap", lambda: "/usr/bin/mmdebstrap")
    host = MmHost()
    builder(FakeRunner(), host).build(bootstrap=True, mirror="http://ftp.de.debian.org/debian")
    (mm,) = host.calls
    assert mm[1] == "--mode=root"
    assert mm[7:] == ["deb http://ftp.de.debian.org/debian bookworm main",
                      "deb http://ftp.de.debian.org/debian bookworm-updates main"]


def test_mmdebstrap_failure_shows_its_reason(user_with_mmdebstrap):
    with pytest.raises(AgentshError) as e:
        builder(FakeRunner(), MmHost(status=1)).build(bootstrap=True)
    assert "mmdebstrap failed: E: Couldn't download packages: libc6" in str(e.value) and e.value.tail


def test_a_user_without_subordinate_ids_is_told_the_exact_fix_before_anything_runs(monkeypatch):
    from agentsh.host import rootless

    monkeypatch.setattr(image.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(image, "have_mmdebstrap", lambda: "/usr/bin/mmdebstrap")
    monkeypatch.setattr(rootless, "userns_problems", lambda **kw: [rootless.Problem(
        "subuid", "u has fewer than 65536 subordinate ids in subuid",
        "sudo usermod --add-subuids 165536-231071 u && podman system migrate")])
    runner, host = FakeRunner(), MmHost()
    with pytest.raises(EngineError) as e:
        builder(runner, host).build()
    text = str(e.value)
    assert "without root (mmdebstrap --mode=unshare) needs u has fewer than 65536 subordinate ids" in text
    assert text.endswith("fix (once, as root): sudo usermod --add-subuids 165536-231071 u && podman system migrate")
    assert "\n" not in text and host.calls == [] and runner.find("build") == []


def test_a_rootless_build_names_what_root_must_fix_first(monkeypatch):
    from agentsh.host import rootless

    monkeypatch.setattr(rootless, "problems", lambda **kw: [rootless.Problem(
        "tun", "/dev/net/tun is mode 0600: u cannot open it", "sudo chmod 666 /dev/net/tun", network=True)])
    runner = FakeRunner(images={image.REGISTRY_BASE})
    b = image.Builder(Engine("podman", runner=runner, exe="/usr/bin/podman", rootless=True), config.load(),
                      store=Store(), notify=lambda m: None)
    with pytest.raises(EngineError) as e:
        b.build()
    assert str(e.value) == ("rootless podman cannot build here: /dev/net/tun is mode 0600: u cannot open it; "
                            "fix (once, as root): sudo chmod 666 /dev/net/tun")
    assert runner.calls == []


def test_the_engines_sync_pipe_eof_is_explained_with_the_fix(monkeypatch):
    from agentsh.host import rootless

    monkeypatch.setattr(rootless, "problems", lambda **kw: [])  # fine when the build starts...
    runner = FakeRunner(images={image.REGISTRY_BASE}, build_status=1, build_output=(
        'STEP 1/3: FROM base\nSTEP 2/3: RUN apt-get update\n'
        'Error: building at STEP "RUN apt-get update": failed to read from slirp4netns sync pipe: EOF\n'))
    b = image.Builder(Engine("podman", runner=runner, exe="/usr/bin/podman", rootless=True), config.load(),
                      store=Store(), notify=lambda m: None)
    broken = [rootless.Problem("tun", "/dev/net/tun is mode 0600: u cannot open it", "sudo chmod 666 /dev/net/tun",
                               network=True)]
    monkeypatch.setattr(rootless, "diagnose", lambda text, found=None: broken if "slirp4netns" in text else [])
    with pytest.raises(AgentshError) as e:
        b.build()
    text = str(e.value)
    assert text.startswith("podman build of localhost/agentsh:latest failed at STEP 2/3: rootless podman build "
                           "failed (building at STEP")
    assert "failed to read from slirp4netns sync pipe: EOF" in text and "/dev/net/tun is mode 0600" in text
    assert text.endswith("; fix (once, as root): sudo chmod 666 /dev/net/tun") and "\n" not in text


def test_an_explicit_base_that_cannot_be_pulled_does_not_fall_back(root):
    runner, host = FakeRunner(), Host()
    with pytest.raises(EngineError) as e:
        builder(runner, host).build(base="registry.example/debian:12")
    assert "cannot pull registry.example/debian:12" in str(e.value) and "--bootstrap" in str(e.value)
    assert host.calls == [] and runner.find("build") == []


def test_an_existing_local_base_is_reused_instead_of_trying_the_registry(root):
    runner, host = FakeRunner(images={image.LOCAL_BASE}), Host()
    b = builder(runner, host)
    record = b.build()
    assert runner.find("pull") == [] and host.calls == []
    assert runner.build_arg_values()["BASE"] == image.LOCAL_BASE
    assert record["base_source"] == "bootstrap"
    assert any("--refresh" in n for n in b.notices)


def test_bootstrap_reuses_the_local_base_unless_refresh(root):
    runner, host = FakeRunner(images={image.LOCAL_BASE}), Host()
    builder(runner, host).build(bootstrap=True)
    assert host.calls == [] and runner.find("import") == []
    assert "--no-cache" not in runner.build_args()

    runner, host = FakeRunner(images={image.LOCAL_BASE}), Host()
    builder(runner, host).build(bootstrap=True, refresh=True)
    assert host.calls[0][1] == "--variant=minbase" and len(runner.find("import")) == 1
    assert "--no-cache" in runner.build_args()


def test_refresh_pulls_the_registry_base_again():
    runner = FakeRunner(images={image.REGISTRY_BASE}, pull_ok=True)
    builder(runner).build(refresh=True)
    assert runner.find("pull") == [["pull", image.REGISTRY_BASE]]
    assert "--no-cache" in runner.build_args()


def test_bootstrap_as_non_root_with_only_debootstrap_says_to_install_mmdebstrap(monkeypatch):
    monkeypatch.setattr(image.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(image, "have_debootstrap", lambda: "/usr/sbin/debootstrap")
    runner, host = FakeRunner(), Host()
    with pytest.raises(AgentshError) as e:
        builder(runner, host).build(bootstrap=True)
    text = str(e.value)
    assert "without root needs mmdebstrap (debootstrap needs root)" in text
    assert "install -y mmdebstrap, then run 'ab-image build' again" in text and "--base IMAGE" in text
    assert host.calls == [] and runner.find("build") == []


def test_registry_fallback_as_non_root_says_how_to_make_the_base(monkeypatch):
    monkeypatch.setattr(image.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(image, "have_debootstrap", lambda: "/usr/sbin/debootstrap")
    runner, host = FakeRunner(), Host()
    b = builder(runner, host)
    with pytest.raises(EngineError) as e:
        b.build()
    text = str(e.value)
    assert text.startswith("cannot pull docker.io/library/debian:bookworm-slim: ")
    assert "needs mmdebstrap" in text and "install -y mmdebstrap" in text and "\n" not in text
    assert host.calls == [] and b.notices == ["pulling docker.io/library/debian:bookworm-slim"]


def test_bootstrap_without_any_tool_says_what_to_install(monkeypatch):
    monkeypatch.setattr(image.os, "geteuid", lambda: 0)
    with pytest.raises(AgentshError) as e:
        builder(FakeRunner()).build(bootstrap=True)
    assert "mmdebstrap or debootstrap" in str(e.value) and "install -y mmdebstrap" in str(e.value)


def test_debootstrap_failure_shows_its_reason(root):
    with pytest.raises(AgentshError) as e:
        builder(FakeRunner(), Host(status=1)).build(bootstrap=True)
    assert "debootstrap failed: E: Couldn't download packages: libc6" in str(e.value)
    assert "--mirror" in str(e.value) and e.value.tail


# -- build arguments -----------------------------------------------------------

def test_agents_are_in_by_default_and_out_with_no_agents():
    runner = FakeRunner(images={image.REGISTRY_BASE})
    builder(runner).build()
    assert runner.build_arg_values()["AGENTS"] == "1"
    runner = FakeRunner(images={image.REGISTRY_BASE})
    record = builder(runner).build(agents=False)
    assert runner.build_arg_values()["AGENTS"] == "0"
    assert record["agents"] is False
    args = runner.build_args()
    assert "io.agentsh.image.agents=false" in args


def test_the_host_ca_bundle_reaches_the_build_as_a_secret(tmp_path, monkeypatch):
    bundle = tmp_path / "corp-ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n")
    cfg = config.load()
    cfg["ca_bundle"] = str(bundle)
    runner = FakeRunner(images={image.REGISTRY_BASE})
    record = builder(runner, cfg=cfg).build()
    args = runner.build_args()
    [secret] = [a for a in args if a.startswith(f"id={image.CA_SECRET},src=")]
    copy = secret.split("src=", 1)[1]  # agentsh's own copy of the checked bytes
    assert open(copy).read() == bundle.read_text()
    assert args[args.index(secret) - 1] == "--secret"
    assert "-v" not in args  # nothing bind-mounted into the image's own paths
    assert record["ca_bundle"] == copy


def test_auto_uses_the_hosts_bundle_and_image_uses_none(monkeypatch, tmp_path):
    from agentsh.sandbox import spec as sandbox

    bundle = tmp_path / "ca-certificates.crt"
    bundle.write_text("-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n")
    monkeypatch.setattr(sandbox, "HOST_CA_BUNDLES", (str(bundle),))
    runner = FakeRunner(images={image.REGISTRY_BASE})
    builder(runner).build()  # default: ca_bundle = "auto"
    [secret] = [a for a in runner.build_args() if a.startswith("id=ca_bundle,src=")]
    assert open(secret.split("src=", 1)[1]).read() == bundle.read_text()

    cfg = config.load()
    cfg["ca_bundle"] = "image"
    runner = FakeRunner(images={image.REGISTRY_BASE})
    builder(runner, cfg=cfg).build()
    assert "--secret" not in runner.build_args()


def test_a_missing_ca_bundle_file_is_a_config_error():
    cfg = config.load()
    cfg["ca_bundle"] = "/nonexistent/ca.pem"
    runner = FakeRunner(images={image.REGISTRY_BASE})
    with pytest.raises(AgentshError) as e:
        builder(runner, cfg=cfg).build()
    assert "is not a file" in str(e.value) and runner.calls == []


def test_mirror_goes_to_debootstrap_and_apt(root):
    runner, host = FakeRunner(), Host()
    builder(runner, host).build(bootstrap=True, mirror="http://ftp.de.debian.org/debian/")
    assert host.calls[0][4] == "http://ftp.de.debian.org/debian"
    assert runner.build_arg_values()["APT_MIRROR"] == "http://ftp.de.debian.org/debian"
    assert "debian-security" not in host.sources  # a custom mirror may not carry it
    assert host.sources.startswith("deb http://ftp.de.debian.org/debian bookworm main")


def test_no_mirror_means_no_apt_mirror_arg():
    runner = FakeRunner(images={image.REGISTRY_BASE})
    builder(runner).build()
    assert "APT_MIRROR" not in runner.build_arg_values()


def test_the_build_context_holds_only_the_containerfile():
    seen = {}
    runner = FakeRunner(images={image.REGISTRY_BASE})

    def spy(argv, **kw):
        if argv[1] == "build":
            seen["context"] = argv[-1]
            seen["files"] = sorted(os.listdir(argv[-1]))
            seen["file"] = argv[argv.index("-f") + 1]
        return runner(argv, **kw)

    b = builder(runner)
    b.engine.runner = spy
    b.build(tag="localhost/agentsh:dev")
    assert seen["files"] == ["Containerfile"] and seen["file"].startswith(seen["context"])
    assert not os.path.exists(seen["context"])
    assert ["build", "-t", "localhost/agentsh:dev"] == runner.build_args()[:3]


# -- failures and flags ----------------------------------------------------------

def test_a_failed_build_names_the_step_the_reason_and_a_fix():
    output = ("STEP 1/16: FROM localhost/agentsh-base:bookworm\n"
              "STEP 9/16: RUN --mount=type=secret,id=ca_bundle npm install -g ...\n"
              "npm error code SELF_SIGNED_CERT_IN_CHAIN\n"
              "npm error errno SELF_SIGNED_CERT_IN_CHAIN\n"
              "npm error request to https://registry.npmjs.org/x failed, reason: self-signed certificate\n"
              'Error: building at STEP "RUN npm install": while running runtime: exit status 1\n')
    cfg = config.load()
    cfg["ca_bundle"] = "image"
    runner = FakeRunner(images={image.REGISTRY_BASE}, build_status=1, build_output=output)
    with pytest.raises(AgentshError) as e:
        builder(runner, cfg=cfg).build()
    text = str(e.value)
    assert text.startswith("podman build of localhost/agentsh:latest failed at STEP 9/16: npm error")
    assert "ca_bundle" in e.value.fix
    assert e.value.tail[-1].startswith("Error: building at STEP")
    assert "\n" not in text


def test_a_failed_build_without_a_known_error_line_gives_the_exit_status():
    output = "STEP 4/16: RUN false\nsome output\nError: building at STEP \"RUN false\": while running runtime: exit status 1\n"
    runner = FakeRunner(images={image.REGISTRY_BASE}, build_status=1, build_output=output)
    with pytest.raises(AgentshError) as e:
        builder(runner).build()
    assert str(e.value).startswith("podman build of localhost/agentsh:latest failed at STEP 4/16: exit status 1;")


@pytest.mark.parametrize("kw, words", [
    ({"base": "x", "bootstrap": True}, "exclude each other"),
    ({"tag": "Local/Agentsh"}, "not a valid image name"),
    ({"tag": "a b"}, "not a valid image name"),
    ({"base": "UPPER:1"}, "not a valid image name"),
    ({"mirror": "ftp.debian.org"}, "not an http(s) URL"),
])
def test_bad_options_are_usage_errors(kw, words):
    runner = FakeRunner(images={image.REGISTRY_BASE})
    with pytest.raises(UsageError) as e:
        builder(runner).build(**kw)
    assert words in str(e.value) and e.value.code == 2
    assert runner.calls == []


def test_a_missing_engine_is_said_first(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    b = image.Builder(Engine("podman"), config.load(), host=Host())
    with pytest.raises(EngineError) as e:
        b.build()
    assert "podman is not installed" in str(e.value) and "apt-get install podman" in str(e.value)


def test_the_build_is_recorded_in_the_state_store():
    runner = FakeRunner(images={image.REGISTRY_BASE})
    builder(runner).build(tag="localhost/agentsh:dev")
    record = Store().read("images/localhost_agentsh_dev.json")
    assert record["image"] == "localhost/agentsh:dev" and record["id"] == "0123456789ab"
    assert record["size"] == 1234 and record["base"] == image.REGISTRY_BASE


# -- progress lines ----------------------------------------------------------------

@pytest.mark.parametrize("line, step", [
    ("STEP 3/16: RUN apt-get update", True),
    ("Step 3/16 : RUN apt-get update", True),
    ("#7 [3/9] RUN apt-get update", True),
    ("COMMIT localhost/agentsh:latest", True),
    ("I: Resolving dependencies of required packages...", True),
    ("I: Unpacking required packages...", True),
    ("I: Base system installed successfully.", True),
    ("I: Retrieving InRelease ", True),
    ("I: Retrieving libc6 2.36-9+deb12u4", False),
    ("I: Unpacking libacl1:amd64...", False),
    ("I: Configuring libc-bin...", False),
    ("Get:1 http://deb.debian.org/debian bookworm InRelease", False),
    ("added 12 packages in 22s", False),
])
def test_step_lines(line, step):
    assert image.is_step_line(line) is step


def test_plain_progress_shows_only_steps_and_tty_progress_redraws_one_line():
    import io

    out = io.StringIO()
    p = cli.Progress("plain", out)
    for line in ("STEP 1/2: FROM x", "Get:1 http://deb.debian.org", "STEP 2/2: RUN y"):
        p.line(line)
    assert out.getvalue() == "STEP 1/2: FROM x\nSTEP 2/2: RUN y\n"

    out = io.StringIO()
    p = cli.Progress("tty", out)
    p.line("STEP 1/2: FROM x")
    p.line("Get:1 http://deb.debian.org")
    p.line("STEP 2/2: RUN y")
    text = out.getvalue()
    assert "\r\033[K  [0:00] Get:1" in text and text.endswith("\r\033[KSTEP 2/2: RUN y\n")

    out = io.StringIO()
    p = cli.Progress("quiet", out)
    p.line("STEP 1/2: FROM x")
    assert out.getvalue() == ""


# -- the CLI -------------------------------------------------------------------------

@pytest.fixture
def fake_cli_engine(monkeypatch):
    runner = FakeRunner(images={image.REGISTRY_BASE})
    monkeypatch.setattr(cli, "Engine", lambda name="podman", **kw: Engine(name, runner=runner, exe="/usr/bin/podman"))
    return runner


def run_cli(argv, capsys):
    with pytest.raises(SystemExit) as e:
        cli.run("ab-image", cli.body, argv)
    out, err = capsys.readouterr()
    return e.value.code, out, err


def test_cli_build_prints_only_the_image_name_on_stdout(fake_cli_engine, capsys):
    status, out, err = run_cli(["build"], capsys)
    assert status == 0 and out == "localhost/agentsh:latest\n"
    assert "STEP 1/3: FROM base" in err and "agentsh: built localhost/agentsh:latest" in err


def test_cli_build_json_and_quiet(fake_cli_engine, capsys):
    status, out, err = run_cli(["build", "--json", "-q", "--no-agents", "--tag", "localhost/agentsh:slim"], capsys)
    assert status == 0 and err == ""
    record = json.loads(out)
    assert record["image"] == "localhost/agentsh:slim" and record["agents"] is False
    assert set(record) >= {"image", "id", "size", "base", "base_source", "ca_bundle", "seconds"}


def test_cli_build_failure_shows_the_last_lines_and_exits_125(fake_cli_engine, capsys):
    fake_cli_engine.build_status = 1
    fake_cli_engine.build_output = "STEP 4/16: RUN apt-get\nE: Unable to locate package ripgrep\n"
    status, out, err = run_cli(["build"], capsys)
    assert status == 125 and out == ""
    assert "  | E: Unable to locate package ripgrep" in err
    assert err.rstrip().splitlines()[-1].startswith("ab-image: podman build of localhost/agentsh:latest failed")


@pytest.mark.parametrize("argv", [["build", "--base", "x", "--bootstrap"], ["build", "-q", "-v"],
                                  ["build", "--nope"], ["frobnicate"], []])
def test_cli_usage_errors_exit_2(argv, fake_cli_engine, capsys):
    status, out, _ = run_cli(argv, capsys)
    assert status == 2 and out == ""
    assert fake_cli_engine.calls == []


def test_cli_ls(fake_cli_engine, capsys):
    fake_cli_engine.listing = [
        {"Id": "bf85d36883c2aaaa", "Names": ["localhost/agentsh:latest", "localhost/agentsh:v1"],
         "Created": 1700000000, "Size": 1775621546},
        {"Id": "c658ecbf394fbbbb", "Names": ["localhost/agentsh-base:bookworm"], "Created": 1700000001,
         "Size": 121000000},
    ]
    status, out, _ = run_cli(["ls", "--json"], capsys)
    assert status == 0
    rows = json.loads(out)
    assert [r["name"] for r in rows] == ["localhost/agentsh-base:bookworm", "localhost/agentsh:latest",
                                         "localhost/agentsh:v1"]
    assert rows[1] == {"name": "localhost/agentsh:latest", "id": "bf85d36883c2",
                       "created": "2023-11-14T22:13:20Z", "size": 1775621546}
    assert ["images", "--format", "json", "--filter", "reference=localhost/agentsh*"] in fake_cli_engine.calls
    status, out, _ = run_cli(["ls"], capsys)
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "ID", "CREATED", "SIZE"]
    assert "1.78 GB" in lines[2] and "121 MB" in lines[1]


def test_docker_listing_rows():
    def docker_runner(argv, **kw):
        return 0, json.dumps({"Repository": "localhost/agentsh", "Tag": "latest", "ID": "sha256:abcdef0123456789",
                              "CreatedAt": "2024-01-01 10:00:00 +0000 UTC", "Size": "1.78GB"}) + "\n", ""

    rows = image.listing(Engine("docker", runner=docker_runner, exe="/usr/bin/docker"))
    assert rows == [{"name": "localhost/agentsh:latest", "id": "abcdef012345",
                     "created": "2024-01-01 10:00:00 +0000 UTC", "size": "1.78GB"}]


# -- the Containerfile ------------------------------------------------------------------

def test_the_containerfile_has_what_the_image_promises():
    text = open(image.containerfile()).read()
    for package in ("bash", "git", "curl", "ca-certificates", "python3", "nodejs", "npm", "ripgrep", "jq",
                    "less", "procps", "openssh-client"):
        assert f" {package}" in text
    for agent in ("@anthropic-ai/claude-code", "@openai/codex", "@google/gemini-cli", "opencode-ai"):
        assert agent in text
    assert "--no-install-recommends" in text and "rm -rf /var/lib/apt/lists/*" in text
    assert 'npm install -g --no-fund --no-audit --no-update-notifier "node@$NODE_MAJOR"' in text
    assert "ARG NODE_MAJOR=22" in text and "ARG AGENTS=1" in text and "ARG BASE=" in text
    assert f"--mount=type=secret,id={image.CA_SECRET}" in text and "NODE_EXTRA_CA_CERTS" in text
    assert "/etc/profile.d/agentsh.sh" in text and "AGENTSH_SANDBOX" in text
    # The sandbox's home is a fresh volume; the image must not own that path.
    assert "mkdir -p /home" not in text and "useradd" not in text


def test_a_rootfs_with_something_still_mounted_is_left_alone(root, monkeypatch):
    monkeypatch.setattr(image, "release_mounts", lambda path: False)
    b = builder(FakeRunner(), Host())
    b.build(bootstrap=True)
    assert any(n.startswith("left ") and "still mounted" in n for n in b.notices)
    left = os.listdir(os.environ["TMPDIR"])
    assert len(left) == 1 and left[0].startswith("agentsh-base-")


def test_mounts_under_reads_the_mount_table():
    assert "/proc" in image.mounts_under("/proc")
    assert image.mounts_under("/nonexistent/agentsh") == []
