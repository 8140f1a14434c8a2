"""The encrypted credential cache: records, the key, grants.

Each credential is one record, `<data dir>/creds/<scope>/<NAME>.json`, where
scope is `global` (available to projects that grant it) or a project key
(that project only). A record keeps what `ab-creds ls` shows in the clear
(target, source, times) and the value sealed with AES-256-GCM under a fresh
96-bit nonce per write. The associated data binds the name and scope taken
from the record's *location* plus every clear field, so a record copied to
another name or scope, or with its target or expiry edited, fails to open.

The key is either a random 256-bit key file (`creds.key`, mode 0600, in the
config dir) or, when the cache was created with a passphrase, derived from it
with scrypt (`creds.passphrase.json` keeps salt, cost and a key id). Nothing
here imports `cryptography` until a value is sealed or opened, so listing,
granting and the `ab-exec` hot path without grants stay cheap.

Grants live in the state store, `grants/<project key>.json`. The values of
ab-creds flags (`--ttl`, `--file`) are read by agentsh.creds.flags, and a
credential whose value is a command runs it through agentsh.creds.sources.
"""

from __future__ import annotations

import os
import sys
import time

from agentsh.base import layout, paths
from agentsh.base.digest import sha256_hex
from agentsh.base.errors import AgentshError, CredentialError, UsageError  # noqa: F401 (CredentialError: also for callers)
from agentsh.base.state import atomic_write, read_bytes
from agentsh.policy.config import CREDENTIAL_NAME, ENV_NAME

TYPE_CHECKING = False  # typing stays off the hot paths
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from types import ModuleType
    from typing import Any

    from agentsh.base.state import Store
    from agentsh.host.project import Project

GLOBAL = "global"
KEY_FILE = layout.CREDENTIAL_KEY
PASSPHRASE_FILE = layout.CREDENTIAL_PASSPHRASE
PASSPHRASE_ENV = "AGENTSH_PASSPHRASE"
RECORD_VERSION = 1
KEY_BYTES = 32
NONCE_BYTES = 12
SCRYPT = {"n": 2 ** 15, "r": 8, "p": 1}
COMMAND_TIMEOUT = 30  # seconds, like AWS credential_process
MAX_VALUE = 1 << 20  # a token file is kilobytes; a megabyte is a mistake
ENV, FILE = "env", "file"
PROXY = "proxy"  # inject: the sandbox sees a placeholder, the egress proxy adds the value (creds.swap)
INJECT = (PROXY, ENV)
AUTHORIZATION = "authorization"
VALUE, COMMAND = "value", "command"
RAW, AWS_PROCESS = "raw", "aws-credential-process"
# the agents' login files (creds.oauth)
OAUTH_FORMATS = ("claude-oauth", "codex-oauth", "gemini-oauth", "opencode-oauth")


def _json() -> ModuleType:
    """json, imported when a record is read or written (not on ab-exec's no-grant path)."""
    import json  # lazy: json brings re along; not on ab-exec's no-grant path

    return json


# ab-creds flag values (agentsh.creds.flags), also under these names; loaded on
# first use, as ab-exec's path imports this module.
_FROM_FLAGS = frozenset(("DURATION_UNITS", "parse_duration", "sandbox_path"))


