"""Dev Container features from OCI registries: `REGISTRY/NAMESPACE/FEATURE[:TAG | @sha256:DIGEST]`.

Reading a devcontainer.json names them only (devcontainer_features makes a
Feature with no files yet): nothing here runs on the cd hook's, ab-exec's or
ab-status's path. devcontainer_features.resolve(), called when ab-up
gathers what a sandbox is made from, turns each into a Feature like a local
one with what this module fetches, checks and reads:

- **Pinned by digest.** A reference's manifest digest is, in this order: the
  one it names (`@sha256:`), the one the project's devcontainer-lock.json
  gives it (trust covers that file's bytes), the one agentsh recorded when
  it first resolved the tag (a state record, `features/lock/`, in the
  lock file's format), or, only then, the registry's answer for the tag,
  which is recorded. A tag is never resolved again behind the user's back.
- **Verified.** The manifest's bytes must hash to that digest; the layer of
  media type application/vnd.devcontainers.layer.v1+tar must hash to its
  descriptor's digest and have its size. Blobs are cached by digest under
  agentsh's cache dir and hashed again at every use, so a second ab-up
  makes no network request and a changed cache file is fetched again.
- **Untrusted.** The layer is a tar (gzip too) from the network: read in
  memory, never extracted onto the host. Only regular files and
  directories, no absolute path, no `..`, a link only to a regular file of
  the archive itself (copied), at most MAX_FILES files and MAX_BYTES bytes. Its install.sh then runs only where a local
  feature's does: inside the build container (sandbox.devcontainer_run).

A feature's `dependsOn` naming another registry feature the file does not
list adds that one (with the options given there), as the spec says.
"""

from __future__ import annotations

import json
import os

from agentsh.base.digest import sha256_hex
from agentsh.base.errors import AgentshError, ConfigError
from agentsh.policy.devcontainer_vars import _printable
from agentsh.policy.values import ENV_NAME, Pattern

TYPE_CHECKING = False  # typing stays off the hot paths
if TYPE_CHECKING:
    from collections.abc import Callable

