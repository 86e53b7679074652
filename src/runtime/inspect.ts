// The verdict on a restored container from its tasks' own kernel state, read from /proc while
// CRIU has left them stopped: capabilities, ids, no_new_privs, seccomp, namespaces and mounts
// must be within what the new spec grants, whatever the checkpoint's images or manifest claimed.

import { existsSync, readFileSync, realpathSync, writeFileSync } from 'node:fs';
import { posix } from 'node:path';
import type { Mount, Spec } from '../../oci/runtime-spec.ts';
import { mountShape } from '../checkpoint/security.ts';
import { type MountInfo, mountInfo } from '../lib/mountinfo.ts';
import { fileId } from '../lib/proc.ts';

export { type MountInfo, mountInfo } from '../lib/mountinfo.ts';

/** Linux capability numbers, in order (CAP_CHOWN = 0 … CAP_CHECKPOINT_RESTORE = 40). */
const CAP_NAMES = [
  'CHOWN', 'DAC_OVERRIDE', 'DAC_READ_SEARCH', 'FOWNER', 'FSETID', 'KILL', 'SETGID', 'SETUID', 'SETPCAP', 'LINUX_IMMUTABLE',
  'NET_BIND_SERVICE', 'NET_BROADCAST', 'NET_ADMIN', 'NET_RAW', 'IPC_LOCK', 'IPC_OWNER', 'SYS_MODULE', 'SYS_RAWIO', 'SYS_CHROOT',
  'SYS_PTRACE', 'SYS_PACCT', 'SYS_ADMIN', 'SYS_BOOT', 'SYS_NICE', 'SYS_RESOURCE', 'SYS_TIME', 'SYS_TTY_CONFIG', 'MKNOD', 'LEASE',
  'AUDIT_WRITE', 'AUDIT_CONTROL', 'SETFCAP', 'MAC_OVERRIDE', 'MAC_ADMIN', 'SYSLOG', 'WAKE_ALARM', 'BLOCK_SUSPEND', 'AUDIT_READ',
  'PERFMON', 'BPF', 'CHECKPOINT_RESTORE',
];

function capMask(names: readonly string[] | undefined): bigint {
  let mask = 0n;
  for (const n of names ?? []) {
    const i = CAP_NAMES.indexOf(n.replace(/^CAP_/, ''));
    if (i >= 0) mask |= 1n << BigInt(i);
  }
  return mask;
}

/** A capability mask as names (CAP_…), by bit. */
export const capList = (mask: bigint) => CAP_NAMES.filter((_, i) => (mask >> BigInt(i)) & 1n).map((c) => `CAP_${c}`);


const NS_FILES: Record<string, string> = { network: 'net', mount: 'mnt', pid: 'pid', ipc: 'ipc', uts: 'uts', user: 'user', cgroup: 'cgroup' };

/**
 * Where a host path lives, as a bind mount of it shows in mountinfo: the device (major:minor) of
 * the mount with the longest mount point above it in this process's table, and the path within
 * that filesystem. (stat's st_dev of a file on overlayfs can name the layer's device instead.)
 */
function placeOf(path: string, table: readonly MountInfo[]): { dev: string; root: string } | undefined {
  const real = realpathSync(path);
  let best: MountInfo | undefined;
  for (const m of table)
    if ((real === m.mountPoint || real.startsWith(m.mountPoint === '/' ? '/' : `${m.mountPoint}/`)) && m.mountPoint.length >= (best?.mountPoint.length ?? -1)) best = m;
  return best && { dev: best.dev, root: posix.join(best.root, real.slice(best.mountPoint === '/' ? 0 : best.mountPoint.length) || '/') };
}

/**
 * Paths whose mounts only take away: masks (a read-only tmpfs over a directory, /dev/null bound
 * over a file) and read-only binds of a path onto itself. The spec's own, and those the
 * checkpoint was baked with (which a restore keeps, and which take away more).
 */
interface Restrictions {
  masked: readonly string[];
  readonly: readonly string[];
}

const norm = (p: string) => posix.normalize(`/${p}`).replace(/(.)\/$/, '$1');

/**
 * What the spec grants, worked out before the restored tasks exist (from the spec and this
 * host's own /proc): the check of the stopped tasks then only reads their state.
 */
