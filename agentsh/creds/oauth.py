"""The agents' OAuth login files: placeholders inside, refreshes swapped on the host.

Claude Code keeps its login in ~/.claude/.credentials.json
(`claudeAiOauth.accessToken`, `.refreshToken`, `.expiresAt` in ms), Codex in
~/.codex/auth.json (`tokens.access_token`, `.refresh_token`, `.id_token`,
`last_refresh`), Gemini CLI in ~/.gemini/oauth_creds.json (Google's OAuth
credentials: `access_token`, `refresh_token`, `id_token`, `expiry_date` in
ms), opencode in ~/.local/share/opencode/auth.json (one entry per provider:
`{"type": "oauth", "access", "refresh", "expires"}` in ms, `{"type": "api",
"key"}`, `{"type": "wellknown", "key", "token"}`). Stored with one of these
formats (the importers do) and delivered in network modes allow and learn,
such a file reaches the sandbox with every token replaced by a placeholder
(creds.swap): the access token's and an API key's are swapped in their
header, the refresh and id tokens' in request bodies to token endpoints,
toward the credential's bound hosts (the provider's API and token endpoint;
for opencode each provider's token toward that provider's hosts only). When
the agent refreshes, the proxy swaps the refresh token's placeholder in the
request body, takes the new tokens from the endpoint's JSON answer, seals
them into the stored file (refreshed(); the same cache write-back does for
files) and hands the sandbox new placeholders in their place. A placeholder
replaced so keeps standing for its token's current value ("retired" in the
record): a second command of the same sandbox that still holds it, or a file
written from it, neither breaks nor brings back the old token. After the
command, the file the agent wrote is read back with its placeholders turned
back into the values (real_file) before it is sealed.
"""

from __future__ import annotations

import json
import os
import time

from agentsh.creds import swap
from agentsh.creds import vault as creds

TYPE_CHECKING = False  # typing stays off the paths that import this module
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from typing import Any

    from agentsh.base.state import Store

CLAUDE, CODEX, GEMINI, OPENCODE = creds.OAUTH_FORMATS
ACCESS, REFRESH, ID, KEY = "access", "refresh", "id", "key"
FIELDS = {  # format -> role -> the token's path in the file's JSON (opencode's: per provider, PER_PROVIDER)
    CLAUDE: {ACCESS: ("claudeAiOauth", "accessToken"), REFRESH: ("claudeAiOauth", "refreshToken")},
    CODEX: {ACCESS: ("tokens", "access_token"), REFRESH: ("tokens", "refresh_token"), ID: ("tokens", "id_token")},
    GEMINI: {ACCESS: ("access_token",), REFRESH: ("refresh_token",), ID: ("id_token",)},
}
PER_PROVIDER = {"oauth": {ACCESS: "access", REFRESH: "refresh"}, "api": {KEY: "key"}, "wellknown": {KEY: "token"}}
EXPIRY = {CLAUDE: ("claudeAiOauth", "expiresAt"), GEMINI: ("expiry_date",)}  # ms since the epoch (opencode: expires)
HOSTS = {  # the hosts an imported login is bound to: the API and the token endpoint
    CLAUDE: ("api.anthropic.com", "console.anthropic.com", "platform.claude.com", "claude.ai"),
    CODEX: ("auth.openai.com", "chatgpt.com", "api.openai.com"),
    # Code Assist (the API of a Google login), the Gemini API, the token endpoint, the user info
    GEMINI: ("cloudcode-pa.googleapis.com", "generativelanguage.googleapis.com", "oauth2.googleapis.com",
             "www.googleapis.com"),
}
PROVIDERS = {  # opencode's provider ids -> (their hosts, the header of an API key)
    "anthropic": (HOSTS[CLAUDE], "x-api-key"),
    "openai": (HOSTS[CODEX], "authorization"),
    "google": (("generativelanguage.googleapis.com",), "x-goog-api-key"),
    "openrouter": (("openrouter.ai",), "authorization"),
    "groq": (("api.groq.com",), "authorization"),
    "mistral": (("api.mistral.ai",), "authorization"),
    "xai": (("api.x.ai",), "authorization"),
    "deepseek": (("api.deepseek.com",), "authorization"),
    # a GitHub login (refresh) exchanged at api.github.com for short-lived Copilot API tokens (access)
    "github-copilot": (("api.github.com", "api.githubcopilot.com", "api.individual.githubcopilot.com",
                        "api.business.githubcopilot.com", "api.enterprise.githubcopilot.com"), "authorization"),
}
# Providers whose refresh token is sent in a header to an exchange endpoint (not in a token request's body):
# {provider: (the exchange's hosts, the answer's key of the new access token, of its expiry in seconds)}
EXCHANGES = {"github-copilot": (("api.github.com",), "token", "expires_at")}
PROVIDER_FORMATS = {"anthropic": CLAUDE, "openai": CODEX, "google": GEMINI}  # whose login an opencode entry is
HOSTS[OPENCODE] = tuple(dict.fromkeys(h for hosts, _ in PROVIDERS.values() for h in hosts))
ANSWER = {ACCESS: "access_token", REFRESH: "refresh_token", ID: "id_token"}  # OAuth 2.0 token response keys
LOGIN_HOSTS = {  # the token endpoints' hosts where the agents log in, and the login's format (captured())
    "console.anthropic.com": CLAUDE, "platform.claude.com": CLAUDE, "auth.openai.com": CODEX,
    "oauth2.googleapis.com": GEMINI,
}
LOGIN_HOSTS_ENV = "AGENTSH_LOGIN_HOSTS"  # more of them, HOST=FORMAT,... (a gateway standing in for a provider)
FORMAT_NAMES = {"claude": CLAUDE, "codex": CODEX, "gemini": GEMINI}
SEP = "#"  # placeholder entries are named CREDENTIAL#role (opencode: CREDENTIAL#provider#role)


