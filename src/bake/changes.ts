// What the baked process changed in its root filesystem, reduced to what the image must carry:
// files it created or modified (one it keeps open must be there, with its size, or CRIU cannot
// restore it) and files it removed. The bake's overlay upper dir holds exactly that, plus what
// the runtime made (empty mount points) and directories overlay copied up only to hold a
// change below them. pruneUpper() takes those out, in place, and makes every removal an
// explicit whiteout, so that the upper dir can serve both as an overlay lower dir (the verify
// run) and as the tree of the checkpoint layer (packLayer's `upper`).

import { execFileSync } from 'node:child_process';
import { type Stats, lstatSync, readdirSync, rmdirSync, rmSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';

interface RootfsChanges {
  /** Regular files, symlinks and fifos created or modified, and their total size. */
  files: number;
  bytes: number;
  /** Paths of the image the process removed (whiteouts). */
  removed: number;
  /** Entries that no image can carry (sockets), left out. */
  skipped: string[];
}

const isWhiteout = (st: Stats) => st.isCharacterDevice() && st.rdev === 0;

function lstatOrNull(path: string): Stats | null {
  try {
    return lstatSync(path);
  } catch {
    return null;
  }
}

/**
 * Finds the children of `lower`'s directories that the process hid by making their directory
 * opaque (removed and re-created it): overlay hides them with an xattr that an image layer
 * cannot carry, so each becomes an explicit whiteout. Must run while `merged` (the overlay
 * mount of `upper` over `lower`) is still mounted; returns the paths, relative to the root.
 */
export function hiddenByOpaqueDirs(upper: string, lower: string, merged: string): string[] {
  const hidden: string[] = [];
  const walk = (rel: string) => {
    for (const name of readdirSync(join(upper, rel))) {
      const path = join(rel, name);
      const up = lstatSync(join(upper, path));
      if (!up.isDirectory() || !lstatOrNull(join(lower, path))?.isDirectory()) continue;
      for (const child of readdirSync(join(lower, path)))
        if (!lstatOrNull(join(upper, path, child)) && !lstatOrNull(join(merged, path, child))) hidden.push(join(path, child));
      walk(path);
    }
  };
  walk('');
  return hidden;
}

/**
 * Reduces the bake's overlay `upper` (unmounted) to the changes the image must carry; see the
 * file's comment. `mountPoints` are the spec's mount destinations; `hidden` comes from
 * hiddenByOpaqueDirs(). The checkpoint's own directory (`exclude`, e.g. `.prebake`) is dropped.
 */
export function pruneUpper(upper: string, lower: string, o: { mountPoints: readonly string[]; hidden: readonly string[]; exclude: string }): RootfsChanges {
  const changes: RootfsChanges = { files: 0, bytes: 0, removed: 0, skipped: [] };
  rmSync(join(upper, o.exclude), { recursive: true, force: true });
  for (const rel of o.hidden) execFileSync('mknod', [join(upper, rel), 'c', '0', '0']);
  const mountPoints = new Set(o.mountPoints.map((m) => m.replace(/^\/+|\/+$/g, '')));

  /** Prunes under `rel`; returns whether anything is left there. */
  const walk = (rel: string): boolean => {
    let kept = false;
    for (const name of readdirSync(join(upper, rel))) {
      const path = join(rel, name);
      const host = join(upper, path);
      const st = lstatSync(host);
      const inLower = lstatOrNull(join(lower, path));
      if (st.isDirectory()) {
        const below = walk(path);
        const sameAsLower = inLower?.isDirectory() && (inLower.mode & 0o7777) === (st.mode & 0o7777) && inLower.uid === st.uid && inLower.gid === st.gid;
        const madeForMount = !inLower && mountPoints.has(path);
        if (below || (!sameAsLower && !madeForMount)) kept = true;
        else rmdirSync(host);
      } else if (isWhiteout(st)) {
        changes.removed++;
        kept = true;
      } else if (st.isSocket()) {
        changes.skipped.push(`/${path}`);
        unlinkSync(host);
      } else if (!inLower && mountPoints.has(path) && st.isFile() && st.size === 0) {
        unlinkSync(host);
      } else {
        changes.files++;
        changes.bytes += st.isFile() ? st.size : 0;
        kept = true;
      }
    }
    return kept;
  };
  walk('');
  return changes;
}