export interface Expectations {
  allowed: Record<string, bigint>;
  anyUid: boolean;
  anyGid: boolean;
  uid: number;
  gid: number;
  groups: Set<number>;
  noNewPrivs: boolean;
  seccomp: boolean;
  /**
   * The oom_score_adj the restored processes get: the spec's, else what a process the runtime
   * starts inherits (this program's). CRIU restores the baked one, which need not be the
   * engine's (kubelet derives it from the pod's memory request and the node's memory).
   */
  oomScoreAdj: number;
  /** ns file -> the namespace the tasks must be in, or null for a new one (not the host's). */
  nsWanted: Map<string, string | null>;
  hostNs: Map<string, string>;
  mounts: {
    byDest: Map<string, Mount>;
    exact: Set<string>;
    masked: Set<string>;
    readonly: Set<string>;
    trees: string[];
    rootDev?: string;
    rootReadonly: boolean;
    /** Per bind destination, where the spec's source is on the host. */
    bindPlace: Map<string, { dev: string; root: string }>;
    /** Per recursive bind destination, the devices of the host's mounts at or below its source. */
    treeDevs: Map<string, Set<string>>;
    /** The spec's own masked and read-only paths: each must be there, as a mount, if the path exists. */
    required: { path: string; readonly: boolean }[];
  };
}

function ownOomScoreAdj(): number {
  try {
    return Number(readFileSync('/proc/self/oom_score_adj', 'utf8').trim()) || 0;
  } catch {
    return 0;
  }
}

/**
 * Gives every restored process (of `tasks`, the tree restoredExcess checked) the spec's
 * oom_score_adj (x.oomScoreAdj); the reason it could not, or null.
 */
export function applyOomScoreAdj(tasks: readonly { pid: number }[], x: Pick<Expectations, 'oomScoreAdj'>): string | null {
  for (const pid of new Set(tasks.map((t) => t.pid))) {
    try {
      // Written whatever it reads, as runc writes it: the write also sets oom_score_adj_min.
      writeFileSync(`/proc/${pid}/oom_score_adj`, String(x.oomScoreAdj));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT' && (e as NodeJS.ErrnoException).code !== 'ESRCH') return `cannot set oom_score_adj ${x.oomScoreAdj} of process ${pid}: ${(e as Error).message}`;
    }
  }
  return null;
}

export function expectationsOf(spec: Spec, bundle: string, baked: Restrictions): Expectations {
  const p = spec.process;
  const caps = p?.capabilities ?? {};
  const allowed: Record<string, bigint> = {
    CapInh: capMask(caps.inheritable),
    CapPrm: capMask(caps.permitted),
    CapEff: capMask(caps.effective),
    CapBnd: capMask(caps.bounding),
    CapAmb: capMask(caps.ambient),
  };
  // A task may have changed its ids only with CAP_SETUID / CAP_SETGID in its permitted set.
  const prm = allowed.CapPrm!;
  const gid = p?.user.gid ?? 0;
  const nsWanted = new Map<string, string | null>();
  const hostNs = new Map<string, string>();
  const spaces = spec.linux?.namespaces ?? [];
  for (const [type, file] of Object.entries(NS_FILES)) {
    const ns = spaces.find((n) => n.type === type);
    try {
      hostNs.set(file, fileId(`/proc/self/ns/${file}`));
      nsWanted.set(file, !ns ? hostNs.get(file)! : ns.path ? fileId(ns.path) : null);
    } catch {
      /* this kernel has no such namespace, or the path is gone: runc would have failed */
    }
  }
  const host = mountInfo('self');
  const hostPlace = (path: string) => {
    try {
      return placeOf(posix.isAbsolute(path) ? path : posix.join(bundle, path), host);
    } catch {
      return undefined; // gone: nothing to compare with
    }
  };
  const byDest = new Map((spec.mounts ?? []).map((m) => [norm(m.destination), m]));
  const exact = new Set<string>(['/', ...byDest.keys()]);
  for (const d of (spec.linux?.devices as { path: string }[] | undefined) ?? []) exact.add(norm(d.path));
  if (p?.terminal) exact.add('/dev/console');
  const bindPlace = new Map<string, { dev: string; root: string }>();
  for (const [dest, m] of byDest) {
    const place = mountShape(m).startsWith('bind') && m.source ? hostPlace(m.source) : undefined;
    if (place) bindPlace.set(dest, place);
  }
  const rootDev = spec.root?.path ? hostPlace(spec.root.path)?.dev : undefined;
  const treeDevs = new Map<string, Set<string>>();
  for (const [dest, m] of byDest) {
    if (!(m.options ?? []).includes('rbind') || !m.source) continue;
    try {
      const real = realpathSync(posix.isAbsolute(m.source) ? m.source : posix.join(bundle, m.source));
      treeDevs.set(dest, new Set(host.filter((h) => h.mountPoint === real || h.mountPoint.startsWith(`${real}/`)).map((h) => h.dev)));
    } catch {
      treeDevs.set(dest, new Set());
    }
  }
  return {
    allowed,
    anyUid: Boolean((prm >> 7n) & 1n), // CAP_SETUID
    anyGid: Boolean((prm >> 6n) & 1n), // CAP_SETGID
    uid: p?.user.uid ?? 0,
    gid,
    groups: new Set([gid, ...(p?.user.additionalGids ?? [])]),
    noNewPrivs: p?.noNewPrivileges ?? false,
    seccomp: Boolean(spec.linux?.seccomp),
    oomScoreAdj: p?.oomScoreAdj ?? ownOomScoreAdj(),
    nsWanted,
    hostNs,
    mounts: {
      byDest,
      exact,
      masked: new Set([...(spec.linux?.maskedPaths ?? []), ...baked.masked].map(norm)),
      readonly: new Set([...(spec.linux?.readonlyPaths ?? []), ...baked.readonly].map(norm)),
      // Mounts that bring their submounts: a recursive bind, the cgroup tree.
      trees: [...byDest].filter(([, m]) => m.type === 'cgroup' || m.type === 'cgroup2' || (m.options ?? []).includes('rbind')).map(([d]) => d),
      ...(rootDev ? { rootDev } : {}),
      rootReadonly: spec.root?.readonly ?? false,
      bindPlace,
      treeDevs,
      required: [...(spec.linux?.maskedPaths ?? []).map((path) => ({ path: norm(path), readonly: false })), ...(spec.linux?.readonlyPaths ?? []).map((path) => ({ path: norm(path), readonly: true }))],
    },
  };
}

