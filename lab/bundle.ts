// Bundles of the lab's own for the benchmarks and the runtime tests: an overlay rootfs over
// read-only layers (as engines mount images), a spec, a network namespace, and runc --root and log
// dirs of their own for the prebake runtime.

import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { Spec } from '../oci/runtime-spec.ts';
import { createNetns, deleteNetns } from '../src/lib/netns.ts';
import { mountOverlay } from '../src/lib/overlay.ts';

export const REPO = resolve(import.meta.dirname, '..');
export const PREBAKE = join(REPO, 'bin/prebake');

let counter = 0;
export function uniqueName(prefix: string): string {
  return `${prefix}-${process.pid}-${++counter}`;
}

export interface OverlayBundle {
  dir: string;
  rootfs: string;
  upper: string;
  netns: string;
  netnsPath: string;
  writeSpec(spec: Spec): void;
  cleanup(): void;
}

/** A bundle whose rootfs is an overlay of `lowers` (first is top), with a fresh netns. */
export function overlayBundle(lowers: string[]): OverlayBundle {
  const dir = mkdtempSync(join(tmpdir(), 'prebake-test-'));
  const rootfs = join(dir, 'rootfs');
  const upper = join(dir, 'upper');
  const work = join(dir, 'work');
  const unmount = mountOverlay(lowers, upper, work, rootfs);
  const netns = uniqueName('pbt');
  const netnsPath = createNetns(netns);
  return {
    dir,
    rootfs,
    upper,
    netns,
    netnsPath,
    writeSpec: (spec) => writeFileSync(join(dir, 'config.json'), JSON.stringify(spec, null, 2)),
    cleanup: () => {
      unmount();
      deleteNetns(netns);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A runc --root and log file of the caller's own, so that state left behind can be checked. */
export function runtimeDirs() {
  const dir = mkdtempSync(join(tmpdir(), 'prebake-root-'));
  return {
    root: join(dir, 'runc'),
    log: join(dir, 'log.json'),
    state: join('/run/prebake', dir, 'runc'),
    logLines: (): { level: string; msg: string; time: string }[] => {
      try {
        return readFileSync(join(dir, 'log.json'), 'utf8')
          .split('\n')
          .filter(Boolean)
          .map((l) => JSON.parse(l));
      } catch {
        return [];
      }
    },
    cleanup: () => {
      rmSync(dir, { recursive: true, force: true });
      rmSync(join('/run/prebake', dir), { recursive: true, force: true });
    },
  };
}
