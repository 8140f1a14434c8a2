"""Where things are: one place for every path two modules (or both sides of a sandbox) must agree on.

Paths *inside* the sandbox are shared by several layers (the spec mounts
them, credentials and the egress proxy point programs at them, the
in-sandbox scripts read them). Record paths in the state, data and config
directories are read by one module and written by another (or by an older
agentsh), so they are spelled here too, relative to their directory. No
imports: ab-exec's path reads this module.
"""

SANDBOX_HOME = "/home/agent"  # the per-project home volume
RUN_DIR = "/run/agentsh"  # agentsh's own mounts; a config mount may not land under it
SECRETS_DIR = f"{RUN_DIR}/secrets"  # tmpfs: credential files and each exec's env file
SSH_AGENT_SOCKET = f"{RUN_DIR}/ssh-agent.sock"
CA_PATH = f"{RUN_DIR}/ca-bundle.crt"
INSTRUCTIONS_PATH = f"{RUN_DIR}/AGENTS.md"  # the user's instructions file, read-only
HOST_GIT = f"{RUN_DIR}/host-git"  # the host's git dir, read-only
LIB = f"{RUN_DIR}/lib"  # agentsh's in-sandbox scripts, read-only
RUN_SCRIPT = f"{LIB}/run"  # every command an exec runs starts here
IO_DIR = f"{RUN_DIR}/io"  # a host directory of the sandbox's own (paths.run_dir): the exec server's socket
EXECD = f"{LIB}/execd"  # the exec server, the sandbox's keep-alive
EXECD_SOCKET = f"{IO_DIR}/execd.sock"


# -- records in the state directory (relative to Store's root) ---------------------
# Every on-disk name agentsh keeps, spelled once. They are read back by
# later versions too: change none of them without migrating old state.

LOCKS = "locks"  # one file per lock: locks/<name>.lock
STATE_LOCK = "state"  # the store's own lock
IMAGE_BASE_LOCK = "image-base"  # making the default image's base
SANDBOXES = "sandboxes"
GRANTS = "grants"
WORKTREES = "worktrees"  # also the data directory holding the checkouts
PROJECT_ROOTS = "projects/roots"  # NUL-separated real paths of every project whose topology is recorded
RUNTIMES_DIR = "runtimes"  # under the data dir: the runtime wrappers of isolation = "gvisor" (sandbox.isolation)


def lock_file(name: str) -> str:
    return f"{LOCKS}/{name}.lock"


def sandbox_lock(sandbox: str) -> str:
    """Held while a sandbox's container is made, so concurrent ab-ups make one."""
    return f"sandbox-{sandbox}"


def git_lock(sandbox: str) -> str:
    """Held while a sandbox's commits are carried to the host."""
    return f"git-{sandbox}"


def worktree_lock(repo_id: str) -> str:
    return f"wt-{repo_id}"


COMPOSE = "compose"  # a compose-based devcontainer's siblings (sandbox.compose)
COMPOSE_PARSED = "compose-parsed"  # compose files' YAML parsed, by the hash of their bytes (policy.devcontainer_compose)


def compose_record(sandbox: str) -> str:
    """The siblings of a sandbox: compose project, network, file hash, containers and their init pids."""
    return f"{COMPOSE}/{sandbox}.json"


def compose_dir(sandbox: str) -> str:
    """The compose file agentsh writes for a sandbox's siblings, and the sandbox's hosts file naming them."""
    return f"{COMPOSE}/{sandbox}"


def sandbox_record(sandbox: str) -> str:
    """Spec hash, ports, init pid and creation time of a sandbox (sandbox.lifecycle)."""
    return f"{SANDBOXES}/{sandbox}.json"


def stale_notice_record(sandbox: str) -> str:
    """The config spec the cd hook last said a running sandbox predates, and in which shell session."""
    return f"notices/stale-{sandbox}.json"


def image_probe_record(image: str) -> str:
    """A passed throwaway start from an image and the programs it holds (sandbox.image.probe; ab-doctor)."""
    return f"probes/{image}.json"


