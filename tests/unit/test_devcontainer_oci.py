"""Registry (OCI) devcontainer features: references, pins, the fetch against a registry in this process, checks."""

import io
import json
import os
import tarfile

import pytest

from agentsh.base.errors import AgentshError, ConfigError
from agentsh.base.state import Store
from agentsh.host import project
from agentsh.host.registry import Registry, RegistryError, is_loopback, parse_challenge
from agentsh.policy import config, devcontainer_features, devcontainer_oci, trust
from agentsh.sandbox import lifecycle as sandbox
from agentsh.sandbox import spec as specs
from tests.conftest import git_init
from tests.oci_registry import FakeRegistry, feature_tar, manifest_for
from tests.unit.fake_engine import fake_engine

HELLO = {"id": "hello", "version": "1.2.3", "options": {"greeting": {"type": "string", "default": "hey"},
                                                         "loud": {"type": "boolean", "default": False}},
         "containerEnv": {"HELLO": "yes"}}


@pytest.fixture(autouse=True)
def cache(own_cache):
    return own_cache


@pytest.fixture
def registry():
    reg = FakeRegistry()
    yield reg
    reg.close()


def write(root, data, lock=None):
    (root / ".devcontainer").mkdir(parents=True, exist_ok=True)
    path = root / ".devcontainer" / "devcontainer.json"
    path.write_text(json.dumps(data))
    if lock is not None:
        (root / ".devcontainer" / "devcontainer-lock.json").write_text(json.dumps(lock))
    return path


def load(root, data, lock=None):
    path = write(root, data, lock)
    covered = trust.cover(str(path))
    if covered.error:
        raise covered.error
    return covered.devcontainer


def resolve(dev, network=True, notes=None):
    fetcher = devcontainer_oci.Fetcher(network, None, (notes.append if notes is not None else None))
    return devcontainer_features.resolve(dev, fetcher, Store())


# -- references -------------------------------------------------------------------------------


@pytest.mark.parametrize("text, want", [
    ("ghcr.io/devcontainers/features/node:1", ("ghcr.io", "devcontainers/features/node", "1", None, "node")),
    ("ghcr.io/devcontainers/features/node", ("ghcr.io", "devcontainers/features/node", None, None, "node")),
    ("127.0.0.1:5000/ns/hello:1.0.2", ("127.0.0.1:5000", "ns/hello", "1.0.2", None, "hello")),
    ("localhost/ns/hello:latest", ("localhost", "ns/hello", "latest", None, "hello")),
    ("[::1]:5000/ns/hello:1", ("[::1]:5000", "ns/hello", "1", None, "hello")),
    ("ghcr.io/o/f@sha256:" + "a" * 64, ("ghcr.io", "o/f", None, "sha256:" + "a" * 64, "f")),
])
def test_references_parse(text, want):
    ref = devcontainer_oci.parse_ref(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest, ref.id) == want


@pytest.mark.parametrize("text", [
    "ghcr.io/node", "ghcr.io/Devcontainers/node:1", "ghcr.io/o/f:-x", "ghcr.io/o/f@sha256:abc", "ghcr.io/o/f@md5:" + "a" * 32,
    "ghcr.io/o/../f:1", "ghcr.io/o/f:1 2", "devcontainers/features/node:1", "ghcr.io:99999/o/f:1", "ghcr.io/o/f\n:1",
])
def test_bad_references_are_refused_with_the_reason(tmp_path, text):
    dev = load(tmp_path, {"image": "x/y:1", "features": {text: {}}})
    assert dev.features == []
    [(prop, why)] = dev.not_applied
    assert prop.startswith("features ") and why


@pytest.mark.parametrize("config, lock", [
    ("/p/.devcontainer/devcontainer.json", "/p/.devcontainer/devcontainer-lock.json"),
    ("/p/.devcontainer.json", "/p/.devcontainer-lock.json"),
    ("/p/.devcontainer/py/devcontainer.json", "/p/.devcontainer/py/devcontainer-lock.json"),
])
def test_the_lock_file_sits_beside_the_config_as_the_cli_puts_it(config, lock):
    assert devcontainer_oci.lock_path(config) == lock


# -- the fetch, against a registry served in this process ------------------------------------


