// /proc/<pid>/mountinfo, parsed once for every reader: the runtime's check of restored mounts and
// its clean-up, the lab's daemons and the tests.

import { readFileSync } from 'node:fs';

/** Decodes mountinfo's octal escapes (\040 for a space). */
const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));

export interface MountInfo {
  /** major:minor of the mounted filesystem. */
  dev: string;
  root: string;
  mountPoint: string;
  /** The mount's own options (ro, nosuid, nodev, noexec, …) and its superblock's. */
  opts: string[];
  superOpts: string[];
  fsType: string;
  source: string;
}

/** /proc/<pid>/mountinfo (or /proc/self/mountinfo), parsed. */
export function mountInfo(pid: number | 'self' = 'self'): MountInfo[] {
  return readFileSync(`/proc/${pid}/mountinfo`, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [pre, post = ''] = line.split(' - ');
      const f = pre!.split(' ');
      const g = post.split(' ');
      return { dev: f[2]!, root: unescape(f[3]!), mountPoint: unescape(f[4]!), opts: (f[5] ?? '').split(','), fsType: g[0]!, source: unescape(g[1] ?? ''), superOpts: (g[2] ?? '').split(',') };
    });
}

/** This process's mount points at or under `dir` (every one with no `dir`), in mount order. */
export function mountPoints(dir?: string): string[] {
  return mountInfo()
    .map((m) => m.mountPoint)
    .filter((p) => dir === undefined || p === dir || p.startsWith(`${dir}/`));
}
