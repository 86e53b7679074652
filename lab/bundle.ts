// Bundles of the lab's own for the benchmarks and the runtime tests: an overlay rootfs over
// read-only layers (as engines mount images), a spec, a network namespace, and runc --root and log
// dirs of their own for the prebake runtime.

import { randomInt } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { Spec } from '../oci/runtime-spec.ts';
import { createNetns, deleteNetns } from '../src/lib/netns.ts';
import { mountOverlay } from '../src/lib/overlay.ts';
import { RESTORE_CRIU_CONF } from '../src/contract.ts';

export const REPO = resolve(import.meta.dirname, '..');
export const PREBAKE = join(REPO, 'bin/prebake');

// (From a random start: a name left behind by an earlier run whose pid this one has again, a
// netns say, is not taken for this run's.)
let counter = randomInt(1, 1_000_000) * 100;
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

/** A line of prebake's `--log-format json` log. */
interface LogLine {
  level: string;
  msg: string;
  time: string;
  /** The container's id, on the lines about one. */
  id?: string;
  /** How long the step took (e.g. the runc restore on its `restored` line). */
  ms?: number;
}

/** The lines of prebake's JSON log `file` ([] when there is none; a line that is not JSON is passed over). */
export function prebakeLogLines(file: string): LogLine[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  return text.split('\n').flatMap((l) => {
    try {
      return l ? [JSON.parse(l) as LogLine] : [];
    } catch {
      return [];
    }
  });
}

/** The ms of the runc restore prebake logged (its `restored …` line), for container `id` if given; undefined if it did not restore. */
export function restoreMs(file: string, id?: string): number | undefined {
  return prebakeLogLines(file).find((o) => (id === undefined || o.id === id) && typeof o.ms === 'number' && /^restored /.test(o.msg ?? ''))?.ms;
}

/** A runc --root and log file of the caller's own, so that state left behind can be checked. */
export function runtimeDirs() {
  const dir = mkdtempSync(join(tmpdir(), 'prebake-root-'));
  return {
    root: join(dir, 'runc'),
    log: join(dir, 'log.json'),
    state: join('/run/prebake', dir, 'runc'),
    logLines: () => prebakeLogLines(join(dir, 'log.json')),
    cleanup: () => {
      rmSync(dir, { recursive: true, force: true });
      rmSync(join('/run/prebake', dir), { recursive: true, force: true });
    },
  };
}

/**
 * The environment for a raw `runc restore` of a checkpoint prebake-build baked: CRIU's config as
 * prebake gives it (the host mounts its masked directories are bound from), less `leave-stopped`
 * (nothing would resume the tasks), written as criu.conf into `dir`.
 */
export function rawRestoreEnv(dir: string): NodeJS.ProcessEnv {
  writeFileSync(join(dir, 'criu.conf'), RESTORE_CRIU_CONF.replace(/^leave-stopped\n/, ''));
  return { ...process.env, CRIU_CONFIG_FILE: join(dir, 'criu.conf') };
}