def login_hosts(extra: str | None = None) -> dict[str, str]:
    """{host: format} of the token endpoints where a login made inside a sandbox is captured.

    `extra` (default: AGENTSH_LOGIN_HOSTS, set on the host, never read from
    the sandbox) adds HOST=claude|codex|gemini pairs, comma-separated;
    malformed pairs are ignored.
    """
    found = dict(LOGIN_HOSTS)
    for pair in (os.environ.get(LOGIN_HOSTS_ENV, "") if extra is None else extra).split(","):
        host, _, name = pair.strip().partition("=")
        if host and name.strip() in FORMAT_NAMES:
            found[host.strip().lower()] = FORMAT_NAMES[name.strip()]
    return found


LOGIN_GRANTS = ("authorization_code", "refresh_token", "")  # what makes (or renews) the login itself ("": unread)


def captured_meta(fmt: str, host: str, grant: str = "") -> dict[str, Any]:
    """What refreshed() takes for a login made inside the sandbox at `host`: its tokens go to the provider's
    hosts and to that one (a gateway named in AGENTSH_LOGIN_HOSTS serves the API too).

    The login is `login:FORMAT` (a name no stored credential can have: ':'
    is not allowed in one); another grant's answer (Codex's exchange of its
    id token for an API key, a service account's jwt-bearer grant) is kept
    apart, as `login:FORMAT:GRANT`, so it never replaces the login's tokens.
    """
    name = "login:" + fmt.removesuffix("-oauth")
    if grant not in LOGIN_GRANTS:
        name += ":" + "".join(c if c.isalnum() or c == "-" else "-" for c in grant.rsplit(":", 1)[-1].lower())[:40]
    return {"credential": name, "scope": swap.CAPTURED_SCOPE, "format": fmt,
            "hosts": list(dict.fromkeys([*HOSTS[fmt], host]))}


def is_oauth(fmt: str | None) -> bool:
    return fmt in creds.OAUTH_FORMATS


def where(role: str, name: str, scope: str, fmt: str, provider: str | None = None,
          header: str = creds.AUTHORIZATION) -> dict:
    """A token's place (swap.entry): an access token or key in `header`, the others in bodies."""
    in_header = role in (ACCESS, KEY) or (role == REFRESH and provider in EXCHANGES)
    place = {"header": header} if in_header else {"header": None, "body": True}
    meta = {"credential": name, "scope": scope, "format": fmt, "role": role}
    if provider is not None:
        meta["provider"] = provider
    return {**place, "oauth": meta}


def _load(data: bytes) -> dict | None:
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _at(doc: Mapping, path: tuple[str, ...]) -> object:
    for part in path[:-1]:
        doc = doc.get(part)
        if not isinstance(doc, dict):
            return None
    return doc.get(path[-1])


def _put(doc: dict, path: tuple[str, ...], value: object, make: bool = True) -> None:
    for part in path[:-1]:
        if not isinstance(doc.get(part), dict):
            if not make or part in doc:
                return
            doc[part] = {}
        doc = doc[part]
    doc[path[-1]] = value


