"""Dev Container features a devcontainer.json names: local and registry ones read and ordered, the rest refused.

A local feature is a folder beside the devcontainer.json (`"./NAME"`, inside
`.devcontainer`) holding `devcontainer-feature.json` and `install.sh`. Its
files are read here once, without following a symlink, and kept: trust
hashes exactly these bytes (trust.cover) and the build layer is made from
them (sandbox.features), so nothing written in between reaches a build.

A registry feature (`REGISTRY/NAMESPACE/FEATURE:VERSION`, or `@sha256:`) is
only named when the file is read; `resolve()` gives it its files when ab-up
gathers what the sandbox is made from (devcontainer_oci: pinned by digest,
verified, cached), and from then on it is a Feature like a local one.

Options become environment variables as the spec says (the option id
upper-cased, every character but letters, digits and '_' made '_'), with
the defaults of devcontainer-feature.json, plus _REMOTE_USER,
_CONTAINER_USER and their homes. Order: `installsAfter` and `dependsOn`
(among the features named here), then overrideFeatureInstallOrder.
"""

from __future__ import annotations

import json
import os
import re
import stat

from agentsh.base.errors import AgentshError, ConfigError
from agentsh.base.safefs import read_project_file
from agentsh.policy.devcontainer_oci import (
    MAX_BYTES,
    MAX_FEATURES,
    MAX_FILES,
    Fetcher,
    Ref,
    check_container_env,
    extract,
    layer_of,
    lock_record,
    parse_ref,
)
from agentsh.policy.devcontainer_vars import _inside, _printable, _scalar
from agentsh.policy.values import Pattern

TYPE_CHECKING = False  # typing stays off the hot paths
if TYPE_CHECKING:
    from typing import Protocol

    from agentsh.base.state import Store
    from agentsh.policy.devcontainer_vars import Resolver

    class Devcontainer(Protocol):
        """What this module reads of a policy.devcontainer.Devcontainer (named here, not imported: no cycle)."""

        dir: str
        path: str
        root: str
        vars: Resolver
        feature_order: list[str]
        features: list[Feature]
        not_applied: list[tuple[str, str]]
        lock_pins: dict[str, str]


def option_env_name(option: str) -> str:
    """The spec's environment name of a feature option."""

    name = re.sub(r"[^\w]", "_", option, flags=re.ASCII)
    name = re.sub(r"^[\d_]+", "_", name)
    return name.upper()


class Feature:
    """One feature: where it is, its metadata, its files' bytes, its options as env.

    `folder`: a local feature's folder, or a registry feature's reference without its version (its
    basename names its folder in the build context either way); `oci`: the parsed reference of a
    registry feature (None for a local one); `digest`: its manifest digest once resolved, and
    `pinned_by` what fixed that digest.
    """

    def __init__(self, ref: str, folder: str, meta: dict, files: list[tuple[str, int, bytes]],
                 options: dict[str, str], oci: Ref | None = None) -> None:
        self.ref = ref
        self.folder = folder
        self.oci = oci
        self.digest = self.pinned_by = None
        self.given, self.where = None, ""
        self.describe(meta, files, options)

    def describe(self, meta: dict, files: list[tuple[str, int, bytes]], options: dict[str, str]) -> None:
        self.meta = meta
        self.id = meta.get("id") if isinstance(meta.get("id"), str) else os.path.basename(self.folder)
        self.files = files  # [(relative path, mode, bytes)]
        self.options = options  # {ENV_NAME: value}
        self.installs_after = _ids(meta.get("installsAfter"))
        self.depends_on = _ids(meta.get("dependsOn"))
        env = meta.get("containerEnv")
        self.container_env = {k: str(v) for k, v in env.items()} if isinstance(env, dict) else {}

    def keys(self) -> set[str]:
        """What overrideFeatureInstallOrder and installsAfter may call it."""
        return {self.ref, self.id} | ({self.oci.base} if self.oci else set())

    def plan(self) -> dict:
        return {"id": self.id, "source": self.ref, "folder": None if self.oci else self.folder,
                "options": dict(self.options), "files": len(self.files), "digest": self.digest,
                "resolved": self.oci.at(self.digest) if self.oci and self.digest else None,
                "version": self.meta.get("version") if isinstance(self.meta.get("version"), str) else None,
                "pinned_by": self.pinned_by}


