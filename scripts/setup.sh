#!/bin/sh
# Installs what prebake, its demo and its tests need on a Debian 12 host, idempotently.
# Quick when everything is present; fails with a message naming what could not be had.
set -eu

[ "$(id -u)" = 0 ] || { echo "setup: must run as root (apt-get, runc and CRIU need it)" >&2; exit 1; }

here=$(cd "$(dirname "$0")/.." && pwd)

# Debian packages the programs and tests use; CRIU is handled apart below.
PKGS="python3 runc iproute2 iptables debootstrap busybox-static skopeo umoci containerd containernetworking-plugins docker.io podman hyperfine jq curl ca-certificates xz-utils zstd"

criu_ok() {
  command -v criu >/dev/null 2>&1 || return 1
  v=$(criu --version 2>/dev/null | sed -n 's/^Version: *//p')
  major=${v%%.*}; rest=${v#*.}; minor=${rest%%.*}
  [ "${major:-0}" -gt 4 ] || { [ "${major:-0}" -eq 4 ] && [ "${minor:-0}" -ge 2 ]; }
}

missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done

updated=""
apt_update() {
  [ -n "$updated" ] && return 0
  echo "setup: apt-get update" >&2
  apt-get update -qq >/dev/null || { echo "setup: apt-get update failed" >&2; exit 1; }
  updated=1
}

if [ -n "$missing" ]; then
  apt_update
  echo "setup: installing$missing" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null \
    || { echo "setup: apt-get install failed for:$missing" >&2; exit 1; }
fi

if ! criu_ok; then
  # CRIU >= 4.2 is needed: bookworm's 3.17 does not run on current kernels and trixie's 4.1
  # cannot dump TCP sockets on kernels >= 6.16. sid has it; pin trixie and sid low so that
  # nothing else moves, take trixie's libraries first, then only criu and its own libs from sid.
  if [ ! -f /etc/apt/sources.list.d/prebake-criu.sources ]; then
    cat > /etc/apt/sources.list.d/prebake-criu.sources <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie sid
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    cat > /etc/apt/preferences.d/prebake-criu <<'PIN'
Package: *
Pin: release n=trixie
Pin-Priority: 100

Package: *
Pin: release n=sid
Pin-Priority: 50
PIN
    updated=""
  fi
  apt_update
  echo "setup: installing criu (trixie libraries, sid criu)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -t trixie criu >/dev/null \
    || { echo "setup: could not install criu from trixie" >&2; exit 1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq criu/sid >/dev/null \
    || { echo "setup: could not install criu from sid" >&2; exit 1; }
  criu_ok || { echo "setup: criu >= 4.2 is required, found: $(criu --version 2>&1 | head -1)" >&2; exit 1; }
fi

# The CRI API definition (api.proto) that test/helpers/cri.ts loads: not in bookworm; the low-pinned
# trixie/sid sources above have it, its dependencies stay bookworm's.
if ! dpkg-query -W -f='${Status}' golang-k8s-cri-api-dev 2>/dev/null | grep -q 'install ok installed'; then
  apt_update
  echo "setup: installing golang-k8s-cri-api-dev" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends golang-k8s-cri-api-dev >/dev/null \
    || { echo "setup: could not install golang-k8s-cri-api-dev (it needs the trixie/sid sources in /etc/apt/sources.list.d/prebake-criu.sources)" >&2; exit 1; }
fi

sh "$here/scripts/criu-kdat.sh"

# Node dependencies and the build of the two programs.
cd "$here"
if [ ! -d node_modules ] || [ package.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci" >&2
  npm ci --no-audit --no-fund --loglevel=error >&2
fi
