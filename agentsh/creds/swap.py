"""Placeholders: what a sandbox sees instead of a credential the egress proxy adds on the way out.

For a credential delivered with inject = "proxy" (agentsh.creds.vault.inject_mode)
the sandbox's variable holds a random placeholder of the real value's shape:
the same known prefix (`sk-ant-api03-`, `sk-`, `ghp_`, `github_pat_`...), the
same length, each other character replaced by a random one of its class
(digit, lower, upper; separators kept), and for a JWT the same header and
claims with a random signature, so a client that checks the format accepts
it. The placeholder is chosen once per sandbox and credential and kept while
the value's shape stays the same.

The mapping (placeholder -> real value, bound hosts, header) is one record
per sandbox, `net/swap/<sandbox>.json` in the state dir, sealed with the
credential cache's key (AES-256-GCM, the sandbox's name in the associated
data). The sandbox's egress proxy opens it (agentsh.egress.intercept) and swaps
the placeholder for the value in the bound header of requests to the bound
hosts only.
"""

from __future__ import annotations

import os

from agentsh.base import layout
from agentsh.base.errors import CredentialError
from agentsh.base.state import atomic_write
from agentsh.creds.vault import NONCE_BYTES, key_id

TYPE_CHECKING = False  # typing stays off the hot paths
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from types import ModuleType
    from typing import Any

    from agentsh.base.state import Store

PREFIXES = ("sk-ant-api03-", "sk-ant-oat01-", "sk-ant-ort01-", "sk-ant-", "sk-proj-", "sk-svcacct-", "sk-",
            "github_pat_", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "npm_", "glpat-", "xoxb-", "xoxp-", "AIza",
            "ya29.", "1//")  # ya29. and 1//: Google OAuth access and refresh tokens
_DIGITS, _LOWER, _UPPER = "0123456789", "abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
MIN_RANDOM = 16  # characters of randomness at least (padded past the real length when shorter)
RETIRED = 8  # a login token's replaced placeholders kept (creds.oauth)
# The scope of a login made inside the sandbox (creds.oauth.captured): no stored credential, only this record's
# entries, kept by stand_ins however the granted credentials change, gone with the sandbox (ab-down --rm)
CAPTURED_SCOPE = "sandbox"


def _json() -> ModuleType:
    import json  # lazy: json brings re along; only for the placeholder record

    return json


def _random_like(text: str) -> str:
    import secrets  # lazy: secrets brings hashlib; only to make a placeholder

    out = []
    for c in text:
        cls = _DIGITS if c in _DIGITS else _LOWER if c in _LOWER else _UPPER if c in _UPPER else None
        out.append(secrets.choice(cls) if cls else c)
    return "".join(out)


def _is_jwt(value: str) -> bool:
    parts = value.split(".")
    return len(parts) == 3 and value.startswith("eyJ") and all(
        p and all(c.isalnum() or c in "-_" for c in p) for p in parts)


def _template(value: str) -> tuple[str, str]:
    """(prefix kept, body whose letters and digits are randomised).

    A GitHub Copilot token (`tid=...;exp=...;proxy-ep=HOST;...:SIGNATURE`)
    keeps its fields, which clients read (the API host among them), as a
    JWT keeps its claims: only the signature after the last `:` is random.
    """
    if value.startswith("tid=") and ";" in value and ":" in value:
        prefix = value[:value.rindex(":") + 1]
        if sum(c.isalnum() for c in value[len(prefix):]) >= MIN_RANDOM:
            return prefix, value[len(prefix):]
    prefix = next((p for p in PREFIXES if value.startswith(p) and len(value) > len(p)), "")
    body = value[len(prefix):]
    randomish = sum(c.isalnum() for c in body)
    if randomish < MIN_RANDOM:  # too little to be unguessable: longer than the value, same alphabet
        body += "x" * (MIN_RANDOM - randomish)
    return prefix, body


def _classes(text: str) -> str:
    return "".join("d" if c in _DIGITS else "l" if c in _LOWER else "u" if c in _UPPER else c for c in text)


def placeholder(value: str) -> str:
    """A random stand-in of the value's shape (str), never equal to it."""
    if _is_jwt(value):
        head, claims, signature = value.split(".")
        return f"{head}.{claims}.{_random_like(signature)}"
    prefix, body = _template(value)
    for _ in range(8):
        made = prefix + _random_like(body)
        if made != value:
            return made
    raise CredentialError("cannot make a placeholder for a credential with no letters or digits")


def same_shape(value: str, stand_in: str) -> bool:
    """Whether an existing placeholder still fits the value (else a new one is made)."""
    if stand_in == value or value in stand_in:
        return False
    if _is_jwt(value):
        return _is_jwt(stand_in) and value.rsplit(".", 1)[0] == stand_in.rsplit(".", 1)[0]
    prefix, body = _template(value)
    return stand_in.startswith(prefix) and _classes(stand_in[len(prefix):]) == _classes(body)


# -- the sealed mapping ---------------------------------------------------------------


