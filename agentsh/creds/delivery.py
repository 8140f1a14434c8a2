"""What a sandbox receives from the credential cache, and what comes back.

A project receives the credentials granted to it (`ab-creds grant`), the
names its allowed project file requests (`credentials = [...]`) and the ones
stored for it alone (`ab-creds set --project`). Env credentials become an
env file (`env_file`) that travels with the file credentials: through stdin
of ONE extra `exec` (Podman keeps `exec -e` values in its database, so no
value rides on it) into a tmpfs at SECRETS_DIR (mode 0700, owned by the sandbox user); a target
elsewhere (say ~/.claude/.credentials.json in the persistent home volume) is
a symlink into it, so the secret never lands on a disk. Files marked
write-back are read back after the command (one more `exec`) and re-sealed
if the agent refreshed them; every later `ab-exec` of any sandbox then gets
the new value.

Deciding that nothing is wanted reads one small grant record and lists one
directory; `cryptography` is imported only when something is.
"""

from __future__ import annotations

import os
import stat
import time

from agentsh.base.errors import AgentshError, EngineError
from agentsh.base.layout import SECRETS_DIR, SSH_AGENT_SOCKET  # noqa: E402
from agentsh.base.state import Store
from agentsh.creds import vault as creds

TYPE_CHECKING = False  # typing stays off the hot paths
if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
    from typing import Any

    from agentsh.host.engine import Engine
    from agentsh.host.project import Project
    from agentsh.policy.agents import Profile

    Notify = Callable[[str], object]
    # Runs agentsh's own command in the sandbox with bytes on stdin: (status, stdout, stderr text), or None
    # when it could not (the engine's exec is used instead). sandbox.execute.server_runner makes one.
    Runner = Callable[[list[str], bytes], tuple[int, bytes, str] | None]

TMPFS_OPTIONS = "rw,nosuid,nodev,noexec,size=16m,mode=0700"
NO_TMPFS = 97  # the injection script's status when the sandbox has no secrets tmpfs
EXEC_TIMEOUT = 60


class FileCredential:
    """One file a sandbox receives: where it is kept (tmpfs) and where it is seen."""

    def __init__(self, name: str, scope: str | None, target: str, value: bytes, writeback: bool) -> None:
        self.name, self.scope, self.target, self.value, self.writeback = name, scope, target, value, writeback
        self.real = None  # an OAuth token file delivered with placeholders: its real bytes (creds.oauth)
        self.format = None  # and its format
        inside = target.startswith(SECRETS_DIR + "/")
        self.stored = target if inside else f"{SECRETS_DIR}/{name}"


class Delivery:
    """The env values and files one `ab-exec` hands to a sandbox."""

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.env_values = {}
        self.files = []
        self.proxied = []  # names of the credentials delivered as placeholders (creds.swap)

    @property
    def env_names(self) -> list[str]:
        return list(self.env_values)

    @property
    def writeback(self) -> list[FileCredential]:
        return [f for f in self.files if f.writeback]


# -- the container spec ------------------------------------------------------


def sandbox_additions(project: Project, engine: Engine, store: Store | None = None
                      ) -> tuple[list[str], dict[str, str]]:
    """Spec pieces for credentials: the secrets tmpfs, and the SSH agent socket when granted.

    Returns (run arguments, {env name: value}). The tmpfs is always there, so
    a later grant never writes a secret onto the container's disk.
    """
    if store is None:
        store = Store()
    return secrets_run_args(engine, os.getuid(), os.getgid(), granted_ssh_agent(store, project))


def granted_ssh_agent(store: Store, project: Project) -> str | None:
    """The host SSH agent socket a project's sandbox gets (its grant, see ssh_agent_socket), or None."""
    grant = store.read(creds.grant_rel(project)) or {}
    return ssh_agent_socket(grant.get("ssh_agent"))


def secrets_run_args(engine: Engine, uid: int, gid: int, ssh_agent: str | None = None
                     ) -> tuple[list[str], dict[str, str]]:
    """(run arguments, env) for the secrets tmpfs and, given a host socket, the forwarded SSH agent."""
    owner = "U" if engine.is_podman else f"uid={uid},gid={gid}"
    args = ["--tmpfs", f"{SECRETS_DIR}:{TMPFS_OPTIONS},{owner}"]
    env = {}
    if ssh_agent:
        args += ["-v", f"{ssh_agent}:{SSH_AGENT_SOCKET}"]
        env["SSH_AUTH_SOCK"] = SSH_AGENT_SOCKET
    return args, env


