# agentsh cd hook for zsh. Install: add  eval "$(ab-hook zsh)"  to ~/.zshrc
#
# Before each prompt: if $PWD is unchanged, or no .agentsh.toml is above it,
# only builtins run (no fork, no exec, no command substitution). On entering a
# project, one `ab-hook --enter DIR` decides (trust, [hook] on_enter) and acts;
# its exit status says what happened. Paths are only ever passed as arguments.
# Opt out: AGENTSH_HOOK=off, or `ab-hook --disable` for this shell session.

_agentsh_bin=ab-hook
if [[ -z ${AGENTSH_SESSION-} ]]; then
  # The id `ab-allow --session` trusts for: random, made once per session.
  printf -v AGENTSH_SESSION '%04x%04x%04x%04x%x' $RANDOM $RANDOM $RANDOM $RANDOM $$
fi
export AGENTSH_SESSION
typeset -g _agentsh_dir=$'\n'  # the last $PWD seen; never a real $PWD, so the first prompt looks
typeset -g _agentsh_project=   # the project directory we are in (its .agentsh.toml decided already)
typeset -g _agentsh_marked=
typeset -g _agentsh_ps1=

_agentsh_hook() {
  emulate -L zsh
  [[ $PWD == "$_agentsh_dir" ]] && return 0
  _agentsh_dir=$PWD
  [[ ${AGENTSH_HOOK-} == [Oo][Ff][Ff] || -n ${AGENTSH_SANDBOX-} ]] && return 0
  local d=${PWD%/}
  while [[ -n $d ]]; do
    [[ $d != "$HOME" && -f $d/.agentsh.toml ]] && break
    d=${d%/*}
  done
  if [[ $d != "$_agentsh_project" ]]; then
    _agentsh_unmark
    _agentsh_project=$d
    if [[ -n $d ]]; then
      "$_agentsh_bin" --enter "$PWD"
      (( $? == 5 )) && _agentsh_mark
    fi
  fi
  return 0
}

_agentsh_mark() {
  _agentsh_ps1=$PS1
  PS1="(ab) $PS1"
  _agentsh_marked=1
}

_agentsh_unmark() {
  if [[ -n $_agentsh_marked ]]; then
    PS1=$_agentsh_ps1
    _agentsh_marked=
  fi
}

# `ab-hook --disable` / `--enable` must change this shell, so they happen here.
ab-hook() {
  case ${1-} in
    --disable)
      export AGENTSH_HOOK=off
      _agentsh_unmark
      _agentsh_project=
      ;;
    --enable)
      unset AGENTSH_HOOK
      _agentsh_dir=$'\n'
      ;;
    *) "$_agentsh_bin" "$@" ;;
  esac
}

(( ${precmd_functions[(Ie)_agentsh_hook]} )) || precmd_functions=(_agentsh_hook $precmd_functions)
