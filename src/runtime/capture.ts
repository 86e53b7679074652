// The spec capture prebake-build asks for: the exact spec an engine generates, copied for it.

import { existsSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Spec } from '../../oci/runtime-spec.ts';
import { rootfsOf } from '../checkpoint/locate.ts';
import { CAPTURE_ENV } from '../contract.ts';
import type { RuntimeConfig } from './config.ts';

/**
 * prebake-build learns the exact spec an engine generates (mounts, capabilities, seccomp profile)
 * by running a probe container whose env holds PREBAKE_CAPTURE_SPEC=<token>: the spec is copied
 * to <state>/captures/<token>.json. The token names the file and nothing else, and counts only
 * while prebake-build's request <state>/captures/<token>.request exists (root's, an image
 * cannot make one): an image's ENV asking for a capture is ignored.
 */
export function captureSpec(spec: Spec, cfg: RuntimeConfig, bundle: string): void {
  const prefix = `${CAPTURE_ENV}=`;
  const token = spec.process?.env?.find((e) => e.startsWith(prefix))?.slice(prefix.length);
  if (!token || !/^[A-Za-z0-9_-]{1,64}$/.test(token)) return;
  if (!existsSync(join(cfg.stateBase, 'captures', `${token}.request`))) return;
  // CRIU checks the mode of the root directory too, which the engine sets on its rootfs mount.
  let rootfsMode: number | undefined;
  try {
    rootfsMode = statSync(rootfsOf(spec, bundle)).mode & 0o7777;
  } catch {
    /* no rootfs to look at */
  }
  // Whole or not at all: a full disk must not leave prebake-build a truncated spec to read.
  const file = join(cfg.stateBase, 'captures', `${token}.json`);
  try {
    writeFileSync(`${file}.${process.pid}`, JSON.stringify({ ...spec, ...(rootfsMode !== undefined ? { 'io.prebake.rootfsMode': rootfsMode } : {}) }), { mode: 0o600 });
    renameSync(`${file}.${process.pid}`, file);
  } catch (e) {
    rmSync(`${file}.${process.pid}`, { force: true });
    throw e;
  }
}