const FLAGS = ['ro', 'nosuid', 'nodev', 'noexec'];

/**
 * Why the mount table of the restored init (`table`; `exists` tells whether a path exists in the
 * container) holds more than the spec gives, or null: a mount the
 * spec does not name, one without the flags the spec asks for, a bind of another place than the
 * spec's source, another filesystem type, or a masked or read-only path left open.
 */
export function mountExcess(table: readonly MountInfo[], exists: (path: string) => boolean, x: Expectations['mounts']): string | null {
  const has = (m: MountInfo, flag: string) => m.opts.includes(flag) || (flag === 'ro' && m.superOpts.includes('ro'));
  /** The mount a path would show without its own mount: the nearest one above it. */
  const parentOf = (mp: string, upTo: number) => {
    let best: MountInfo | undefined;
    for (const o of table.slice(0, upTo)) {
      const op = norm(o.mountPoint);
      if (op !== mp && (op === '/' || mp.startsWith(`${op}/`)) && op.length >= (best ? norm(best.mountPoint).length : -1)) best = o;
    }
    return best;
  };
  const mounted = new Map<string, MountInfo>();
  for (const [i, m] of table.entries()) {
    const mp = norm(m.mountPoint);
    mounted.set(mp, m); // the last mount at a point is the one in effect
    if (mp === '/') {
      if (x.rootDev && m.dev !== x.rootDev) return `the root mount is ${m.fsType} ${m.source} (device ${m.dev}), not the container's rootfs (device ${x.rootDev})`;
      if (x.rootReadonly && !has(m, 'ro')) return 'the root mount is writable, the spec asks for a read-only rootfs';
      continue;
    }
    const tree = x.trees.find((d) => d !== '/' && mp.startsWith(`${d}/`));
    if (!x.exact.has(mp) && tree === undefined) {
      // A mask: a read-only tmpfs over a directory, /dev/null bound over a file. A read-only
      // path: the filesystem that is there anyway, the same place of it, bound onto itself ro.
      if (x.masked.has(mp) && ((m.fsType === 'tmpfs' && m.root === '/' && has(m, 'ro')) || (/^(tmpfs|devtmpfs)$/.test(m.fsType) && m.root.endsWith('/null')))) continue;
      const parent = parentOf(mp, i);
      if (x.readonly.has(mp) && parent && m.dev === parent.dev && m.root === posix.join(parent.root, mp.slice(norm(parent.mountPoint).length)) && has(m, 'ro')) continue;
      return `mount ${mp} (${m.fsType} ${m.source}) is not in the spec`;
    }
    const want = x.byDest.get(tree ?? mp);
    if (!want) continue;
    const cgroup = want.type === 'cgroup' || want.type === 'cgroup2';
    if (tree !== undefined) {
      // Below a cgroup mount (under cgroup v1 a tmpfs of runc's): one cgroup mount per
      // controller, with the spec's flags (a writable one would allow release_agent). Below a
      // recursive bind: only what is mounted below its source on the host, with its flags.
      if (cgroup ? !/^cgroup2?$/.test(m.fsType) : !x.treeDevs.get(tree)?.has(m.dev)) return `mount ${mp} (${m.fsType} ${m.source}, device ${m.dev}) is not part of the spec's ${tree}`;
    }
    const missing = cgroup && m.fsType === 'tmpfs' ? [] : FLAGS.filter((f) => (want.options ?? []).includes(f) && !has(m, f));
    if (missing.length) return `mount ${mp} lacks ${missing.join(',')}, which the spec asks for`;
    if (tree !== undefined) continue;
    const shape = mountShape(want).split(' ')[0]!;
    if (shape === 'bind') {
      const place = x.bindPlace.get(mp);
      if (!place) return `mount ${mp}: the spec's source ${want.source} cannot be found on the host`;
      if (place.dev !== m.dev || place.root !== m.root)
        return `mount ${mp} is ${m.root} of device ${m.dev}, the spec binds ${want.source} (${place.root} of device ${place.dev})`;
    } else if (shape !== m.fsType && !(shape === 'cgroup' && /^(cgroup2?|tmpfs)$/.test(m.fsType))) {
      return `mount ${mp} is ${m.fsType}, the spec asks for ${shape}`;
    }
  }
  // Every path the spec masks or makes read-only is so, where it exists in the container.
  for (const r of x.required) {
    const m = mounted.get(r.path);
    if (m ? r.readonly && !has(m, 'ro') : exists(r.path))
      return `${r.readonly ? 'read-only' : 'masked'} path ${r.path} is ${m ? 'writable' : 'open'} in the restored container`;
  }
  return null;
}

