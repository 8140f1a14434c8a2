"""One thin module per `ab-*` command: parse, call the core, print, exit."""

import sys as _sys


def _interrupted(kind, value, tb, _previous=_sys.excepthook):
    """A Ctrl-C while a command's modules are still loading (before common.run): exit 130, no traceback."""
    if issubclass(kind, KeyboardInterrupt):
        import os  # lazy: only when an interrupt arrives while a command starts

        os._exit(130)
    _previous(kind, value, tb)


if (_sys.argv[0] if _sys.argv else "").rpartition("/")[2].startswith("ab"):  # an ab-* process, not a test
    _sys.excepthook = _interrupted

# Every installed command and its entry point; scripts/bin holds one launcher each
# (a test keeps the two in step), and completions read the list from here.
ENTRY_POINTS = {
    "ab": "agentsh.cli.ab:main",
    "ab-agent": "agentsh.cli.agent:main",
    "ab-allow": "agentsh.cli.allow:allow_main",
    "ab-creds": "agentsh.cli.creds:main",
    "ab-deny": "agentsh.cli.allow:deny_main",
    "ab-doctor": "agentsh.cli.doctor:main",
    "ab-down": "agentsh.cli.down:main",
    "ab-exec": "agentsh.cli.exec:main",
    "ab-hook": "agentsh.cli.hook:main",
    "ab-image": "agentsh.cli.image:main",
    "ab-log": "agentsh.cli.log:main",
    "ab-ls": "agentsh.cli.ls:main",
    "ab-net": "agentsh.cli.net:main",
    "ab-status": "agentsh.cli.status:main",
    "ab-up": "agentsh.cli.up:main",
    "ab-wt": "agentsh.cli.wt:main",
}
