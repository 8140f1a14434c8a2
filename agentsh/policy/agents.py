"""Agent profiles: what `ab-agent NAME` runs, with which flags, credentials and state.

A profile says how to start an agent CLI in a sandbox:

- `command`: the program and its fixed leading arguments;
- `args`: default arguments added on every run;
- `permissive_args`: the flags that skip the agent's own permission prompts.
  The sandbox is the safety net, so they are on by default; `--safe` drops them;
- `continue_args` and `sessions`: how to continue the previous conversation,
  and the files (shell globs, in the sandbox) that show there is one. A CLI
  like `claude --continue` fails when there is nothing to continue, so the
  flags are added only when one of those files exists, only when no agent
  arguments were given (arguments mean a specific invocation), and never
  with `--new`;
- `credentials`: names in the credential cache the agent can use (any one is
  enough) and `imports`: the `ab-creds import` sources that fill them;
- `login_files` and `login_env`: what, inside the sandbox, shows the agent can
  log in (a delivered credential, or a login done inside);
- `state`: where the agent keeps its state. All of it is under the sandbox
  home, a per-project volume that survives `ab-down --rm`; the host's own
  agent home is never mounted;
- `network`: names of destination sets (agentsh.policy.netsets) the agent talks to;
- `install`: how to install it when the image lacks it;
- `instructions`: where it reads user-level instructions (agentsh.sandbox.instructions).

Users add or override profiles with `[agents.NAME]` tables in the config;
the keys are the ones above.
"""

from __future__ import annotations

import re

from agentsh.base.errors import ConfigError, UsageError
from agentsh.base.layout import INSTRUCTIONS_PATH as SANDBOX_PATH
from agentsh.policy.netsets import SETS
from agentsh.policy.shell import shell_command
from agentsh.policy.values import ENV_NAME

TYPE_CHECKING = False  # typing stays off the hot paths
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from typing import Any

    from agentsh.policy.values import Config

# The shell profile's command comes from config `shell` (agentsh.policy.shell.shell_command).
SHELL = "shell"
KEYS = {
    "command": "list", "args": "list", "permissive_args": "list", "continue_args": "list",
    "sessions": "list", "credentials": "list", "imports": "list", "login_files": "list", "login_env": "list",
    "state": "list", "network": "list", "install": "str", "instructions": "str", "env": "table",
}
_ANY_KEY_IMPORTS = ["claude", "codex", "gemini"]
_API_KEYS = ["ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY"]

BUILTIN = {
    "claude": {
        "command": ["claude"],
        "permissive_args": ["--dangerously-skip-permissions"],
        "continue_args": ["--continue"],
        # Claude Code keys conversations by the working directory, every
        # character but letters and digits turned into '-'.
        "sessions": ["$HOME/.claude/projects/$(pwd | sed 's/[^A-Za-z0-9]/-/g')/*.jsonl"],
        "credentials": ["CLAUDE_CREDENTIALS", "ANTHROPIC_API_KEY"],
        "imports": ["claude"],
        "login_files": ["~/.claude/.credentials.json"],
        "login_env": ["ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN"],
        "state": ["~/.claude", "~/.claude.json"],
        "network": ["anthropic"],
        "install": "npm install -g @anthropic-ai/claude-code",
        "instructions": "~/.claude/CLAUDE.md",
        # Claude Code refuses --dangerously-skip-permissions as uid 0 unless
        # told it is in a sandbox (rootful engines run the sandbox as root).
        "env": {"IS_SANDBOX": "1"},
    },
    "codex": {
        "command": ["codex"],
        "permissive_args": ["--dangerously-bypass-approvals-and-sandbox"],
        "continue_args": ["resume", "--last"],
        "sessions": ["$HOME/.codex/sessions/*/*/*/*.jsonl"],
        "credentials": ["CODEX_AUTH", "OPENAI_API_KEY"],
        "imports": ["codex"],
        "login_files": ["~/.codex/auth.json"],
        "login_env": ["OPENAI_API_KEY"],
        "state": ["~/.codex"],
        "network": ["openai"],
        "install": "npm install -g @openai/codex",
        "instructions": "~/.codex/AGENTS.md",
    },
    "gemini": {
        "command": ["gemini"],
        "permissive_args": ["--yolo"],
        "continue_args": ["--resume", "latest"],
        "sessions": ["$HOME/.gemini/tmp/*/chats/*.json"],
        "credentials": ["GEMINI_API_KEY", "GEMINI_OAUTH"],
        "imports": ["gemini"],
        "login_files": ["~/.gemini/oauth_creds.json"],
        "login_env": ["GEMINI_API_KEY", "GOOGLE_API_KEY"],
        "state": ["~/.gemini"],
        "network": ["google"],
        "install": "npm install -g @google/gemini-cli",
        "instructions": "~/.gemini/GEMINI.md",
    },
    "opencode": {
        "command": ["opencode"],
        "permissive_args": ["--auto"],
        "continue_args": ["--continue"],
        "sessions": ["$HOME/.local/share/opencode/opencode.db", "$HOME/.local/share/opencode/storage/session/*"],
        "credentials": ["OPENCODE_AUTH", *_API_KEYS],
        "imports": ["opencode", *_ANY_KEY_IMPORTS],
        "login_files": ["~/.local/share/opencode/auth.json"],
        "login_env": _API_KEYS,
        "state": ["~/.local/share/opencode", "~/.config/opencode"],
        "network": ["anthropic", "openai", "google"],
        "install": "npm install -g opencode-ai",
        "instructions": "~/.config/opencode/AGENTS.md",
    },
    "aider": {
        "command": ["aider"],
        "permissive_args": ["--yes-always"],
        "continue_args": ["--restore-chat-history"],
        "sessions": [".aider.chat.history.md"],
        "credentials": _API_KEYS,
        "imports": _ANY_KEY_IMPORTS,
        "login_env": _API_KEYS + ["OPENROUTER_API_KEY", "DEEPSEEK_API_KEY"],
        "state": ["~/.aider", "~/.local"],
        "network": ["anthropic", "openai", "google", "registries"],
        # The default image has Python but not aider; ~/.local persists in the
        # home volume, so installing it once per project is enough.
        "install": "pipx install aider-chat, or: python3 -m pip install --user --break-system-packages aider-chat",
    },
    SHELL: {
        "command": [],
        "state": ["~"],
    },
}