/**
 * Why the restored container under `initPid` (its stopped tree, `tasks`: tasksUnder) holds more
 * than the spec grants (`x`), or null.
 * Checks every task: capability sets within the spec's, ids as the spec's (unless it grants
 * CAP_SETUID / CAP_SETGID), no_new_privs and a seccomp filter where the spec asks for them, each
 * namespace the one the spec names (joined by path, new, or the host's); and the init's mounts.
 */
export function restoredExcess(initPid: number, x: Expectations, tasks: readonly { pid: number; tid: number }[]): string | null {
  if (tasks.length === 0) return `the restored process ${initPid} is gone`;
  const initNs = new Map<string, string>();
  for (const { pid, tid } of tasks) {
    const where = `task ${tid}${pid === tid ? '' : ` (of ${pid})`}`;
    let status: string;
    try {
      status = readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
    } catch {
      continue; // exited while stopped: nothing left to grant anything to
    }
    const field = (name: string) => new RegExp(`^${name}:[ \\t]*(.*)$`, 'm').exec(status)?.[1]?.trim();
    for (const [set, mask] of Object.entries(x.allowed)) {
      const v = field(set);
      if (v === undefined) continue;
      const extra = BigInt(`0x${v}`) & ~mask;
      if (extra) return `${where} has ${set} ${capList(extra).join(',')} beyond the spec`;
    }
    const ids = (name: string) => (field(name) ?? '').split(/\s+/).filter(Boolean).map(Number);
    if (!x.anyUid && ids('Uid').some((u) => u !== x.uid)) return `${where} runs as uid ${ids('Uid').join('/')}, the spec asks for ${x.uid}`;
    if (!x.anyGid && ids('Gid').some((g) => g !== x.gid)) return `${where} runs as gid ${ids('Gid').join('/')}, the spec asks for ${x.gid}`;
    if (!x.anyGid && ids('Groups').some((g) => !x.groups.has(g))) return `${where} has groups ${ids('Groups').join(',')} beyond the spec's`;
    if (x.noNewPrivs && field('NoNewPrivs') !== '1') return `${where} lacks no_new_privs, which the spec asks for`;
    if (x.seccomp && field('Seccomp') !== '2') return `${where} has seccomp mode ${field('Seccomp')}, the spec asks for a filter`;
    for (const [file, want] of x.nsWanted) {
      let got: string;
      try {
        got = fileId(`/proc/${pid}/task/${tid}/ns/${file}`);
      } catch {
        continue;
      }
      const first = initNs.get(file);
      if (first === undefined) initNs.set(file, got);
      else if (first !== got) return `${where} is in another ${file} namespace than the container's init`;
      if (want === null ? got === x.hostNs.get(file) : got !== want)
        return `${where}'s ${file} namespace is ${want === null ? "the host's, the spec asks for a new one" : 'not the one the spec names'}`;
    }
  }
  return mountExcess(mountInfo(initPid), (path) => existsSync(`/proc/${initPid}/root${path}`), x.mounts);
}