LAYER = "application/vnd.devcontainers.layer.v1+tar"
MAX_LAYER = 32 << 20  # a feature's tar; real ones are tens of KB
MAX_FILES = 200  # in one feature, local or fetched
MAX_BYTES = 8 << 20
MAX_FEATURES = 32  # listed ones and those dependsOn adds
LOCK_RECORDS = "features/lock"  # in the state dir: the digest each tag resolved to first
CACHE = "features"  # in the cache dir: sha256/<hex>, manifests and layers by digest
# Compiled on first use (values.Pattern): reading a devcontainer.json on the cd hook's path needs none.
_DIGEST = Pattern(r"sha256:[0-9a-f]{64}\Z")
_COMPONENT = Pattern(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*\Z")
_TAG = Pattern(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}\Z")
_HOST = Pattern(r"(?:(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                r"|\[[0-9A-Fa-f:.]+\])\Z")


class Ref:
    """A parsed registry feature reference."""

    def __init__(self, text: str, registry: str, repository: str, tag: str | None, digest: str | None) -> None:
        self.text, self.registry, self.repository, self.tag, self.digest = text, registry, repository, tag, digest
        self.id = repository.rsplit("/", 1)[-1]
        self.base = f"{registry}/{repository}"  # the reference without its version

    def at(self, digest: str) -> str:
        return f"{self.base}@{digest}"


def parse_ref(text: str) -> Ref | str:
    """The Ref of `REGISTRY/NAMESPACE/FEATURE[:TAG|@sha256:HEX]`, or why it is none."""
    why = "not a registry feature reference (REGISTRY/NAMESPACE/FEATURE:VERSION)"
    if len(text) > 512 or any(c.isspace() or ord(c) < 32 for c in text):
        return why
    rest, digest, tag = text, None, None
    if "@" in rest:
        rest, _, digest = rest.partition("@")
        if not _DIGEST.match(digest):
            return "a digest must be sha256: and 64 lower-case hex digits"
    registry, _, path = rest.partition("/")
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        path, _, tag = path.rpartition(":")
        if not _TAG.match(tag):
            return f"{_printable(tag)!r} is not a version tag"
    if registry.startswith("["):
        host, _, port = registry.partition("]")
        host, port = host + "]", port[1:] if port.startswith(":") else port or ""
    else:
        host, _, port = registry.partition(":")
    if not _HOST.match(host) or (port and not (port.isdigit() and 0 < int(port) < 65536)) \
            or ("." not in host and ":" not in host and not port and host != "localhost"):
        return why
    parts = path.split("/")
    if len(parts) < 2 or not all(_COMPONENT.match(p) for p in parts):
        return why
    return Ref(text, registry, path, tag, digest)


def lock_path(config_path: str) -> str:
    """Where the spec's lock file for a devcontainer.json is: beside it, with a dot for a dot file."""
    name = os.path.basename(config_path)
    return os.path.join(os.path.dirname(config_path),
                        ".devcontainer-lock.json" if name.startswith(".") else "devcontainer-lock.json")


def read_lock(path: str, data: bytes) -> dict[str, str]:
    """{reference: manifest digest} of a devcontainer-lock.json's bytes; a ConfigError naming what is wrong."""
    fix = "fix or remove the file (the devcontainers CLI writes it; agentsh reads it)"
    try:
        value = json.loads(data.decode("utf-8").removeprefix("\ufeff"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: invalid JSON: {str(e)[:200]}", fix) from None
    features = value.get("features") if isinstance(value, dict) else None
    if not isinstance(features, dict):
        raise ConfigError(f"{path}: the top level must be an object with 'features'", fix)
    out = {}
    for ref, entry in features.items():
        resolved = entry.get("resolved") if isinstance(entry, dict) else None
        if not isinstance(resolved, str):
            raise ConfigError(f"{path}: features {_printable(ref)!r} has no 'resolved' string", fix)
        if resolved.startswith(("http://", "https://")):
            continue  # a tarball feature: refused where the devcontainer.json names it
        got = parse_ref(resolved)
        want = parse_ref(ref)
        if isinstance(got, str) or got.digest is None:
            raise ConfigError(f"{path}: features {_printable(ref)!r}: 'resolved' {_printable(resolved)!r} is not "
                              "REGISTRY/NAMESPACE/FEATURE@sha256:DIGEST", fix)
        if isinstance(want, Ref) and want.base != got.base:
            raise ConfigError(f"{path}: features {_printable(ref)!r} resolves to another feature, "
                              f"{_printable(got.base)}", fix)
        out[ref] = got.digest
    return out


def lock_record(config_path: str) -> str:
    """The state record of the digests agentsh resolved a devcontainer.json's tags to."""
    return f"{LOCK_RECORDS}/{sha256_hex(config_path)[:32]}.json"


# -- the cache ---------------------------------------------------------------------------------


def _cache_file(digest: str) -> str:
    from agentsh.base.paths import cache_dir  # lazy: only when a registry feature is resolved

    return os.path.join(cache_dir(), CACHE, "sha256", digest.split(":", 1)[1])


def cached(digest: str) -> bytes | None:
    """A blob from the cache when its bytes still hash to `digest`; else None (and the bad copy is removed)."""
    path = _cache_file(digest)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_LAYER + 1)
    except OSError:
        return None
    if "sha256:" + sha256_hex(data) == digest:
        return data
    try:
        os.unlink(path)
    except OSError:
        pass
    return None


def _store(digest: str, data: bytes) -> None:
    path = _cache_file(digest)
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass  # a cache: the next ab-up fetches again


# -- resolving -------------------------------------------------------------------------------


class Fetcher:
    """Gets verified manifests and layers: from the cache, else (when allowed) from the registry."""

    def __init__(self, network: bool, cafile: str | None = None, notify: Callable[[str], None] | None = None) -> None:
        self.network, self.cafile = network, cafile
        self.notify = notify or (lambda message: None)
        self.registries = {}

    def _registry(self, ref: Ref) -> object:
        if not self.network:
            raise AgentshError("not fetched yet", "run 'ab-up'")
        if ref.registry not in self.registries:
            from agentsh.host.registry import Registry  # lazy: urllib and ssl, only to fetch a feature

            self.registries[ref.registry] = Registry(ref.registry, self.cafile)
        return self.registries[ref.registry]

    def tag_digest(self, ref: Ref) -> str:
        """The manifest digest a tag names now (the manifest is cached on the way)."""
        registry = self._registry(ref)
        self.notify(f"resolving feature {ref.text} at {ref.registry}")
        body, _, said = registry.manifest(ref.repository, ref.tag or "latest")
        digest = "sha256:" + sha256_hex(body)
        if said and said != digest:
            raise _Bad(ref, f"the registry says its manifest is {_printable(said)[:80]}, but its bytes hash to "
                            f"{digest}")
        _store(digest, body)
        return digest

    def blob(self, ref: Ref, digest: str, size: int | None, manifest: bool) -> bytes:
        data = cached(digest)
        if data is None:
            registry = self._registry(ref)
            if manifest:
                self.notify(f"fetching feature {ref.text} ({digest[:19]}) from {ref.registry}")
                data = registry.manifest(ref.repository, digest)[0]
            else:
                data = registry.blob(ref.repository, digest, MAX_LAYER)
            got = "sha256:" + sha256_hex(data)
            if got != digest:
                raise _Bad(ref, f"the {'manifest' if manifest else 'layer'} fetched for {digest} hashes to {got}")
            _store(digest, data)
        if size is not None and len(data) != size:
            raise _Bad(ref, f"the layer {digest} is {len(data)} bytes, its manifest says {size}")
        return data


class _Bad(ConfigError):
    def __init__(self, ref: Ref, why: str) -> None:
        super().__init__(f"feature {ref.text}: {why}; nothing was installed",
                         "check the feature's reference, or pin another digest (devcontainer-lock.json)")


def layer_of(ref: Ref, manifest: bytes) -> tuple[str, int]:
    """(digest, size) of a feature manifest's devcontainers layer; a one-line error when it is malformed."""
    try:
        value = json.loads(manifest)
    except (ValueError, UnicodeDecodeError):
        value = None
    layers = value.get("layers") if isinstance(value, dict) else None
    if not isinstance(layers, list):
        raise _Bad(ref, "its manifest is not an OCI image manifest (no 'layers' list)")
    for layer in layers:
        if isinstance(layer, dict) and layer.get("mediaType") == LAYER:
            digest, size = layer.get("digest"), layer.get("size")
            if not isinstance(digest, str) or not _DIGEST.match(digest):
                raise _Bad(ref, "its feature layer has no sha256 digest")
            if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_LAYER:
                raise _Bad(ref, f"its feature layer's size must be 0 to {MAX_LAYER} bytes")
            return digest, size
    raise _Bad(ref, f"it is not a Dev Container feature (no layer of media type {LAYER})")


def extract(ref: Ref, data: bytes) -> list[tuple[str, int, bytes]]:
    """[(relative path, mode, bytes)] of a feature tar, read in memory by the rules in this module's doc."""
    import io  # lazy: only to read a fetched feature
    import posixpath  # lazy: only to read a fetched feature
    import tarfile  # lazy: only to read a fetched feature

    files, links, total = {}, [], 0

    def clean(name: str, what: str) -> str:
        norm = posixpath.normpath(name.lstrip("/") if name.startswith("./") else name)
        if name.startswith("/") or norm == ".." or norm.startswith("../") or ".." in name.split("/") \
                or len(name) > 1024 or any(ord(c) < 32 for c in name):
            raise _Bad(ref, f"its archive has {what} {_printable(name)[:80]!r} outside the feature")
        return norm

    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            for member in tar:
                name = clean(member.name, "a path")
                if member.isdir() or name == ".":
                    continue
                if len(files) + len(links) >= MAX_FILES or total + max(member.size, 0) > MAX_BYTES:
                    raise _Bad(ref, f"its archive holds more than {MAX_FILES} files or {MAX_BYTES >> 20} MB")
                if name in files or any(name == n for n, _, _ in links):
                    raise _Bad(ref, f"its archive has {_printable(name)[:80]!r} twice")
                if member.isreg():
                    reader = tar.extractfile(member)
                    body = reader.read(member.size) if reader else b""
                    total += len(body)
                    files[name] = (member.mode & 0o755, body)
                elif member.issym() or member.islnk():
                    target = member.linkname
                    if member.issym():
                        target = posixpath.join(posixpath.dirname(name), target)
                    links.append((name, clean(target, "a link to"), 0))
                else:
                    raise _Bad(ref, f"its archive has {_printable(name)[:80]!r}, which is neither a file nor a "
                                    "directory")
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:
        raise _Bad(ref, f"its layer is not a readable tar ({str(e)[:120]})") from None
    for name in [*files, *(n for n, _, _ in links)]:  # "a" a file and "a/b" too: no tree holds both
        parts = name.split("/")
        clash = next(("/".join(parts[:i]) for i in range(1, len(parts)) if "/".join(parts[:i]) in files), None)
        if clash:
            raise _Bad(ref, f"its archive has {_printable(clash)[:80]!r} as a file and as a directory")
    for name, target, _ in links:  # a link becomes a copy of the file it names inside the archive
        if target not in files:
            raise _Bad(ref, f"its archive links {_printable(name)[:80]!r} to something that is not a file in it")
        total += len(files[target][1])
        if total > MAX_BYTES:
            raise _Bad(ref, f"its archive holds more than {MAX_BYTES >> 20} MB")
        files[name] = (files[target][0], files[target][1])
    return [(name, mode, body) for name, (mode, body) in sorted(files.items())]


def check_container_env(meta: dict, where: str) -> None:
    """A feature's containerEnv becomes ENV lines of the build: its names must be variable names."""
    env = meta.get("containerEnv")
    if isinstance(env, dict):
        for name in env:
            if not isinstance(name, str) or not ENV_NAME.match(name):
                raise ConfigError(f"{where}: containerEnv {_printable(str(name))[:80]!r} is not a variable name",
                                  "fix the feature's devcontainer-feature.json")
