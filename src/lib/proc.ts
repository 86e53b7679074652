// Processes from /proc: their state, parent and children, the tree under one (every thread of
// each), and killing a tree so that nothing under it forks away first.

import { readdirSync, readFileSync } from 'node:fs';

let napBuffer: Int32Array | undefined; // made on first use: a V8 startup snapshot cannot hold one
export const nap = (ms: number) => Atomics.wait((napBuffer ??= new Int32Array(new SharedArrayBuffer(4))), 0, 0, ms);

/**
 * A process's state letter, parent and (a zombie's) wait status, from /proc/<pid>/stat (fields 3,
 * 4 and 52); undefined if it is gone.
 */
export function procStat(pid: number): { state: string; ppid: number; exitCode: number } | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { state: f[0]!, ppid: Number(f[1]), exitCode: Number(f[49] ?? 0) };
  } catch {
    return undefined;
  }
}

/** The parent of a process (-1: gone). */
export const parentOf = (pid: number) => procStat(pid)?.ppid ?? -1;
/** Whether a process is gone or a zombie (killed, not yet reaped). */
const dead = (pid: number) => /^Z?$/.test(procStat(pid)?.state ?? '');
/** Whether a process is stopped (also by a tracer), a zombie, or gone. */
const stoppedOrGone = (pid: number) => /^[TtZX]?$/.test(procStat(pid)?.state ?? '');

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

/** The children of a process (all its threads'), from /proc. */
export function childrenOf(pid: number): number[] {
  return threadsOf(pid).flatMap((t) => childrenOfThread(pid, t));
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

/**
 * Kills a process and everything under it. Each is stopped as soon as it is found (a stopped
 * process forks no more, and its children stay its children); once all found are stopped, their
 * children are looked for again (a fork under way when the stop came completes first, CRIU's
 * with CLONE_PARENT one level up), until no new one turns up. Then all are killed, and waited
 * for (up to 5 s) until gone or zombies.
 */
export function killTree(root: number): void {
  const found = new Set<number>();
  for (let todo = [root], round = 0; todo.length && round < 100; round++) {
    for (const p of todo) {
      found.add(p);
      try {
        process.kill(p, 'SIGSTOP');
      } catch {
        /* already gone */
      }
    }
    for (let i = 0; i < 200 && [...found].some((p) => !stoppedOrGone(p)); i++) nap(1);
    todo = [...new Set([...found].flatMap(childrenOf))].filter((p) => !found.has(p));
  }
  for (const p of found) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  for (let i = 0; i < 5000 && [...found].some((p) => !dead(p)); i++) nap(1);
}
