"""Lockdown: the narrowed form of a config for repositories you do not trust.

No credentials, env pass-through, mounts, ports or capabilities from the
config, network "allow" with only the agents' APIs, an ephemeral home and
the project behind a copy-on-write overlay. See docs/security.md.
"""

from __future__ import annotations

import os

from agentsh.base import layout, paths
from agentsh.base.digest import sha256_hex
from agentsh.policy.rules import ALLOW, LOCKDOWN_SETS

TYPE_CHECKING = False  # typing stays off the hot paths
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

    from agentsh.host.project import Project
    from agentsh.policy.values import Config


def lockdown(cfg: Config, agent_sets: Sequence[str] | None = None) -> Config:
    """The locked-down form of a config, for repos you do not trust.

    No credentials, env pass-through, extra mounts, ports or capabilities from the
    config (what the command line names still passes); network "allow" with
    only the agent's API (`agent_sets`: its profile's set names; default the
    agents' APIs); an ephemeral home; the project behind a copy-on-write
    layer (sandbox.spec reads `lockdown`). `ab-net allow` additions, being
    explicit per-project commands, still apply.
    """
    sets = LOCKDOWN_SETS if agent_sets is None else agent_sets
    # The devcontainer goes too: its mounts, ports, env, user and build are what lockdown refuses.
    return cfg.replace(dict(credentials=[], env=[], mounts=[], cap_add=[], caches=[], ports=[], lockdown=True,
                            network={**cfg["network"], "mode": ALLOW, "allow": [f"@{s}" for s in sets]}),
                       devcontainer=None)


def is_locked(cfg: Mapping[str, Any]) -> bool:
    return bool(cfg.get("lockdown"))


def overlay_dirs(project: Project) -> tuple[str, str]:
    """Host dirs holding a locked-down sandbox's writes to the project (upper) and overlay scratch (work)."""
    base = os.path.join(paths.data_dir(), layout.lockdown_dir(project.sandbox))
    return os.path.join(base, "upper"), os.path.join(base, "work")


def project_mount_suffix(project: Project, cfg: Mapping[str, Any]) -> str:
    """Mount options for the project: a copy-on-write overlay in lockdown, else none."""
    if not is_locked(cfg):
        return ""
    upper, work = overlay_dirs(project)
    return f":O,upperdir={upper},workdir={work}"


OVERLAY_VOLUME = "-lockdown-"  # Docker: the volume holding the overlay is SANDBOX-lockdown-HASH


def overlay_volume(project: Project) -> str:
    """The name of the volume that mounts the overlay where the engine has no `:O` (Docker).

    Named after its dirs too, so a volume made for other dirs (another data dir) is never reused.
    """
    upper, work = overlay_dirs(project)
    return f"{project.sandbox}{OVERLAY_VOLUME}{sha256_hex(f'{project.root}:{upper}:{work}')[:8]}"


def prepare_host(project: Project, cfg: Mapping[str, Any]) -> None:
    """Create the overlay dirs a locked-down sandbox needs (nothing otherwise)."""
    if is_locked(cfg):
        for d in overlay_dirs(project):
            os.makedirs(d, mode=0o700, exist_ok=True)
