"""Which devcontainer.json a project uses: found by stat and listdir alone.

Kept apart from the reader (policy.devcontainer, with its variables,
features and runArgs) because every config load asks it: a project with no
.agentsh.toml is anchored by its devcontainer.json, if it has one.
"""

from __future__ import annotations

import os

TOP = ".devcontainer"
LOCATIONS = (".devcontainer/devcontainer.json", ".devcontainer.json")


def configs(project_root: str) -> list[tuple[str, str]]:
    """Every devcontainer config of a project as (name, path), in the spec's order.

    "" names `.devcontainer/devcontainer.json` or `.devcontainer.json`; a
    folder name, `.devcontainer/NAME/devcontainer.json`. A `.devcontainer`
    (or a NAME folder) that is a symlink is not looked into: it could point
    anywhere on the host. (The file itself is opened without following one.)
    """
    out = []
    top = os.path.join(project_root, TOP)
    top_ok = os.path.isdir(top) and not os.path.islink(top)
    for rel in LOCATIONS:
        path = os.path.join(project_root, rel)
        if (top_ok or rel == ".devcontainer.json") and os.path.isfile(path):
            out.append(("", path))
            break
    if top_ok:
        try:
            names = sorted(os.listdir(top))
        except OSError:
            names = []
        for name in names:
            folder = os.path.join(top, name)
            path = os.path.join(folder, "devcontainer.json")
            if not os.path.islink(folder) and os.path.isdir(folder) and os.path.isfile(path):
                out.append((name, path))
    return out

def find(project_root: str, choice: str | None = None) -> str | None:
    """The devcontainer.json a project uses, or None.

    `choice` (flag --devcontainer, config `devcontainer`) names a folder
    under .devcontainer ("." the top one). Without it: the top one, else the
    only named one; several named ones and no choice: None (`ambiguity` says why).
    """
    top = os.path.join(project_root, TOP)
    if not choice or choice == ".":
        for rel in LOCATIONS:
            path = os.path.join(project_root, rel)
            if os.path.isfile(path) and not os.path.islink(os.path.dirname(path)):
                return path
        if choice or not os.path.isdir(top):
            return None
    found = configs(project_root)
    if choice:
        return next((p for n, p in found if n == choice), None)
    named = [p for n, p in found if n]
    return named[0] if len(named) == 1 else None

def ambiguity(project_root: str, choice: str | None = None) -> str | None:
    """A notice when the choice finds no config, or several are there and none is chosen; else None."""
    if choice and choice != "." and find(project_root, choice) is None:
        names = [n or "." for n, _ in configs(project_root)]
        return (f"no devcontainer config named {choice!r} in {project_root}"
                + (f" (there are: {', '.join(names)})" if names else "") + "; none applied")
    if choice or find(project_root) is not None or not os.path.isdir(os.path.join(project_root, TOP)):
        return None
    named = [n for n, _ in configs(project_root) if n]
    if len(named) > 1:
        return (f"{project_root} has several devcontainer configs ({', '.join(named)}); none applied: "
                "choose one with --devcontainer NAME or config devcontainer = \"NAME\"")
    return None