class Profile:
    """A resolved profile: every key filled in."""

    def __init__(self, name: str, data: dict) -> None:
        self.name = name
        for key, kind in KEYS.items():
            default = {} if kind == "table" else "" if kind == "str" else []
            value = data.get(key, default)
            setattr(self, key, dict(value) if kind == "table" else list(value) if kind == "list" else value)

    def as_dict(self) -> dict:
        return {"name": self.name, **{key: getattr(self, key) for key in KEYS}}

    @property
    def program(self) -> str | None:
        return self.command[0] if self.command else None

    def missing_credentials_message(self) -> str:
        """The one line that says how to give the agent credentials."""
        if not self.imports:
            return f"{self.name} has no credentials in the sandbox; store them with 'ab-creds set NAME'"
        more = f" (or: {', '.join(self.imports[1:])})" if self.imports[1:] else ""
        return (f"{self.name} has no credentials in the sandbox: run 'ab-creds import {self.imports[0]}'{more} "
                f"on the host, or log in inside the sandbox")


def names(cfg: Mapping[str, Any] | None = None) -> list[str]:
    """Built-in and configured profile names, built-ins first."""
    configured = (cfg or {}).get("agents") or {}
    return list(BUILTIN) + sorted(n for n in configured if n not in BUILTIN)


def profile(name: str, cfg: Mapping[str, Any] | None = None) -> Profile:
    """The profile NAME: the built-in one with the config's `[agents.NAME]` over it."""
    override = ((cfg or {}).get("agents") or {}).get(name)
    if name not in BUILTIN and override is None:
        raise UsageError(f"no agent profile named {name!r}",
                         f"choose one of: {', '.join(names(cfg))}, or define [agents.{name}] in config.toml")
    data = {**BUILTIN.get(name, {}), **(override or {})}
    if name != SHELL and not data.get("command"):
        raise ConfigError(f"agent profile {name!r} has no command", f"set [agents.{name}] command = [\"PROGRAM\"]")
    return Profile(name, data)


