// `create` of a bundle whose config names a checkpoint: the Node program's verdict, which
// bin/prebake (bin/prebake-create.sh) executes. Cold, or restore from the verified store's copy
// of the checkpoint (after it was authenticated and checked against the spec and the host); then,
// once runc has restored it with its tasks stopped, accept them or refuse them. This program
// never runs runc: a bad checkpoint costs time, never the start.

import { existsSync, type FSWatcher, readFileSync, watch } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import type { Spec } from '../../oci/runtime-spec.ts';
import { shortId } from '../checkpoint/trust.ts';
import { CREATE_FLAGS, EARLY_ENV, STATE_FILES, VERDICT_LINES, type VerdictWord } from '../contract.ts';
import { nap, parentOf, procStat, tasksUnder } from '../lib/proc.ts';
import { type ParsedArgs, type RuntimeCall, flagIsSet, flagValue, parseFlags } from './argv.ts';
import { captureSpec } from './capture.ts';
import type { RuntimeConfig } from './config.ts';
import { applyOomScoreAdj, restoredExcess } from './inspect.ts';
import { closeLogger, createLogger, type Logger, logFileError } from './log.ts';
import { planRestore, type RestorePlan } from './plan.ts';

/** A restore bin/prebake started before this program ran (src/contract.ts, EARLY_ENV). */
export interface EarlyRestore {
  /** The container's state dir. */
  dir: string;
  /** The image dir runc restores from. */
  image: string;
  /** runc's pid: a child of bin/prebake's subshell, as this program is a descendant of it. */
  runcPid: number;
  /** CLOCK_MONOTONIC (ns) when runc started, if the shell could read it. */
  t0?: bigint;
  /** runc's parent, bin/prebake's subshell (its pid), as the shell gave it. */
  shell?: number;
  /** runc's exit status, when the shell has reaped runc already (given with `shell`). */
  reapedStatus?: number;
}

export type Verdict = { word: VerdictWord; lines: string[] };

/** The verdict as bin/prebake reads it: the word, then its fixed number of lines. */
export function verdictText(v: Verdict): string {
  const lines = Array.from({ length: VERDICT_LINES[v.word] }, (_, i) => (v.lines[i] ?? '').replace(/\n/g, ' '));
  return `${[v.word, ...lines].join('\n')}\n`;
}

/** Why a restore did not happen: runc or CRIU failed, or what they restored exceeded the spec. */
interface Failure {
  reason: string;
  /** The restored tasks exceeded the spec and are killed before they run again. */
  excess?: true;
}

