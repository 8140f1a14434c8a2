"""The agents' OAuth token files: placeholders inside, refreshes swapped on the host.

Claude Code keeps its login in ~/.claude/.credentials.json
(`claudeAiOauth.accessToken`, `.refreshToken`, `.expiresAt` in ms), Codex in
~/.codex/auth.json (`tokens.access_token`, `.refresh_token`, `.id_token`,
`last_refresh`). Stored with one of these formats (the importers do) and
delivered in network modes allow and learn, such a file reaches the sandbox
with every token replaced by a placeholder (creds.swap): the access token's
is swapped in the Authorization header, the refresh and id tokens' in request
bodies, toward the credential's bound hosts (the provider's API and token
endpoint). When the agent refreshes, the proxy swaps the refresh token's
placeholder in the request body, takes the new tokens from the endpoint's
JSON answer, seals them into the stored file (refreshed(); the same cache
write-back does for files) and hands the sandbox new placeholders in their
place. After the command, the file the agent wrote is read back with its
placeholders turned back into the values (real_file) before it is sealed.
"""

from __future__ import annotations

import json
import time

from agentsh.creds import swap
from agentsh.creds import vault as creds

TYPE_CHECKING = False  # typing stays off the paths that import this module
if TYPE_CHECKING:
    from collections.abc import Mapping

    from agentsh.base.state import Store

CLAUDE, CODEX = creds.OAUTH_FORMATS
ACCESS, REFRESH, ID = "access", "refresh", "id"
FIELDS = {  # format -> role -> the token's path in the file's JSON
    CLAUDE: {ACCESS: ("claudeAiOauth", "accessToken"), REFRESH: ("claudeAiOauth", "refreshToken")},
    CODEX: {ACCESS: ("tokens", "access_token"), REFRESH: ("tokens", "refresh_token"), ID: ("tokens", "id_token")},
}
HOSTS = {  # the hosts an imported login is bound to: the API and the token endpoint
    CLAUDE: ("api.anthropic.com", "console.anthropic.com", "platform.claude.com", "claude.ai"),
    CODEX: ("auth.openai.com", "chatgpt.com", "api.openai.com"),
}
ANSWER = {ACCESS: "access_token", REFRESH: "refresh_token", ID: "id_token"}  # OAuth 2.0 token response keys
SEP = "#"  # placeholder entries are named CREDENTIAL#role


def is_oauth(fmt: str | None) -> bool:
    return fmt in FIELDS


def where(role: str, name: str, scope: str, fmt: str) -> dict:
    """A role's place (swap.entry): the access token in Authorization, the others in bodies."""
    place = {"header": "authorization"} if role == ACCESS else {"header": None, "body": True}
    return {**place, "oauth": {"credential": name, "scope": scope, "format": fmt, "role": role}}


def _load(data: bytes) -> dict | None:
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def tokens(fmt: str, data: bytes) -> dict[str, str]:
    """{role: token} found in a token file ({} when it is not the JSON the format expects)."""
    doc = _load(data)
    found = {}
    for role, (outer, inner) in FIELDS[fmt].items():
        value = ((doc or {}).get(outer) or {}).get(inner) if isinstance((doc or {}).get(outer), dict) else None
        if isinstance(value, str) and len(value) >= 8:
            found[role] = value
    return found


def replaced(data: bytes, pairs: Mapping[str, str]) -> bytes:
    """The file with each token (a JSON string) replaced by another: byte for byte otherwise."""
    for old, new in pairs.items():
        data = data.replace(json.dumps(old).encode(), json.dumps(new).encode())
    return data


def real_file(fmt: str, data: bytes, entries: Mapping[str, Mapping]) -> bytes:
    """A file read back from the sandbox with the placeholders of `entries` (a swap record) turned into values.

    Only at the format's token paths: a placeholder the agent copied
    anywhere else stays a placeholder, so no value can be planted where the
    next delivery would not replace it (delivery replaces the tokens found
    at those paths). A file that is not the format's JSON is kept as it is.
    """
    doc = _load(data)
    if doc is None:
        return data
    values = {e["placeholder"]: e["value"] for e in entries.values() if e.get("oauth")}
    changed = False
    for outer, inner in FIELDS[fmt].values():
        section = doc.get(outer)
        if isinstance(section, dict) and isinstance(section.get(inner), str) and section[inner] in values:
            section[inner] = values[section[inner]]
            changed = True
    return (json.dumps(doc, indent=2) + "\n").encode() if changed else data


def answered(fmt: str, data: bytes, answer: Mapping, now: float | None = None) -> bytes:
    """The token file after a refresh: the new tokens (and expiry) of a token endpoint's answer put in."""
    now = time.time() if now is None else now
    doc = _load(data) or {}
    for role, (outer, inner) in FIELDS[fmt].items():
        value = answer.get(ANSWER[role])
        if isinstance(value, str) and value:
            section = doc.setdefault(outer, {})
            if isinstance(section, dict):
                section[inner] = value
    if fmt == CLAUDE and isinstance(answer.get("expires_in"), (int, float)) and isinstance(doc.get("claudeAiOauth"),
                                                                                             dict):
        doc["claudeAiOauth"]["expiresAt"] = int((now + answer["expires_in"]) * 1000)
    if fmt == CODEX:
        doc["last_refresh"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    return (json.dumps(doc, indent=2) + "\n").encode()


def refreshed(store: Store, sandbox: str, key: bytes, meta: Mapping, answer: Mapping) -> dict[str, str]:
    """A token endpoint answered a refresh made with `meta`'s credential: seal, re-placeholder.

    `meta` is a placeholder entry's "oauth" part (credential, scope,
    format). The new tokens are sealed into the stored file (a removed
    credential stays removed) and get placeholders of their own in the
    sandbox's record; returns {new token: its placeholder}, for the answer
    the sandbox receives.
    """
    name, scope, fmt = meta["credential"], meta["scope"], meta["format"]
    new = {role: answer[ANSWER[role]] for role in FIELDS[fmt]
           if isinstance(answer.get(ANSWER[role]), str) and answer[ANSWER[role]]}
    if not new:
        return {}
    with store.lock():
        record = creds.read_record(name, scope)
        if record is not None:
            stored = creds.open_record(key, record)
            clear = dict(record["meta"], updated=int(time.time()))
            creds.put(store, name, scope, clear, answered(fmt, stored, answer), key=key)
        entries = swap.read(store, sandbox, key)
        hosts = next((e["hosts"] for e in entries.values() if (e.get("oauth") or {}).get("credential") == name),
                     list(HOSTS[fmt]))
        out = {}
        previous = entries.get(name + SEP + ACCESS)
        if ACCESS in new and previous is not None and previous["value"] != new[ACCESS]:
            # requests already under way with the old access token (valid until it expires) keep working;
            # the next ab-exec drops it
            entries[name + SEP + ACCESS + "-previous"] = previous
        for role, value in new.items():
            stand_in = swap.placeholder(value)
            entries[name + SEP + role] = swap.entry(stand_in, value, hosts, where(role, name, scope, fmt))
            out[value] = stand_in
        swap.write(store, sandbox, key, entries)
    return out