def slots(fmt: str, doc: Mapping | None) -> dict[str, tuple[tuple[str, ...], str, str | None]]:
    """{slot: (the token's path, its role, its provider or None)} of a login file's JSON."""
    if fmt != OPENCODE:
        return {role: (path, role, None) for role, path in FIELDS[fmt].items()}
    found = {}
    for provider, e in (doc or {}).items():
        if isinstance(e, dict) and e.get("type") in PER_PROVIDER:
            for role, field in PER_PROVIDER[e["type"]].items():
                found[provider + SEP + role] = ((provider, field), role, provider)
    return found


def tokens(fmt: str, data: bytes) -> dict[str, str]:
    """{slot: token} found in a login file ({} when it is not the JSON the format expects).

    A slot is the token's role (access, refresh, id), for opencode
    `provider#role` (role key for an API key).
    """
    doc = _load(data)
    found = {}
    for slot, (path, _, _) in slots(fmt, doc).items():
        value = _at(doc, path) if doc is not None else None
        if isinstance(value, str) and len(value) >= 8:
            found[slot] = value
    return found


def _binding(fmt: str, provider: str | None, role: str, hosts: Iterable[str]) -> tuple[list[str], str]:
    """(hosts, header) of one token: an opencode provider's own hosts among the bound ones.

    A known provider's token goes to its hosts among `hosts` (to all of
    `hosts` when none of them is its: the credential was bound elsewhere on
    purpose); an unknown provider's to the bound hosts no known provider has
    (none: its placeholder is swapped nowhere).
    """
    hosts = list(hosts)
    if fmt != OPENCODE:
        return hosts, creds.AUTHORIZATION
    known = PROVIDERS.get(provider)
    if known is None:
        others = {h for hs, _ in PROVIDERS.values() for h in hs}
        return [h for h in hosts if h not in others], creds.AUTHORIZATION
    mine = [h for h in hosts if h in known[0]] or hosts
    if provider in EXCHANGES:  # the refresh token to the exchange only, the access token to the API only
        exchange = EXCHANGES[provider][0]
        mine = [h for h in mine if (h in exchange) == (role == REFRESH)] or mine
    return mine, known[1] if role == KEY else creds.AUTHORIZATION


def bindings(fmt: str, data: bytes, name: str, scope: str, hosts: Iterable[str]
             ) -> dict[str, tuple[str, list[str], dict]]:
    """The placeholder entries a login file asks for: {entry name: (token, hosts, where)} (swap.stand_ins)."""
    hosts = list(hosts)
    doc_slots = slots(fmt, _load(data))
    out = {}
    for slot, token in tokens(fmt, data).items():
        _, role, provider = doc_slots[slot]
        bound, header = _binding(fmt, provider, role, hosts)
        out[name + SEP + slot] = (token, bound, where(role, name, scope, fmt, provider, header))
    return out


def replaced(data: bytes, pairs: Mapping[str, str]) -> bytes:
    """The file with each token (a JSON string) replaced by another: byte for byte otherwise."""
    for old, new in pairs.items():
        data = data.replace(json.dumps(old).encode(), json.dumps(new).encode())
    return data


def real_file(fmt: str, data: bytes, entries: Mapping[str, Mapping]) -> bytes:
    """A file read back from the sandbox with the placeholders of `entries` (a swap record) turned into values.

    Only at the format's token paths, and each token's placeholders (its
    current one and the retired ones) only at that token's own path: a
    placeholder the agent copied anywhere else stays a placeholder, so no
    value can be planted where the next delivery would not replace it
    (delivery replaces the tokens found at those paths). A retired
    placeholder becomes the token's current value: a file written from an
    older view never brings back a replaced token. A file that is not the
    format's JSON is kept as it is.
    """
    doc = _load(data)
    if doc is None:
        return data
    by_slot = {}  # (provider, role) -> the entries that may stand there: the stored login's
    inside = {}  # (format, role) -> a login made inside the sandbox over it (the agent logged in again)
    for e in entries.values():
        meta = e.get("oauth")
        if meta and meta.get("scope") == swap.CAPTURED_SCOPE:
            inside.setdefault((meta["format"], meta["role"]), []).append(e)
        elif meta:
            by_slot.setdefault((meta.get("provider"), meta["role"]), []).append(e)
    changed = False
    for path, role, provider in slots(fmt, doc).values():
        value = _at(doc, path)
        if not isinstance(value, str):
            continue
        own = fmt if fmt != OPENCODE else PROVIDER_FORMATS.get(provider)  # an opencode provider's own login's
        for e in [*by_slot.get((provider, role), ()), *inside.get((own, role), ())]:
            if value == e["placeholder"] or value in e.get("retired", ()):
                _put(doc, path, e["value"])
                changed = True
                break
    return (json.dumps(doc, indent=2) + "\n").encode() if changed else data


