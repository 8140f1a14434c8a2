"""Importers for the credentials agents commonly need, from where the host keeps them.

Each importer returns a list of Found credentials (name, where it appears in
the sandbox, where it came from, the value or the command that makes it);
the caller seals and stores them. OAuth token files that the tools refresh
themselves are imported with write-back, so a refresh in one sandbox reaches
the others.
"""

from __future__ import annotations

import configparser
import os
import subprocess

from agentsh.base.errors import AgentshError
from agentsh.creds import oauth
from agentsh.creds import vault as creds
from agentsh.creds.flags import sandbox_path

TYPE_CHECKING = False  # typing stays off the paths that import this module
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

SOURCES = ("claude", "codex", "gemini", "opencode", "gh", "git", "npm", "aws")
# Where each API key may be sent, and in which header (the egress proxy adds it there; creds.swap).
BINDINGS = {
    "ANTHROPIC_API_KEY": (("api.anthropic.com",), "x-api-key"),
    "OPENAI_API_KEY": (("api.openai.com",), "authorization"),
    "GEMINI_API_KEY": (("generativelanguage.googleapis.com",), "x-goog-api-key"),
    "GOOGLE_API_KEY": (("generativelanguage.googleapis.com",), "x-goog-api-key"),
    "GH_TOKEN": (("api.github.com", "github.com"), "authorization"),
    "NPM_RC": (("registry.npmjs.org",), "authorization"),
}


class Found:
    """One credential an importer found on the host."""

    def __init__(self, name: str, type_: str, target: str, value: bytes, origin: str, writeback: bool = False,
                 source: str = creds.VALUE, fmt: str = creds.RAW, bind_hosts: Iterable[str] = (),
                 bind_header: str | None = None) -> None:
        self.name, self.type, self.target, self.value = name, type_, target, value
        self.origin, self.writeback, self.source, self.format = origin, writeback, source, fmt
        self.bind_hosts, self.bind_header = tuple(bind_hosts), bind_header

    def appears_as(self) -> str:
        return f"${self.target}" if self.type == creds.ENV else self.target


def _home(*parts: str) -> str:
    return os.path.join(os.path.expanduser("~"), *parts)


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _env(name: str) -> tuple[str, bytes] | None:
    value = os.environ.get(name, "").strip()
    return (name, value.encode()) if value else None


def _token_file(name: str, host_path: str, sandbox_rel: str, fmt: str = creds.RAW) -> Found | None:
    """A tool's OAuth token file: imported with write-back (the tool refreshes it).

    The agents' login files (`fmt`: creds.oauth's formats) are bound to
    their provider's hosts (opencode's to the hosts of the providers it
    holds): behind the egress proxy the sandbox gets their tokens as
    placeholders.
    """
    data = _read(host_path)
    if not data or not data.strip():
        return None
    hosts = oauth.HOSTS.get(fmt, ())
    if fmt == oauth.OPENCODE:
        held = dict.fromkeys(slot.split(oauth.SEP)[0] for slot in oauth.tokens(fmt, data))  # in the file's order
        hosts = tuple(dict.fromkeys(h for p in held if p in oauth.PROVIDERS for h in oauth.PROVIDERS[p][0])) or hosts
    return Found(name, creds.FILE, sandbox_path("~/" + sandbox_rel), data, host_path, writeback=True, fmt=fmt,
                 bind_hosts=hosts)


def _bound(found: Found) -> Found:
    hosts, header = BINDINGS.get(found.name, ((), None))
    found.bind_hosts, found.bind_header = hosts, header
    return found


def _api_key(var: str, sandbox_var: str | None = None) -> Found | None:
    found = _env(var)
    if not found:
        return None
    return _bound(Found(sandbox_var or var, creds.ENV, sandbox_var or var, found[1], f"${var}"))


def _run(argv: list[str]) -> bytes | None:
    """stdout of a host tool (bytes), or None when it is missing or fails."""
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=creds.COMMAND_TIMEOUT, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def claude() -> list[Found]:
    return [f for f in (_token_file("CLAUDE_CREDENTIALS", _home(".claude", ".credentials.json"),
                                    ".claude/.credentials.json", oauth.CLAUDE),
                        _api_key("ANTHROPIC_API_KEY")) if f]


def codex() -> list[Found]:
    return [f for f in (_token_file("CODEX_AUTH", _home(".codex", "auth.json"), ".codex/auth.json", oauth.CODEX),
                        _api_key("OPENAI_API_KEY")) if f]


def gemini() -> list[Found]:
    return [f for f in (_api_key("GEMINI_API_KEY"), _api_key("GOOGLE_API_KEY"),
                        _token_file("GEMINI_OAUTH", _home(".gemini", "oauth_creds.json"), ".gemini/oauth_creds.json",
                                    oauth.GEMINI))
            if f]


def opencode() -> list[Found]:
    """opencode's logins and API keys, one entry per provider (it keeps them under $XDG_DATA_HOME)."""
    data_home = os.environ.get("XDG_DATA_HOME") or _home(".local", "share")
    found = _token_file("OPENCODE_AUTH", os.path.join(data_home, "opencode", "auth.json"),
                        ".local/share/opencode/auth.json", oauth.OPENCODE)
    return [found] if found else []


