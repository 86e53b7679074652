// CRIU's restore.log, read for where a restore's time goes: "(SS.ssssss) text" lines, seconds
// since CRIU started, with the stages named in criu/cr-restore.c.

import { readFileSync } from 'node:fs';

export interface CriuLog {
  totalMs: number;
  lines: { t: number; text: string }[];
}

export function parseCriuLog(path: string): CriuLog | null {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return null;
  }
  const lines: { t: number; text: string }[] = [];
  for (const l of text.split('\n')) {
    const m = /^\((\d+)\.(\d+)\)\s?(.*)$/.exec(l);
    if (m) lines.push({ t: (Number(m[1]) + Number(`0.${m[2]}`)) * 1000, text: m[3]! });
  }
  if (lines.length === 0) return null;
  return { totalMs: Math.max(...lines.map((l) => l.t)) - Math.min(...lines.map((l) => l.t)), lines };
}

/**
 * Phases of a restore, from CRIU's own log lines:
 *  - startup: up to "Reading image tree" (option parsing and kernel probing, "kerndat", which
 *    /run/criu.kdat caches);
 *  - restore: namespaces, mounts, files, memory and tasks, up to "Unlock network";
 *  - unlock: "Unlock network" to "Restore finished": the network unlock and releasing the tasks;
 *  - tail: the rest (notifications to runc, stats).
 */
export interface CriuPhases {
  startup: number;
  restore: number;
  unlock: number;
  tail: number;
  kdatCached: boolean;
}

export function criuPhases(log: CriuLog): CriuPhases | null {
  const at = (re: RegExp) => log.lines.find((l) => re.test(l.text))?.t;
  const t0 = log.lines[0]!.t;
  const images = at(/^Reading image tree/);
  const unlock = at(/Unlock network/);
  const finished = at(/^Restore finished successfully/);
  if (images === undefined || unlock === undefined || finished === undefined) return null;
  return {
    startup: images - t0,
    restore: unlock - images,
    unlock: finished - unlock,
    tail: log.lines.at(-1)!.t - finished,
    kdatCached: log.lines.some((l) => /Loaded kdat cache/.test(l.text)),
  };
}

/** The largest steps between consecutive lines of one restore.log. */
export function criuGaps(log: CriuLog, n = 6) {
  return log.lines
    .slice(1)
    .map((l, i) => ({ ms: l.t - log.lines[i]!.t, at: log.lines[i]!.t, before: log.lines[i]!.text.trim(), after: l.text.trim() }))
    .sort((a, b) => b.ms - a.ms)
    .slice(0, n);
}
