// Finds a container's checkpoint: reads the marker from config.json and resolves its path
// inside the rootfs without following any symlink and without leaving the rootfs.

import { lstatSync } from 'node:fs';
import { isAbsolute, join, resolve } from 'node:path';
import type { Spec } from '../../oci/runtime-spec.ts';
import { CHECKPOINT_ANNOTATION, CHECKPOINT_ENV } from '../contract.ts';


type CheckpointRequest = { kind: 'none' } | { kind: 'off'; source: string } | { kind: 'path'; path: string; source: string };

/**
 * Where the container's checkpoint is: the annotation wins over the environment for the path, but
 * `off` (or an empty value) in either forces a cold start. The environment is what a user sets
 * for one run (`-e PREBAKE_CHECKPOINT=off`), while engines such as podman copy the image's
 * annotations into every container's spec.
 */
export function checkpointRequest(spec: Spec): CheckpointRequest {
  const annotation = spec.annotations?.[CHECKPOINT_ANNOTATION];
  const prefix = `${CHECKPOINT_ENV}=`;
  const entry = spec.process?.env?.findLast((e) => e.startsWith(prefix));
  const env = entry?.slice(prefix.length);
  const off = (v: string | undefined) => v === '' || v === 'off';
  if (off(env)) return { kind: 'off', source: `env ${CHECKPOINT_ENV}` };
  if (typeof annotation === 'string')
    return off(annotation) ? { kind: 'off', source: `annotation ${CHECKPOINT_ANNOTATION}` } : { kind: 'path', path: annotation, source: `annotation ${CHECKPOINT_ANNOTATION}` };
  if (env === undefined) return { kind: 'none' };
  return { kind: 'path', path: env, source: `env ${CHECKPOINT_ENV}` };
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
