// Facts about this host that checkpoints are checked against: CRIU, runc and kernel versions,
// architecture and CPU flags. The runtime reads them through a small cache under its state dir.

import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { machine, release } from 'node:os';
import { join } from 'node:path';

/** The oldest CRIU prebake works with: TCP sockets cannot be dumped on kernels >= 6.16 before it. */
export const MIN_CRIU = '4.2';

export interface HostFacts {
  kernel: string;
  arch: string;
  criu: string;
  cpuFlags: string[];
  /** CRIU can restore memory lazily here (lazyRestoreCheck). */
  lazyPages?: boolean;
}

/**
 * Whether `criu` can restore memory lazily on this host: `criu check --feature uffd-noncoop`
 * (userfaultfd with the fork, remap and unmap events, without which a process forked after a
 * lazy restore would miss pages); `detail`, CRIU's last line of output.
 */
export function lazyRestoreCheck(criu = 'criu'): { ok: boolean; detail: string } {
  const r = spawnSync(criu, ['check', '--feature', 'uffd-noncoop'], { encoding: 'utf8' });
  if (r.error) throw r.error;
  return { ok: r.status === 0, detail: `${r.stdout}${r.stderr}`.trim().split('\n').at(-1) ?? '' };
}

/** `criu --version` prints "Version: 4.2.1"; returns "4.2.1". */
export function criuVersion(criu = 'criu'): string {
  const out = execFileSync(criu, ['--version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  const m = /Version:\s*(\S+)/.exec(out);
  if (!m) throw new Error(`${criu} --version printed no version: ${out.trim()}`);
  return m[1]!;
}

/** `runc --version` prints "runc version 1.1.5+ds1"; returns "1.1.5+ds1". */
export function runcVersion(runc = 'runc'): string {
  const out = execFileSync(runc, ['--version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  const m = /runc version\s+(\S+)/.exec(out);
  if (!m) throw new Error(`${runc} --version printed no version: ${out.trim()}`);
  return m[1]!;
}

export function cpuFlags(): string[] {
  const info = readFileSync('/proc/cpuinfo', 'utf8');
  const m = /^flags\s*:\s*(.*)$/m.exec(info);
  return m ? m[1]!.trim().split(/\s+/).sort() : [];
}

/** Compares dotted versions numerically: <0, 0, >0. */
export function compareVersions(a: string, b: string): number {
  const pa = a.split(/[.+~-]/).map((x) => parseInt(x, 10) || 0);
  const pb = b.split(/[.+~-]/).map((x) => parseInt(x, 10) || 0);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d) return d;
  }
  return 0;
}

function resolveOnPath(bin: string): string {
  if (bin.includes('/')) return bin;
  for (const dir of (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':')) {
    try {
      const p = join(dir, bin);
      if (statSync(p).isFile()) return p;
    } catch {
      /* not here */
    }
  }
  throw new Error(`${bin} not found on PATH`);
}

/**
 * Host facts, cached in `cacheDir/host.json` and recomputed when the kernel or the CRIU binary
 * changes, so that a create pays one small read instead of an exec of CRIU.
 */
export function hostFacts(criu: string, cacheDir: string): HostFacts {
  const criuPath = resolveOnPath(criu);
  const st = statSync(criuPath);
  // (v2: with lazyPages.)
  const key = `v2|${release()}|${criuPath}|${st.ino}|${st.mtimeMs}`;
  const file = join(cacheDir, 'host.json');
  try {
    const cached = JSON.parse(readFileSync(file, 'utf8')) as { key: string; facts: HostFacts };
    if (cached.key === key) return cached.facts;
  } catch {
    /* no cache yet */
  }
  const facts: HostFacts = { kernel: release(), arch: machine(), criu: criuVersion(criuPath), cpuFlags: cpuFlags(), lazyPages: lazyRestoreCheck(criuPath).ok };
  try {
    mkdirSync(cacheDir, { recursive: true });
    writeFileSync(`${file}.${process.pid}`, JSON.stringify({ key, facts }));
    renameSync(`${file}.${process.pid}`, file);
  } catch {
    /* a cache that cannot be written costs time, nothing else */
  }
  return facts;
}
