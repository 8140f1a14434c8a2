# bash completion for ab and every ab-* command.
# Install: eval "$(ab-hook --completions bash)" in ~/.bashrc, or source this file.
#
# Subcommands and flags come from each command's options table, and names
# (credentials, worktrees, sandboxes, images) from agentsh's state as it is on
# disk now, through `ab-hook --complete`; the engine is never started.

_agentsh_complete() {
  local cur=${COMP_WORDS[COMP_CWORD]}
  local -a found
  mapfile -t found < <(command "${_agentsh_complete_bin:-ab-hook}" --complete "$COMP_CWORD" -- "${COMP_WORDS[@]}" 2>/dev/null)
  if [[ ${#found[@]} == 1 && ${found[0]} == @dirs ]]; then
    mapfile -t COMPREPLY < <(compgen -d -- "$cur")
    compopt -o filenames 2>/dev/null
  elif [[ ${#found[@]} == 1 && ${found[0]} == @files ]]; then
    mapfile -t COMPREPLY < <(compgen -f -- "$cur")
    compopt -o filenames 2>/dev/null
  else
    COMPREPLY=("${found[@]}")
  fi
}

_agentsh_complete_register() {
  local -a names
  mapfile -t names < <(compgen -c ab- | sort -u)
  complete -F _agentsh_complete ab "${names[@]}"
}
_agentsh_complete_register
unset -f _agentsh_complete_register
