# bash completion for ab and every ab-* command.
# Install: eval "$(ab-hook --completions bash)" in ~/.bashrc, or source this file.
#
# Subcommands and flags come from each command's options table, and names
# (credentials, worktrees, sandboxes, images, agents) from agentsh's state and
# config as they are on disk now, through `ab-hook --complete`; the engine is
# never started. File and directory names are bash's own (any name, newlines
# included), as is everything when agentsh has nothing to offer.

_agentsh_complete() {
  local -a words=() starts=() found=()
  local i w n index=0 glue= cur=${COMP_WORDS[COMP_CWORD]}
  # bash splits --opt=value at '=' (COMP_WORDBREAKS): join the words again, as the command sees them.
  for ((i = 0; i < ${#COMP_WORDS[@]}; i++)); do
    w=${COMP_WORDS[i]}
    n=${#words[@]}
    if [[ -n $glue ]]; then
      words[n-1]+=$w glue=
    elif [[ $w == = && $n -gt 1 && ${words[n-1]} == --?* && ${words[n-1]} != *=* ]]; then
      words[n-1]+=$w glue=1
    else
      words+=("$w")
      starts+=("$i")
    fi
    (( i == COMP_CWORD )) && index=$(( ${#words[@]} - 1 ))
  done
  (( COMP_CWORD >= ${#COMP_WORDS[@]} )) && { words+=(""); index=$(( ${#words[@]} - 1 )); }
  mapfile -t found < <(command "${_agentsh_complete_bin:-ab-hook}" --complete "$index" -- "${words[@]}" 2>/dev/null)
  COMPREPLY=()
  case ${found[0]-} in
    @dirs)  # bash's own directory names: no list to split, any name completes
      compopt -o filenames -o dirnames +o default +o bashdefault 2>/dev/null
      return ;;
    @files) return ;;  # complete -o default: readline's file names
    "@rest "*)  # another program's command line (ab-exec -- CMD...)
      if declare -F _command_offset >/dev/null; then  # bash-completion's, when loaded
        _command_offset "${starts[${found[0]#@rest }]:-$COMP_CWORD}"
      fi
      return ;;
  esac
  # After --opt=, bash replaces only what follows the '=': drop what comes before it.
  [[ $cur == = ]] && cur=
  local strip=$(( ${#words[index]} - ${#cur} ))
  for w in "${found[@]}"; do
    COMPREPLY+=("${w:strip}")
  done
}

_agentsh_complete_register() {
  local -a names
  mapfile -t names < <(compgen -c ab- | sort -u)
  complete -o bashdefault -o default -F _agentsh_complete ab "${names[@]}"
}
_agentsh_complete_register
unset -f _agentsh_complete_register
