// Overlay mounts: a container rootfs over read-only layers, as engines mount images.

import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';

/** Mounts `lowers` (first is top) with `upper`/`work` at `target`; returns the unmount. */
export function mountOverlay(lowers: readonly string[], upper: string, work: string, target: string): () => void {
  for (const d of [upper, work, target]) mkdirSync(d, { recursive: true });
  execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${lowers.join(':')},upperdir=${upper},workdir=${work}`, target]);
  return () => {
    try {
      execFileSync('umount', [target], { stdio: 'ignore' });
    } catch {
      /* not mounted */
    }
  };
}
