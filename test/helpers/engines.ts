// Real engines for tests: private containerd, dockerd and podman (lab/engines/daemons.ts), each
// with state of its own under a temp dir, stopped so that nothing is left.

import { spawnSync } from 'node:child_process';
import type { ExecutionContext } from 'ava';
import { chmodSync, existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PREBAKE, REPO } from '../../lab/bundle.ts';
import { noopImage } from './images.ts';
import { mountPoints } from '../../src/lib/mountinfo.ts';

export { type Containerd, type Dockerd, type Podman, startContainerd, startDockerd, startPodman } from '../../lab/engines/daemons.ts';

/** Pids of the processes whose network namespace is the one with inode `ino` (stat of a /proc/PID/ns/net). */
export function processesInNetns(ino: number): number[] {
  const pids: number[] = [];
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      if (statSync(`/proc/${p}/ns/net`).ino === ino) pids.push(Number(p));
    } catch {
      /* gone meanwhile, or not ours to look at */
    }
  }
  return pids;
}

/** Whether `path` is a mount point in this mount namespace. */
export function isMounted(path: string): boolean {
  return mountPoints().includes(path);
}

/** Where a running container lives on the host: all of it must be gone once the container is. */
export interface Footprint {
  /** State dirs by owner: runc's, prebake's (the same path under /run/prebake), the engine's. */
  dirs: Record<string, string>;
  pid: number;
  /** The inode of its network namespace. */
  netns: number;
  /** Its rootfs mount. */
  rootfs: string;
}

/** What is still there of a container's footprint, and of `also` (polled, as leftAfter). */
export function footprintLeft(f: Footprint, also: Record<string, () => boolean> = {}): Promise<string[]> {
  return leftAfter({
    ...Object.fromEntries(Object.entries(f.dirs).map(([k, d]) => [`${k} state ${d}`, () => existsSync(d)])),
    [`process ${f.pid}`]: () => existsSync(`/proc/${f.pid}`),
    'a process in its network namespace': () => processesInNetns(f.netns).length > 0,
    ...also,
    [`rootfs mount ${f.rootfs}`]: () => isMounted(f.rootfs),
  });
}

/**
 * Polls until none of `what` holds any more (removal is asynchronous in the engines); resolves to
 * the descriptions of what still does after `timeoutMs`, [] when all is gone.
 */
async function leftAfter(what: Record<string, () => boolean>, timeoutMs = 5000): Promise<string[]> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const left = Object.entries(what)
      .filter(([, holds]) => holds())
      .map(([k]) => k);
    if (!left.length || Date.now() > end) return left;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** GET / of a function on 127.0.0.1:PORT (a published port), polled until it answers; its JSON status. */
export async function httpGet(p: number, timeoutMs = 20000): Promise<{ served: number }> {
  const end = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < end) {
    const c = spawnSync('curl', ['-s', '-m', '2', `http://127.0.0.1:${p}/`], { encoding: 'utf8' });
    if (c.status === 0 && c.stdout) return JSON.parse(c.stdout) as { served: number };
    last = c.stderr || `curl exit ${c.status}`;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`no HTTP answer on 127.0.0.1:${p}: ${last}`);
}

/**
 * The runtime an engine is given in the tests: prebake itself, behind a line that appends each
 * argv to `log`, so that the calls the engine made can be shown.
 */
export function argvRecorder(dir: string): { runtime: string; log: string; shapes(normalise: (line: string) => string): string[] } {
  const log = join(dir, 'argv.log');
  const runtime = join(dir, 'prebake');
  writeFileSync(runtime, `#!/bin/sh\necho "$*" >> ${log}\nexec ${PREBAKE} "$@"\n`);
  chmodSync(runtime, 0o755);
  return {
    runtime,
    log,
    /** Each distinct call once, after `normalise` replaced ids and paths; none if nothing was called. */
    shapes: (normalise) => (existsSync(log) ? [...new Set(readFileSync(log, 'utf8').trim().split('\n').map(normalise))] : []),
  };
}

/** Bakes the noop function image into DEST (an engine's transport) for `target`; fails the hook with prebake-build's output. */
export async function bakeNoopInto(t: ExecutionContext, target: string, dest: string, env: NodeJS.ProcessEnv): Promise<void> {
  const r = spawnSync(join(REPO, 'bin/prebake-build'), ['--target', target, `oci:${await noopImage()}:latest`, dest], { env, encoding: 'utf8' });
  t.log(r.stderr.trim());
  if (r.status !== 0) throw new Error(`prebake-build failed: ${r.stderr}`);
}
