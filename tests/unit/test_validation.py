"""Every config value a file can set is checked like user input: a corpus of hostile and legitimate values.

The project file (once allowed), the user config and a devcontainer.json all
go through these checkers; nothing may become an engine flag, a host path
relative to wherever ab runs, or a terminal escape. Errors name the file, the
key and the fix.
"""

import os

import pytest

from agentsh.base.errors import ConfigError, UsageError
from agentsh.policy import config

DIGEST = "a" * 64
GOOD_IMAGES = [
    "localhost/agentsh:latest", "debian", "debian:bookworm", "docker.io/library/debian:12",
    "ghcr.io/org/repo/img:v1.2-rc_3", "registry.example.com:5000/a/b", f"a@sha256:{DIGEST}",
    f"localhost:5000/x:t@sha256:{DIGEST}", "Registry.Example.COM/team/app", "a__b/c-d.e", "a---b",
    "[::1]:5000/img:1", "192.168.0.1:5000/img",
]
BAD_IMAGES = [
    "--privileged", "-v", "--privileged=true", "-it", "", " debian", "debian ", "debian latest", "debian\n",
    "debian\x1b[31m", "a\x00b", "UPPER/X", "a:b:c", "a@sha256:short", f"a@sha512:{DIGEST}", "../x", "/abs",
    "a//b", "a/-b", "a/b-", "-a/b", "x" * 300, "debian:", ":tag", "a..b", "a/.b", "a:-tag", "a:tag with space",
    "registry:port/x", "http://host/x", "a\tb", "host.example/UPPER", "a;rm -rf", "$(id)", "a\u200bb",
]


@pytest.mark.parametrize("value", GOOD_IMAGES)
def test_image_references_that_are_accepted(value):
    assert config.check_image(value, "f: key 'image'") == value


@pytest.mark.parametrize("value", BAD_IMAGES)
def test_image_values_that_are_refused(value):
    with pytest.raises(ConfigError) as e:
        config.check_image(value, "f: key 'image'")
    assert "f: key 'image'" in str(e.value) and e.value.fix


def test_image_of_a_wrong_type_is_refused():
    for value in (3, ["debian"], None, True):
        with pytest.raises(ConfigError, match="must be a string"):
            config.check_image(value, "f: key 'image'")


@pytest.mark.parametrize("text, message", [
    ('image = "--privileged"\n', "'--privileged' is not an image reference"),
    ('image = "debian latest"\n', "is not an image reference"),
    ('cap_add = ["ALL"]\n', "'ALL' is not a Linux capability"),
    ('cap_add = ["CAP_FOO"]\n', "is not a Linux capability"),
    ('cap_add = ["--privileged"]\n', "is not a valid capability name"),
    ('mounts = ["data:/data"]\n', "is not absolute"),
    ('mounts = ["~root/x:/x"]\n', "is not absolute"),
    ('mounts = ["/srv:/proc"]\n', "would cover /"),
    ('mounts = ["/srv:/run/agentsh/ca-bundle.crt"]\n', "would cover /"),
    ('mounts = ["/srv:/"]\n', "would cover /"),
    ('mounts = ["/srv:/x/../etc"]\n', "is not normalised"),
    ('mounts = ["/srv:/x/"]\n', "is not normalised"),
    ('mounts = ["/srv://x"]\n', "is not normalised"),
    ('mounts = ["/srv:/x:z"]\n', "is not HOST:SANDBOX"),
    ('mounts = ["/srv:/x:ro:U"]\n', "is not HOST:SANDBOX"),
    ('mounts = ["/srv:/x,y"]\n', "holds ':' or ','"),
    ('mounts = [":/x"]\n', "is not HOST:SANDBOX"),
    ('mounts = ["/srv\\u001b[2J:/x"]\n', "control character"),
    ('ca_bundle = "ca.pem"\n', "is not absolute"),
    ('ca_bundle = "-v"\n', "is not absolute"),
    ('ca_bundle = ""\n', "non-empty"),
    ('ca_bundle = "/etc/ssl/ca.pem\\n"\n', "control character"),
    ('shell = "-c"\n', "is not a shell command"),
    ('shell = "  "\n', "is not a shell command"),
    ('shell = "zsh\\u001b]0;x\\u0007"\n', "control character"),
    ('pids = 0\n', "must be a positive integer"),
    ('pids = -1\n', "must be a positive integer"),
    ('pids = true\n', "must be a positive integer"),
    ('pids = 1000000000\n', "must be at most"),
    ('cpus = inf\n', "must be a positive number"),
    ('cpus = nan\n', "must be a positive number"),
    ('cpus = 0\n', "must be a positive number"),
    ('cpus = 100000\n', "must be at most"),
    ('memory = "8 g"\n', "must be a size"),
    ('memory = "-1g"\n', "must be a size"),
    ('memory = "8gb"\n', "must be a size"),
    ('memory = "1e9"\n', "must be a size"),
    ('env = ["-e"]\n', "is not a valid environment variable name"),
    ('env = ["A=B"]\n', "is not a valid environment variable name"),
    ('credentials = ["../x"]\n', "is not a valid credential name"),
    ('ports = ["1.2.3.4:99999:80"]\n', "out of range"),
    ('ports = ["80:80 -v /:/host"]\n', "is not [IP:][HOST:]CONTAINER"),
    ('[network]\nallow = ["exa mple.com"]\n', "[network]"),
    ('[network]\nallow = ["ok.example\\u001b[2J"]\n', "control character"),
    ('[network]\nmode = "host"\n', "must be one of"),
    ('[agents.x]\ncommand = ["x"]\nimports = ["claude\\u001b[31m"]\n', "control character"),
    ('[agents.x]\ncommand = ["x"]\nenv = { "A B" = "1" }\n', "NAME = \"value\""),
    ('[agents."--x"]\ncommand = ["x"]\n', "is not a profile name"),
    ('engine = "podman --remote"\n', "must be one of"),
])
def test_hostile_values_in_the_user_config_are_refused_naming_file_and_key(user_config, text, message):
    path = user_config(text)
    with pytest.raises(ConfigError) as e:
        config.load()
    assert message in str(e.value)
    assert str(path) in str(e.value) and "key '" in str(e.value)


