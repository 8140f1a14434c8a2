# agentsh cd hook for xonsh. Install: add  xontrib load agentsh  to ~/.xonshrc
# when agentsh is installed in xonsh's Python; otherwise  execx($(ab-hook xonsh))
# which makes agentsh importable from where it is installed, then loads it.
# Opt out: $AGENTSH_HOOK = 'off', or `ab-hook --disable` for this shell session.

import sys as _agentsh_sys
_agentsh_paths = []
_agentsh_bin = None
for _agentsh_p in _agentsh_paths:
    if _agentsh_p not in _agentsh_sys.path:
        _agentsh_sys.path.append(_agentsh_p)
xontrib load agentsh
if _agentsh_bin:
    __import__("xontrib.agentsh").agentsh.HOOK_BIN = _agentsh_bin
