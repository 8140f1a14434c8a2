"""The names the shell hooks import (the xontrib loads this module into the user's shell).

The cd decision is agentsh.app.enter, `ab-status` is agentsh.app.status and
the hook and completion sources are agentsh.app.resources; this module only
keeps their names where the shells and older callers look for them.
"""

from agentsh.app.enter import (  # noqa: F401
    BLOCKED,
    BLOCKED_MESSAGE,
    ENTER_BLOCKED,
    ENTER_LEFT_SHELL,
    ENTER_NOTHING,
    ENTER_UP,
    HOOK_ENV,
    NONE,
    OFF,
    PROJECT_FILE,
    SANDBOX_ENV,
    SHELL,
    UP,
    Decision,
    decide,
    disabled,
    find_project_file,
    recheck_file,
    session_id_for_shell,
)
from agentsh.app.resources import read_resource, resource_dirs, resource_path  # noqa: F401
from agentsh.app.status import (  # noqa: F401
    TRUST_NONE,
    TRUST_SESSION,
    granted_credentials,
    published_ports,
    status_report,
    trust_of,
)
