"""One error type for everything agentsh reports to a user.

Each error carries a one-line message naming the problem and, where there is
one, the command or edit that fixes it; the CLI prints it and exits with its
code, never a traceback.
"""

from __future__ import annotations

# Exit status for agentsh's or the engine's own failure before the user's
# command ran (as `podman run` uses it).
EXIT_FAILURE = 125
EXIT_USAGE = 2


class AgentshError(Exception):
    """A failure the user can act on: message, optional fix, exit code."""

    def __init__(self, message: str, fix: str | None = None, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix
        self.code = code

    def __str__(self) -> str:
        if self.fix:
            return f"{self.message}; {self.fix}"
        return self.message


class UsageError(AgentshError):
    """Bad flags or arguments: exit status 2."""

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message, fix, EXIT_USAGE)


class StateError(AgentshError):
    """A state record that cannot be read (torn, empty, unknown schema)."""


class ConfigError(AgentshError):
    """A config file that cannot be used: file, line or key in the message."""


class EngineError(AgentshError):
    """The container engine is missing, stopped, or refused a request."""


class CredentialError(AgentshError):
    """A credential that cannot be stored, found or opened."""
