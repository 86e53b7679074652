// Processes from /proc: their state, parent and children, and the tree under one (every thread
// of each).

import { readdirSync, readFileSync, statSync } from 'node:fs';

let napBuffer: Int32Array | undefined; // made on first use: a V8 startup snapshot cannot hold one
export const nap = (ms: number) => Atomics.wait((napBuffer ??= new Int32Array(new SharedArrayBuffer(4))), 0, 0, ms);

/**
 * A process's state letter, parent, start time (clock ticks after boot: with the pid, it names
 * one process) and (a zombie's) wait status, from /proc/<pid>/stat (fields 3, 4, 22 and 52);
 * undefined if it is gone.
 */
export function procStat(pid: number): { state: string; ppid: number; startTime: string; exitCode: number } | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { state: f[0]!, ppid: Number(f[1]), startTime: f[19]!, exitCode: Number(f[49] ?? 0) };
  } catch {
    return undefined;
  }
}

/**
 * What a path names, as "<device>:<inode>" (a namespace file of /proc, a process's root, a FIFO):
 * two paths name the same thing when these are equal. Throws if it is not there.
 */
export function fileId(path: string): string {
  const st = statSync(path);
  return `${st.dev}:${st.ino}`;
}

/** The parent of a process (-1: gone). */
export const parentOf = (pid: number) => procStat(pid)?.ppid ?? -1;

/** The threads of a process (empty if it is gone). */
function threadsOf(pid: number): string[] {
  try {
    return readdirSync(`/proc/${pid}/task`);
  } catch {
    return [];
  }
}

/** The children of one thread of a process. */
function childrenOfThread(pid: number, tid: string): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').split(' ').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** The process tree under `pid` (itself included), every thread of each. */
export function tasksUnder(pid: number): { pid: number; tid: number }[] {
  const out: { pid: number; tid: number }[] = [];
  const seen = new Set<number>();
  const walk = (p: number) => {
    if (seen.has(p) || seen.size > 100_000) return;
    seen.add(p);
    for (const t of threadsOf(p)) {
      out.push({ pid: p, tid: Number(t) });
      for (const k of childrenOfThread(p, t)) walk(k);
    }
  };
  walk(pid);
  return out;
}