/** The last error runc wrote to a JSON log, and CRIU's first error lines from restore.log. */
function failureReason(runcLog: string, criuLog: string): string {
  let reason = runcError(runcLog);
  try {
    const errors = readFileSync(criuLog, 'utf8')
      .split('\n')
      // Unprivileged-looking rlimit noise appears in every restore under a runc root; skip it.
      .filter((l) => /Error|error/.test(l) && !/Can't setup RLIMIT_NOFILE/.test(l))
      .slice(0, 2) // the first errors are the cause; later ones are the unwinding
      .map((l) => l.trim());
    if (errors.length) reason += `${reason ? '; ' : ''}CRIU: ${errors.join(' | ')}`;
  } catch {
    /* CRIU did not get to write a log */
  }
  return reason || 'runc restore failed without a message';
}

/** The last error runc logged ('' if none). */
function runcError(runcLog: string): string {
  let reason = '';
  try {
    for (const line of readFileSync(runcLog, 'utf8').split('\n')) {
      try {
        const o = JSON.parse(line) as { level?: string; msg?: string };
        // runc points at CRIU's log, which goes with the failed attempt: its errors are quoted apart.
        if (o.level === 'error' && o.msg) reason = o.msg.replace(/\s*log file: \S+$/, '');
      } catch {
        /* not a JSON line */
      }
    }
  } catch {
    /* runc wrote no log */
  }
  return reason;
}

/** The restored init's pid, from the restore's pid file. */
function restoredPid(pidFile: string): number | undefined {
  try {
    const pid = readFileSync(pidFile, 'utf8').trim();
    return /^\d+$/.test(pid) ? Number(pid) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The verdict on what runc restored, its tasks still stopped: null when it is within the spec
 * and its processes have the spec's oom_score_adj, else why not (`excess` when it holds more
 * than the spec grants). The reason is about the restored tasks, not the checkpoint's files.
 */
function verdictOn(plan: RestorePlan): Failure | null {
  if (plan.noLazy && restoredLazily(plan)) return { reason: `its memory is restored lazily and ${plan.noLazy}: a page CRIU's lazy-pages daemon could not charge to the container's memory cgroup would read as zeros` };
  const pid = restoredPid(plan.pidFile);
  if (pid === undefined) return { reason: 'runc wrote no pid for the restored process' };
  // One walk of the stopped tree: the tasks checked are the ones given the spec's oom_score_adj.
  const tasks = tasksUnder(pid);
  const excess = restoredExcess(pid, plan.expect, tasks);
  if (excess !== null) return { reason: excess, excess: true };
  const oom = applyOomScoreAdj(tasks, plan.expect);
  return oom === null ? null : { reason: oom };
}

/** Whether the shell started CRIU's lazy-pages daemon for this restore (its pid file is in the state). */
const restoredLazily = (plan: RestorePlan) => existsSync(join(plan.stateDir, STATE_FILES.lazyPid));

/** A wait between two looks at /proc (see Waits). */
export type Pause = (ms: number) => Promise<void>;
export const napPause: Pause = (ms) => {
  nap(ms);
  return Promise.resolve();
};

/**
 * How a verdict waits between its looks at /proc: a one-shot program naps (no other work is
 * waiting); the resident program yields to its other creates and, with `watch`, takes no look
 * before runc has written the restored init's pid (inotify on the pid file's directory) or
 * WATCH_MS have passed: a look costs ~0.2 ms of CPU, and a restore takes tens of ms.
 */
export interface Waits {
  pause: Pause;
  watch?: boolean;
}
const WATCH_MS = 20;

/**
 * Waits for a child of `parent` to exit, polling /proc (it stays a zombie until its parent reaps
 * it): its exit status, 'timeout' after `timeoutMs`, 'abandoned' once `callerGone`, or undefined
 * if it is gone or no longer `parent`'s child. `onEach` runs at each look; `wakeDir` is where
 * runc writes the pid file (see Waits).
 */
async function exitOf(pid: number, parent: number, timeoutMs: number, onEach: () => boolean, callerGone: () => boolean, waits: Waits, wakeDir: string): Promise<number | 'timeout' | 'abandoned' | undefined> {
  const deadline = performance.now() + timeoutMs;
  let watcher: FSWatcher | undefined;
  let wake = () => {};
  if (waits.watch) {
    try {
      watcher = watch(wakeDir, { persistent: false }, () => wake());
    } catch {
      /* polled */
    }
  }
  const idle = (ms: number) =>
    new Promise<void>((done) => {
      const t = setTimeout(done, ms);
      wake = () => {
        clearTimeout(t);
        done();
      };
    });
  try {
    // A restore takes tens of ms: the first look comes after 10, then one a millisecond (each
    // look is CPU that runc and CRIU, at work beside this program, would have had); once `onEach`
    // has done its work (runc wrote the pid: it exits within a few ms), one every 0.25 ms.
    await (watcher ? idle(WATCH_MS) : waits.pause(10));
    let soon = false;
    for (;;) {
      const st = procStat(pid);
      if (!st || st.ppid !== parent) return undefined;
      if (st.state === 'Z') return st.exitCode & 0x7f ? 128 + (st.exitCode & 0x7f) : st.exitCode >> 8;
      if (performance.now() > deadline) return 'timeout';
      if (callerGone()) return 'abandoned';
      if (onEach()) soon = true;
      await (soon ? waits.pause(0.25) : watcher ? idle(WATCH_MS) : waits.pause(1));
    }
  } finally {
    watcher?.close();
  }
}

/**
 * After a `restore` verdict on the channel: the restore the shell started for `plan`, given as
 * "<runc pid> <start stamp>" on `input` (read to its end), checked and settled (settle); null if
 * the shell started none (it closed the channel without a line).
 */
export async function settleStarted(plan: RestorePlan, input: string, cfg: RuntimeConfig, log: Logger, caller: number | undefined, shell: number | undefined, waits: Waits): Promise<Verdict | null> {
  const m = /^(\d+) (\d*)\n?$/.exec(input);
  if (!m) return null;
  return settle(plan, { dir: plan.stateDir, image: plan.imagePath, runcPid: Number(m[1]), ...(m[2] ? { t0: BigInt(m[2]) } : {}), ...(shell !== undefined ? { shell } : {}) }, cfg, log, caller, waits);
}

/**
 * The verdict on the restore bin/prebake started, once it is the one `plan` asks for: wait for
 * runc (checking the stopped tasks as soon as runc has written the restored init's pid: it exits
 * a few ms later), then accept, or say why not and go cold. `caller` is bin/prebake as the engine
 * started it: once it is gone (the engine gave up on the create), the create is abandoned.
 */
async function settle(plan: RestorePlan, early: EarlyRestore, cfg: RuntimeConfig, log: Logger, caller: number | undefined, waits: Waits): Promise<Verdict> {
  const cold = (f: Failure): Verdict => {
    log.warn(
      { id: plan.id },
      f.excess ? `cold start: the container restored from ${plan.source} holds more than its spec grants, killed before it ran again: ${f.reason}` : `cold start: restore of ${plan.id} from ${plan.imagePath} failed: ${f.reason}`,
    );
    return { word: 'cold', lines: [plan.netnsPath ?? ''] };
  };
  // runc is a child of bin/prebake's subshell, which is a child of the caller's bin/prebake. (The
  // shell's word for its pid first: runc may be gone, reaped by it, see below.)
  const shell = early.shell ?? parentOf(early.runcPid);
  // (Neither the shell's word nor /proc's for the shell: nothing says the caller is gone. The
  // shell looks again before it resumes anything.)
  const callerGone = () => caller !== undefined && shell > 0 && parentOf(shell) !== caller;
  let refused: Failure | null | undefined;
  const status = early.reapedStatus !== undefined ? (callerGone() ? 'abandoned' : early.reapedStatus) : await exitOf(
    early.runcPid,
    shell,
    cfg.restoreTimeoutMs,
    () => {
      if (refused !== undefined) return false;
      // The init CRIU restored is runc's child until runc exits (a pid file left from an
      // earlier container names some other process).
      const pid = restoredPid(plan.pidFile);
      if (pid === undefined || parentOf(pid) !== early.runcPid) return false;
      refused = verdictOn(plan);
      return true;
    },
    callerGone,
    waits,
    dirname(plan.pidFile),
  );
  const end = process.hrtime.bigint();
  // undefined: runc is gone, reaped by the shell (dash reaps any child that has exited once a
  // command of its own ends, a builtin's too) before this program saw its zombie. Its status is
  // then the shell's to know: it resumes nothing unless runc exited 0 (`accept` waits for it).
  if (status === 'abandoned' || ((status === 0 || status === undefined) && callerGone())) {
    // (Logged by the shell once it has cleared the restore away.)
    return { word: 'abandon', lines: [plan.netnsPath ?? ''] };
  }
  if (status === 'timeout') return cold({ reason: `runc restore did not finish within ${cfg.restoreTimeoutMs / 1000} s (restoreTimeout): stopped and cleared away` });
  const runcLog = join(early.dir, STATE_FILES.runcLog);
  if ((status !== undefined && status !== 0) || (status === undefined && runcError(runcLog))) return cold({ reason: failureReason(runcLog, join(early.dir, STATE_FILES.criuLog)) });
  refused ??= verdictOn(plan);
  if (refused !== null) return cold(refused);
  // The restored init, named by its pid and start time (the shell acts on it only if both hold).
  const init = restoredPid(plan.pidFile);
  const start = init === undefined ? undefined : procStat(init)?.startTime;
  if (start === undefined) return cold({ reason: 'the restored process is gone' });
  const ms = early.t0 !== undefined ? Math.round(Number(end - early.t0) / 1e6) : null;
  // Logged now, not by the shell after it resumed the tasks: a shorter verdict for the shell to
  // read (it reads a byte at a time); should the resume fail, the shell logs the cold start after.
  const memory = restoredLazily(plan) ? 'lazy' : 'eager';
  log.info({ id: plan.id, ms, memory }, `restored ${plan.id} from ${plan.source}${memory === 'lazy' ? ' (memory restored lazily)' : ''}`);
  return {
    word: 'accept',
    lines: [plan.restoreSignal ? String(osConstants.signals[plan.restoreSignal]) : '', plan.netnsPath ? '' : '1', plan.hostname ?? '', start],
  };
}

/**
 * The verdict on a create. Without `early`, it is `restore` (from the store's copy of a checkpoint
 * that passed every check) or `cold`. With the restore bin/prebake started, the restore is
 * checked and settled (settle) if it is the planned one, else restarted from the planned image
 * (`restore`), or refused (`cold`: nothing restored ran again). Everything up to the first look
 * at a restore under way runs before this returns its promise (the resident program relies on it:
 * it gives each create its working directory and PATH for that part alone).
 */
export function decideCreate(call: RuntimeCall, cfg: RuntimeConfig, log: Logger, early: EarlyRestore | undefined, caller: number | undefined, waits: Waits): Promise<Verdict & { plan?: RestorePlan }> | (Verdict & { plan?: RestorePlan }) {
  let createArgs: ParsedArgs | undefined;
  let plan: RestorePlan | null = null;
  let netns = '';
  try {
    createArgs = parseFlags(CREATE_FLAGS, call.args, 'runc create');
    // runc itself reports these, in its own words, as it would without prebake: a --log file
    // that cannot be opened (no space left for it), a usage error, an unreadable bundle.
    if (logFileError(log) || createArgs.rest.length !== 1) return { word: 'cold', lines: [] };
    const bundle = resolve(flagValue(createArgs, 'bundle') ?? '.');
    let spec: Spec;
    try {
      spec = JSON.parse(readFileSync(join(bundle, 'config.json'), 'utf8')) as Spec;
    } catch {
      return { word: 'cold', lines: [] };
    }
    netns = spec.linux?.namespaces?.find((n) => n.type === 'network')?.path ?? '';
    captureSpec(spec, cfg, bundle);
    plan = planRestore(call, createArgs, cfg, spec, bundle, early !== undefined);
  } catch (e) {
    log.warn({ id: createArgs?.rest[0] }, `cold start: ${(e as Error).message}`);
  }
  const id = createArgs?.rest[0];
  if (plan && cfg.trustAny)
    log.warn({ id }, `trustAnyCheckpoint is set in the runtime's config: checkpoints are restored whoever signed them (key ${plan.keyId === 'none' ? 'none' : shortId(plan.keyId)}); for development only`);
  if (!plan) {
    if (early) log.debug({ id }, 'early restore refused before its tasks ran again; cleared away');
    return { word: 'cold', lines: [netns] };
  }
  if (!early) return { word: 'restore', lines: [plan.imagePath], plan };
  if (resolve(early.image) !== resolve(plan.imagePath) || resolve(early.dir) !== resolve(plan.stateDir)) {
    log.debug({ id }, 'early restore refused before its tasks ran again; cleared away');
    log.debug({ id }, 'the early restore was not the planned one; restoring again');
    return { word: 'restore', lines: [plan.imagePath] };
  }
  return settle(plan, early, cfg, log, caller, waits);
}

/** Where a create's verdicts go, and where the shell's line after a `restore` verdict comes from. */
export interface VerdictIo {
  write(text: string): void;
  readLine(): Promise<string>;
  waits: Waits;
  /** Who answers, when it is not a program of this create's own (logged at debug level). */
  by?: string;
  /** The create's stderr, when it is not this program's (undefined: none could be opened). */
  stderr?: number | undefined;
}

/**
 * The verdicts on one create (`call`), given the environment bin/prebake-create.sh set for it
 * (EARLY_ENV): the first, and after `restore` on the channel, the one on the restore the shell
 * started. Everything before the first look at a restore under way runs before the first await.
 */
export async function answerCreate(call: RuntimeCall, cfg: RuntimeConfig, env: Record<string, string | undefined>, io: VerdictIo): Promise<void> {
  const log = createLogger({
    file: flagValue(call.global, 'log'),
    format: flagValue(call.global, 'log-format'),
    debug: flagIsSet(call.global, 'debug'),
    ...('stderr' in io ? { stderr: io.stderr } : {}),
  });
  try {
    const num = (v: string | undefined) => (v && /^\d+$/.test(v) ? Number(v) : undefined);
    const runcPid = num(env[EARLY_ENV.runc]);
    const t0 = env[EARLY_ENV.t0];
    const early: EarlyRestore | undefined =
      env[EARLY_ENV.state] && env[EARLY_ENV.image] && runcPid
        ? { dir: resolve(env[EARLY_ENV.state]!), image: env[EARLY_ENV.image]!, runcPid, ...(t0 && /^\d+$/.test(t0) ? { t0: BigInt(t0) } : {}) }
        : undefined;
    const caller = num(env[EARLY_ENV.caller]);
    const [status, shell] = [num(env[EARLY_ENV.status]), num(env[EARLY_ENV.shell])];
    if (early && shell !== undefined) {
      early.shell = shell;
      if (status !== undefined) early.reapedStatus = status;
    }
    if (io.by) log.debug({ id: call.args.at(-1) }, `verdicts by ${io.by}`);
    if (env[EARLY_ENV.passed]) log.debug({ id: call.args.at(-1) }, `the resident program passed this create on: ${env[EARLY_ENV.passed]}`);
    const verdict = await decideCreate(call, cfg, log, early, caller, io.waits);
    io.write(verdictText(verdict));
    // On the channel, the restore the shell starts is this program's to check: one Node start
    // for a checkpoint seen for the first time, not two.
    if (env[EARLY_ENV.go] === '1' && verdict.word === 'restore' && verdict.plan) {
      const second = await settleStarted(verdict.plan, await io.readLine(), cfg, log, caller, shell, io.waits);
      if (second) io.write(verdictText(second));
    }
  } finally {
    closeLogger(log);
  }
}