def ssh_agent_socket(granted: Mapping[str, Any] | None) -> str | None:
    """The host agent socket to forward: $SSH_AUTH_SOCK now, else the one seen at grant time."""
    if not granted:
        return None
    for path in (os.environ.get("SSH_AUTH_SOCK"), granted.get("socket")):
        try:
            if path and ":" not in path and stat.S_ISSOCK(os.stat(path).st_mode):
                return os.path.realpath(path)
        except OSError:
            continue
    return None


# -- choosing and opening -------------------------------------------------------


def cached_credentials(prof: Profile, project: Project | None) -> list[str]:
    """The profile's credentials present in the cache for this project (no decryption)."""
    return [n for n in prof.credentials if creds.find(n, project) is not None]


def wanted(project: Project, cfg: Mapping[str, Any], store: Store) -> list[str]:
    """Credential names the project receives (cheap: no decryption)."""
    grant = store.read(creds.grant_rel(project)) or {}
    names = [*grant.get("names", ()), *(cfg.get("credentials") or ()), *creds.names(project.key)]
    return list(dict.fromkeys(names))


def prepare(project: Project, cfg: Mapping[str, Any], store: Store, notify: Notify,
            files_only: bool = False) -> Delivery | None:
    """Open what the project receives; None when it receives nothing."""
    names = wanted(project, cfg, store)
    if not names:
        return None
    delivery = None
    proxied = {}  # values the egress proxy adds: {name: (env target or None, value, hosts, where)}
    oauth_files = []  # [(FileCredential, format, bound hosts)]: login files whose tokens are placeholders
    network_mode = (cfg.get("network") or {}).get("mode")
    for name in names:
        record = creds.find(name, project)
        if record is None:
            notify(f"credential {name} is granted to this project but not stored; skipping it "
                   f"(store it with 'ab-creds set {name}', or 'ab-creds revoke {name}')")
            continue
        if creds.expired(record):
            notify(f"credential {name} expired at {creds.iso(record['meta']['expires'])}; skipping it "
                   f"(store it again with 'ab-creds set {name}')")
            continue
        clear = record["meta"]
        if files_only and clear["type"] != creds.FILE:
            continue
        if delivery is None:
            delivery = Delivery(creds.load_key())
        value = creds.reveal(record, delivery.key)
        if clear["type"] == creds.ENV and creds.inject_mode(clear, network_mode) == creds.PROXY:
            if network_mode not in ("allow", "learn"):
                notify(f"credential {name} is added by the egress proxy, which network mode {network_mode} has "
                       "not; the sandbox gets only its placeholder (use mode allow or learn, or --inject env)")
            proxied[name] = (clear["target"], os.fsdecode(value), clear["bind_hosts"],
                             {"header": clear.get("bind_header"), "query": clear.get("bind_query"),
                              "body": bool(clear.get("bind_body"))})
        elif clear["type"] == creds.ENV:
            delivery.env_values[clear["target"]] = os.fsdecode(value)
        else:
            f = FileCredential(name, record["_scope"], clear["target"], value, clear.get("writeback", False))
            if creds.inject_mode(clear, network_mode) == creds.PROXY:  # a login file: its tokens swapped
                oauth_files.append((f, clear["format"], clear["bind_hosts"]))
            delivery.files.append(f)
    if delivery is not None and (proxied or oauth_files or not files_only):  # with none: a revoked one loses its entry
        from contextlib import nullcontext  # lazy: only once a credential is delivered

        from agentsh.creds import swap  # lazy: only once a credential is delivered

        # A refresh (creds.oauth.refreshed, in the proxy) seals new tokens and their placeholders under the store
        # lock: a login file read again under it and its placeholders made under it are the old login or the new,
        # never the old tokens written over the new placeholders.
        with store.lock() if oauth_files else nullcontext():
            logins = []
            for f, fmt, hosts in oauth_files:
                from agentsh.creds import oauth  # lazy: only for a login file behind the proxy

                record = creds.find(f.name, project)
                if record is not None and record["_scope"] == f.scope:
                    f.value = creds.reveal(record, delivery.key)
                found = oauth.bindings(fmt, f.value, f.name, f.scope, hosts)
                for _, bound, where in found.values():
                    if not bound:  # an opencode provider none of the bound hosts belongs to
                        notify(f"credential {f.name}: the token of {where['oauth'].get('provider')} is bound to no "
                               "host, so its placeholder works nowhere (store the login again with --bind-host "
                               "naming that provider's API host)")
                proxied.update({n: (None, *v) for n, v in found.items()})
                if found:
                    logins.append((f, found, fmt))
            stand_ins = swap.stand_ins(store, project.sandbox, delivery.key, {n: v[1:] for n, v in proxied.items()},
                                       partial=files_only)
        for name, (target, *_) in proxied.items():
            if target is not None:
                delivery.env_values[target] = stand_ins[name]
        for f, found, fmt in logins:
            f.real, f.format = f.value, fmt
            f.value = oauth.replaced(f.value, {token: stand_ins[n] for n, (token, *_) in found.items()})
        delivery.proxied = list(proxied)
    return delivery


