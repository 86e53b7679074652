// Runtime specs for bake runs and tests: runc's own default (`runc spec`) shaped for a function.

import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Spec } from '../../oci/runtime-spec.ts';

let runcDefault: string | undefined;

/** `runc spec` output, read once per process. */
export function runcDefaultSpec(runc = 'runc'): Spec {
  if (!runcDefault) {
    const dir = mkdtempSync(join(tmpdir(), 'prebake-spec-'));
    try {
      execFileSync(runc, ['spec', '--bundle', dir]);
      runcDefault = readFileSync(join(dir, 'config.json'), 'utf8');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  return JSON.parse(runcDefault) as Spec;
}

interface FunctionSpecOptions {
  args: string[];
  env?: string[];
  cwd?: string;
  /** root.path as written into config.json. */
  rootfs?: string;
  /** Path of the network namespace to join; a new one when absent. */
  netns?: string;
  terminal?: boolean;
  readonlyRootfs?: boolean;
}

export function functionSpec(o: FunctionSpecOptions, runc = 'runc'): Spec {
  const spec = runcDefaultSpec(runc);
  const p = spec.process!;
  p.terminal = o.terminal ?? false;
  p.args = o.args;
  p.env = ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', ...(o.env ?? [])];
  p.cwd = o.cwd ?? '/';
  spec.root = { path: o.rootfs ?? 'rootfs', readonly: o.readonlyRootfs ?? false };
  spec.linux!.namespaces = (spec.linux!.namespaces ?? []).map((ns) => (ns.type === 'network' && o.netns ? { type: 'network', path: o.netns } : ns));
  return spec;
}
