# agentsh cd hook for bash. Install: add  eval "$(ab-hook bash)"  to ~/.bashrc
#
# Before each prompt: if $PWD is unchanged, or no .agentsh.toml is above it,
# only builtins run (no fork, no exec, no command substitution). On entering a
# project, one `ab-hook --enter DIR` decides (trust, [hook] on_enter) and acts;
# its exit status says what happened. Paths are only ever passed as arguments.
# Opt out: AGENTSH_HOOK=off, or `ab-hook --disable` for this shell session.

_agentsh_bin=ab-hook
if [[ -z ${AGENTSH_SESSION-} ]]; then
  # The id `ab-allow --session` trusts for: random, made once per session.
  printf -v AGENTSH_SESSION '%04x%04x%04x%04x%x' "$RANDOM" "$RANDOM" "$RANDOM" "$RANDOM" "$$"
fi
export AGENTSH_SESSION
_agentsh_dir=$'\n'  # the last $PWD seen; never a real $PWD, so the first prompt looks
_agentsh_project=   # the project directory we are in (its .agentsh.toml decided already)
_agentsh_marked=
_agentsh_ps1=

_agentsh_hook() {
  local rc=$?
  [[ $PWD == "$_agentsh_dir" ]] && return "$rc"
  _agentsh_dir=$PWD
  [[ ${AGENTSH_HOOK-} == [Oo][Ff][Ff] || -n ${AGENTSH_SANDBOX-} ]] && return "$rc"
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
      [[ $? == 5 ]] && _agentsh_mark
    fi
  fi
  return "$rc"
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
      AGENTSH_HOOK=off
      export AGENTSH_HOOK
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

case ";${PROMPT_COMMAND-};" in
  *";_agentsh_hook;"*) ;;
  *) PROMPT_COMMAND="_agentsh_hook${PROMPT_COMMAND:+;$PROMPT_COMMAND}" ;;
esac
