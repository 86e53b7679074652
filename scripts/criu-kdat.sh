#!/bin/sh
# CRIU caches its kernel probe in /run/criu.kdat only when /run is a tmpfs; elsewhere every
# checkpoint and restore re-probes (~30 ms). Seed the cache from a private tmpfs, and again
# whenever the kernel changes (CRIU does not notice a stale cache by itself).
if [ "$(findmnt -no FSTYPE /run 2>/dev/null)" != tmpfs ]; then
  stamp=/var/lib/prebake/criu.kdat.kernel
  if [ ! -f /run/criu.kdat ] || [ "$(cat "$stamp" 2>/dev/null)" != "$(uname -r) $(criu --version | head -1)" ]; then
    echo "setup: seeding CRIU's kernel probe cache /run/criu.kdat" >&2
    unshare -m sh -c 'mount -t tmpfs none /run && criu check >/dev/null 2>&1; cp /run/criu.kdat /tmp/prebake-criu.kdat' \
      && mv /tmp/prebake-criu.kdat /run/criu.kdat \
      && mkdir -p /var/lib/prebake && echo "$(uname -r) $(criu --version | head -1)" > "$stamp" \
      || echo "setup: could not seed /run/criu.kdat (restores stay ~30 ms slower)" >&2
  fi
fi
