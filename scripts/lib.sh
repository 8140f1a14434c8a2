# Shared by scripts/test-setup and scripts/quickstart: system packages,
# the engine compatibility check, a Python >= 3.11 that other users can run.

# mmdebstrap makes the image's Debian base without root when no registry answers
# (debootstrap does it as root); jq is in the README's tour.
SYSTEM_PACKAGES="podman podman-compose runc uidmap slirp4netns fuse-overlayfs catatonit busybox-static debootstrap mmdebstrap git jq iptables iproute2"

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else echo "agentsh: need root for: $*; run it as root" >&2; return 1
  fi
}

as_root_or_say() {  # as_root_or_say CMD...: run it as root, or say exactly what to run (no sudo here)
  if [ "$(id -u)" = 0 ] || { command -v sudo >/dev/null && sudo -n true 2>/dev/null; } || [ -t 0 ]; then
    as_root "$@" && return 0
  fi
  echo "agentsh: rootless Podman needs this once, as root: $*" >&2
  return 0
}

ensure_rootless() {  # what rootless Podman needs that only root can give: a usable /dev/net/tun, subordinate ids
  [ "$(id -u)" = 0 ] && return 0
  local user start
  user=$(id -un)
  if [ -e /dev/net/tun ] && ! { [ -r /dev/net/tun ] && [ -w /dev/net/tun ]; }; then
    echo "agentsh: /dev/net/tun is not usable by $user (rootless networking needs it): chmod 666 /dev/net/tun" >&2
    as_root_or_say chmod 666 /dev/net/tun
  fi
  if ! grep -qs "^\($user\|$(id -u)\):" /etc/subuid || ! grep -qs "^\($user\|$(id -u)\):" /etc/subgid; then
    start=$(cat /etc/subuid /etc/subgid 2>/dev/null | awk -F: 'BEGIN { m = 100000 } $3 ~ /^[0-9]+$/ && $2 + $3 > m { m = $2 + $3 } END { print m }')
    echo "agentsh: $user has no subordinate uid/gid range (rootless Podman needs 65536): adding $start-$((start + 65535))" >&2
    as_root_or_say usermod --add-subuids "$start-$((start + 65535))" --add-subgids "$start-$((start + 65535))" "$user"
    podman system migrate >/dev/null 2>&1 || true
  fi
}

ensure_overlay_storage() {  # a fresh rootless storage on vfs copies the whole image per sandbox: use overlay
  [ "$(id -u)" = 0 ] && return 0
  local conf=${XDG_CONFIG_HOME:-$HOME/.config}/containers/storage.conf
  [ -e "$conf" ] && return 0  # the user's own choice
  [ "$(podman info --format '{{.Store.GraphDriverName}}' 2>/dev/null)" = vfs ] || return 0
  # Only an empty store: switching drivers means `podman system reset`.
  [ -z "$(podman images -aq 2>/dev/null)" ] && [ -z "$(podman ps -aq 2>/dev/null)" ] || {
    echo "agentsh: your Podman storage uses vfs (slow, a full image copy per sandbox); 'ab doctor' says how to switch" >&2
    return 0
  }
  mkdir -p "$(dirname "$conf")"
  if [ "$(uname -r | awk -F. '{ print ($1 > 5 || ($1 == 5 && $2 >= 13)) }')" = 1 ]; then
    printf '[storage]\ndriver = "overlay"\n' > "$conf"
  else
    printf '[storage]\ndriver = "overlay"\n[storage.options.overlay]\nmount_program = "/usr/bin/fuse-overlayfs"\n' > "$conf"
  fi
  if podman system reset -f >/dev/null 2>&1 && [ "$(podman info --format '{{.Store.GraphDriverName}}' 2>/dev/null)" = overlay ]; then
    echo "agentsh: wrote $conf (driver = \"overlay\"): sandboxes share the image's files instead of copying them" >&2
  else
    rm -f "$conf"
    podman system reset -f >/dev/null 2>&1 || true
    echo "agentsh: overlay storage does not work here; staying on vfs" >&2
  fi
}

ensure_packages() {  # ensure_packages PKG... : apt-get install what is missing
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} = 0 ] && return 0
  if ! command -v apt-get >/dev/null; then
    echo "agentsh: please install: ${missing[*]} (no apt-get here)" >&2
    return 1
  fi
  echo "agentsh: installing ${missing[*]}" >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_packages_off() {  # ensure_packages_off PKG... : ensure_packages, starting no service they ship
  # Debian starts an installed daemon at once; the tests start their own (a port, a socket of their own)
  local made= rc=0
  if [ ! -e /usr/sbin/policy-rc.d ] && [ "$(id -u)" = 0 ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && made=1
  fi
  ensure_packages "$@" || rc=$?
  [ -z "$made" ] || rm -f /usr/sbin/policy-rc.d
  return $rc
}

engine_needs_compat() {  # true where Podman's default runtime cannot start containers
  local facts
  facts=$(podman info --format '{{.Host.CgroupsVersion}} {{.Host.OCIRuntime.Name}}' 2>/dev/null) || return 1
  [ "$facts" = "v1 crun" ] || { [ "$(id -u)" = 0 ] && [ "${facts#v1}" != "$facts" ]; }
}

find_python() {  # a python3 >= 3.11, preferring the system one (runnable by every user)
  local py
  for py in /usr/bin/python3 python3.13 python3.12 python3.11 python3; do
    if command -v "$py" >/dev/null && "$py" -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      command -v "$py"; return 0
    fi
  done
  echo "agentsh: needs Python >= 3.11 with the venv module (Debian: apt-get install python3-venv)" >&2
  return 1
}