# -- into the sandbox and back ----------------------------------------------------


def env_file(token: str, values: Mapping[str, str]) -> FileCredential:
    """The environment values of one exec, as a file the in-sandbox `run` script reads and removes.

    It travels with the credential files (stdin of one exec, into the
    secrets tmpfs), so no value is kept in the engine's database the way
    `exec -e NAME` values are.
    """
    text = "".join(f"export {name}={_q(value)}\n" for name, value in values.items())
    path = f"{SECRETS_DIR}/env-{token}"
    return FileCredential(f"env-{token}", None, path, text.encode("utf-8", "surrogateescape"), False)


def _q(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def write_script(files: Sequence[FileCredential]) -> str:
    """sh script that reads the files' bytes, in order, from stdin into the tmpfs.

    `dd bs=1` reads exactly its count from a pipe (a buffered reader would
    swallow the next file); the last file takes the rest with `cat`.
    """
    lines = ["set -e", "umask 077",
             f"grep -q ' {SECRETS_DIR} tmpfs ' /proc/mounts || exit {NO_TMPFS}"]
    for i, f in enumerate(files):
        new = _q(f.stored + ".new")
        if i < len(files) - 1:
            lines.append(f"dd bs=1 count={len(f.value)} of={new} 2>/dev/null")
        else:
            lines.append(f"cat > {new}")
        lines.append(f"mv -f {new} {_q(f.stored)}")
        if f.target != f.stored:
            lines.append(f"mkdir -p {_q(os.path.dirname(f.target))}")
            lines.append(f"ln -sfn {_q(f.stored)} {_q(f.target)}")
    return "\n".join(lines) + "\n"


def read_back_script(files: Iterable[FileCredential]) -> str:
    """sh script printing each file as '<length>\\n<bytes>' ('-\\n' when gone).

    An agent that replaced the symlink with a regular file (write to a temp
    file, rename) gets its file moved back into the tmpfs first.
    """
    lines = ["umask 077"]
    for f in files:
        stored, target = _q(f.stored), _q(f.target)
        if f.target != f.stored:
            lines.append(f"if [ -f {target} ] && [ ! -L {target} ]; then cat {target} > {stored}.new && "
                         f"mv -f {stored}.new {stored} && rm -f {target} && ln -s {stored} {target}; fi")
        lines.append(f"if [ -f {stored} ] && cp {stored} {stored}.wb; then wc -c < {stored}.wb; "
                     f"cat {stored}.wb; rm -f {stored}.wb; else echo -; fi")
    return "\n".join(lines) + "\n"


def _gone(engine: Engine, err: str) -> bool:
    """Whether an exec's stderr is the engine saying the sandbox is gone or stopped."""
    from agentsh.host.engine import ContainerGone  # lazy: ab-status --prompt loads this module but no engine

    return isinstance(engine.error(err, "exec"), ContainerGone)


def _exec(engine: Engine, sandbox_name: str, cmd: list[str], data: bytes, run: Runner | None
          ) -> tuple[int, bytes, str]:
    """cmd in the sandbox with `data` on stdin: through `run` (the sandbox's exec server) when it answers,
    else one engine exec. Either way the values go by stdin, never in the engine's exec environment."""
    done = run(cmd, data) if run is not None else None
    return done if done is not None else engine.exec_bytes(sandbox_name, cmd, input=data, timeout=EXEC_TIMEOUT)


def write_files(engine: Engine, sandbox_name: str, files: Sequence[FileCredential],
                recover: Callable[[], object] | None = None, run: Runner | None = None) -> None:
    """One call: every file credential into the sandbox's tmpfs (`run`: through its exec server)."""
    script = write_script(files)
    data = b"".join(f.value for f in files)
    for attempt in (1, 2):
        status, _, err = _exec(engine, sandbox_name, ["sh", "-c", script], data, run if attempt == 1 else None)
        if status == 0:
            return
        if attempt == 1 and recover is not None and _gone(engine, err):
            recover()
            continue
        break
    if status == NO_TMPFS:
        raise AgentshError(f"sandbox {sandbox_name} has no secrets tmpfs (it was made by an older agentsh)",
                           "run 'ab-up' to recreate it (the home volume is kept)")
    last = (err.strip().splitlines() or [f"exit status {status}"])[-1][:200]
    raise EngineError(f"cannot write credential files into {sandbox_name}: {last}")


def parse_frames(out: bytes, count: int) -> list[bytes | None]:
    """'<length>\\n<bytes>' frames -> list of bytes (None for '-')."""
    values, pos = [], 0
    for _ in range(count):
        end = out.index(b"\n", pos)
        head = out[pos:end].strip()
        pos = end + 1
        if head == b"-":
            values.append(None)
            continue
        size = int(head)
        if pos + size > len(out):
            raise ValueError("short frame")
        values.append(out[pos:pos + size])
        pos += size
    return values


def write_back(engine: Engine, sandbox_name: str, delivery: Delivery, store: Store, notify: Notify,
               run: Runner | None = None) -> list[str]:
    """Read back write-back files after the command; re-seal the ones it changed.

    Compared with what THIS run put in, not with the cache: a sandbox that
    did not refresh never overwrites another sandbox's newer token.
    Returns the names written back.
    """
    files = delivery.writeback
    if not files:
        return []
    try:
        status, out, err = _exec(engine, sandbox_name, ["sh", "-c", read_back_script(files)], b"", run)
        if status != 0:
            raise EngineError((err.strip().splitlines() or [f"exit status {status}"])[-1][:200])
        values = parse_frames(out, len(files))
    except (AgentshError, ValueError) as e:
        notify(f"could not read back refreshed credential files from {sandbox_name}: {e}")
        return []
    changed = [(f, v) for f, v in zip(files, values) if v and v != f.value]
    if not changed:
        return []
    done = []
    try:
        with store.lock():  # the placeholders turned back under the lock a refresh seals its new tokens under
            if any(f.real is not None for f, _ in changed):  # placeholders back to values (the proxy may refresh)
                from agentsh.creds import oauth, swap  # lazy: only for a login file behind the proxy

                entries = swap.read(store, sandbox_name, delivery.key)
                # the login's own placeholders, and those of a login made inside over it (the agent logged in
                # again): the host keeps the tokens the file now names
                changed = [(f, v if f.real is None else oauth.real_file(
                               f.format, v, {n: e for n, e in entries.items()
                                             if (e.get("oauth") or {}).get("credential") == f.name
                                             or swap.captured(e)}))
                           for f, v in changed]
                changed = [(f, v) for f, v in changed if f.real is None or v != f.real]
            for f, value in changed:
                record = creds.read_record(f.name, f.scope)
                if record is None:  # removed meanwhile: do not resurrect it
                    continue
                if f.real is not None and value == creds.open_record(delivery.key, record):
                    continue  # the login as stored already (a refresh sealed it)
                clear = dict(record["meta"], updated=int(time.time()))
                creds.put(store, f.name, f.scope, clear, value, key=delivery.key)
                done.append(f.name)
    except AgentshError as e:  # the command's exit status still stands
        notify(f"could not store refreshed credential files: {e}")
    return done


def deliver(project: Project, cfg: Mapping[str, Any], engine: Engine, store: Store, notify: Notify,
            recover: Callable[[], object] | None = None, files_only: bool = False) -> Delivery | None:
    """Open what the project receives and put its files in place; the Delivery or None."""
    delivery = prepare(project, cfg, store, notify, files_only=files_only)
    if delivery is not None and delivery.files:
        write_files(engine, project.sandbox, delivery.files, recover)
    return delivery


def only_named(delivery: Delivery | None, project: Project | None, names: Collection[str]) -> Delivery | None:
    """Keep from a credential Delivery only the named credentials (lockdown: what the command names)."""
    if delivery is None:
        return None
    targets = set()
    for name in names:
        record = creds.find(name, project)
        if record is not None:
            targets.add(record["meta"]["target"])
    delivery.env_values = {k: v for k, v in delivery.env_values.items() if k in targets}
    delivery.files = [f for f in delivery.files if f.name in names]
    return delivery