@pytest.mark.parametrize("text", [
    'image = "ghcr.io/org/app:1.2"\n',
    'cap_add = ["NET_RAW", "CAP_SYS_PTRACE"]\n',
    'mounts = ["/srv/data:/data", "~/d:/d:ro", "~:/h:rw"]\n',
    'ca_bundle = "~/corp-ca.pem"\n',
    'ca_bundle = "/etc/ssl/certs/ca-certificates.crt"\n',
    'shell = "zsh"\n',
    'shell = "/bin/bash --noprofile"\n',
    'pids = 4194304\n',
    'cpus = 1.5\n',
    'memory = "512m"\n',
    'ports = ["127.0.0.1:8080:80", 3000]\n',
    '[network]\nmode = "allow"\nallow = ["github.com:443", "@registries"]\n',
    '[agents.x]\ncommand = ["x", "--flag"]\nenv = { A = "tab\\there" }\n',
])
def test_legitimate_values_are_accepted(user_config, text):
    import tomllib

    user_config(text)
    cfg = config.load()
    for key, value in tomllib.loads(text).items():  # kept, not dropped on the way
        assert cfg.get(key) not in (None, [], {}), (key, value)


def test_an_image_flag_on_the_command_line_is_a_usage_error(user_config):
    with pytest.raises(UsageError, match="'--privileged' is not an image reference"):
        config.load(flags={"image": "--privileged"})
    assert config.load(flags={"image": "localhost/x:1"})["image"] == "localhost/x:1"


def test_files_cached_as_valid_under_older_rules_are_checked_again(user_config, isolated_dirs):
    """A validated parse is cached by content; the rules' version is part of the key."""
    import marshal

    from agentsh import __version__
    from agentsh.base.digest import sha256_hex

    path = user_config('image = "--privileged"\n')
    data = path.read_bytes()
    old_key = sha256_hex(f"{__version__}\0{path}\0".encode() + data)[:32]
    cache = isolated_dirs["XDG_STATE_HOME"] / "agentsh" / "cache" / "config"
    cache.mkdir(parents=True)
    (cache / f"{old_key}.marshal").write_bytes(marshal.dumps({"image": "--privileged"}))
    with pytest.raises(ConfigError, match="is not an image reference"):
        config.load()


# -- CA bundles --------------------------------------------------------------------

# The smallest thing check_pem takes for a certificate: base64 of a DER SEQUENCE.
PEM = b"-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n"
HOST_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


@pytest.mark.parametrize("data", [
    PEM,
    PEM + PEM,
    b"# Corp root CA\n\n" + PEM + b"\n# second\n" + PEM + b"\n\n",
    PEM.replace(b"\n", b"\r\n"),
    b"\xef\xbb\xbf" + PEM,
    PEM[:-1],  # no final newline
    b"-----BEGIN CERTIFICATE-----  \nMAMC\nAQE=  \n-----END CERTIFICATE-----\n",
])
def test_pem_bundles_that_are_accepted(data):
    assert config.check_pem(data, "ca_bundle 'x': /x") >= 1


def test_the_hosts_own_bundle_is_accepted():
    if not os.path.isfile(HOST_BUNDLE):
        pytest.skip(f"no {HOST_BUNDLE} here")
    with open(HOST_BUNDLE, "rb") as f:
        assert config.check_pem(f.read(), "host") > 10


