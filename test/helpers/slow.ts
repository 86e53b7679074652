// A `mkfifo` that takes 0.5 s, for the front of a create's PATH: bin/prebake makes its verdict
// FIFO after runc has started, so a shell waiting for it reaps a runc that exits meanwhile.

import type { ExecutionContext } from 'ava';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A directory (removed after the test) holding the slow `mkfifo`. */
export function slowMkfifo(t: ExecutionContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'prebake-slow-mkfifo-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const real = spawnSync('sh', ['-c', 'command -v mkfifo'], { encoding: 'utf8' }).stdout.trim();
  writeFileSync(join(dir, 'mkfifo'), `#!/bin/sh\nsleep 0.5\nexec '${real}' "$@"\n`);
  chmodSync(join(dir, 'mkfifo'), 0o755);
  return dir;
}
