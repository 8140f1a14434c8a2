"""The user's own agent instructions, placed where each agent reads them.

An optional `AGENTS.md` in the user config dir holds instructions for every
agent in every project (how you like commits, which tools to prefer...). It
is mounted read-only at SANDBOX_PATH, and `ab-agent` links it into the
sandbox home where each agent looks for user-level instructions
(~/.claude/CLAUDE.md, ~/.gemini/GEMINI.md, ~/.codex/AGENTS.md, ...), so
nothing is written into the project and a file the user keeps in the
sandbox home is never replaced.
"""

import os

from agentsh.base import layout, paths

FILE_NAME = layout.INSTRUCTIONS_FILE
from agentsh.base.layout import INSTRUCTIONS_PATH as SANDBOX_PATH  # noqa: E402


def host_file():
    """The user's instructions file, or None when there is none."""
    path = os.path.join(paths.config_dir(), FILE_NAME)
    return os.path.realpath(path) if os.path.isfile(path) else None


def mount_args():
    """Run arguments mounting the file read-only (none when it is absent)."""
    path = host_file()
    if path is None or ":" in path:
        return []
    return ["-v", f"{path}:{SANDBOX_PATH}:ro"]


def targets(cfg=None):
    """Where the agents read user-level instructions (paths under ~ in the sandbox)."""
    from agentsh.policy.agents import names, profile  # lazy: only ab-agent asks; ab-up loads this module without it

    found = []
    for name in names(cfg):
        try:
            target = profile(name, cfg).instructions
        except Exception:  # a broken user profile is reported when it is used
            continue
        if target and target.startswith("~/") and target not in found:
            found.append(target)
    return found