def __getattr__(name: str) -> Any:
    if name in _FROM_FLAGS:
        from agentsh.creds import flags  # lazy: flags brings re; only ab-creds parses flags

        return getattr(flags, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- names, scopes, places ------------------------------------------------


def check_name(name: str | None) -> str:
    if not CREDENTIAL_NAME.match(name or ""):
        raise UsageError(f"{name!r} is not a valid credential name",
                         "use letters, digits, '_', '.' and '-' (at most 64, not starting with '.' or '-')")
    return name


def scope_of(project: Project | None) -> str:
    """The scope a project's own credentials live in (None: global)."""
    return project.key if project is not None else GLOBAL


def creds_dir() -> str:
    return os.path.join(paths.data_dir(), layout.CREDS)


def record_path(name: str, scope: str) -> str:
    return os.path.join(paths.data_dir(), layout.credential_record(scope, name))


def meta(type_: str, target: str, source: str = VALUE, fmt: str = RAW, writeback: bool = False,
         project: Project | None = None, ttl: int | None = None, now: float | None = None,
         bind_hosts: Iterable[str] = (), bind_header: str | None = None, inject: str | None = None,
         bind_query: str | None = None, bind_body: bool = False) -> dict[str, Any]:
    """The clear (but authenticated) part of a record.

    `bind_hosts`: the hosts the value may be sent to, `bind_header` the
    request header carrying it there, `bind_query` the URL query parameter,
    `bind_body` whether request bodies carry it (with none of the three,
    the Authorization header); `inject`:
    "proxy" (the sandbox sees a placeholder, the egress proxy puts the value
    into that header toward those hosts; the default for a bound env
    credential in network modes allow and learn) or "env" (the value itself
    inside, as without a binding).
    """
    now = int(now if now is not None else time.time())
    if type_ == ENV and not ENV_NAME.match(target):
        raise UsageError(f"{target!r} is not a valid environment variable name")
    if writeback and (type_ != FILE or source != VALUE):
        raise UsageError("--writeback needs --file and a stored value",
                         "drop --writeback, or store a file credential without --from-command")
    clear = {"type": type_, "target": target, "source": source, "format": fmt, "writeback": bool(writeback),
             "project": project.root if project is not None else None,
             "updated": now, "expires": now + ttl if ttl else None}
    if bind_hosts or bind_header or inject or bind_query or bind_body:
        clear.update(binding(type_, bind_hosts, bind_header, inject, bind_query, bind_body))
    return clear


def binding(type_: str, hosts: Iterable[str], header: str | None, inject: str | None,
            query: str | None = None, body: bool = False) -> dict[str, Any]:
    """The checked binding fields of a record (see meta)."""
    from agentsh.policy.rules import normalize_host  # lazy: re and ipaddress, only for a credential bound to hosts

    if inject is not None and inject not in INJECT:
        raise UsageError(f"--inject {inject!r} is not a way to deliver a credential", "give --inject proxy or env")
    if (header or inject == PROXY or query or body) and not hosts:
        raise UsageError("--bind-header, --bind-query, --bind-body and --inject proxy need --bind-host",
                         "name the host(s) the value is for")
    if type_ != ENV and inject == PROXY:
        raise UsageError("--inject proxy is for environment credentials only",
                         "drop --file, or give --inject env")
    checked = []
    for host in hosts:
        name = normalize_host(host or "")
        if not name or not all(c.isalnum() or c in "-." for c in name) or name.startswith((".", "-")) \
                or len(name) > 253:
            raise UsageError(f"--bind-host {host!r} is not a host name", "give e.g. api.example.com")
        if name not in checked:
            checked.append(name)
    if header is not None or not (query or body):
        header = (header or AUTHORIZATION).strip().lower()
        if not header or not all(c.isalnum() or c in "-_" for c in header) or len(header) > 64 \
                or header in ("host", "content-length", "transfer-encoding", "connection"):
            raise UsageError(f"--bind-header {header!r} is not a header that can carry a credential",
                             "give e.g. Authorization or x-api-key")
    out = {"bind_hosts": checked, "bind_header": header, "inject": inject}
    if query is not None:
        if not query or len(query) > 64 or not all(c.isalnum() or c in "-_.~" for c in query):
            raise UsageError(f"--bind-query {query!r} is not a query parameter name", "give e.g. key or api_key")
        out["bind_query"] = query
    if body:
        out["bind_body"] = True
    return out


def where_text(clear: Mapping[str, Any]) -> str:
    """Where a bound value travels, for people: "header x-api-key", "query parameter key", "request bodies"."""
    where = [f"header {clear['bind_header']}"] if clear.get("bind_header") else []
    if clear.get("bind_query"):
        where.append(f"query parameter {clear['bind_query']}")
    if clear.get("bind_body"):
        where.append("request bodies")
    return " and ".join(where) or "no place"


def inject_mode(clear: Mapping[str, Any], network_mode: str) -> str:
    """"proxy" or "env": how a record's value reaches a sandbox in that network mode."""
    inject = clear.get("inject")
    if inject:
        return inject
    if clear.get("bind_hosts") and network_mode in ("allow", "learn") \
            and (clear["type"] == ENV or clear.get("format") in OAUTH_FORMATS):
        return PROXY
    return ENV


# -- the key ----------------------------------------------------------------


def key_id(key: bytes) -> str:
    return sha256_hex(b"agentsh credential key id\0" + key)[:16]


def _config_path(name: str) -> str:
    return os.path.join(paths.config_dir(), name)


def _publish(path: str, data: bytes) -> None:
    """Create `path` holding `data` (0600) unless it exists; whoever is first wins.

    The file appears complete (hard link of a finished temp file), so two
    first uses at the same moment cannot end up with two different keys.
    """
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}.{os.urandom(4).hex()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)


