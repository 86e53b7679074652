#!/bin/sh
# Packs the built programs (dist/, made by `npm run -s build`; `npm run package` runs both) and
# bin/ into prebake_<version>_<arch>.deb, written to OUTDIR (default dist-deb/ in the repo):
#   /usr/lib/prebake/bin/{prebake,prebake-build}   the repo's bin/ scripts
#   /usr/lib/prebake/bin/prebake-create.sh         what bin/prebake sources for a prebaked create
#   /usr/lib/prebake/dist/…                        what they run (bin/prebake finds it as ../dist)
#   /usr/bin/{prebake,prebake-build}               symlinks to them
# Every file root's and not writable by group or others (`prebake install` refuses a runtime that
# is). No maintainer scripts: installing registers nothing with any engine and creates no key;
# `prebake install docker|containerd|podman` does both.
# Usage: sh scripts/package.sh [OUTDIR]      (PREBAKE_MAINTAINER="Name <mail>" sets Maintainer)
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$here/dist-deb}
case $out in /*) ;; *) out=$PWD/$out ;; esac

command -v dpkg-deb >/dev/null 2>&1 || { echo "package: dpkg-deb is not installed (apt-get install dpkg)" >&2; exit 1; }

# What the programs run: the runtime and its V8 snapshot, CRIU's config for every restore,
# prebake-build, and prebake install/uninstall/key/trust (see scripts/build.mjs).
DIST_FILES="prebake.cjs prebake.blob criu.conf prebake-build.cjs prebake-admin.cjs"
for f in $DIST_FILES; do
  [ -f "$here/dist/$f" ] || { echo "package: dist/$f is missing: run npm run -s build first (npm run package does)" >&2; exit 1; }
done
for f in "$here"/dist/*; do
  case " $DIST_FILES " in *" ${f##*/} "*) ;; *) echo "package: dist/${f##*/} is not packaged (not in DIST_FILES of scripts/package.sh)" >&2 ;; esac
done

node_v=$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$here/package.json" | head -1)
[ -n "$node_v" ] || { echo "package: no version in package.json" >&2; exit 1; }
# npm's 1.2.0-rc.1 sorts before 1.2.0; Debian's 1.2.0~rc.1 does (a '-' would start a revision).
version=$(printf '%s' "$node_v" | sed 's/-/~/')
arch=$(dpkg --print-architecture)
deb=$out/prebake_${version}_${arch}.deb

umask 022
stage=$(mktemp -d "${TMPDIR:-/tmp}/prebake-deb.XXXXXX")
trap 'rm -rf "$stage"' EXIT INT TERM
chmod 0755 "$stage"

install -d -m 0755 "$stage/DEBIAN" "$stage/usr/bin" "$stage/usr/lib/prebake/bin" "$stage/usr/lib/prebake/dist"
install -m 0755 "$here/bin/prebake" "$here/bin/prebake-build" "$stage/usr/lib/prebake/bin/"
install -m 0644 "$here/bin/prebake-create.sh" "$stage/usr/lib/prebake/bin/"
for f in $DIST_FILES; do install -m 0644 "$here/dist/$f" "$stage/usr/lib/prebake/dist/"; done
ln -s ../lib/prebake/bin/prebake "$stage/usr/bin/prebake"
ln -s ../lib/prebake/bin/prebake-build "$stage/usr/bin/prebake-build"

size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat > "$stage/DEBIAN/control" <<EOF
Package: prebake
Version: $version
Architecture: $arch
Maintainer: ${PREBAKE_MAINTAINER:-prebake developers <prebake@localhost>}
Installed-Size: $size
Depends: nodejs (>= 20), runc, iproute2, util-linux
Recommends: criu (>= 4.2)
Section: admin
Priority: optional
Description: OCI runtime that starts containers from CRIU checkpoints
 prebake is an OCI runtime with runc's command line: engines call it as they
 call runc. A create of a container whose image carries a checkpoint baked by
 prebake-build becomes a runc restore of it; anything else is runc's.
 .
 Requires CRIU >= 4.2 (criu on PATH, e.g. /usr/local/sbin/criu), which is not
 a dependency of this package: a distribution's older CRIU fails on current
 kernels. \`prebake doctor\` checks CRIU and the kernel.
 .
 Installing registers nothing: \`prebake install docker|containerd|podman\`
 registers the runtime with an engine and creates and trusts this host's bake
 key. The runtime's V8 snapshot (dist/prebake.blob) was built with Node.js
 $(node --version 2>/dev/null || echo '(unknown)').
EOF

mkdir -p "$out"
rm -f "$deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb"