def sandbox_pid_file(sandbox: str) -> str:
    """'<pid> <start time>' of the sandbox's init process (host.liveness)."""
    return f"{SANDBOXES}/{sandbox}.pid"


def sandbox_shell_file(sandbox: str) -> str:
    """The shell fallback remembered for one sandbox (host.liveness)."""
    return f"{SANDBOXES}/{sandbox}.shell"


def project_record(sandbox: str) -> str:
    """A project's git topology as first recorded (host.gittopo)."""
    return f"projects/{sandbox}.json"


def trust_allow_record(key: str) -> str:
    return f"trust/allow/{key}.json"


def trust_deny_record(key: str) -> str:
    return f"trust/deny/{key}.json"


def trust_session_record(session: str, key: str) -> str:
    return f"trust/session/{session}/{key}.json"


def grant_record(project_key: str) -> str:
    """The credentials (and SSH agent) a project's sandbox receives (creds.vault)."""
    return f"{GRANTS}/{project_key}.json"


def proxy_record(sandbox: str) -> str:
    """The egress proxy's pids, mode and allowlist for a sandbox (egress.network)."""
    return f"net/{sandbox}.json"


def proxy_err_file(sandbox: str) -> str:
    """The proxy's own stderr (its supervisor's restarts, a policy it could not reload)."""
    return f"net/{sandbox}.proxy.err"


def dns_names_file(sandbox: str) -> str:
    """The DNS answerer's synthetic address <-> name map, JSONL, appended to (egress.dns.Names)."""
    return f"net/{sandbox}.names.jsonl"


def swap_record(sandbox: str) -> str:
    """A sandbox's placeholders and the values the proxy puts in their place, sealed (creds.swap)."""
    return f"net/swap/{sandbox}.json"


def sandbox_ca(sandbox: str) -> str:
    """Directory of the sandbox's interception CA: ca.crt, ca.key (0600), leaf certs (egress.intercept)."""
    return f"net/ca/{sandbox}"


def net_allow_record(project_key: str) -> str:
    """`ab-net allow` additions for a project."""
    return f"net/allow/{project_key}.json"


def audit_log(sandbox: str) -> str:
    """The JSONL log of a sandbox's connection attempts (egress.audit)."""
    return f"net/log/{sandbox}.jsonl"


def worktree_records(repo_id: str) -> str:
    return f"{WORKTREES}/{repo_id}"


def worktree_record(repo_id: str, name: str) -> str:
    return f"{WORKTREES}/{repo_id}/{name}.json"


def config_cache(key: str) -> str:
    """A validated config layer, by content hash (policy.config.parse_cached)."""
    return f"cache/config/{key}.marshal"


CA_COPIES = "ca"  # checked copies of CA bundles, by content hash


# -- in the data directory (relative to paths.data_dir()) --------------------------

CREDS = "creds"  # creds/<scope>/<name>.json: the sealed credential records


def credential_record(scope: str, name: str) -> str:
    return f"{CREDS}/{scope}/{name}.json"


def private_git_dir(sandbox: str, locked: bool = False) -> str:
    """The sandbox's own git dir (sandbox.gitbridge); a locked-down sandbox has another."""
    return f"git/{sandbox}{'-locked' if locked else ''}"


GIT_EXPORT = "agentsh-export"  # in a private git dir: what the in-sandbox gitsync wrote for the host to take


def lib_dir(digest: str) -> str:
    """The in-sandbox scripts of one agentsh version, named by their content."""
    return f"lib/{digest}"


def lockdown_dir(sandbox: str) -> str:
    """A locked-down sandbox's overlay: upper/ (its writes to the project) and work/."""
    return f"lockdown/{sandbox}"


# -- in the config directory (relative to paths.config_dir()) ----------------------

USER_CONFIG = "config.toml"
INSTRUCTIONS_FILE = "AGENTS.md"
CREDENTIAL_KEY = "creds.key"
CREDENTIAL_PASSPHRASE = "creds.passphrase.json"