def _ids(value: object) -> list[str]:
    if isinstance(value, dict):
        return list(value)
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


class Features:
    def __init__(self) -> None:
        self.features, self.refused = [], []


def read_features(dev: Devcontainer, value: dict) -> Features:
    """The features of a Devcontainer (`dev`): local ones read, registry ones named, in order; others refused."""
    out = Features()
    for ref, options in value.items():
        if not isinstance(ref, str):
            continue
        if ref.startswith(("./", "../")):
            feature = _local(dev, ref, options)
            if isinstance(feature, str):
                out.refused.append((ref, feature))
            else:
                out.features.append(feature)
        elif ref.startswith(("http://", "https://")):
            out.refused.append((ref, "features from a URL are not fetched by agentsh; install the tool in a "
                                     "Dockerfile"))
        elif "/" not in ref:
            out.refused.append((ref, "a short feature id (deprecated); install the tool in a Dockerfile"))
        else:
            parsed = parse_ref(ref)
            if isinstance(parsed, str):
                out.refused.append((ref, parsed))
            elif len(out.features) >= MAX_FEATURES:
                out.refused.append((ref, f"more than {MAX_FEATURES} features"))
            else:
                out.features.append(placeholder(dev, ref, parsed, options, f"{dev.path}: key 'features' "
                                                                           f"{_printable(ref)!r}"))
    known = {f.id for f in out.features}
    for f in [g for g in out.features if g.oci is None]:  # a local feature's registry dependencies come too
        deps = f.meta.get("dependsOn") if isinstance(f.meta.get("dependsOn"), dict) else {}
        for dep, options in deps.items():
            parsed = parse_ref(dep) if isinstance(dep, str) else "?"
            if isinstance(parsed, Ref) and parsed.id not in known and len(out.features) < MAX_FEATURES:
                out.features.append(placeholder(dev, dep, parsed, options, f"{f.folder}: dependsOn {_printable(dep)!r}"))
                known.add(parsed.id)
    out.features = _ordered(out.features, dev.feature_order if hasattr(dev, "feature_order") else [], out)
    return out


def placeholder(dev: Devcontainer, text: str, ref: Ref, options: object, where: str) -> Feature:
    """A registry feature not resolved yet: its reference and the options given, no files."""
    f = Feature(text, ref.base, {"id": ref.id}, [], _options(dev, where, {}, options), ref)
    f.given, f.where = options, where
    return f


def resolve(dev: Devcontainer, fetcher: Fetcher, store: Store) -> list[str]:
    """Give each registry feature of `dev` its files, options and place in the install order (devcontainer_oci).

    Returns lines for the user (features refused on the way, such as a cycle).
    Raises a one-line error naming the feature when one cannot be had; the
    state record of resolved tags is written only when all of them were.
    """
    pending = [f for f in dev.features if f.oci is not None and f.digest is None]
    if not pending:
        return []
    pins = getattr(dev, "lock_pins", None) or {}
    rel = lock_record(dev.path)
    try:
        record = store.read(rel) or {}
    except AgentshError:
        record = {}
    recorded = record.get("features") if isinstance(record.get("features"), dict) else {}
    fresh = {}
    known = {f.id for f in dev.features}
    queue = list(pending)
    while queue:
        f = queue.pop(0)
        ref = f.oci
        try:
            digest, source = _pin(ref, pins, recorded, fetcher)
            manifest = fetcher.blob(ref, digest, None, manifest=True)
            layer, size = layer_of(ref, manifest)
            files = extract(ref, fetcher.blob(ref, layer, size, manifest=False))
        except AgentshError as e:
            if e.message.startswith(f"feature {ref.text}: "):
                raise
            raise ConfigError(f"feature {ref.text}: {e.message}; nothing was installed", e.fix) from None
        _materialize(dev, f, files, digest, source)
        if source != "devcontainer-lock.json" and ref.digest is None:
            fresh[ref.text] = {"version": str(f.meta.get("version", "")), "resolved": ref.at(digest),
                               "integrity": digest}
        deps = f.meta.get("dependsOn") if isinstance(f.meta.get("dependsOn"), dict) else {}
        for dep, options in deps.items():
            dep_ref = parse_ref(dep) if isinstance(dep, str) else "?"
            if isinstance(dep_ref, str) or dep_ref.id in known:
                continue
            if len(dev.features) >= MAX_FEATURES:
                raise ConfigError(f"feature {ref.text}: its dependsOn makes more than {MAX_FEATURES} features",
                                  "name fewer features")
            added = placeholder(dev, dep, dep_ref, options, f"{ref.text}: dependsOn {_printable(dep)!r}")
            dev.features.append(added)
            known.add(dep_ref.id)
            queue.append(added)
    if any(recorded.get(k) != v for k, v in fresh.items()):
        try:
            store.write(rel, {"file": dev.path, "features": {**recorded, **fresh}})
        except (AgentshError, OSError):
            pass  # only saves the next ab-up a request: it asks the registry for the tag again
    out = Features()
    dev.features = _ordered(dev.features, getattr(dev, "feature_order", []), out)
    lines = []
    for ref, why in out.refused:
        entry = (f"features {_printable(ref)}", why)
        if entry not in dev.not_applied:  # a local feature's was said when the file was read
            dev.not_applied.append(entry)
            lines.append(f"{dev.path}: {entry[0]} not applied ({why})")
    return lines