def check_overrides(value: object, where: str) -> dict:
    """config.SCHEMA checker for `[agents.NAME]` tables: every error names the file and the key."""
    def at(*keys: str) -> str:
        return where[:-1] + "".join("." + k for k in keys) + "'"

    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a table of [agents.NAME] tables")
    for name, table in value.items():
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,31}", name):
            raise ConfigError(f"{at(name)}: {name!r} is not a profile name (lowercase letters, digits, '-', '_')")
        if not isinstance(table, dict):
            raise ConfigError(f"{at(name)} must be a table ([agents.{name}])")
        for key, item in table.items():
            kind = KEYS.get(key)
            if kind is None:
                raise ConfigError(f"{at(name, key)}: unknown key", f"profile keys are: {', '.join(KEYS)}")
            if kind == "list" and not (isinstance(item, list) and all(isinstance(v, str) for v in item)):
                raise ConfigError(f"{at(name, key)} must be a list of strings")
            if kind == "str" and not isinstance(item, str):
                raise ConfigError(f"{at(name, key)} must be a string")
            if kind == "table" and not (isinstance(item, dict) and all(
                    ENV_NAME.match(k) and isinstance(v, str) for k, v in item.items())):
                raise ConfigError(f"{at(name, key)} must be a table of NAME = \"value\" strings")
        if "network" in table:
            unknown = [s for s in table["network"] if s not in SETS]
            if unknown:
                raise ConfigError(f"{at(name, 'network')}: unknown destination set {unknown[0]!r}",
                                  f"choose from: {', '.join(SETS)}")
        if "command" in table and not table["command"]:
            raise ConfigError(f"{at(name, 'command')} must not be empty")
    return value


# -- the command that runs inside ---------------------------------------------------


def _q(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _words(argv: Iterable[str]) -> str:
    return " ".join(_q(a) for a in argv)


def _home_path(path: str) -> str:
    """'~/x' as a shell word that expands to the sandbox home's x."""
    return '"$HOME"/' + _q(path[2:]) if path.startswith("~/") else _q(path)


def wanted_args(prof: Profile, agent_args: Sequence[str], safe: bool = False) -> list[str]:
    """The arguments after the command: default args, permissive flags (unless safe), the user's."""
    return [*prof.args, *([] if safe else prof.permissive_args), *agent_args]


def launch_script(prof: Profile, agent_args: Sequence[str], safe: bool = False, new: bool = False,
                  instructions_targets: Iterable[str] = ()) -> str:
    """The sh script that starts the agent inside the sandbox (run as `sh -c SCRIPT`).

    One exec does everything that needs a look inside: link the instructions
    file where agents read it (never over a file of the user's), say in one
    line when there is no credential, give the install hint when the program
    is missing, and continue the last conversation when there is one.
    """
    program = prof.program
    lines = ["_ab_any() { for f in \"$@\"; do [ -e \"$f\" ] && return 0; done; return 1; }"]
    if instructions_targets:
        for target in instructions_targets:
            t = _home_path(target)
            lines.append(f"if [ -r {SANDBOX_PATH} ] && {{ [ -L {t} ] || [ ! -e {t} ]; }}; then "
                         f"mkdir -p \"$(dirname {t})\" && ln -sfn {SANDBOX_PATH} {t}; fi 2>/dev/null")
    hint = f"; install it: {prof.install}" if prof.install else "; use an image that has it"
    lines.append(f"command -v {_q(program)} >/dev/null 2>&1 || "
                 f"{{ echo {_q(f'ab-agent: {program} is not installed in this sandbox{hint}')} >&2; exit 127; }}")
    checks = [f"[ -e {_home_path(f)} ]" for f in prof.login_files]
    checks += [f'[ -n "${{{v}:-}}" ]' for v in prof.login_env]
    if checks:
        message = "agentsh: " + prof.missing_credentials_message()
        lines.append(f"if ! {{ {' || '.join(checks)}; }}; then echo {_q(message)} >&2; fi")
    rest = _words(wanted_args(prof, agent_args, safe))
    if prof.continue_args and prof.sessions and not new and not agent_args:
        # Globs stay unquoted so the shell expands them (they are profile data, not user input).
        lines.append(f"if _ab_any {' '.join(prof.sessions)}; then exec {_words(prof.command)} "
                     f"{_words(prof.continue_args)} {rest}; fi")
    lines.append(f"exec {_words(prof.command)} {rest}")
    return "\n".join(lines) + "\n"


def command(prof: Profile, cfg: Mapping[str, Any], agent_args: list[str], safe: bool = False,
            new: bool = False, instructions_targets: Iterable[str] = ()) -> list[str]:
    """argv to exec in the sandbox for a profile."""
    if prof.name == SHELL and not prof.command:
        return shell_command(cfg.get("shell")) if not agent_args else agent_args
    return ["sh", "-c", launch_script(prof, agent_args, safe, new, instructions_targets), f"ab-agent-{prof.name}"]


def with_credentials(cfg: Config, names_: Iterable[str]) -> Config:
    """The config with `names_` added to the credentials this run receives.

    The profile's credentials reach the sandbox for this agent's runs without
    a lasting grant; `ab-creds grant` is still how plain `ab-exec` gets them.
    """
    return cfg.replace({"credentials": list(dict.fromkeys([*cfg.get("credentials", []), *names_]))})