@pytest.mark.parametrize("data, message", [
    (b"root:$6$salt$hash:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n", "line 1 is outside"),
    (b"", "holds no certificate"),
    (b"\n# only a comment\n", "holds no certificate"),
    (b"-----BEGIN CERTIFICATE-----\n", "has no END line"),
    (b"-----BEGIN CERTIFICATE-----\nMAMCAQE=\n", "has no END line"),
    (b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n", "line 2"),
    (b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n", "is not base64"),
    (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "not a base64 DER certificate"),
    (b"-----BEGIN PRIVATE KEY-----\nMAMCAQE=\n-----END PRIVATE KEY-----\n", "line 1 is outside"),
    (b"-----BEGIN TRUSTED CERTIFICATE-----\nMAMCAQE=\n-----END TRUSTED CERTIFICATE-----\n", "line 1 is outside"),
    (PEM + b"-----BEGIN RSA PRIVATE KEY-----\nMAMCAQE=\n-----END RSA PRIVATE KEY-----\n", "line 4 is outside"),
    (b"subject=CN = Corp\n" + PEM, "line 1 is outside"),
    (PEM + b"trailing text\n", "line 4 is outside"),
    (PEM.replace(b"-----END CERTIFICATE-----", b"-----END CERTIFICATE----- extra"), "line 3 has more than"),
    (b"x" + PEM, "line 1 is outside"),
    (b"\x00\x01\x02binary", "line 1 is outside"),
    (PEM[:-1] + b"-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n", "line 3 has more than"),
])
def test_files_that_are_not_pem_bundles_are_refused(data, message):
    with pytest.raises(ConfigError) as e:
        config.check_pem(data, "ca_bundle '/f': /f")
    assert message in str(e.value) and "ca_bundle '/f': /f" in str(e.value)
    assert "BEGIN CERTIFICATE" in e.value.fix
    assert b"$6$" not in str(e.value).encode()  # never the file's content


def test_a_ca_bundle_must_open_as_a_regular_file(tmp_path):
    pem = tmp_path / "ca.pem"
    pem.write_bytes(PEM)
    assert config.read_ca_bundle(str(pem), str(pem)) == PEM
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path, message in ((fifo, "a device, FIFO or socket"), (tmp_path, "is a directory"),
                          ("/dev/zero", "a device, FIFO or socket"), (tmp_path / "missing", "does not exist")):
        with pytest.raises(ConfigError) as e:  # a FIFO with no writer must not block
            config.read_ca_bundle(str(path), "x")
        assert message in str(e.value) and "ca_bundle 'x'" in str(e.value)
    link = tmp_path / "link"
    link.symlink_to(pem)
    with pytest.raises(ConfigError, match="symlink"):  # the caller resolves paths; a final link here is a swap
        config.read_ca_bundle(str(link), "x")
    shadow_like = tmp_path / "shadow"
    shadow_like.write_text("root:$6$salt$hash:19000:0:99999:7:::\n")
    with pytest.raises(ConfigError, match="line 1 is outside any PEM certificate block"):
        config.read_ca_bundle(str(shadow_like), "/etc/shadow")


def test_what_is_mounted_is_a_private_copy_of_the_checked_bytes(tmp_path, isolated_dirs):
    pem = tmp_path / "ca.pem"
    pem.write_bytes(PEM)
    copy = config.ca_bundle_copy(str(pem), str(pem))
    assert copy.startswith(str(isolated_dirs["XDG_STATE_HOME"])) and open(copy, "rb").read() == PEM
    assert config.ca_bundle_copy(str(pem), str(pem)) == copy  # remembered: no second check
    pem.write_bytes(PEM + PEM)
    second = config.ca_bundle_copy(str(pem), str(pem))
    assert second != copy and open(second, "rb").read() == PEM + PEM
    pem.write_text("root:x:0:0::/root:/bin/sh\n")
    with pytest.raises(ConfigError, match="outside any PEM certificate block"):
        config.ca_bundle_copy(str(pem), str(pem))
    assert open(second, "rb").read() == PEM + PEM  # copies are never rewritten


def test_lockdown_can_be_turned_on_by_a_project_but_never_off(tmp_path, user_config):
    from agentsh.base.state import Store
    from agentsh.host import project
    from agentsh.policy import trust

    user_config("lockdown = true\n")
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / ".agentsh.toml").write_text("lockdown = false\npids = 5\n")
    proj = project.find(str(tmp_path / "p"))
    trust.allow(Store(), proj.config_file)
    cfg = config.load(proj)
    assert cfg["pids"] == 5 and cfg["lockdown"] is True
    user_config("")
    (tmp_path / "p" / ".agentsh.toml").write_text("lockdown = true\n")
    trust.allow(Store(), proj.config_file)
    assert config.load(proj)["lockdown"] is True


def test_caches_stay_user_only(tmp_path):
    from agentsh.base.state import Store
    from agentsh.host import project
    from agentsh.policy import trust

    (tmp_path / "p").mkdir()
    (tmp_path / "p" / ".agentsh.toml").write_text('caches = ["npm"]\n')
    proj = project.find(str(tmp_path / "p"))
    trust.allow(Store(), proj.config_file)
    with pytest.raises(ConfigError, match="key 'caches' can only be set in the user config"):
        config.load(proj)
    with pytest.raises(ConfigError, match="key 'caches' can only be set in the user config"):
        config.review(proj.config_file)
