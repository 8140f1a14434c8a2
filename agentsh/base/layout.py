"""Where things are inside a sandbox: one place for every path both sides must agree on.

Record paths in the state directory are spelled by the modules that own
those records; paths *inside* the sandbox are shared by several layers (the
spec mounts them, credentials and the egress proxy point programs at them,
the in-sandbox scripts read them), so they live here.
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