def answered(fmt: str, data: bytes, answer: Mapping, now: float | None = None,
             provider: str | None = None) -> bytes:
    """The login file after a refresh: the new tokens (and expiry) of a token endpoint's answer put in.

    `provider`: the opencode provider whose login was refreshed.
    """
    now = time.time() if now is None else now
    doc = _load(data) or {}
    paths = FIELDS[fmt] if fmt != OPENCODE else {role: (provider, field) for role, field in PER_PROVIDER["oauth"].items()}
    keys = answer_keys(fmt, provider)
    for role, path in paths.items():
        value = answer.get(keys.get(role, ""))
        if isinstance(value, str) and value:
            _put(doc, path, value)
    expiry = EXPIRY.get(fmt) if fmt != OPENCODE else (provider, "expires")
    if expiry and provider in EXCHANGES and isinstance(answer.get(EXCHANGES[provider][2]), (int, float)):
        _put(doc, expiry, int(answer[EXCHANGES[provider][2]] * 1000), make=False)  # seconds since the epoch
    elif expiry and isinstance(answer.get("expires_in"), (int, float)):
        _put(doc, expiry, int((now + answer["expires_in"]) * 1000), make=False)
    if fmt == CODEX:
        doc["last_refresh"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    return (json.dumps(doc, indent=2) + "\n").encode()


def answer_keys(fmt: str, provider: str | None = None) -> dict[str, str]:
    """{role: the key of its new value in the refresh answer}: OAuth 2.0's, or an exchange's (EXCHANGES)."""
    if fmt == OPENCODE and provider in EXCHANGES:
        return {ACCESS: EXCHANGES[provider][1]}
    return ANSWER


def refreshed(store: Store, sandbox: str, key: bytes, meta: Mapping, answer: Mapping) -> dict[str, str]:
    """A token endpoint answered a refresh made with `meta`'s credential: seal, re-placeholder.

    `meta` is a placeholder entry's "oauth" part (credential, scope,
    format, and for opencode the provider), or captured_meta(): a login
    made inside the sandbox, whose tokens live in the sandbox's record only.
    The new tokens are sealed into
    the stored file (a removed credential stays removed) and get
    placeholders of their own in the sandbox's record, each replaced one
    kept as retired (it stands for the new value from now on: a request
    under way, or another command of the sandbox holding the old file,
    keeps working); returns {new token: its placeholder}, for the answer
    the sandbox receives. All under the store lock, which delivery takes
    too: an ab-exec starting meanwhile sees the old login and its
    placeholders, or the new.
    """
    name, scope, fmt, provider = meta["credential"], meta["scope"], meta["format"], meta.get("provider")
    roles = FIELDS[fmt] if fmt != OPENCODE else PER_PROVIDER["oauth"]
    if scope == swap.CAPTURED_SCOPE:  # a login made inside: every token of the answer is kept, none shown
        roles = ANSWER
    keys = answer_keys(fmt, provider)
    new = {role: answer[keys[role]] for role in roles
           if role in keys and isinstance(answer.get(keys[role]), str) and answer[keys[role]]}
    if not new:
        return {}
    prefix = name + SEP + (provider + SEP if provider is not None else "")
    with store.lock():
        record = creds.read_record(name, scope) if scope != swap.CAPTURED_SCOPE else None
        if record is not None:
            stored = creds.open_record(key, record)
            clear = dict(record["meta"], updated=int(time.time()))
            creds.put(store, name, scope, clear, answered(fmt, stored, answer, provider=provider), key=key)
        entries = swap.read(store, sandbox, key)
        hosts = meta.get("hosts") or next((e["hosts"] for n, e in entries.items() if n.startswith(prefix)), None)
        if hosts is None:
            hosts = _binding(fmt, provider, ACCESS, record["meta"].get("bind_hosts") or HOSTS[fmt]
                             if record is not None else HOSTS[fmt])[0]
        out = {}
        for role, value in new.items():
            old = entries.get(prefix + role) or {}
            stand_in = old.get("placeholder") if old.get("value") == value else None
            stand_in = stand_in or swap.placeholder(value)
            header = old.get("header") if role == ACCESS and old.get("header") else creds.AUTHORIZATION
            made = swap.entry(stand_in, value, meta.get("hosts") or old.get("hosts") or hosts,
                              where(role, name, scope, fmt, provider, header))
            entries[prefix + role] = swap.retire(old, made)
            out[value] = stand_in
        swap.write(store, sandbox, key, entries)
    return out
