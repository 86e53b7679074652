// Where this package's own files are, from the running module: bin/prebake for verify runs and
// for engines that are handed the runtime's path.

import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The package root: the first directory above this module that holds bin/prebake. */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'bin/prebake'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('cannot find bin/prebake above ' + fileURLToPath(import.meta.url));
    dir = up;
  }
  return dir;
}

/** bin/prebake of this package. */
export function prebakeBinPath(): string {
  return join(packageRoot(), 'bin/prebake');
}