def test_a_feature_is_fetched_verified_cached_and_then_asks_no_registry(tmp_path, registry):
    digest = registry.add("ns/hello", "1", feature_tar(HELLO))
    ref = f"{registry.host}/ns/hello:1"
    dev = load(tmp_path, {"image": "x/y:1", "features": {ref: {"greeting": "hi"}}})
    assert [f.digest for f in dev.features] == [None] and registry.requests == []  # reading fetches nothing
    notes = []
    assert resolve(dev, notes=notes) == []
    [f] = dev.features
    assert (f.id, f.digest, f.pinned_by) == ("hello", digest, "resolved now")
    assert f.options == {"GREETING": "hi", "LOUD": "false"} and f.container_env == {"HELLO": "yes"}
    assert sorted(rel for rel, _, _ in f.files) == ["devcontainer-feature.json", "install.sh"]
    assert dict((r, m) for r, m, _ in f.files)["install.sh"] == 0o755
    assert f.plan()["resolved"] == f"{registry.host}/ns/hello@{digest}" and f.plan()["version"] == "1.2.3"
    assert any("resolving feature" in n for n in notes)
    record = Store().read(devcontainer_oci.lock_record(dev.path))
    assert record["features"][ref] == {"version": "1.2.3", "resolved": f"{registry.host}/ns/hello@{digest}",
                                       "integrity": digest}
    # the registry moves the tag; the next ab-up keeps the recorded digest and makes no request
    registry.add("ns/hello", "1", feature_tar({**HELLO, "version": "9"}))
    seen = len(registry.requests)
    again = load(tmp_path, {"image": "x/y:1", "features": {ref: {"greeting": "hi"}}})
    resolve(again)
    assert len(registry.requests) == seen
    assert (again.features[0].digest, again.features[0].pinned_by) == (digest, "agentsh lock")


def test_a_changed_cache_file_is_fetched_again(tmp_path, registry, cache):
    registry.add("ns/hello", "1", feature_tar(HELLO))
    data = {"image": "x/y:1", "features": {f"{registry.host}/ns/hello:1": {}}}
    resolve(load(tmp_path, data))
    blobs = cache / "features" / "sha256"
    for name in os.listdir(blobs):
        with open(blobs / name, "ab") as f:
            f.write(b"tampered")
    seen = len(registry.requests)
    dev = load(tmp_path, data)
    resolve(dev)
    assert len(registry.requests) > seen and dev.features[0].files  # re-verified, then fetched again


def test_the_anonymous_token_flow_and_a_redirect_that_does_not_carry_the_token(tmp_path):
    reg = FakeRegistry(token=True, redirect=True)
    try:
        reg.add("ns/hello", "1", feature_tar(HELLO))
        dev = load(tmp_path, {"image": "x/y:1", "features": {f"{reg.host}/ns/hello:1": {}}})
        resolve(dev)
        assert dev.features[0].files
        paths = [(p.split("?")[0], auth) for p, auth in reg.requests]
        assert paths[0] == ("/v2/ns/hello/manifests/1", None) and paths[1] == ("/token", None)
        assert ("/v2/ns/hello/manifests/1", "Bearer anon-token") in paths
        cdn = [auth for p, auth in paths if p.startswith("/cdn/")]
        assert cdn == [None]  # the blob's redirect went to another host name: no token there
    finally:
        reg.close()


def test_a_digest_reference_and_a_lock_file_pin(tmp_path, registry):
    first = registry.add("ns/hello", "1", feature_tar(HELLO))
    registry.add("ns/hello", "1", feature_tar({**HELLO, "version": "2.0.0"}))  # the tag moved on
    ref = f"{registry.host}/ns/hello:1"
    lock = {"features": {ref: {"version": "1.2.3", "resolved": f"{registry.host}/ns/hello@{first}",
                               "integrity": first}}}
    dev = load(tmp_path, {"image": "x/y:1", "features": {ref: {}}}, lock)
    resolve(dev)
    assert (dev.features[0].digest, dev.features[0].pinned_by, dev.features[0].meta["version"]) == (
        first, "devcontainer-lock.json", "1.2.3")
    assert dev.lock_file.endswith("devcontainer-lock.json") and dev.plan()["lock_file"] == dev.lock_file
    by_digest = load(tmp_path / "b", {"image": "x/y:1", "features": {f"{registry.host}/ns/hello@{first}": {}}})
    resolve(by_digest)
    assert by_digest.features[0].digest == first and by_digest.features[0].pinned_by == "reference"