def _pin(ref: Ref, pins: dict[str, str], recorded: dict, fetcher: Fetcher) -> tuple[str, str]:
    """(manifest digest, what fixed it) of a registry feature: the reference, the lock file, agentsh's record,
    or the registry's answer for the tag now."""
    if ref.digest:
        return ref.digest, "reference"
    if ref.text in pins:
        return pins[ref.text], "devcontainer-lock.json"
    entry = recorded.get(ref.text)
    pinned = parse_ref(entry["resolved"]) if isinstance(entry, dict) and isinstance(entry.get("resolved"), str) \
        else None
    if isinstance(pinned, Ref) and pinned.base == ref.base and pinned.digest:
        return pinned.digest, "agentsh lock"
    return fetcher.tag_digest(ref), "resolved now"


def _materialize(dev: Devcontainer, f: Feature, files: list[tuple[str, int, bytes]], digest: str,
                 source: str) -> None:
    names = {rel for rel, _, _ in files}
    if "devcontainer-feature.json" not in names or "install.sh" not in names:
        raise ConfigError(f"feature {f.ref}: its archive lacks devcontainer-feature.json or install.sh; "
                          "nothing was installed", "check the feature's reference")
    raw = next(data for rel, _, data in files if rel == "devcontainer-feature.json")
    try:
        meta = json.loads(raw.decode("utf-8").removeprefix("\ufeff"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"feature {f.ref}: its devcontainer-feature.json is invalid JSON ({str(e)[:120]}); "
                          "nothing was installed", "check the feature's reference") from None
    if not isinstance(meta, dict):
        raise ConfigError(f"feature {f.ref}: its devcontainer-feature.json is not an object; nothing was installed",
                          "check the feature's reference")
    try:
        check_container_env(meta, f"feature {f.ref}")
    except ConfigError as e:
        raise ConfigError(f"{e.message}; nothing was installed", e.fix) from None
    meta = {**meta, "id": meta["id"] if isinstance(meta.get("id"), str) and _SAFE_ID.match(meta["id"])
            else f.oci.id}
    f.describe(meta, files, _options(dev, f.where, meta, f.given))
    f.digest, f.pinned_by = digest, source


def _local(dev: Devcontainer, ref: str, options: object) -> Feature | str:

    folder = os.path.normpath(os.path.join(dev.dir, ref))
    where = f"{dev.path}: key 'features' {_printable(ref)!r}"
    if not (folder.startswith(dev.dir.rstrip("/") + "/")):
        return "a local feature must be a folder beside the devcontainer.json"
    _inside(folder, dev.root, where, "feature folder")
    if not os.path.isdir(folder) or os.path.islink(folder):
        return f"{folder} is not a folder"
    try:
        files = _read_tree(folder)
    except OSError as e:
        return f"cannot read {folder} without following a symlink ({e.strerror})"
    names = {rel for rel, _, _ in files}
    if "devcontainer-feature.json" not in names or "install.sh" not in names:
        return "a feature folder needs devcontainer-feature.json and install.sh"

    raw = next(data for rel, _, data in files if rel == "devcontainer-feature.json")
    try:
        meta = json.loads(raw.decode("utf-8").removeprefix("\ufeff"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"{folder}/devcontainer-feature.json: invalid JSON: {str(e)[:200]}") from None
    if not isinstance(meta, dict):
        raise ConfigError(f"{folder}/devcontainer-feature.json: the top level must be an object")
    check_container_env(meta, f"{folder}/devcontainer-feature.json")
    return Feature(ref, folder, meta, files, _options(dev, where, meta, options))


def _options(dev: Devcontainer, where: str, meta: dict, given: object) -> dict[str, str]:

    declared = meta.get("options") if isinstance(meta.get("options"), dict) else {}
    if isinstance(given, str):
        given = {"version": given}
    elif not isinstance(given, dict):
        given = {}
    values = {}
    for name, decl in declared.items():
        if isinstance(decl, dict) and "default" in decl:
            values[name] = decl["default"]
    values.update(given)
    out = {}
    for name, value in values.items():
        if not isinstance(name, str) or isinstance(value, (list, dict)) or value is None:
            continue
        text = _scalar(value, f"{where}.{name}")
        out[option_env_name(name)] = str(dev.vars.text(text, f"{where}.{name}"))
    return out


def _read_tree(folder: str, rel: str = "",
               out: list[tuple[str, int, bytes]] | None = None) -> list[tuple[str, int, bytes]]:
    """[(relative path, mode, bytes)] of every regular file under folder; a symlink is an error."""


    out = [] if out is None else out
    with os.scandir(os.path.join(folder, rel) if rel else folder) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        path = f"{rel}{entry.name}"
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            raise OSError(40, "a symlink", path)
        if stat.S_ISDIR(st.st_mode):
            _read_tree(folder, path + "/", out)
        elif stat.S_ISREG(st.st_mode):
            out.append((path, stat.S_IMODE(st.st_mode), read_project_file(os.path.join(folder, path))))
        if len(out) > MAX_FILES or sum(len(d) for _, _, d in out) > MAX_BYTES:
            raise OSError(27, "too many files or bytes for a feature", path)
    return out


def _ordered(features: list[Feature], override: list[str], out: Features) -> list[Feature]:
    """Features in install order: installsAfter / dependsOn first, then the file's order; override wins."""
    by_id = {f.id: f for f in features}
    done, order = set(), []

    def visit(f: Feature, path: frozenset[str]) -> None:
        if f.id in done:
            return
        if f.id in path:
            out.refused.append((f.ref, "its installsAfter / dependsOn make a cycle"))
            return
        for dep in [*f.depends_on, *f.installs_after]:
            key = _dep_id(dep)
            if key in by_id and by_id[key] is not f:
                visit(by_id[key], path | {f.id})
        if f.id not in done:
            done.add(f.id)
            order.append(f)

    for f in features:
        visit(f, frozenset())
    for f in features:
        missing = [d for d in f.depends_on if _dep_id(d) not in by_id]
        if missing and (f.oci is None or f.digest is not None):  # a registry feature's are known once resolved
            out.refused.append((f.ref, f"dependsOn {', '.join(map(_printable, missing))}, which is not a feature "
                                       "here"))
            order = [g for g in order if g is not f]
    if override:
        rank = {}
        for i, ref in enumerate(override):
            rank[ref] = i
        first = [f for f in order if f.keys() & rank.keys()]
        first.sort(key=lambda f: min(rank[k] for k in f.keys() & rank.keys()))
        order = first + [f for f in order if f not in first]
    return order


_SAFE_ID = Pattern(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")


def _dep_id(dep: str) -> str:
    """The feature id an installsAfter / dependsOn entry names: its last path component, without a version."""
    return dep.rsplit("/", 1)[-1].split("@")[0].split(":")[0]
