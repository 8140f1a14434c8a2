# Shared by scripts/test-setup and scripts/quickstart: system packages,
# the engine compatibility check, a Python >= 3.11 that other users can run.

SYSTEM_PACKAGES="podman runc uidmap slirp4netns fuse-overlayfs catatonit busybox-static debootstrap git"

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else echo "agentsh: need root for: $*; run it as root" >&2; return 1
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
