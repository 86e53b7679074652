// `prebake doctor`: what this host has and lacks for checkpoint/restore, one line per check.

import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { release } from 'node:os';
import { join } from 'node:path';
import { listEntries, mib, UNUSED_DAYS } from '../checkpoint/store.ts';
import { compareVersions, criuVersion, lazyRestoreCheck, MIN_CRIU, runcVersion } from '../lib/host.ts';
import type { RuntimeConfig } from './config.ts';
import { HOST_MOUNTS, RESIDENT_FILES } from '../contract.ts';
import { alive, ERR_FILE } from './resident.ts';


interface Check {
  name: string;
  ok: boolean;
  detail: string;
  /** A warning does not make the host unfit, it costs time. */
  warnOnly?: boolean;
}

/** The type of what is mounted at `path` (the last mount there); with ":ro" for a read-only tmpfs. */
function mountType(path: string): string | undefined {
  const mounts = readFileSync('/proc/self/mounts', 'utf8').split('\n').map((l) => l.split(' '));
  const m = mounts.findLast((m) => m[1] === path);
  return m && `${m[2]}${m[2] === 'tmpfs' && m[3]?.split(',').includes('ro') ? ':ro' : ''}`;
}

/** The checks, with `criu` the CRIU binary runc is told to use (its --criu flag, else `criu`). */
export function hostChecks(cfg: RuntimeConfig, criu = 'criu'): Check[] {
  const checks: Check[] = [];
  const attempt = (name: string, f: () => Omit<Check, 'name'>) => {
    try {
      checks.push({ name, ...f() });
    } catch (e) {
      // A program that is not there is named as such, with where it was looked for.
      const err = e as NodeJS.ErrnoException & { path?: string };
      const hint = name.startsWith('criu') ? `; scripts/setup.sh builds CRIU >= ${MIN_CRIU} into /usr/local/sbin` : '';
      const detail = err.code === 'ENOENT' && err.path ? `${err.path} not found (PATH=${process.env.PATH ?? ''})${hint}` : err.message.split('\n')[0]!;
      checks.push({ name, ok: false, detail });
    }
  };
  attempt('kernel', () => ({ ok: true, detail: release() }));
  attempt('runc', () => ({ ok: true, detail: `${cfg.runc} ${runcVersion(cfg.runc)}` }));
  attempt('criu', () => {
    const v = criuVersion(criu);
    const ok = compareVersions(v, MIN_CRIU) >= 0;
    return { ok, detail: ok ? v : `${v} is too old: prebake needs CRIU >= ${MIN_CRIU} (TCP sockets cannot be dumped on kernels >= 6.16 before it)` };
  });
  attempt('criu check', () => {
    const r = spawnSync(criu, ['check'], { encoding: 'utf8' });
    if (r.error) throw r.error;
    const out = `${r.stdout}${r.stderr}`.trim().split('\n').filter((l) => !/kdat cache/.test(l));
    return { ok: r.status === 0, detail: out.at(-1) ?? `exit ${r.status}` };
  });
  attempt('lazy restore', () => {
    // A lazy checkpoint (prebake-build --memory) needs userfaultfd with fork and remap events.
    const { ok } = lazyRestoreCheck(criu);
    return { ok, warnOnly: true, detail: ok ? 'userfaultfd (uffd-noncoop): lazy checkpoints restore lazily' : 'no userfaultfd (uffd-noncoop): lazy checkpoints are restored eagerly (every page copied in first)' };
  });
  attempt('criu kernel probe cache', () => {
    const tmpfs = mountType('/run')?.startsWith('tmpfs');
    const cached = existsSync('/run/criu.kdat');
    return {
      ok: tmpfs || cached,
      warnOnly: true,
      detail: tmpfs
        ? '/run is a tmpfs: CRIU caches its kernel probe in /run/criu.kdat'
        : cached
          ? '/run is not a tmpfs, but /run/criu.kdat exists and is used'
          : '/run is not a tmpfs: CRIU re-probes the kernel on every checkpoint and restore (~35 ms); scripts/criu-kdat.sh seeds /run/criu.kdat',
    };
  });
  attempt('host mounts', () => {
    // Read-only tmpfs a restore binds where runc mounted its own (contract HOST_MOUNTS; the
    // cgroup one only under cgroup v1), at their default paths.
    const wanted = Object.values(HOST_MOUNTS).filter((m) => m !== HOST_MOUNTS.cgroupV1 || mountType('/sys/fs/cgroup') !== 'cgroup2');
    const missing = wanted.filter((m) => mountType(m.path) !== 'tmpfs:ro').map((m) => m.path);
    return {
      ok: missing.length === 0,
      warnOnly: true,
      detail: missing.length ? `${missing.join(', ')} not mounted yet: the first restore mounts them (read-only tmpfs)` : `${wanted.map((m) => m.path).join(', ')}: read-only tmpfs`,
    };
  });
  attempt('verified store', () => {
    let entries;
    try {
      entries = listEntries(cfg.store);
    } catch (e) {
      return { ok: false, warnOnly: true, detail: `${cfg.store} cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}): run doctor as root` };
    }
    const old = entries.filter((e) => Date.now() - e.usedMs >= UNUSED_DAYS * 86_400_000);
    const total = entries.reduce((n, e) => n + e.bytes, 0);
    return {
      ok: old.length === 0,
      warnOnly: true,
      detail: `${entries.length} checkpoint(s), ${mib(total)} in ${cfg.store}${old.length ? `; ${old.length} (${mib(old.reduce((n, e) => n + e.bytes, 0))}) unused for ${UNUSED_DAYS} days: prebake store prune` : ''}`,
    };
  });
  attempt('resident program', () => {
    // (Its pid file: "pid start-time dist"; see src/runtime/resident.ts.)
    let who = '';
    try {
      who = readFileSync(join(cfg.stateBase, RESIDENT_FILES.pid), 'utf8').trim();
    } catch {
      /* none */
    }
    const [pid, , ...dist] = who.split(' ');
    const live = alive(who);
    let lastError = '';
    try {
      const lines = readFileSync(join(cfg.stateBase, ERR_FILE), 'utf8').split('\n').filter((l) => /^\d{4}-/.test(l));
      lastError = (lines.at(-1) ?? '').replace(/[\x00-\x1f\x7f]/g, '?').slice(0, 200);
    } catch {
      /* none */
    }
    // (An error before the running program started is history: no warning.)
    const errorAt = Date.parse(lastError.split(' ')[0] ?? '');
    const startedAt = live ? statSync(join(cfg.stateBase, RESIDENT_FILES.pid), { throwIfNoEntry: false })?.mtimeMs : undefined;
    const current = lastError !== '' && !(startedAt !== undefined && errorAt < startedAt);
    const where = join(cfg.stateBase, ERR_FILE);
    return {
      ok: !current,
      warnOnly: true,
      detail: `${live ? `pid ${pid} answers the creates (of ${dist.join(' ')})` : 'none running: the next prebaked create starts one'}${lastError ? `; ${current ? 'it went on an error' : 'one before it went on an error'}, the last in ${where}: ${lastError}` : ''}`,
    };
  });
  attempt('cgroups', () => {
    const root = mountType('/sys/fs/cgroup');
    const detail = root === 'cgroup2' ? 'cgroup v2 (unified)' : existsSync('/sys/fs/cgroup/unified') ? 'cgroup v1 hybrid (cgroup2 at /sys/fs/cgroup/unified)' : 'cgroup v1';
    return { ok: true, detail };
  });
  return checks;
}

export function doctor(cfg: RuntimeConfig, args: readonly string[], criu = 'criu'): number {
  const checks = hostChecks(cfg, criu);
  const json = args.includes('--json');
  if (json) process.stdout.write(`${JSON.stringify(checks, null, 2)}\n`);
  else for (const c of checks) process.stdout.write(`${c.ok ? 'ok  ' : c.warnOnly ? 'warn' : 'FAIL'}  ${c.name.padEnd(24)} ${c.detail}\n`);
  return checks.every((c) => c.ok || c.warnOnly) ? 0 : 1;
}
