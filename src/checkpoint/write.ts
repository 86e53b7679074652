// Writes a checkpoint's manifest.json: host versions, the spec it was baked with, and the
// size and sha256 of every file under checkpoint/.

import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { machine, release } from 'node:os';
import { join } from 'node:path';
import type { Spec } from '../../oci/runtime-spec.ts';
import { cpuFlags, criuVersion, runcVersion } from '../lib/host.ts';
import { CHECKPOINT_DIR, type CheckpointManifest, type FileDigest, MANIFEST_FILE, MANIFEST_FORMAT, type MemoryRestore } from './manifest.ts';
import { lazyPageBytes } from './pagemap.ts';
import { bakedSpecOf } from './security.ts';
import { HINT_PREFIX } from '../contract.ts';

export function digestTree(base: string): Record<string, FileDigest> {
  const files: Record<string, FileDigest> = {};
  const walk = (rel: string) => {
    for (const e of readdirSync(join(base, rel), { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const name = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) walk(name);
      else if (e.isFile()) {
        const data = readFileSync(join(base, name));
        files[name] = { size: data.length, sha256: createHash('sha256').update(data).digest('hex') };
      } else throw new Error(`checkpoint file ${name} is not a regular file`);
    }
  };
  walk('');
  return files;
}

export interface ManifestInput {
  spec: Spec;
  runc: string;
  criu?: string;
  prebakeVersion: string;
  probe?: string;
  baseImage?: string;
  /** eager, lazy, or auto (the default): lazy when at least LAZY_AUTO_BYTES of pages can be. */
  memory?: MemoryRestore | 'auto';
}

/**
 * `--memory auto` restores lazily from this many bytes of lazily restorable pages: below it the
 * lazy-pages daemon's start (~7 ms) costs more than copying the pages saves (docs/runtime.md).
 */
export const LAZY_AUTO_BYTES = 32 * 2 ** 20;

/** `dir` holds checkpoint/; writes dir/manifest.json and returns it. */
export function writeManifest(dir: string, input: ManifestInput): CheckpointManifest {
  const memory = input.memory ?? 'auto';
  let lazyBytes = 0;
  try {
    lazyBytes = lazyPageBytes(join(dir, CHECKPOINT_DIR));
  } catch {
    // A pagemap this reader does not know (a newer CRIU's): counted as none, so auto is eager.
  }
  const manifest: CheckpointManifest = {
    format: MANIFEST_FORMAT,
    created: new Date().toISOString(),
    versions: { prebake: input.prebakeVersion, runc: runcVersion(input.runc), criu: criuVersion(input.criu), kernel: release() },
    arch: machine(),
    cpuFlags: cpuFlags(),
    ...(input.baseImage ? { baseImage: input.baseImage } : {}),
    spec: bakedSpecOf(input.spec),
    ...(input.probe ? { probe: input.probe } : {}),
    memory: { restore: memory === 'auto' ? (lazyBytes >= LAZY_AUTO_BYTES ? 'lazy' : 'eager') : memory, lazyBytes },
    files: digestTree(join(dir, CHECKPOINT_DIR)),
  };
  writeFileSync(join(dir, MANIFEST_FILE), `${JSON.stringify(manifest, null, 2)}\n`);
  markManifest(dir);
  return manifest;
}

/**
 * Names dir/manifest.json's sha256 in an empty file beside it (manifest.json.sha256-<hex>), in
 * place of any earlier one: the runtime's shell finds the verified copy by it without hashing.
 */
export function markManifest(dir: string): void {
  for (const f of readdirSync(dir)) if (f.startsWith(HINT_PREFIX)) rmSync(join(dir, f));
  writeFileSync(join(dir, `${HINT_PREFIX}${createHash('sha256').update(readFileSync(join(dir, MANIFEST_FILE))).digest('hex')}`), '');
}
