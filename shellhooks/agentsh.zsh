# agentsh cd hook for zsh. Install: add  eval "$(ab-hook zsh)"  at the end of ~/.zshrc
# (after compinit and after anything else that adds precmd hooks).
#
# Before each prompt: if $PWD is unchanged, or no .agentsh.toml is above it,
# only builtins run (no fork, no exec, no command substitution). On entering a
# project, one `ab-hook --enter DIR` decides (trust, [hook] on_enter) and acts;
# its exit status says what happened. Paths are only ever passed as arguments.
# The walk up goes through `..`, which the kernel resolves on the real path, so
# the hook finds the project ab-hook decides on whatever symlink led there, and
# one directory reached by two paths (compared with -ef) is one project.
# Opt out: AGENTSH_HOOK=off, or `ab-hook --disable` for this shell session.

_agentsh_bin=ab-hook
_agentsh_state=  # agentsh's state directory (ab-hook fills it in)
if [[ -z ${AGENTSH_SESSION-} ]]; then
  # The id `ab-allow --session` trusts for: random, made once per session.
  printf -v AGENTSH_SESSION '%04x%04x%04x%04x%x' $RANDOM $RANDOM $RANDOM $RANDOM $$
fi
export AGENTSH_SESSION
# ab-allow leaves this file for its shell session; the hook looks for it only while blocked.
typeset -g _agentsh_recheck=${_agentsh_state:+$_agentsh_state/hook/$AGENTSH_SESSION.allowed}
typeset -g _agentsh_dir=$'\n'  # the last $PWD seen; never a real $PWD, so the first prompt looks
typeset -g _agentsh_project=   # the project directory we are in (its .agentsh.toml decided already)
typeset -g _agentsh_blocked=   # 1: that .agentsh.toml was blocked; an ab-allow in this session decides again
typeset -g _agentsh_found=
typeset -g _agentsh_marked=
typeset -g _agentsh_ps1=       # PS1 without the mark

_agentsh_hook() {
  emulate -L zsh
  if [[ ${AGENTSH_HOOK-} == [Oo][Ff][Ff] || -n ${AGENTSH_SANDBOX-} ]]; then
    # Off is --disable: nothing marked, no project remembered, so turning it on decides afresh.
    [[ -n $_agentsh_project$_agentsh_marked ]] && _agentsh_forget
    return 0
  fi
  local how=--enter
  if [[ -n $_agentsh_blocked && -n $_agentsh_recheck && -e $_agentsh_recheck ]]; then
    how=--recheck _agentsh_project= _agentsh_blocked=  # ab-allow ran in this session since: decide again
  elif [[ $PWD == "$_agentsh_dir" ]]; then
    [[ -n $_agentsh_marked && $PS1 != "(ab) $_agentsh_ps1" ]] && _agentsh_mark  # the prompt was rebuilt
    return 0
  fi
  _agentsh_dir=$PWD
  _agentsh_find
  if [[ $_agentsh_found != "$_agentsh_project" ]]; then
    if [[ -n $_agentsh_found && -n $_agentsh_project && $_agentsh_found -ef $_agentsh_project ]]; then
      _agentsh_project=$_agentsh_found  # the same project by another path
    else
      _agentsh_unmark
      _agentsh_project=$_agentsh_found
      _agentsh_blocked=
      if [[ -n $_agentsh_found ]]; then
        "$_agentsh_bin" "$how" "$PWD"
        case $? in
          3) _agentsh_blocked=1 ;;
          5) _agentsh_mark ;;
        esac
      fi
    fi
  fi
  [[ -n $_agentsh_marked && $PS1 != "(ab) $_agentsh_ps1" ]] && _agentsh_mark
  return 0
}

# _agentsh_found: the nearest directory at or above $PWD on its real path that
# holds .agentsh.toml (never / or $HOME), as a path without ".." when the
# logical one reaches the same directory; empty when there is none.
_agentsh_find() {
  emulate -L zsh
  local p=$PWD c=${PWD%/} up=${PWD//[^\/]/}
  integer n=0
  _agentsh_found=
  while (( n < 4096 )); do
    if [[ -f $p/.agentsh.toml ]]; then
      [[ $p -ef / ]] && return
      if ! [[ $p -ef ${HOME-} ]]; then
        if [[ $p == "$PWD" || ( -n $c && $c -ef $p ) ]]; then _agentsh_found=${c:-/}; else _agentsh_found=$p; fi
        return
      fi
    fi
    # Past as many levels as the logical path has, stop at / (or at a $PWD that went away).
    (( ++n >= ${#up} )) && [[ $p -ef / || ! -d $p ]] && return
    p=$p/..
    c=${c%/*}
  done
}

_agentsh_mark() {
  _agentsh_ps1=$PS1
  PS1="(ab) $PS1"
  _agentsh_marked=1
}

_agentsh_unmark() {
  if [[ -n $_agentsh_marked ]]; then
    [[ $PS1 == "(ab) $_agentsh_ps1" ]] && PS1=$_agentsh_ps1  # else the prompt code rebuilt it already
    _agentsh_marked=
  fi
}

_agentsh_forget() {
  _agentsh_unmark
  _agentsh_project=
  _agentsh_blocked=
  _agentsh_dir=$'\n'
}

# `ab-hook --disable` / `--enable` must change this shell, so they happen here.
ab-hook() {
  case ${1-} in
    --disable)
      export AGENTSH_HOOK=off
      _agentsh_forget
      ;;
    --enable)
      unset AGENTSH_HOOK
      _agentsh_dir=$'\n'
      ;;
    *) "$_agentsh_bin" "$@" ;;
  esac
}

# Last of the precmd hooks (a precmd function runs before them all), so the mark
# goes on a prompt the user's prompt code has already built.
precmd_functions=(${precmd_functions:#_agentsh_hook} _agentsh_hook)
