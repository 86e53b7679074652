#!/bin/sh
# Installs what prebake, its demo and its tests need on a Debian 12 host, idempotently.
# Quick when everything is present; fails with a message naming what could not be had.
# --system: only the system part (packages, CRIU, the CRI API definition, CRIU's kernel cache,
# this host's bake key); no npm.
set -eu

system_only=""
case "${1:-}" in
  --system) system_only=1 ;;
  "") ;;
  *) echo "usage: setup.sh [--system]" >&2; exit 2 ;;
esac

[ "$(id -u)" = 0 ] || { echo "setup: must run as root (apt-get, runc and CRIU need it)" >&2; exit 1; }

here=$(cd "$(dirname "$0")/.." && pwd)

# Debian packages the programs and tests use; CRIU is handled apart below.
PKGS="python3 openssl runc iproute2 iptables debootstrap busybox-static skopeo umoci containerd containernetworking-plugins golang-github-gogo-protobuf-dev docker.io podman hyperfine jq curl ca-certificates xz-utils zstd"

criu_ok() {
  command -v criu >/dev/null 2>&1 || return 1
  v=$(criu --version 2>/dev/null | sed -n 's/^Version: *//p')
  major=${v%%.*}; rest=${v#*.}; minor=${rest%%.*}
  { [ "${major:-0}" -gt 4 ] || { [ "${major:-0}" -eq 4 ] && [ "${minor:-0}" -ge 2 ]; }; } && criu check >/dev/null 2>&1
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

# Left by an earlier version of this script, which took CRIU from trixie/sid: those binary
# sources let apt move host packages to another release, so they go.
if [ -f /etc/apt/sources.list.d/prebake-criu.sources ] || [ -f /etc/apt/preferences.d/prebake-criu ]; then
  echo "setup: removing the trixie/sid apt sources an earlier setup added" >&2
  rm -f /etc/apt/sources.list.d/prebake-criu.sources /etc/apt/preferences.d/prebake-criu
  updated=""; apt_update
fi

# Files that are not in this host's release are fetched by exact name and checked against a
# pinned sha256 (the digests Debian's signed indexes give for them), into a root-owned cache.
# Nothing from another release is installed as a package: no host package changes release.
cache=/var/cache/prebake
fetch_pinned() { # URL SHA256 DEST
  [ -f "$3" ] && echo "$2  $3" | sha256sum -c --status && return 0
  mkdir -p "$(dirname "$3")"
  curl -fsSL --retry 3 -o "$3.part" "$1" || { echo "setup: could not download $1" >&2; rm -f "$3.part"; return 1; }
  echo "$2  $3.part" | sha256sum -c --status || { echo "setup: $1 does not have the pinned sha256 $2" >&2; rm -f "$3.part"; return 1; }
  mv "$3.part" "$3"
}

# CRIU >= 4.2: bookworm's 3.17 fails `criu check` on current kernels, and 4.1 cannot dump a TCP
# socket on kernels >= 6.16. Use the release's own criu when it is new enough; otherwise build
# CRIU's upstream release (the tarball Debian's archive serves) against this release's libraries
# and install the one binary as /usr/local/sbin/criu, where runc finds it on PATH.
# Built without GnuTLS (CRIU_MAKE), whether or not its headers are here: it serves only the TLS
# of CRIU's page server, which prebake never uses, and loading it costs every start of CRIU
# (two a restore) ~1.5 ms. A build of ours installed by an earlier setup with other flags (the
# installed binary is the cached build, byte for byte) is built again and replaces it; without
# the cache (/var/cache/prebake removed) it cannot be told from another CRIU and is kept.
CRIU_VERSION=4.2.1
CRIU_SHA256=29ec0ee09e296479fe7048c80980e8ef1d0684d0b0204c2b101dfea19f6725b9
CRIU_URL=http://deb.debian.org/debian/pool/main/c/criu/criu_$CRIU_VERSION.orig.tar.xz
CRIU_BUILD_PKGS="gcc make libc6-dev pkg-config libprotobuf-c-dev protobuf-c-compiler libprotobuf-dev protobuf-compiler libnl-3-dev libnet1-dev libcap-dev libbsd-dev python3-protobuf uuid-dev"
CRIU_MAKE="NO_GNUTLS=1"
criu_src=$cache/criu-$CRIU_VERSION
criu_stamp=$criu_src/.prebake-make
criu_built() { [ -x "$criu_src/criu/criu" ] && [ "$(cat "$criu_stamp" 2>/dev/null)" = "$CRIU_MAKE" ]; }
rebuild_criu=
if [ -x /usr/local/sbin/criu ] && cmp -s /usr/local/sbin/criu "$criu_src/criu/criu" && ! criu_built; then
  rebuild_criu=1
fi
if ! criu_ok; then
  candidate=$(apt-cache policy criu 2>/dev/null | sed -n 's/^ *Candidate: *//p')
  case "$candidate" in 4.[2-9]*|4.[1-9][0-9]*|[5-9].*)
    echo "setup: installing this release's criu $candidate" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends criu >/dev/null || true ;;
  esac
fi
# Builds CRIU into $criu_src (its build dependencies, this release's, installed first); fails
# with the reason on stderr.
build_criu() {
  missing=""
  for p in $CRIU_BUILD_PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
  done
  if [ -n "$missing" ]; then
    apt_update
    echo "setup: installing CRIU's build dependencies (this release's):$missing" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null \
      || { echo "setup: apt-get install failed for:$missing" >&2; return 1; }
  fi
  fetch_pinned "$CRIU_URL" "$CRIU_SHA256" "$cache/criu_$CRIU_VERSION.orig.tar.xz" || return 1
  echo "setup: building CRIU $CRIU_VERSION in $criu_src (~30 s)" >&2
  rm -rf "$criu_src" && mkdir -p "$cache" && tar -C "$cache" -xJf "$cache/criu_$CRIU_VERSION.orig.tar.xz" \
    && make -C "$criu_src" -j"$(nproc)" $CRIU_MAKE criu >"$cache/criu-build.log" 2>&1 \
    && echo "$CRIU_MAKE" > "$criu_stamp" \
    || { echo "setup: building CRIU failed; see $cache/criu-build.log" >&2; return 1; }
}
install_criu() {
  install -m 0755 "$criu_src/criu/criu" /usr/local/sbin/criu
  hash -r 2>/dev/null || true
}
if ! criu_ok; then
  criu_built || build_criu || exit 1
  install_criu
  criu_ok || { echo "setup: criu >= 4.2 passing 'criu check' on $(uname -r) is required, found: $(criu --version 2>&1 | head -1); $(criu check 2>&1 | tail -1)" >&2; exit 1; }
elif [ -n "$rebuild_criu" ]; then
  # The installed build works: one that cannot be made anew (offline, say) is kept.
  if build_criu; then
    install_criu
    criu_ok || { echo "setup: the CRIU built anew fails 'criu check': $(criu check 2>&1 | tail -1)" >&2; exit 1; }
  else
    echo "setup: keeping the installed /usr/local/sbin/criu (built with other flags than $CRIU_MAKE)" >&2
  fi
fi
# CRIU's image definitions, for the tests that read and edit checkpoint images.
if [ ! -f /usr/local/share/prebake/criu-images/core.proto ]; then
  if [ ! -f "$criu_src/images/core.proto" ]; then
    fetch_pinned "$CRIU_URL" "$CRIU_SHA256" "$cache/criu_$CRIU_VERSION.orig.tar.xz" || exit 1
    tar -C "$cache" -xJf "$cache/criu_$CRIU_VERSION.orig.tar.xz" "criu-$CRIU_VERSION/images"
  fi
  mkdir -p /usr/local/share/prebake/criu-images && cp "$criu_src"/images/*.proto /usr/local/share/prebake/criu-images/
fi

# The registry the registry tests run on loopback: bookworm's docker-registry, unpacked into the
# cache, not installed (installed, its package enables a registry service on :5000).
if [ ! -x "$cache/docker-registry/usr/bin/docker-registry" ]; then
  apt_update
  echo "setup: unpacking docker-registry into $cache (not installed as a service)" >&2
  rm -rf "$cache/docker-registry" "$cache"/docker-registry_*.deb && mkdir -p "$cache" \
    && (cd "$cache" && apt-get download -qq docker-registry >/dev/null 2>&1) \
    && dpkg-deb -x "$cache"/docker-registry_*.deb "$cache/docker-registry" \
    || { echo "setup: could not fetch docker-registry" >&2; exit 1; }
fi

# The CRI API definition (api.proto) that prebake-build's cri target (built into
# dist/prebake-build.cjs by scripts/build.mjs) and the CRI tests load: not in bookworm. The .deb
# of trixie's golang-github-kubernetes-cri-api-dev is unpacked into the cache, never installed.
CRI_DEB=golang-github-kubernetes-cri-api-dev_0.32.3-1_all.deb
CRI_SHA256=634610347b36362eb4614eb98c494cb9363d5d873da99806ba2b181460a93b20
cri_root=$cache/cri-api
if [ ! -f "$cri_root/usr/share/gocode/src/k8s.io/cri-api/pkg/apis/runtime/v1/api.proto" ]; then
  fetch_pinned "http://deb.debian.org/debian/pool/main/g/golang-github-kubernetes-cri-api/$CRI_DEB" "$CRI_SHA256" "$cache/$CRI_DEB" || exit 1
  rm -rf "$cri_root" && dpkg-deb -x "$cache/$CRI_DEB" "$cri_root"
fi

sh "$here/scripts/criu-kdat.sh"

# This host's bake key, made and trusted on first use (`prebake install` does the same): what is
# baked here is signed with it, and this host's runtime restores only what a trusted key signed.
key=/etc/prebake/keys/bake.key
if [ ! -f "$key" ]; then
  echo "setup: creating this host's bake key $key" >&2
  mkdir -p /etc/prebake/keys
  (umask 077 && openssl genpkey -algorithm ed25519 -out "$key.tmp") && mv "$key.tmp" "$key" \
    && openssl pkey -in "$key" -pubout -out /etc/prebake/keys/bake.pub \
    || { echo "setup: could not create the bake key $key" >&2; exit 1; }
fi
[ -s /etc/prebake/keys/bake.pub ] || openssl pkey -in "$key" -pubout -out /etc/prebake/keys/bake.pub \
  || { echo "setup: could not write /etc/prebake/keys/bake.pub from $key" >&2; exit 1; }
der=$(openssl pkey -pubin -in /etc/prebake/keys/bake.pub -outform DER | sha256sum) \
  || { echo "setup: /etc/prebake/keys/bake.pub is not a public key" >&2; exit 1; }
key_id=${der%% *}
if [ ! -f "/etc/prebake/trust/$key_id.pub" ]; then
  mkdir -p /etc/prebake/trust && cp /etc/prebake/keys/bake.pub "/etc/prebake/trust/$key_id.pub" \
    || { echo "setup: could not trust this host's key in /etc/prebake/trust" >&2; exit 1; }
fi
[ -z "$system_only" ] || exit 0

# Node dependencies and the build of the two programs.
cd "$here"
if [ ! -d node_modules ] || [ package.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci" >&2
  npm ci --no-audit --no-fund --loglevel=error >&2
fi
