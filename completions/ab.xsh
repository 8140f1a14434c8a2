# xonsh completion for ab and every ab-* command. `xontrib load agentsh` adds it
# with the cd hook; for completion alone: execx($(ab-hook --completions xonsh)).
# Candidates are computed in-process from each command's options table and
# agentsh's state on disk; the engine is never started.

import sys as _agentsh_sys
_agentsh_paths = []
for _agentsh_p in _agentsh_paths:
    if _agentsh_p not in _agentsh_sys.path:
        _agentsh_sys.path.append(_agentsh_p)
__import__("agentsh.cli.completion").cli.completion.register_xonsh()
