// Finds a container's checkpoint: reads the marker from config.json and resolves its path
// inside the rootfs without following any symlink and without leaving the rootfs.

import { lstatSync } from 'node:fs';
import { isAbsolute, join, resolve } from 'node:path';
import type { Spec } from '../../oci/runtime-spec.ts';

export const CHECKPOINT_ANNOTATION = 'io.prebake.checkpoint';
export const CHECKPOINT_ENV = 'PREBAKE_CHECKPOINT';

export type CheckpointRequest = { kind: 'none' } | { kind: 'off'; source: string } | { kind: 'path'; path: string; source: string };

/** The annotation wins over the environment; `off` (or an empty value) forces a cold start. */
export function checkpointRequest(spec: Spec): CheckpointRequest {
  const annotation = spec.annotations?.[CHECKPOINT_ANNOTATION];
  let value: string | undefined;
  let source: string;
  if (typeof annotation === 'string') {
    value = annotation;
    source = `annotation ${CHECKPOINT_ANNOTATION}`;
  } else {
    const prefix = `${CHECKPOINT_ENV}=`;
    const entry = spec.process?.env?.findLast((e) => e.startsWith(prefix));
    if (entry === undefined) return { kind: 'none' };
    value = entry.slice(prefix.length);
    source = `env ${CHECKPOINT_ENV}`;
  }
  if (value === '' || value === 'off') return { kind: 'off', source };
  return { kind: 'path', path: value, source };
}

export function rootfsOf(spec: Spec, bundle: string): string {
  const p = spec.root?.path;
  if (!p) throw new Error('config.json has no root.path');
  return isAbsolute(p) ? p : resolve(bundle, p);
}

/**
 * Maps a path inside the container (`/.prebake`) to the host path under `rootfs`. Every component
 * must exist and none may be a symlink or `..`: a value from the image never reaches the host.
 */
export function resolveInRootfs(rootfs: string, inside: string): string {
  if (inside.includes('\0')) throw new Error(`checkpoint path ${JSON.stringify(inside)} contains a NUL byte`);
  const parts = inside.split('/').filter((c) => c !== '' && c !== '.');
  if (parts.length === 0) throw new Error(`checkpoint path ${JSON.stringify(inside)} names the rootfs itself`);
  let host = rootfs;
  for (const part of parts) {
    if (part === '..') throw new Error(`checkpoint path ${JSON.stringify(inside)} leaves the rootfs ("..")`);
    host = join(host, part);
    let st;
    try {
      st = lstatSync(host);
    } catch {
      throw new Error(`checkpoint path ${JSON.stringify(inside)}: ${host} does not exist`);
    }
    if (st.isSymbolicLink()) throw new Error(`checkpoint path ${JSON.stringify(inside)}: ${host} is a symlink, refused`);
  }
  return host;
}
