"""Opt-in download caches shared by every project's sandbox.

`caches = ["npm", "pip"]` in the user config mounts one named volume per
tool, shared across projects, so a package fetched in one sandbox is not
fetched again in the next. Each volume is mounted under CACHE_ROOT (not in
the per-project home volume) and the tool is pointed at it with its own
environment variable. Only the user config can ask for them: a project file
must not make other projects' sandboxes share its downloads. Sharing has a
cost worth knowing: what one project's sandbox puts in the cache, another
reads (see docs/config.md).
"""

from __future__ import annotations

from agentsh.base.errors import ConfigError

TYPE_CHECKING = False  # typing stays off the hot paths
if TYPE_CHECKING:
    from collections.abc import Iterable

CACHE_ROOT = "/var/cache/agentsh"
VOLUME_PREFIX = "agentsh-cache-"
# name -> {variable: path under the cache's mount point}
CACHES = {
    "pip": {"PIP_CACHE_DIR": ""},
    "npm": {"npm_config_cache": ""},
    "cargo": {"CARGO_HOME": ""},
    "go": {"GOMODCACHE": "/mod", "GOCACHE": "/build"},
}


def check(value: object, where: str) -> list[str]:
    """config.SCHEMA checker for `caches`."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} must be a list of cache names ({', '.join(CACHES)})")
    for v in value:
        if v not in CACHES:
            raise ConfigError(f"{where}: {v!r} is not a cache agentsh knows", f"choose from: {', '.join(CACHES)}")
    return list(value)


def volume(name: str) -> str:
    return VOLUME_PREFIX + name


def spec_additions(names: Iterable[str]) -> tuple[list[str], dict[str, str]]:
    """(run arguments, {env name: value}) for the caches asked for."""
    args, env = [], {}
    for name in sorted(set(names)):
        mount = f"{CACHE_ROOT}/{name}"
        args += ["-v", f"{volume(name)}:{mount}"]
        env.update({var: mount + sub for var, sub in CACHES[name].items()})
    return args, env