def _read_private(path: str, what: str) -> bytes | None:
    """Bytes of a key-ish file, refusing one that others could read or that is not ours."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None
    except OSError as e:
        raise CredentialError(f"cannot read the {what} {path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if st.st_mode & 0o077:
            raise CredentialError(f"the {what} {path} is readable by others (mode {st.st_mode & 0o777:o})",
                                  f"run: chmod 600 '{path}'")
        if st.st_uid != os.geteuid():
            raise CredentialError(f"the {what} {path} belongs to uid {st.st_uid}, not to you",
                                  "remove it, or run as its owner")
        return os.read(fd, 65536)
    finally:
        os.close(fd)


def passphrase(confirm: bool = False) -> str:
    """AGENTSH_PASSPHRASE, else a no-echo prompt when stdin is a terminal."""
    value = os.environ.get(PASSPHRASE_ENV)
    if value:
        return value
    if not sys.stdin.isatty():
        raise CredentialError("the credential cache is passphrase-protected and there is no terminal to ask on",
                              f"set {PASSPHRASE_ENV}")
    import getpass  # lazy: only to prompt for the passphrase

    value = getpass.getpass("agentsh credential passphrase: ")
    if confirm and getpass.getpass("again: ") != value:
        raise CredentialError("the passphrases differ", "run the command again")
    if not value:
        raise CredentialError("empty passphrase", f"type one, or set {PASSPHRASE_ENV}")
    return value


def _derive(secret: str, params: Mapping[str, Any]) -> bytes:
    import hashlib  # lazy: OpenSSL's hashlib, only to derive a key from a passphrase

    return hashlib.scrypt(secret.encode(), salt=bytes.fromhex(params["salt"]), n=params["n"], r=params["r"],
                          p=params["p"], maxmem=256 * params["n"] * params["r"] + (1 << 20), dklen=KEY_BYTES)


def create_key(with_passphrase: bool = False, exist_ok: bool = False) -> bytes:
    """Make the cache's key (random file, or passphrase parameters); error if one exists.

    With exist_ok (a first use), a key another process made meanwhile is the
    one loaded: _publish lets the first writer win.
    """
    if not exist_ok and key_mode() is not None:
        raise CredentialError(f"the credential cache already has a key in {paths.config_dir()}",
                              "remove creds.key or creds.passphrase.json (and every record) to start over")
    if with_passphrase:
        params = {**SCRYPT, "salt": os.urandom(16).hex()}
        key = _derive(passphrase(confirm=True), params)
        params["key_id"] = key_id(key)
        _publish(_config_path(PASSPHRASE_FILE), _json().dumps(params, indent=1).encode() + b"\n")
    else:
        _publish(_config_path(KEY_FILE), os.urandom(KEY_BYTES))
    return load_key()


def key_mode() -> str | None:
    """'passphrase', 'key' or None (no cache key yet)."""
    if os.path.lexists(_config_path(PASSPHRASE_FILE)):
        return "passphrase"
    if os.path.lexists(_config_path(KEY_FILE)):
        return "key"
    return None


def load_key(create: bool = False) -> bytes:
    """The cache key. With create, the first use makes one (passphrase mode if AGENTSH_PASSPHRASE is set)."""
    mode = key_mode()
    if mode == "passphrase":
        path = _config_path(PASSPHRASE_FILE)
        raw = _read_private(path, "passphrase parameters file")
        try:
            params = _json().loads(raw)
            key = _derive(passphrase(), params)
            expected = params["key_id"]
        except (ValueError, KeyError, TypeError):
            raise CredentialError(f"the passphrase parameters file {path} is damaged",
                                  "restore it from a backup; without it the records cannot be opened") from None
        if key_id(key) != expected:
            raise CredentialError("wrong passphrase for the credential cache", f"check {PASSPHRASE_ENV} or retype it")
        return key
    if mode == "key":
        path = _config_path(KEY_FILE)
        key = _read_private(path, "credential key file")
        if key is None or len(key) != KEY_BYTES:
            raise CredentialError(f"the credential key file {path} is damaged (not {KEY_BYTES} bytes)",
                                  "restore it from a backup; without it the records cannot be opened")
        return key
    if not create:
        raise CredentialError(f"the credential key is missing from {paths.config_dir()}",
                              "restore creds.key (or creds.passphrase.json); without it no record can be opened")
    return create_key(with_passphrase=bool(os.environ.get(PASSPHRASE_ENV)), exist_ok=True)


# -- sealing ---------------------------------------------------------------


def _aad(name: str, scope: str, clear: Mapping[str, Any]) -> bytes:
    return b"agentsh credential v1\0" + _json().dumps([name, scope, clear], sort_keys=True).encode()


def seal(key: bytes, name: str, scope: str, clear: Mapping[str, Any], value: bytes) -> dict[str, Any]:
    """A record (dict) holding `value` (bytes) for name+scope, ready to write."""
    import base64  # lazy: only when a credential is stored

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # lazy: cryptography, only to store a value

    nonce = os.urandom(NONCE_BYTES)
    sealed = AESGCM(key).encrypt(nonce, value, _aad(name, scope, clear))
    return {"version": RECORD_VERSION, "name": name, "scope": scope, "meta": clear, "key_id": key_id(key),
            "nonce": base64.b64encode(nonce).decode(), "ciphertext": base64.b64encode(sealed).decode()}


def open_record(key: bytes, record: Mapping[str, Any]) -> bytes:
    """The value (bytes) in a record read by read_record; a clear error when it will not open."""
    import base64  # lazy: only when a credential is opened
    import binascii  # lazy: only when a credential is opened

    from cryptography.exceptions import InvalidTag  # lazy: cryptography, only to open a value
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # lazy: cryptography, only to open a value

    name, scope = record["_name"], record["_scope"]
    if record.get("key_id") != key_id(key):
        raise CredentialError(f"credential {name} was sealed with another key (the key file or passphrase changed)",
                              "restore the key it was stored with, or store it again with 'ab-creds set'")
    try:
        nonce = base64.b64decode(record["nonce"], validate=True)
        sealed = base64.b64decode(record["ciphertext"], validate=True)
        return AESGCM(key).decrypt(nonce, sealed, _aad(name, scope, record["meta"]))
    except (InvalidTag, binascii.Error, ValueError, TypeError):
        raise CredentialError(f"credential {name} ({record['_path']}) fails its integrity check: "
                              "it was altered, moved from another name or scope, or damaged",
                              f"remove it with 'ab-creds rm {name}' and store it again") from None


# -- records on disk -----------------------------------------------------------


def read_record(name: str, scope: str) -> dict[str, Any] | None:
    """The record for name in scope (clear fields checked, value still sealed), or None."""
    path = record_path(name, scope)
    raw = read_bytes(path, CredentialError, "credential record")
    if raw is None:
        return None
    fix = f"remove it with 'ab-creds rm {name}{'' if scope == GLOBAL else ' --project DIR'}' and store it again"
    try:
        record = _json().loads(raw)
        clear = record["meta"]
        ok = (record["version"] == RECORD_VERSION and clear["type"] in (ENV, FILE)
              and isinstance(clear["target"], str) and clear["source"] in (VALUE, COMMAND))
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise CredentialError(f"credential record {path} is damaged (truncated or edited)", fix)
    record.update(_name=name, _scope=scope, _path=path)
    return record


def write_record(store: Store, record: Mapping[str, Any]) -> None:
    """Replace the record atomically, under the store's lock."""
    body = {k: v for k, v in record.items() if not k.startswith("_")}
    data = (_json().dumps(body, indent=1, sort_keys=True) + "\n").encode()
    with store.lock():
        atomic_write(record_path(record["name"], record["scope"]), data)


