// The noop function baked once for a test file, copies of its checkpoint layer for tests to
// change, and the store entries those copies were imported as: all removed when the file's tests end.

import test, { type ExecutionContext } from 'ava';
import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { storeEntry } from '../../src/checkpoint/store.ts';
import { loadRuntimeConfig } from '../../src/runtime/config.ts';
import { bakeNoop, type BakedFunction } from '../../lab/baked.ts';
import { tempDir } from './tmp.ts';

interface SharedBake {
  /** The bake (made in test.before). */
  readonly baked: BakedFunction;
  /** A copy (cp -a) of the checkpoint layer that the test may change; the layer itself is shared. */
  layerCopy(t: ExecutionContext): string;
  /** The host store's entry for `layer`'s checkpoint as it is now, removed when the tests end. */
  remember(layer: string): string;
}

/** Registers the bake (test.before) and its removal (test.after.always); copies go in `tempPrefix` dirs. */
export function sharedBake(tempPrefix: string): SharedBake {
  let baked: BakedFunction | undefined;
  const imported = new Set<string>();
  test.before(async () => {
    baked = await bakeNoop();
  });
  test.after.always(() => {
    baked?.cleanup();
    for (const entry of imported) rmSync(entry, { recursive: true, force: true });
  });
  return {
    get baked() {
      if (!baked) throw new Error('the shared bake is made in test.before');
      return baked;
    },
    layerCopy(t) {
      const layer = join(tempDir(t, tempPrefix), 'layer');
      execFileSync('cp', ['-a', this.baked.layers[0]!, layer]);
      return layer;
    },
    remember(layer) {
      const entry = storeEntry(loadRuntimeConfig().store, readFileSync(join(layer, '.prebake/manifest.json')));
      imported.add(entry);
      return entry;
    },
  };
}