def test_trust_covers_the_lock_file(tmp_path):
    repo = git_init(tmp_path / "repo")
    ref = "ghcr.io/o/hello:1"
    lock = {"features": {ref: {"resolved": "ghcr.io/o/hello@sha256:" + "1" * 64}}}
    path = write(repo, {"image": "x/y:1", "features": {ref: {}}}, lock)
    trust.allow(Store(), str(path))
    assert trust.status(Store(), str(path), path.read_bytes()) == trust.ALLOWED
    (repo / ".devcontainer" / "devcontainer-lock.json").write_text(json.dumps(
        {"features": {ref: {"resolved": "ghcr.io/o/hello@sha256:" + "2" * 64}}}))
    assert trust.status(Store(), str(path), path.read_bytes()) == trust.BLOCKED
    assert str(repo / ".devcontainer" / "devcontainer-lock.json") in trust.covered_files(str(path))
    # the reference itself is in the devcontainer.json's bytes: another version is another trust
    path = write(repo, {"image": "x/y:1", "features": {ref: {}}}, lock)
    trust.allow(Store(), str(path))
    write(repo, {"image": "x/y:1", "features": {"ghcr.io/o/hello:2": {}}})
    assert trust.status(Store(), str(path), path.read_bytes()) == trust.BLOCKED


@pytest.mark.parametrize("lock, message", [
    ("{", "invalid JSON"),
    ({"features": {"ghcr.io/o/hello:1": {"resolved": "ghcr.io/o/other@sha256:" + "1" * 64}}}, "another feature"),
    ({"features": {"ghcr.io/o/hello:1": {"resolved": "ghcr.io/o/hello:2"}}}, "@sha256:DIGEST"),
    ([], "an object with 'features'"),
])
def test_a_bad_lock_file_is_one_line(tmp_path, lock, message):
    path = write(tmp_path, {"image": "x/y:1", "features": {"ghcr.io/o/hello:1": {}}})
    (tmp_path / ".devcontainer" / "devcontainer-lock.json").write_text(lock if isinstance(lock, str) else json.dumps(lock))
    covered = trust.cover(str(path))
    assert isinstance(covered.error, ConfigError) and message in covered.error.message
    assert "devcontainer-lock.json" in covered.error.message and "\n" not in str(covered.error)


# -- errors: one line naming the feature and the fix, nothing recorded ---------------------


def error_of(tmp_path, data, network=True):
    dev = load(tmp_path, data)
    with pytest.raises(AgentshError) as e:
        resolve(dev, network)
    assert "\n" not in str(e.value) and e.value.fix
    assert Store().read(devcontainer_oci.lock_record(dev.path)) is None  # nothing pinned from a failed fetch
    return e.value.message


def test_unreachable_registry(tmp_path, registry):
    port = registry.port
    registry.close()
    message = error_of(tmp_path, {"image": "x/y:1", "features": {f"127.0.0.1:{port}/ns/hello:1": {}}})
    assert message.startswith(f"feature 127.0.0.1:{port}/ns/hello:1: registry 127.0.0.1:{port} cannot be reached")


def test_a_missing_feature(tmp_path, registry):
    message = error_of(tmp_path, {"image": "x/y:1", "features": {f"{registry.host}/ns/nope:1": {}}})
    assert f"feature {registry.host}/ns/nope:1: registry {registry.host} has no such manifest (HTTP 404 " \
           "MANIFEST_UNKNOWN)" in message


def test_a_blob_that_does_not_match_its_digest(tmp_path, registry):
    registry.add("ns/hello", "1", feature_tar(HELLO))
    for digest in list(registry.blobs):
        registry.blobs[digest] = registry.blobs[digest] + b"x"
    message = error_of(tmp_path, {"image": "x/y:1", "features": {f"{registry.host}/ns/hello:1": {}}})
    assert "hashes to sha256:" in message and message.endswith("nothing was installed")