def put(store: Store, name: str, scope: str, clear: Mapping[str, Any], value: bytes,
        key: bytes | None = None) -> dict[str, Any]:
    """Seal and store a value (bytes); returns the record."""
    check_name(name)
    if len(value) > MAX_VALUE:
        raise CredentialError(f"credential {name} is {len(value)} bytes; the limit is {MAX_VALUE}")
    record = seal(key or load_key(create=True), name, scope, clear, value)
    write_record(store, record)
    return record


def remove(store: Store, name: str, scope: str) -> None:
    path = record_path(name, scope)
    with store.lock():
        try:
            os.unlink(path)
        except FileNotFoundError:
            raise unknown(name, scope) from None


def unknown(name: str, scope: str = GLOBAL) -> CredentialError:
    where = "" if scope == GLOBAL else " for that project"
    return CredentialError(f"no credential named {name}{where}", "see 'ab-creds ls'")


def find(name: str, project: Project | None = None) -> dict[str, Any] | None:
    """The record a project gets for name: its own scope first, then global (or None)."""
    if project is not None:
        record = read_record(name, project.key)
        if record is not None:
            return record
    return read_record(name, GLOBAL)


def scopes() -> list[str]:
    try:
        return sorted(os.listdir(creds_dir()))
    except FileNotFoundError:
        return []


def names(scope: str) -> list[str]:
    try:
        entries = os.listdir(os.path.join(creds_dir(), scope))
    except FileNotFoundError:
        return []
    return sorted(e[:-5] for e in entries if e.endswith(".json") and ".tmp." not in e)