def record_path(store: Store, sandbox: str) -> str:
    return store.path(layout.swap_record(sandbox))


def _aad(sandbox: str) -> bytes:
    return b"agentsh swap v1\0" + sandbox.encode()


def read(store: Store, sandbox: str, key: bytes) -> dict:
    """The sandbox's entries: {credential name: {placeholder, value, hosts, header[, query, body]}} ({} when none)."""
    return load(record_path(store, sandbox), sandbox, key)


def load(path: str, sandbox: str, key: bytes) -> dict:
    import base64  # lazy: only when a placeholder is sealed or opened

    from cryptography.exceptions import InvalidTag  # lazy: cryptography, only to open the record
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # lazy: cryptography, only to open the record


    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return {}
    try:
        record = _json().loads(raw)
        if record.get("key_id") != key_id(key):
            raise CredentialError(f"the placeholder record {path} was sealed with another key",
                                  "remove it; the next ab-exec makes new placeholders")
        plain = AESGCM(key).decrypt(base64.b64decode(record["nonce"]), base64.b64decode(record["ciphertext"]),
                                    _aad(sandbox))
        return _json().loads(plain)["entries"]
    except (InvalidTag, ValueError, KeyError, TypeError):
        raise CredentialError(f"the placeholder record {path} fails its integrity check",
                              "remove it; the next ab-exec makes new placeholders") from None


def write(store: Store, sandbox: str, key: bytes, entries: dict) -> None:
    import base64  # lazy: only when a placeholder is sealed or opened

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # lazy: cryptography, only to seal the record


    nonce = os.urandom(NONCE_BYTES)
    sealed = AESGCM(key).encrypt(nonce, _json().dumps({"entries": entries}, sort_keys=True).encode(),
                                 _aad(sandbox))
    body = {"version": 1, "sandbox": sandbox, "key_id": key_id(key), "nonce": base64.b64encode(nonce).decode(),
            "ciphertext": base64.b64encode(sealed).decode()}
    with store.lock():
        atomic_write(record_path(store, sandbox), _json().dumps(body, sort_keys=True).encode() + b"\n")


def entry(stand_in: str, value: str, hosts: Iterable[str], where: str | Mapping[str, Any] | None) -> dict:
    """One record entry. `where`: a header name, or {"header", "query", "body"} (creds.vault.binding).

    Keys beyond placeholder, value, hosts and header appear only when used:
    "query" (a query parameter's name), "body" (true: request bodies),
    "oauth" (a login file's token, creds.oauth) and "retired" (that token's
    earlier placeholders, which stand for its current value too).
    """
    where = {"header": where} if where is None or isinstance(where, str) else where
    made = {"placeholder": stand_in, "value": value, "hosts": list(hosts), "header": where.get("header")}
    if where.get("query"):
        made["query"] = where["query"]
    if where.get("body"):
        made["body"] = True
    if where.get("oauth"):  # a token of an OAuth file (creds.oauth): credential, scope, format, role
        made["oauth"] = dict(where["oauth"])
    return made


def captured(e: Mapping[str, Any]) -> bool:
    """Whether an entry holds a token of a login made inside the sandbox (no stored credential behind it)."""
    return (e.get("oauth") or {}).get("scope") == CAPTURED_SCOPE


def retire(old: Mapping[str, Any], new: dict) -> dict:
    """`new` (an entry replacing `old`) keeping old's placeholders, but its own, as retired (the last RETIRED)."""
    retired = [p for p in [*old.get("retired", ()), old.get("placeholder")] if p and p != new["placeholder"]]
    if retired:
        new["retired"] = retired[-RETIRED:]
    return new


def stand_ins(store: Store, sandbox: str, key: bytes,
              wanted: Mapping[str, tuple[str, Iterable[str], str | Mapping[str, Any] | None]],
              partial: bool = False) -> dict[str, str]:
    """Placeholders for {name: (value, hosts, where)}: the ones the sandbox had, new ones where needed.

    `where` is entry()'s. Entries not wanted are dropped (a credential no
    longer granted), unless `partial` (only some credentials were opened)
    or they hold a login made inside the sandbox (CAPTURED_SCOPE).
    Rewrites the record only when something changed; returns {name: placeholder}.
    The caller holds the store lock from reading the values it passes
    (creds.oauth.refreshed replaces them under it).
    """
    old = read(store, sandbox, key)
    entries = {n: e for n, e in old.items() if n not in wanted and (partial or captured(e))}
    for name, (value, hosts, where) in wanted.items():
        had = old.get(name) or {}
        stand_in = had.get("placeholder")
        if not stand_in or not same_shape(value, stand_in):
            stand_in = placeholder(value)
        entries[name] = entry(stand_in, value, hosts, where)
        if had.get("oauth") and entries[name].get("oauth"):  # a login's token: its replaced placeholders stay
            retire(had, entries[name])
    if entries != old:  # a credential no longer granted loses its entry: its placeholder stops working
        write(store, sandbox, key, entries)
    return {name: entries[name]["placeholder"] for name in wanted}