def test_a_malformed_manifest(tmp_path, registry):
    registry.manifests[("ns/hello", "1")] = b'{"schemaVersion": 2, "layers": "no"}'
    message = error_of(tmp_path, {"image": "x/y:1", "features": {f"{registry.host}/ns/hello:1": {}}})
    assert "is not an OCI image manifest" in message
    registry.manifests[("ns/hello", "1")] = json.dumps({"schemaVersion": 2, "layers": [
        {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": "sha256:" + "0" * 64, "size": 0}]}).encode()
    message = error_of(tmp_path / "b", {"image": "x/y:1", "features": {f"{registry.host}/ns/hello:1": {}}})
    assert "not a Dev Container feature" in message


def test_without_the_network_an_unfetched_feature_is_an_error(tmp_path, registry):
    registry.add("ns/hello", "1", feature_tar(HELLO))
    message = error_of(tmp_path, {"image": "x/y:1", "features": {f"{registry.host}/ns/hello:1": {}}}, network=False)
    assert message.endswith("not fetched yet; nothing was installed") and registry.requests == []


# -- the tar is untrusted ----------------------------------------------------------------------


def member(name, kind=tarfile.REGTYPE, data=b"x", link=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data if kind == tarfile.REGTYPE else None


@pytest.mark.parametrize("extra, why", [
    ([member("/etc/cron.d/x")], "outside the feature"),
    ([member("../escape")], "outside the feature"),
    ([member("a/../../escape")], "outside the feature"),
    ([member("link", tarfile.SYMTYPE, link="/etc/passwd")], "outside the feature"),
    ([member("link", tarfile.SYMTYPE, link="../../etc/passwd")], "outside the feature"),
    ([member("hard", tarfile.LNKTYPE, link="../x")], "outside the feature"),
    ([member("link", tarfile.SYMTYPE, link="nothing-here")], "not a file in it"),
    ([member("dev", tarfile.CHRTYPE)], "neither a file nor a directory"),
    ([member("fifo", tarfile.FIFOTYPE)], "neither a file nor a directory"),
    ([member("big", data=b"0" * ((8 << 20) + 1))], "more than"),
    ([member(f"f{i}") for i in range(200)], "more than 200 files"),
    ([member("./install.sh")], "twice"),
    ([member("lib", data=b"x"), member("lib/a.sh")], "as a file and as a directory"),
])
def test_an_unsafe_archive_is_refused(tmp_path, registry, extra, why):
    registry.add("ns/hello", "1", feature_tar(HELLO, extra=extra))
    message = error_of(tmp_path, {"image": "x/y:1", "features": {f"{registry.host}/ns/hello:1": {}}})
    assert why in message and message.startswith(f"feature {registry.host}/ns/hello:1:")
    assert not os.path.exists("/etc/cron.d/x")


def test_links_inside_the_archive_become_copies_and_gzip_is_read(tmp_path, registry):
    extra = [member("lib/common.sh", data=b"echo common\n"), member("lib/alias.sh", tarfile.SYMTYPE, link="common.sh"),
             member("hard.sh", tarfile.LNKTYPE, link="lib/common.sh")]
    registry.add("ns/hello", "1", feature_tar(HELLO, extra=extra, gzip=True))
    dev = load(tmp_path, {"image": "x/y:1", "features": {f"{registry.host}/ns/hello:1": {}}})
    resolve(dev)
    files = {rel: data for rel, _, data in dev.features[0].files}
    assert files["lib/alias.sh"] == files["hard.sh"] == b"echo common\n"


def test_a_container_env_name_that_would_break_the_recipe_is_refused(tmp_path, registry):
    registry.add("ns/hello", "1", feature_tar({"id": "hello", "containerEnv": {"A=1\nRUN touch /x\nENV B": "v"}}))
    message = error_of(tmp_path, {"image": "x/y:1", "features": {f"{registry.host}/ns/hello:1": {}}})
    assert "is not a variable name" in message and message.startswith(f"feature {registry.host}/ns/hello:1")


def test_an_archive_without_install_sh(tmp_path, registry):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info, data = member("devcontainer-feature.json", data=b'{"id": "x"}')
        tar.addfile(info, io.BytesIO(data))
    registry.add("ns/hello", "1", buf.getvalue())
    assert "lacks devcontainer-feature.json or install.sh" in error_of(
        tmp_path, {"image": "x/y:1", "features": {f"{registry.host}/ns/hello:1": {}}})


# -- order: installsAfter, dependsOn (which adds features), the override --------------------


def test_order_and_depends_on_across_local_and_registry_features(tmp_path, registry):
    registry.add("ns/base", "1", feature_tar({"id": "base", "options": {"level": {"type": "string", "default": "1"}}}))
    registry.add("ns/tool", "2", feature_tar({"id": "tool", "dependsOn": {f"{registry.host}/ns/base:1": {"level": "3"}},
                                              "installsAfter": ["local"]}))
    registry.add("ns/last", "1", feature_tar({"id": "last"}))
    folder = tmp_path / ".devcontainer" / "local"
    folder.mkdir(parents=True)
    (folder / "devcontainer-feature.json").write_text('{"id": "local"}')
    (folder / "install.sh").write_text("#!/bin/sh\n")
    dev = load(tmp_path, {"image": "x/y:1", "features": {f"{registry.host}/ns/last:1": {},
                                                         f"{registry.host}/ns/tool:2": {}, "./local": {}},
                          "overrideFeatureInstallOrder": [f"{registry.host}/ns/last"]})
    resolve(dev)
    assert [f.id for f in dev.features] == ["last", "base", "local", "tool"]
    assert dev.features[1].options == {"LEVEL": "3"}  # the options dependsOn gives
    assert not dev.not_applied


def test_a_local_features_registry_dependency_is_added_and_installed_first(tmp_path, registry):
    registry.add("ns/base", "1", feature_tar({"id": "base"}))
    folder = tmp_path / ".devcontainer" / "local"
    folder.mkdir(parents=True)
    (folder / "devcontainer-feature.json").write_text(json.dumps(
        {"id": "local", "dependsOn": {f"{registry.host}/ns/base:1": {}}}))
    (folder / "install.sh").write_text("#!/bin/sh\n")
    dev = load(tmp_path, {"image": "x/y:1", "features": {"./local": {}}})
    assert [f.id for f in dev.features] == ["base", "local"] and not dev.not_applied
    resolve(dev)
    assert [(f.id, bool(f.digest)) for f in dev.features] == [("base", True), ("local", False)]


def test_the_spec_builds_the_feature_layer_with_the_digest_in_its_tag(tmp_path, registry):
    digest = registry.add("ns/hello", "1", feature_tar(HELLO))
    repo = git_init(tmp_path / "repo")
    path = write(repo, {"image": "localhost/base:1", "features": {f"{registry.host}/ns/hello:1": {"greeting": "yo"}}})
    trust.allow(Store(), str(path))
    proj = project.find(str(repo))
    engine, _ = fake_engine(images=["localhost/base:1"])
    cfg = config.load(proj)
    with pytest.raises(AgentshError, match="not fetched yet"):  # what the cd hook and ab-status compute
        sandbox.spec(proj, cfg, engine)
    want = specs.build(proj, cfg, engine, specs.gather(proj, cfg, engine, fetch=True))
    assert want.image.startswith(f"localhost/agentsh-dc-{proj.key}:")
    [f] = want.build["features"]
    assert f.digest == digest
    plan = specs.plan(want, cfg)
    assert plan["build"]["features"][0]["resolved"] == f"{registry.host}/ns/hello@{digest}"
    assert plan["features"][0]["digest"] == digest
    from agentsh.sandbox.devcontainer_run import feature_recipe

    recipe, files = feature_recipe("localhost/base:1", want.build["features"], None, "")
    assert "COPY 0-hello /tmp/agentsh-features/0-hello" in recipe and "ENV HELLO=\"yes\"" in recipe
    env = dict((r, d) for r, _, d in files)["0-hello/devcontainer-features.env"].decode()
    assert "GREETING='yo'" in env
    # offline now: the cached, pinned feature gives the same spec
    assert sandbox.spec(proj, config.load(proj), engine).hash == want.hash
    review = config.review(str(path))
    lines = dict(config.widen_lines(review.widens))
    assert "from its registry at ab-up, pinned to one digest" in lines["feature"]


# -- the client's rules -------------------------------------------------------------------------


def test_plain_http_only_on_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("127.8.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert is_loopback("::ffff:127.0.0.1") and not is_loopback("10.0.0.1") and not is_loopback("example.com")
    reg = Registry("registry.example.com")
    assert reg.scheme == "https" and not reg.loopback
    with pytest.raises(RegistryError, match="not HTTPS"):
        reg._check_scheme("http://cdn.example.com/blob")
    reg._check_scheme("http://127.0.0.1:5000/blob")  # a loopback target may be plain HTTP
    with pytest.raises(RegistryError, match="not HTTPS"):
        reg._check_scheme("ftp://cdn.example.com/blob")


def test_a_non_loopback_registry_never_falls_back_to_http(monkeypatch):
    from agentsh.host import registry as client

    reg = Registry("registry.example.com")
    seen = []

    def once(url, headers, limit):
        seen.append(url)
        raise client._TLSFailed("unreachable", "registry registry.example.com: TLS failed (x)", "fix")

    monkeypatch.setattr(reg, "_once", once)
    with pytest.raises(RegistryError, match="TLS failed"):
        reg.manifest("o/f", "1")
    assert seen == ["https://registry.example.com/v2/o/f/manifests/1"]


def test_challenges_parse():
    assert parse_challenge('Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:o/f:pull"') == {
        "realm": "https://ghcr.io/token", "service": "ghcr.io", "scope": "repository:o/f:pull"}
    assert parse_challenge('Basic realm="x"') is None


def test_manifest_for_matches_what_the_cli_publishes():
    body, config_blob = manifest_for(b"layer")
    value = json.loads(body)
    assert value["layers"][0]["mediaType"] == devcontainer_oci.LAYER and config_blob == b"{}"
