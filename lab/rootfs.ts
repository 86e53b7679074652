// Debian root filesystems for the function images, built with debootstrap and cached under
// /var/cache/prebake/rootfs (PREBAKE_CACHE), keyed by suite and package list.

import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, renameSync, rmSync, rmdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

export const CACHE = process.env.PREBAKE_CACHE ?? '/var/cache/prebake';

/** Runs `f` holding a lock directory; one left by a process that died is broken after 20 minutes. */
export async function withLock<T>(lock: string, f: () => T | Promise<T>): Promise<T> {
  for (;;) {
    try {
      mkdirSync(lock);
      break;
    } catch {
      const age = Date.now() - (statSync(lock, { throwIfNoEntry: false })?.mtimeMs ?? Date.now());
      if (age > 20 * 60_000) rmSync(lock, { recursive: true, force: true });
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  try {
    return await f();
  } finally {
    rmdirSync(lock);
  }
}

/** A cached Debian rootfs with `packages` installed; built on first use (about a minute). */
export async function debianRootfs(packages: readonly string[], suite = 'bookworm'): Promise<string> {
  const key = createHash('sha256').update(`${suite}\n${[...packages].sort().join('\n')}`).digest('hex').slice(0, 12);
  const dir = join(CACHE, 'rootfs', `${suite}-${key}`);
  if (existsSync(join(dir, 'etc/os-release'))) return dir;
  mkdirSync(join(CACHE, 'rootfs'), { recursive: true });
  return withLock(`${dir}.lock`, () => {
    if (existsSync(join(dir, 'etc/os-release'))) return dir;
    const tmp = `${dir}.tmp`;
    rmSync(tmp, { recursive: true, force: true });
    const args = ['--variant=minbase', ...(packages.length ? [`--include=${packages.join(',')}`] : []), suite, tmp, 'http://deb.debian.org/debian'];
    try {
      execFileSync('debootstrap', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (e) {
      const err = e as { stderr?: Buffer; stdout?: Buffer };
      throw new Error(`debootstrap ${suite} with ${packages.join(',')} failed: ${(err.stderr ?? err.stdout ?? '').toString().trim().split('\n').slice(-3).join(' | ')}`);
    }
    // Package caches are of no use inside an image.
    execFileSync('sh', ['-c', `rm -rf "${tmp}"/var/cache/apt/archives/*.deb "${tmp}"/var/lib/apt/lists/* "${tmp}"/var/log/*.log`]);
    renameSync(tmp, dir);
    return dir;
  });
}

/** The rootfs the Python functions run on. */
export function pythonRootfs(): Promise<string> {
  return debianRootfs(['python3-minimal', 'libpython3.11-stdlib']);
}
