"""Dev Container features a devcontainer.json names: local ones read and ordered, the rest refused.

A local feature is a folder beside the devcontainer.json (`"./NAME"`, inside
`.devcontainer`) holding `devcontainer-feature.json` and `install.sh`. Its
files are read here once, without following a symlink, and kept: trust
hashes exactly these bytes (trust.cover) and the build layer is made from
them (sandbox.features), so nothing written in between reaches a build.

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

from agentsh.base.errors import ConfigError
from agentsh.base.safefs import read_project_file
from agentsh.policy.devcontainer_vars import _inside, _printable, _scalar

TYPE_CHECKING = False  # typing stays off the hot paths
if TYPE_CHECKING:
    from typing import Protocol

    from agentsh.policy.devcontainer_vars import Resolver

    class Devcontainer(Protocol):
        """What this module reads of a policy.devcontainer.Devcontainer (named here, not imported: no cycle)."""

        dir: str
        path: str
        root: str
        vars: Resolver
        feature_order: list[str]

MAX_FILES = 200
MAX_BYTES = 8 << 20
OCI = "OCI features (from a registry) are not fetched by agentsh yet; install the tool in a Dockerfile"


def option_env_name(option: str) -> str:
    """The spec's environment name of a feature option."""

    name = re.sub(r"[^\w]", "_", option, flags=re.ASCII)
    name = re.sub(r"^[\d_]+", "_", name)
    return name.upper()


class Feature:
    """One local feature: where it is, its metadata, its files' bytes, its options as env."""

    def __init__(self, ref: str, folder: str, meta: dict, files: list[tuple[str, int, bytes]],
                 options: dict[str, str]) -> None:
        self.ref = ref
        self.folder = folder
        self.meta = meta
        self.id = meta.get("id") if isinstance(meta.get("id"), str) else os.path.basename(folder)
        self.files = files  # [(relative path, mode, bytes)]
        self.options = options  # {ENV_NAME: value}
        self.installs_after = _ids(meta.get("installsAfter"))
        self.depends_on = _ids(meta.get("dependsOn"))
        env = meta.get("containerEnv")
        self.container_env = {k: str(v) for k, v in env.items()} if isinstance(env, dict) else {}

    def plan(self) -> dict:
        return {"id": self.id, "source": self.ref, "folder": self.folder, "options": dict(self.options),
                "files": len(self.files)}


def _ids(value: object) -> list[str]:
    if isinstance(value, dict):
        return list(value)
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


class Features:
    def __init__(self) -> None:
        self.local, self.refused = [], []


def read_features(dev: Devcontainer, value: dict) -> Features:
    """The features of a Devcontainer (`dev`): local ones read and ordered, others refused with why."""
    out = Features()
    for ref, options in value.items():
        if not isinstance(ref, str):
            continue
        if ref.startswith(("./", "../")):
            feature = _local(dev, ref, options)
            if isinstance(feature, str):
                out.refused.append((ref, feature))
            else:
                out.local.append(feature)
        elif ref.startswith(("http://", "https://")):
            out.refused.append((ref, "features from a URL are not fetched by agentsh; install the tool in a "
                                     "Dockerfile"))
        elif "/" not in ref:
            out.refused.append((ref, "a short feature id (deprecated); install the tool in a Dockerfile"))
        else:
            out.refused.append((ref, OCI))
    out.local = _ordered(out.local, dev.feature_order if hasattr(dev, "feature_order") else [], out)
    return out


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
            key = dep.rsplit("/", 1)[-1].split(":")[0]
            if key in by_id and by_id[key] is not f:
                visit(by_id[key], path | {f.id})
        if f.id not in done:
            done.add(f.id)
            order.append(f)

    for f in features:
        visit(f, frozenset())
    for f in features:
        missing = [d for d in f.depends_on if d.rsplit("/", 1)[-1].split(":")[0] not in by_id]
        if missing:
            out.refused.append((f.ref, f"dependsOn {', '.join(missing)}, which is not a local feature here"))
            order = [g for g in order if g is not f]
    if override:
        rank = {}
        for i, ref in enumerate(override):
            rank[ref] = i
        first = [f for f in order if f.ref in rank or f.id in rank]
        first.sort(key=lambda f: rank.get(f.ref, rank.get(f.id)))
        order = first + [f for f in order if f not in first]
    return order
