// The runtime spec a baked image will meet at run time, per target engine, built from the
// image's config (Entrypoint, Cmd, Env, WorkingDir, User) and the user's overrides.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Spec } from '../../oci/runtime-spec.ts';
import { functionSpec } from './spec.ts';

export const TARGETS = ['runc'] as const;
export type Target = (typeof TARGETS)[number];

export interface ImageRunConfig {
  Entrypoint?: string[] | null;
  Cmd?: string[] | null;
  Env?: string[] | null;
  WorkingDir?: string;
  User?: string;
}

export interface RunOverrides {
  env?: string[];
  /** Replaces the image's Cmd. */
  args?: string[];
}

function lookupId(rootfs: string, file: 'passwd' | 'group', name: string): { id: number; gid?: number } | undefined {
  try {
    for (const line of readFileSync(join(rootfs, 'etc', file), 'utf8').split('\n')) {
      const f = line.split(':');
      if (f[0] === name) return { id: Number(f[2]), ...(file === 'passwd' ? { gid: Number(f[3]) } : {}) };
    }
  } catch {
    /* no such file in the image */
  }
  return undefined;
}

/** Image `User` ("name", "uid", "uid:gid", "name:group") to numeric ids, as engines resolve it. */
export function resolveUser(rootfs: string, user: string | undefined): { uid: number; gid: number } {
  if (!user) return { uid: 0, gid: 0 };
  const [u, g] = user.split(':') as [string, string | undefined];
  const pw = /^\d+$/.test(u) ? { id: Number(u), gid: undefined } : lookupId(rootfs, 'passwd', u);
  if (!pw) throw new Error(`image user "${u}" is not in the image's /etc/passwd`);
  let gid = pw.gid ?? 0;
  if (g !== undefined) {
    const gr = /^\d+$/.test(g) ? { id: Number(g) } : lookupId(rootfs, 'group', g);
    if (!gr) throw new Error(`image group "${g}" is not in the image's /etc/group`);
    gid = gr.id;
  }
  return { uid: pw.id, gid };
}

/** Environment with overrides applied by variable name, as `docker run -e` does. */
export function mergeEnv(base: readonly string[], overrides: readonly string[]): string[] {
  const out = new Map<string, string>();
  for (const e of [...base, ...overrides]) out.set(e.split('=')[0]!, e);
  return [...out.values()];
}

export function targetSpec(target: Target, image: ImageRunConfig, rootfs: string, netnsPath: string, o: RunOverrides = {}): Spec {
  const args = [...(image.Entrypoint ?? []), ...(o.args ?? image.Cmd ?? [])];
  if (args.length === 0) throw new Error('the image has neither Entrypoint nor Cmd, and no --arg was given: nothing to run');
  const env = mergeEnv(image.Env ?? [], o.env ?? []);
  switch (target) {
    case 'runc': {
      const spec = functionSpec({ args, env, cwd: image.WorkingDir || '/', netns: netnsPath });
      const hasPath = env.some((e) => e.startsWith('PATH='));
      spec.process!.env = hasPath ? env : spec.process!.env!.slice(0, 1).concat(env);
      spec.process!.user = resolveUser(rootfs, image.User);
      return spec;
    }
  }
}