def expired(record: Mapping[str, Any], now: float | None = None) -> bool:
    expires = record["meta"].get("expires")
    return bool(expires) and (now if now is not None else time.time()) >= expires


# -- values -----------------------------------------------------------------------


def reveal(record: Mapping[str, Any], key: bytes | None = None) -> bytes:
    """The value a sandbox receives: the stored bytes, or the command's output now."""
    if expired(record):
        raise CredentialError(f"credential {record['_name']} expired at {iso(record['meta']['expires'])}",
                              f"store it again with 'ab-creds set {record['_name']}'")
    payload = open_record(key or load_key(), record)
    clear = record["meta"]
    if clear["source"] == COMMAND:
        from agentsh.creds import sources  # subprocess and json: only for a command credential

        out = sources.run_command(payload.decode("utf-8", "surrogateescape"), record["_name"], COMMAND_TIMEOUT)
        if clear["format"] == AWS_PROCESS:
            return sources.aws_credentials_file(out, record["_name"])
        payload = out
    if clear["type"] == ENV:
        payload = payload.rstrip(b"\r\n")
        if b"\0" in payload:
            raise CredentialError(f"credential {record['_name']} holds a NUL byte, which no variable can carry")
    return payload


def iso(ts: float | None) -> str | None:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)) if ts else None


def describe(record: Mapping[str, Any], granted: Iterable[str] = ()) -> dict[str, Any]:
    """The `ab-creds ls` row: everything but the value."""
    clear = record["meta"]
    return {"name": record["_name"], "scope": record["_scope"], "project": clear.get("project"),
            "type": clear["type"], "target": clear["target"], "source": clear["source"],
            "writeback": clear.get("writeback", False), "updated": iso(clear.get("updated")),
            "expires": iso(clear.get("expires")), "expired": expired(record), "granted": list(granted),
            "bind_hosts": list(clear.get("bind_hosts") or ()), "bind_header": clear.get("bind_header"),
            "bind_query": clear.get("bind_query"), "bind_body": bool(clear.get("bind_body")),
            "inject": clear.get("inject")}


def listing(store: Store) -> list[dict[str, Any]]:
    """Every record's row, global first; a damaged record is listed as such, never fatal."""
    grants = all_grants(store)
    rows = []
    for scope in sorted(scopes(), key=lambda s: (s != GLOBAL, s)):
        for name in names(scope):
            try:
                record = read_record(name, scope)
            except CredentialError:
                rows.append({"name": name, "scope": scope, "project": None, "type": "damaged", "target": "",
                             "source": "", "writeback": False, "updated": None, "expires": None,
                             "expired": False, "granted": [], "bind_hosts": [], "bind_header": None,
                             "bind_query": None, "bind_body": False, "inject": None})
                continue
            if record is None:
                continue
            granted = [g["project"] for g in grants if name in g.get("names", ())] if scope == GLOBAL else []
            rows.append(describe(record, granted))
    return rows


# -- grants ----------------------------------------------------------------------


def grant_rel(project: Project) -> str:
    return layout.grant_record(project.key)


def read_grant(store: Store, project: Project) -> dict[str, Any]:
    return store.read(grant_rel(project)) or {"project": project.root, "names": [], "ssh_agent": None}


def all_grants(store: Store) -> list[dict[str, Any]]:
    return [g for g in (store.read(layout.grant_record(k)) for k in store.names(layout.GRANTS)) if g]


def _update_grant(store: Store, project: Project, change: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    with store.lock():
        record = read_grant(store, project)
        record["project"] = project.root
        change(record)
        store.write(grant_rel(project), record)
        return record


def grant(store: Store, project: Project, name: str) -> dict[str, Any]:
    check_name(name)
    if find(name, project) is None:
        raise unknown(name)
    return _update_grant(store, project, lambda r: r.update(names=sorted(set(r["names"]) | {name})))


def revoke(store: Store, project: Project, name: str) -> dict[str, Any]:
    check_name(name)
    if name not in read_grant(store, project)["names"]:
        raise CredentialError(f"{name} is not granted to {project.root}", "see 'ab-creds ls'")
    return _update_grant(store, project, lambda r: r.update(names=[n for n in r["names"] if n != name]))


def set_ssh_agent(store: Store, project: Project, socket: str | None) -> dict[str, Any]:
    """Record agent forwarding (the host socket seen now) for a project, or None to stop it."""
    value = {"socket": socket, "granted": int(time.time())} if socket else None
    return _update_grant(store, project, lambda r: r.update(ssh_agent=value))