def gh() -> list[Found]:
    for var in ("GH_TOKEN", "GITHUB_TOKEN"):
        found = _api_key(var, "GH_TOKEN")
        if found:
            return [found]
    token = _run(["gh", "auth", "token"])
    if token and token.strip():
        return [_bound(Found("GH_TOKEN", creds.ENV, "GH_TOKEN", token.strip(), "gh auth token"))]
    return []


def git() -> list[Found]:
    """user.name and user.email as a gitconfig (git also reads ~/.config/git/config,
    so the sandbox's own ~/.gitconfig stays the agent's)."""
    lines = []
    for key in ("name", "email"):
        value = _run(["git", "config", "--global", f"user.{key}"])
        if value and value.strip():
            lines.append(f"\t{key} = {value.decode('utf-8', 'replace').strip()}")
    if not lines:
        return []
    data = ("[user]\n" + "\n".join(lines) + "\n").encode()
    return [Found("GIT_IDENTITY", creds.FILE, sandbox_path("~/.config/git/config"), data,
                  "git config --global user.name/user.email")]


def npm() -> list[Found]:
    """The auth lines of ~/.npmrc (tokens, and the registries they belong to)."""
    path = os.environ.get("NPM_CONFIG_USERCONFIG") or _home(".npmrc")
    data = _read(path)
    if not data:
        return []
    keep = [line for line in data.decode("utf-8", "replace").splitlines()
            if "_authToken" in line or "_auth" in line or line.strip().startswith(("registry", "@"))]
    if not any("_auth" in line for line in keep):
        return []
    return [_bound(Found("NPM_RC", creds.FILE, sandbox_path("~/.npmrc"), ("\n".join(keep) + "\n").encode(), path))]


def aws() -> list[Found]:
    """Static keys, or a profile's credential_process (run on the host at each injection),
    as ~/.aws/credentials for the sandbox's default profile."""
    target = sandbox_path("~/.aws/credentials")
    if os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
        return [Found("AWS_CREDENTIALS", creds.FILE, target, _aws_file(os.environ, "AWS_ACCESS_KEY_ID",
                      "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"), "$AWS_ACCESS_KEY_ID/$AWS_SECRET_ACCESS_KEY")]
    profile = os.environ.get("AWS_PROFILE", "default")
    files = [(os.environ.get("AWS_SHARED_CREDENTIALS_FILE") or _home(".aws", "credentials"), profile),
             (os.environ.get("AWS_CONFIG_FILE") or _home(".aws", "config"),
              profile if profile == "default" else f"profile {profile}")]
    for path, section in files:
        parser = configparser.RawConfigParser()
        try:
            parser.read(path)
        except configparser.Error as e:
            raise AgentshError(f"cannot parse {path}: {str(e).splitlines()[0]}") from None
        if not parser.has_section(section):
            continue
        entries = dict(parser.items(section))
        if entries.get("aws_access_key_id") and entries.get("aws_secret_access_key"):
            return [Found("AWS_CREDENTIALS", creds.FILE, target, _aws_file(entries, "aws_access_key_id",
                          "aws_secret_access_key", "aws_session_token"), f"{path} [{section}]")]
        if entries.get("credential_process"):
            return [Found("AWS_CREDENTIALS", creds.FILE, target, entries["credential_process"].encode(),
                          f"{path} [{section}] credential_process (run at each injection)",
                          source=creds.COMMAND, fmt=creds.AWS_PROCESS)]
    return []


def _aws_file(values: Mapping[str, str], key_id: str, secret: str, token: str) -> bytes:
    lines = ["[default]", f"aws_access_key_id = {values[key_id]}", f"aws_secret_access_key = {values[secret]}"]
    if values.get(token):
        lines.append(f"aws_session_token = {values[token]}")
    return ("\n".join(lines) + "\n").encode()


WHERE = {
    "claude": "~/.claude/.credentials.json or ANTHROPIC_API_KEY",
    "codex": "~/.codex/auth.json or OPENAI_API_KEY",
    "gemini": "GEMINI_API_KEY, GOOGLE_API_KEY or ~/.gemini/oauth_creds.json",
    "opencode": "~/.local/share/opencode/auth.json (under $XDG_DATA_HOME when set)",
    "gh": "GH_TOKEN, GITHUB_TOKEN or 'gh auth token'",
    "git": "git config --global user.name / user.email",
    "npm": "an _authToken line in ~/.npmrc",
    "aws": "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or the profile in ~/.aws/credentials or ~/.aws/config",
}


def find(source: str) -> list[Found]:
    """What the host holds for a source; a clear error when it holds nothing."""
    if source not in SOURCES:
        raise AgentshError(f"unknown import source {source!r}", f"choose one of: {', '.join(SOURCES)}", code=2)
    found = globals()[source]()
    if not found:
        raise AgentshError(f"nothing to import for {source}: looked for {WHERE[source]}",
                           f"sign in with {source} on this host first, or store a value with 'ab-creds set'")
    return found
