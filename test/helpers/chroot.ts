// A clean Debian root for tests that install things the way a user would (setup.sh, the .deb):
// running commands and collecting their output, commands inside the root, and what is left in
// it (mounts, processes) when it goes.

import type { ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { mountPoints } from '../../src/lib/mountinfo.ts';

type Result = { code: number | null; stdout: string; stderr: string; ms: number };

/** Runs argv, collecting its output; `progress` gets each line of stderr as it comes. */
export function run(argv: string[], opts: { cwd?: string; progress?: (line: string) => void } = {}): Promise<Result> {
  const start = performance.now();
  return new Promise((resolvePromise, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], ...(opts.cwd ? { cwd: opts.cwd } : {}) });
    let stdout = '';
    let stderr = '';
    let partial = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
      if (!opts.progress) return;
      const lines = (partial + d).split('\n');
      partial = lines.pop()!;
      for (const l of lines) if (l.trim()) opts.progress(l);
    });
    child.on('error', reject);
    child.on('close', (code) => resolvePromise({ code, stdout, stderr, ms: performance.now() - start }));
  });
}

/** Runs argv and fails (with the tail of its output) unless it exits 0. */
export async function must(argv: string[], opts: { cwd?: string; progress?: (line: string) => void } = {}): Promise<Result> {
  const r = await run(argv, opts);
  if (r.code !== 0) {
    const tail = (r.stdout + r.stderr).trim().split('\n').slice(-30).join('\n');
    throw new Error(`${argv.join(' ')} exited ${r.code}:\n${tail}`);
  }
  return r;
}

/** A clean environment for commands in a root (its PATH, no locale it lacks), keeping a proxy if one is set. */
const ROOT_ENV = [
  'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
  'HOME=/root',
  'LC_ALL=C',
  'DEBIAN_FRONTEND=noninteractive',
  ...['http_proxy', 'https_proxy', 'no_proxy', 'HTTP_PROXY', 'HTTPS_PROXY', 'NO_PROXY'].flatMap((k) => (process.env[k] ? [`${k}=${process.env[k]}`] : [])),
];

/** argv run inside `root` with ROOT_ENV only. */
export const inRoot = (root: string, argv: string[]) => ['chroot', root, 'env', '-i', ...ROOT_ENV, ...argv];

/** The mount points at or under dir, in mount order, from this process's mountinfo. */
function mountsUnder(dir: string): string[] {
  return mountPoints(dir);
}

/** The processes whose root directory is dir or under it, i.e. running in the chroot. */
export function processesIn(dir: string): { pid: number; comm: string }[] {
  const found: { pid: number; comm: string }[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const r = readlinkSync(`/proc/${e}/root`);
      if (r === dir || r.startsWith(`${dir}/`)) found.push({ pid: Number(e), comm: readFileSync(`/proc/${e}/comm`, 'utf8').trim() });
    } catch {
      /* gone, or a kernel thread */
    }
  }
  return found;
}

/**
 * Kills what still runs in the root, unmounts everything under it (deepest first) and removes it;
 * false if a mount would not go (then nothing is removed: never rm -rf over a bind mount of /dev).
 */
export async function removeRoot(t: ExecutionContext, dir: string): Promise<boolean> {
  for (const p of processesIn(dir)) {
    t.log(`killing ${p.comm} (${p.pid}), still running in the root`);
    try {
      process.kill(p.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  if (processesIn(dir).length) await new Promise((r) => setTimeout(r, 500));
  for (let tries = 0; tries < 20; tries++) {
    const left = mountsUnder(dir).sort((a, b) => b.length - a.length);
    if (!left.length) break;
    const r = await run(['umount', left[0]!]);
    if (r.code !== 0) {
      t.log(`umount ${left[0]}: ${r.stderr.trim()}`);
      await new Promise((res) => setTimeout(res, 500));
    }
  }
  const left = mountsUnder(dir);
  t.deepEqual(left, [], `nothing stays mounted under ${dir}`);
  if (left.length) return false;
  const rm = await run(['rm', '-rf', '--one-file-system', dir]);
  t.is(rm.code, 0, rm.stderr);
  return rm.code === 0;
}
