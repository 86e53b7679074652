// `create`: restore the container from the checkpoint its image carries, or fall back to the
// ordinary `runc create` with the original arguments. A bad checkpoint costs time, never the start.

import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, closeSync, existsSync, mkdirSync, readFileSync, realpathSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import type { Spec } from '../../oci/runtime-spec.ts';
import { CHECKPOINT_DIR } from '../checkpoint/manifest.ts';
import { checkpointRequest, resolveInRootfs, rootfsOf } from '../checkpoint/locate.ts';
import { criuAnnotations } from '../checkpoint/security.ts';
import { shortId } from '../checkpoint/trust.ts';
import { chooseCheckpoint } from '../checkpoint/verify.ts';
import { hostFacts } from '../lib/host.ts';
import { childrenOf, killTree, nap, parentOf, procStat, tasksUnder } from '../lib/proc.ts';
import { CREATE_FLAGS, type ParsedArgs, type RuntimeCall, flagIsSet, flagValue, parseFlags } from './argv.ts';
import { captureSpec } from './capture.ts';
import { DEFAULT_RUNC_ROOT, type RuntimeConfig, containerStateDir, validId } from './config.ts';
import { applyOomScoreAdj, type Expectations, expectationsOf, mountInfo, restoredExcess } from './inspect.ts';
import { captureLines, type Logger, logFileError } from './log.ts';

export const RESTORED_MARKER = 'restored';

/** Exit status of a finished child, the way a shell reports it. */
function statusOf(r: ReturnType<typeof spawnSync>): number {
  if (r.error) throw r.error;
  if (r.signal) return 128 + (osConstants.signals[r.signal] ?? 0);
  return r.status ?? 1;
}

/** Global flags to hand to runc, without the log destination (prebake gives runc its own). */
function globalsWithoutLog(global: ParsedArgs): string[] {
  return global.flags.filter((f) => f.name !== 'log' && f.name !== 'log-format').flatMap((f) => f.raw);
}

/** The last error runc wrote to a JSON log, and CRIU's last error lines from restore.log. */
function failureReason(runcLog: string, criuLog: string): string {
  let reason = '';
  try {
    for (const line of readFileSync(runcLog, 'utf8').split('\n')) {
      try {
        const o = JSON.parse(line) as { level?: string; msg?: string };
        // runc points at CRIU's log, which goes with the failed attempt: its errors are quoted below.
        if (o.level === 'error' && o.msg) reason = o.msg.replace(/\s*log file: \S+$/, '');
      } catch {
        /* not a JSON line */
      }
    }
  } catch {
    /* runc wrote no log */
  }
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

interface RestorePlan {
  id: string;
  bundle: string;
  spec: Spec;
  /** The key that signed the checkpoint ("none" under trustAnyCheckpoint). */
  keyId: string;
  /** What the spec grants the restored tasks (worked out before they exist). */
  expect: Expectations;
  /** CRIU's image directory: the verified store's copy. */
  imagePath: string;
  stateDir: string;
  source: string;
  /** The network namespace the container joins by path, if any. */
  netnsPath?: string;
  /** Sent to the restored process so it can renew what must differ per replica (seeds, ids). */
  restoreSignal?: NodeJS.Signals;
  /** The spec's hostname, set in the restored UTS namespace (CRIU restores the baked one). */
  hostname?: string;
}

export const RESTORE_SIGNAL_ANNOTATION = 'io.prebake.restore-signal';
export const RESTORE_SIGNAL_ENV = 'PREBAKE_RESTORE_SIGNAL';

/** The signal named by the annotation or env (e.g. SIGUSR2 or USR2); an unknown name is an error. */
export function restoreSignalOf(spec: Spec): NodeJS.Signals | undefined {
  const prefix = `${RESTORE_SIGNAL_ENV}=`;
  const raw = spec.annotations?.[RESTORE_SIGNAL_ANNOTATION] ?? spec.process?.env?.findLast((e) => e.startsWith(prefix))?.slice(prefix.length);
  if (!raw) return undefined;
  const name = (raw.startsWith('SIG') ? raw : `SIG${raw}`).toUpperCase();
  if (!(name in osConstants.signals) || name === 'SIGKILL' || name === 'SIGSTOP') throw new Error(`restore signal ${JSON.stringify(raw)} is not a signal a process can handle`);
  return name as NodeJS.Signals;
}

/** Works out whether and how this create can be a restore; throws with the reason if not. */
function planRestore(call: RuntimeCall, createArgs: ParsedArgs, cfg: RuntimeConfig, spec: Spec, bundle: string, early: boolean): RestorePlan | null {
  const req = checkpointRequest(spec);
  if (req.kind === 'none') return null;
  if (req.kind === 'off') throw new Error(`checkpoint turned off by ${req.source}`);
  // runc create fails on an id in use, and a restore attempt must not touch that container.
  // (bin/prebake checked before it started an early restore, whose runc made the dir since.)
  const id = createArgs.rest[0]!;
  if (!early && validId(id) && existsSync(join(resolve(flagValue(call.global, 'root') ?? DEFAULT_RUNC_ROOT), id))) throw new Error(`a container ${id} exists already`);
  for (const f of CREATE_FLAGS) {
    const v = flagValue(createArgs, f.name);
    if (f.onRestore === 'refuse' && v !== undefined && v !== '0' && v !== '')
      throw new Error(`create --${f.name} ${v} cannot be honoured by a restore`);
  }
  if (!validId(id)) throw new Error(`container id ${JSON.stringify(id)} is not one runc accepts`);
  const criu = criuAnnotations(spec);
  if (criu.length) throw new Error(`the spec carries the annotation ${criu.join(', ')}, which runc would hand to CRIU: refused`);
  const root = resolveInRootfs(rootfsOf(spec, bundle), req.path);
  const facts = hostFacts(flagValue(call.global, 'criu') ?? 'criu', cfg.stateBase);
  const chosen = chooseCheckpoint(root, spec, facts, { trustDir: cfg.trustDir, any: cfg.trustAny, store: cfg.store });
  const netnsPath = spec.linux?.namespaces?.find((n) => n.type === 'network')?.path;
  const restoreSignal = restoreSignalOf(spec);
  // CRIU restores the baked hostname: the spec's is set if it differs.
  const hostname =
    spec.linux?.namespaces?.some((n) => n.type === 'uts' && !n.path) && spec.hostname && spec.hostname !== chosen.manifest.spec.hostname && /^[A-Za-z0-9][A-Za-z0-9.-]{0,63}$/.test(spec.hostname)
      ? spec.hostname
      : undefined;
  return {
    ...(hostname ? { hostname } : {}),
    ...(netnsPath ? { netnsPath } : {}),
    ...(restoreSignal ? { restoreSignal } : {}),
    id,
    bundle,
    spec,
    keyId: chosen.keyId,
    // The masks and read-only paths the checkpoint was baked with stay after a restore.
    expect: expectationsOf(spec, bundle, { masked: chosen.manifest.spec.security.maskedPaths, readonly: chosen.manifest.spec.security.readonlyPaths }),
    imagePath: join(chosen.entry, CHECKPOINT_DIR),
    stateDir: containerStateDir(cfg, flagValue(call.global, 'root'), id),
    // Which of several named checkpoints was chosen, if there are several.
    source: `${req.path}${chosen.dir === root ? '' : `/${basename(chosen.dir)}`} (${req.source}; key ${chosen.keyId === 'none' ? 'none' : shortId(chosen.keyId)})`,
  };
}

/**
 * A restore that fails after CRIU locked the network (a checkpoint taken with its iptables or
 * nftables lock) leaves the lock in the namespace the container joins: the cold container would
 * start but never receive a packet. Removes CRIU's rules and tables there.
 */
function unlockNetwork(netnsPath: string): void {
  const script = [
    'for t in iptables ip6tables; do command -v $t >/dev/null || continue;',
    '$t -w -D INPUT -j CRIU; $t -w -D OUTPUT -j CRIU; $t -w -F CRIU; $t -w -X CRIU; done;',
    'command -v nft >/dev/null && nft list tables | while read -r _ fam name; do case $name in CRIU*) nft delete table $fam $name;; esac; done',
  ].join(' ');
  spawnSync('nsenter', [`--net=${netnsPath}`, 'sh', '-c', script], { stdio: 'ignore' });
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

/** Removes what a restore attempt left: runc's container (if any), CRIU's network lock, prebake's state. */
function discardAttempt(attempt: { id: string; stateDir: string; netnsPath?: string }, call: RuntimeCall, cfg: RuntimeConfig): void {
  spawnSync(cfg.runc, [...globalsWithoutLog(call.global), 'delete', '--force', attempt.id], { stdio: 'ignore' });
  if (attempt.netnsPath) unlockNetwork(attempt.netnsPath);
  // The marker first: a cold container must not find one, or its start would be skipped.
  rmSync(join(attempt.stateDir, RESTORED_MARKER), { force: true });
  rmSync(attempt.stateDir, { recursive: true, force: true });
}

/**
 * Makes the container's state dir with every file the attempt writes there: CRIU's work dir and
 * log, runc's log and the `restored` marker. All of it exists before runc starts, so a state dir
 * that has no room left (no inode for another file) is a cold start with that reason, and once
 * runc has restored the container nothing is left to write for the engine's `start` to be right.
 * CRIU and runc write into the logs they find; a log that cannot take its lines costs the lines.
 * Returns those paths and the CRIU config to name: dist/criu.conf, or a copy written here.
 */
function prepareState(plan: RestorePlan, stateBase: string): { work: string; runcLog: string; criuConf: string } {
  const work = join(plan.stateDir, 'criu');
  const runcLog = join(plan.stateDir, 'runc-restore.log');
  const shipped = criuConfig();
  const criuConf = shipped ?? join(plan.stateDir, CRIU_CONF);
  rmSync(plan.stateDir, { recursive: true, force: true });
  try {
    // Nobody but root reads prebake's state: the base is 0700 whatever made it before.
    mkdirSync(stateBase, { recursive: true, mode: 0o700 });
    chmodSync(stateBase, 0o700);
    mkdirSync(work, { recursive: true, mode: 0o700 });
    writeFileSync(join(work, 'restore.log'), '', { mode: 0o600 }); // the mode CRIU gives its log
    writeFileSync(runcLog, '', { mode: 0o600 });
    writeFileSync(join(plan.stateDir, RESTORED_MARKER), '', { mode: 0o600 });
    if (shipped === undefined) writeFileSync(criuConf, CRIU_CONF_TEXT, { mode: 0o600 });
  } catch (e) {
    rmSync(plan.stateDir, { recursive: true, force: true });
    throw new Error(`cannot write prebake's state in ${plan.stateDir}: ${(e as Error).message}`);
  }
  return { work, runcLog, criuConf };
}

/** dist/criu.conf, which bin/prebake names (PREBAKE_CRIU_CONFIG), if it says what it must. */
function criuConfig(): string | undefined {
  const file = process.env.PREBAKE_CRIU_CONFIG;
  try {
    return file && readFileSync(file, 'utf8') === CRIU_CONF_TEXT ? file : undefined;
  } catch {
    return undefined;
  }
}

/** The pid file of a restore: the one create was given, else one in prebake's state. */
function restorePidFile(plan: RestorePlan, createArgs: ParsedArgs): string {
  return flagValue(createArgs, 'pid-file') || join(plan.stateDir, 'pid');
}

/** runc's argv (after the binary) for restoring the plan: create's global and mapped flags. */
function restoreArgs(plan: RestorePlan, call: RuntimeCall, createArgs: ParsedArgs): string[] {
  const args = [...globalsWithoutLog(call.global), '--log', join(plan.stateDir, 'runc-restore.log'), '--log-format', 'json', 'restore', '--detach'];
  args.push('--image-path', plan.imagePath, '--work-path', join(plan.stateDir, 'criu'), '--bundle', plan.bundle);
  args.push('--pid-file', restorePidFile(plan, createArgs));
  const console = flagValue(createArgs, 'console-socket');
  if (console !== undefined) args.push('--console-socket', console);
  if (flagIsSet(createArgs, 'no-pivot')) args.push('--no-pivot');
  args.push(plan.id);
  return args;
}

/**
 * CRIU's config for every restore (CRIU_CONFIG_FILE): nothing restored runs before the verdict.
 * dist/criu.conf holds it; without that file, the restore's state gets a copy.
 */
const CRIU_CONF = 'criu.conf';
const CRIU_CONF_TEXT = 'leave-stopped\n';

/**
 * The verdict on what runc restored, its tasks still stopped: null when it is within the spec
 * and its processes have the spec's oom_score_adj, else why not (`excess` when it holds more
 * than the spec grants). The reason is about the restored tasks, not the checkpoint's files.
 */
function verdictOn(plan: RestorePlan, pidFile: string): Failure | null {
  const pid = restoredPid(pidFile);
  if (pid === undefined) return { reason: 'runc wrote no pid for the restored process' };
  // One walk of the stopped tree: the tasks checked are the ones given the spec's oom_score_adj.
  const tasks = tasksUnder(pid);
  const excess = restoredExcess(pid, plan.expect, tasks);
  if (excess !== null) return { reason: excess, excess: true };
  const oom = applyOomScoreAdj(tasks, plan.expect);
  return oom === null ? null : { reason: oom };
}

/** Sends SIGCONT down a stopped process tree, children first (none of them runs before its parent is checked). */
function resumeTree(pid: number): void {
  for (const k of childrenOf(pid)) resumeTree(k);
  try {
    process.kill(pid, 'SIGCONT');
  } catch {
    /* gone */
  }
}

/**
 * What follows an accepted restore: the loopback of a network namespace runc made (CRIU restores
 * it down), the spec's hostname, the restore signal, and the tasks resumed. Throws if the
 * restored process is gone.
 */
function finishRestored(plan: RestorePlan, pidFile: string): void {
  const pid = restoredPid(pidFile);
  if (pid === undefined) throw new Error('the restored process is gone');
  if (!plan.netnsPath) spawnSync('nsenter', [`--net=/proc/${pid}/ns/net`, 'ip', 'link', 'set', 'lo', 'up'], { stdio: 'ignore' });
  if (plan.hostname) spawnSync('nsenter', [`--uts=/proc/${pid}/ns/uts`, 'hostname', plan.hostname], { stdio: 'ignore' });
  if (plan.restoreSignal) process.kill(pid, plan.restoreSignal);
  resumeTree(pid);
}

/** Why a restore did not happen: runc or CRIU failed, or what they restored exceeded the spec. */
interface Failure {
  reason: string;
  /** The restored tasks exceeded the spec and were killed before they ran again. */
  excess?: true;
  /** Nobody waits for this create any more (bin/prebake was killed): nothing is to be created. */
  abandoned?: true;
}

/**
 * Runs `runc restore --detach` for the plan, checks and resumes it; returns null on success.
 * `callerGone` tells that bin/prebake, which ran this program, was killed (an engine gave up):
 * the restore is then stopped and cleared away.
 */
function restore(plan: RestorePlan, call: RuntimeCall, createArgs: ParsedArgs, cfg: RuntimeConfig, callerGone: () => boolean): Failure | null {
  let state: ReturnType<typeof prepareState>;
  try {
    state = prepareState(plan, cfg.stateBase);
  } catch (e) {
    return { reason: (e as Error).message };
  }
  let failure: Failure;
  try {
    // The restored process takes runc's stdio in place of the pipes it had at bake time.
    const env = { ...process.env, CRIU_CONFIG_FILE: state.criuConf };
    // Not spawnSync: a restore that never ends (CRIU blocked on a file of the image) must be
    // stopped and cleared away with everything it made, which needs runc still there.
    const runc = spawn(cfg.runc, restoreArgs(plan, call, createArgs), { stdio: 'inherit', env });
    if (runc.pid === undefined) throw new Error(`cannot run ${cfg.runc}`);
    const status = exitOf(runc.pid, process.pid, cfg.restoreTimeoutMs, undefined, callerGone);
    if (status === 'timeout' || status === 'abandoned') {
      clearAway(plan, runc.pid, call, cfg, restorePidFile(plan, createArgs));
      return status === 'timeout' ? { reason: timedOut(cfg) } : { reason: 'abandoned', abandoned: true };
    } else if (status === 0) {
      const refused = verdictOn(plan, restorePidFile(plan, createArgs));
      if (refused === null) {
        finishRestored(plan, restorePidFile(plan, createArgs));
        return null;
      }
      failure = refused;
    } else failure = { reason: status === undefined ? 'runc went away' : failureReason(state.runcLog, join(state.work, 'restore.log')) };
  } catch (e) {
    // A restored container prebake cannot finish (its process gone before the restore signal)
    // is torn down like a failed restore: the cold start below replaces it.
    failure = { reason: (e as Error).message };
  }
  discardAttempt(plan, call, cfg);
  return failure;
}

const timedOut = (cfg: RuntimeConfig) => `runc restore did not finish within ${cfg.restoreTimeoutMs / 1000} s (restoreTimeout): stopped and cleared away`;

/**
 * Waits for a child of `parent` to exit, polling /proc (it stays a zombie until its parent reaps
 * it; this program's event loop does not run meanwhile): its exit status, 'timeout' after
 * `timeoutMs`, or undefined if it is gone or no longer `parent`'s child. `onEach` runs at each look.
 */
function exitOf(pid: number, parent: number, timeoutMs: number, onEach: () => boolean = () => false, callerGone: () => boolean = () => false): number | 'timeout' | 'abandoned' | undefined {
  const deadline = performance.now() + timeoutMs;
  // A restore takes tens of ms: the first look comes after 10, then one a millisecond (each
  // look is CPU that runc and CRIU, at work beside this program, would have had); once `onEach`
  // has done its work (runc wrote the pid: it exits within a few ms), one every 0.25 ms.
  nap(10);
  let soon = false;
  for (;;) {
    const st = procStat(pid);
    if (!st || st.ppid !== parent) return undefined;
    if (st.state === 'Z') return st.exitCode & 0x7f ? 128 + (st.exitCode & 0x7f) : st.exitCode >> 8;
    if (performance.now() > deadline) return 'timeout';
    if (callerGone()) return 'abandoned';
    if (onEach()) soon = true;
    nap(soon ? 0.25 : 1);
  }
}

/**
 * Clears away a restore that is not finished or not taken: runc (`runcPid`, when it may still be
 * at work), CRIU and every task CRIU made are stopped and killed; what they left mounted (the
 * rootfs runc binds for CRIU, CRIU's cgroup yard) is unmounted; then discardAttempt (runc's
 * delete, which kills tasks a finished restore left stopped, and prebake's state); last runc's
 * dir for the id, which a runc killed before it wrote its state leaves and its delete does not
 * know. (Unmounted before runc's delete: on the state of a restore killed midway, the delete took
 * the container's rootfs mount with it, and the cold create found no python3.) A runc killed
 * while it wrote `pidFile` leaves its temporary `.<name>` beside it, which runc creates
 * exclusively: the cold create's runc would fail on it ("file exists"), so it goes too.
 */
function clearAway(attempt: { id: string; stateDir: string; netnsPath?: string }, runcPid: number | undefined, call: RuntimeCall, cfg: RuntimeConfig, pidFile?: string): void {
  if (runcPid !== undefined) {
    killTree(runcPid);
    if (pidFile) rmSync(join(dirname(resolve(pidFile)), `.${basename(pidFile)}`), { force: true });
  }
  const runcDir = join(resolve(flagValue(call.global, 'root') ?? DEFAULT_RUNC_ROOT), attempt.id);
  unmountUnder(validId(attempt.id) ? [runcDir, attempt.stateDir] : [attempt.stateDir]);
  discardAttempt(attempt, call, cfg);
  if (validId(attempt.id)) rmSync(runcDir, { recursive: true, force: true });
}

/** Paths compare equal after normalising (the shell does not tidy "a/./b" or "a//b"). */
function sameArgv(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i] || (isAbsolute(x) && isAbsolute(b[i]!) && resolve(x) === resolve(b[i]!)));
}

/** Unmounts (lazily) every mount at or below the given directories, deepest first. */
function unmountUnder(given: readonly string[]): void {
  // mountinfo names mount points by their real path: docker's --root /var/run/docker/… is
  // /run/docker/… there when /var/run is a symlink to /run.
  const real = (d: string): string => {
    try {
      return realpathSync(d);
    } catch {
      return d === '/' ? d : join(real(dirname(d)), basename(d));
    }
  };
  const dirs = given.flatMap((d) => [...new Set([d, real(d)])]);
  let points: string[];
  try {
    points = mountInfo('self')
      .map((m) => m.mountPoint)
      .filter((m) => dirs.some((d) => m === d || m.startsWith(`${d}/`)));
  } catch {
    return;
  }
  for (const m of points.sort((a, b) => b.length - a.length)) spawnSync('umount', ['-l', m], { stdio: 'ignore' });
}

/**
 * Whether bin/prebake (`shell`) still runs this program: its parent, or its parent's parent (a
 * subshell of bin/prebake that waits for it).
 */
const runBy = (shell: number) => process.ppid === shell || parentOf(process.ppid) === shell;


/** A restore bin/prebake started before this program ran (see its early_restore). */
export interface EarlyRestore {
  /** The container's state dir, as the shell wrote it (with the argv it ran). */
  dir: string;
  /** runc's pid: a child of bin/prebake, as this program is. */
  runcPid?: number;
  /** bin/prebake's pid: this program's parent while the create's caller waits for it. */
  shellPid?: number;
  /**
   * Set when bin/prebake calls again after this program accepted the restore: runc's exit
   * status (0: runc restored it, but the shell could not resume it).
   */
  status?: number;
}

/** Where this program hands bin/prebake its verdict on an early restore. */
const VERDICT_FD = 9;
/** Stands for the restore's ms in the log line bin/prebake completes. */
const MS_PLACEHOLDER = 987654321;

/**
 * The verdict that accepts an early restore, written on VERDICT_FD once runc has restored and
 * the stopped tasks passed: what finishing the container takes, one line each (bin/prebake
 * `read`s them, nothing is evaluated): "accept", the restore signal (e.g. USR2, or empty), "1"
 * if the loopback must be brought up, the hostname to set in the restored UTS namespace (or
 * empty), where the log line goes (the --log file, or empty for stderr), and the log line split
 * where the restore's ms go (both empty if the log level leaves it out).
 */
function verdictFor(plan: RestorePlan, log: Logger): string {
  const { text, file } = captureLines(log, () => log.info({ id: plan.id, ms: MS_PLACEHOLDER }, `restored ${plan.id} from ${plan.source}`));
  const line = text.replace(/\n$/, '');
  const key = [`"ms":${MS_PLACEHOLDER}`, `ms="${MS_PLACEHOLDER}"`].find((k) => line.includes(k));
  const at = key && !line.includes('\n') ? line.indexOf(key) + key.indexOf(String(MS_PLACEHOLDER)) : -1;
  const [pre, post] = at < 0 ? ['', ''] : [line.slice(0, at), line.slice(at + String(MS_PLACEHOLDER).length)];
  const lines = ['accept', plan.restoreSignal?.replace(/^SIG/, '') ?? '', plan.netnsPath ? '' : '1', plan.hostname ?? '', file.includes('\n') ? '' : file, pre, post];
  return `${lines.join('\n')}\n`;
}

/**
 * The early restore bin/prebake started: runc restoring the checkpoint the shell found in the
 * verified store, CRIU leaving the restored tasks stopped. It goes on only if it is exactly the
 * restore `plan` asks for (same checkpoint, bundle, state and flags). Then this program waits for
 * runc: if it failed, the attempt is cleared away and the result says why; if it restored, the
 * stopped tasks are checked (verdictOn) and either handed to bin/prebake to resume ('accepted')
 * or killed. On bin/prebake's second call (the tasks could not be resumed) the attempt is
 * cleared away. Anything else is refused: runc, CRIU and the tasks (which never ran again) are
 * killed and cleared away, and the caller goes on without them (reason undefined).
 */
function settleEarly(early: EarlyRestore, plan: RestorePlan | null, call: RuntimeCall, createArgs: ParsedArgs | null, cfg: RuntimeConfig, netnsPath: string | undefined, log: Logger): 'accepted' | (Partial<Failure> & { abandoned?: true }) {
  const { dir } = early;
  // bin/prebake killed (by an engine giving up on the create): nobody waits for this create.
  const callerGone = () => early.shellPid !== undefined && !runBy(early.shellPid);
  let ok = false;
  if (plan && createArgs && resolve(plan.stateDir) === resolve(dir)) {
    try {
      const theirs = readFileSync(join(dir, 'argv'), 'utf8').split('\0').slice(0, -1);
      ok = sameArgv([cfg.runc, ...restoreArgs(plan, call, createArgs)], theirs);
    } catch {
      /* no argv recorded: refuse */
    }
  }
  if (early.status === undefined) {
    try {
      if (ok && plan && createArgs && early.runcPid !== undefined && early.shellPid !== undefined) {
        const pidFile = restorePidFile(plan, createArgs);
        // Made while runc works: at its exit, only written.
        const verdict = verdictFor(plan, log);
        // runc exits a few ms after it has written the restored init's pid (CRIU is done, the
        // tasks stopped): the tasks are checked meanwhile.
        let refused: Failure | null | undefined;
        const status = exitOf(early.runcPid, early.shellPid, cfg.restoreTimeoutMs, () => {
          if (callerGone() || refused !== undefined || !existsSync(pidFile)) return false;
          // The init CRIU restored is runc's child until runc exits (a pid file left from an
          // earlier container names some other process).
          const pid = restoredPid(pidFile);
          if (pid === undefined || parentOf(pid) !== early.runcPid) return false;
          refused = verdictOn(plan, pidFile);
          return true;
        });
        if (status === 'timeout') {
          clearAway(plan, early.runcPid, call, cfg, pidFile);
          return { reason: timedOut(cfg) };
        }
        if (status !== undefined && status !== 0) {
          const reason = failureReason(join(dir, 'runc-restore.log'), join(dir, 'criu', 'restore.log'));
          discardAttempt(plan, call, cfg);
          return { reason };
        }
        if (status === 0) {
          refused ??= verdictOn(plan, pidFile);
          if (refused !== null) {
            discardAttempt(plan, call, cfg);
            return refused;
          }
          if (!callerGone()) {
            writeSync(VERDICT_FD, verdict);
            return 'accepted';
          }
        }
      }
    } catch {
      /* not handed over: refused below */
    } finally {
      // Nothing this program starts may hold the shell's pipe open.
      try {
        closeSync(VERDICT_FD);
      } catch {
        /* not open */
      }
    }
  } else if (ok && plan) {
    discardAttempt(plan, call, cfg);
    return { reason: 'the restored process could not be resumed' };
  }
  // Refused. runc still at work (still bin/prebake's child) is stopped and killed with CRIU and
  // every task CRIU made; a restore runc finished is a container whose tasks are still stopped,
  // which runc's delete kills.
  const atWork = early.runcPid !== undefined && isEarlyRunc(early.runcPid, early, dir) ? early.runcPid : undefined;
  clearAway({ id: createArgs?.rest[0] ?? '', stateDir: dir, ...(netnsPath ? { netnsPath } : {}) }, atWork, call, cfg, createArgs ? flagValue(createArgs, 'pid-file') : undefined);
  return callerGone() ? { abandoned: true } : {};
}

/**
 * Whether `pid` is still the runc of this early restore: bin/prebake's child (a pid is reused
 * only once bin/prebake has reaped it), or, bin/prebake gone, the runc whose CRIU work dir is in
 * `dir`.
 */
function isEarlyRunc(pid: number, early: EarlyRestore, dir: string): boolean {
  if (early.shellPid !== undefined && parentOf(pid) === early.shellPid) return true;
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes(join(dir, 'criu'));
  } catch {
    return false;
  }
}

/** The ordinary `runc create`, with the caller's argv and its extra descriptors. */
function coldCreate(argv: readonly string[], createArgs: ParsedArgs | null, cfg: RuntimeConfig): number {
  const preserve = Number(createArgs ? (flagValue(createArgs, 'preserve-fds') ?? 0) : 0) || 0;
  const listen = Number(process.env.LISTEN_FDS ?? 0) || 0;
  const extra = Array.from({ length: Math.max(preserve, listen) }, (_, i) => i + 3);
  return statusOf(spawnSync(cfg.runc, argv, { stdio: ['inherit', 'inherit', 'inherit', ...extra] }));
}

/**
 * `create`: a restore if the bundle's checkpoint passes the checks, else the cold `runc create`.
 * `early` is a restore bin/prebake already started for this create (see settleEarly); without
 * it this program runs the restore itself.
 */
export function restoreOrCreate(argv: readonly string[], call: RuntimeCall, cfg: RuntimeConfig, log: Logger, early?: EarlyRestore, caller?: number): number {
  let createArgs: ParsedArgs | null = null;
  let plan: RestorePlan | null = null;
  let netnsPath: string | undefined;
  // A cold start before the plan: an early restore is refused (and cleaned away) first.
  const cold = () => {
    const settled = early ? settleEarly(early, null, call, createArgs, cfg, netnsPath, log) : {};
    return settled !== 'accepted' && settled.abandoned ? abandon() : coldCreate(argv, createArgs, cfg);
  };
  const abandon = () => {
    log.warn({ id: createArgs?.rest[0] }, 'create abandoned: bin/prebake, which ran it, is gone; the restore it started was cleared away');
    return 1;
  };
  try {
    createArgs = parseFlags(CREATE_FLAGS, call.args, 'runc create');
    // A --log file that cannot be opened (no space left for it) fails runc's create: runc,
    // given the same flags, reports it in its own words, as it would without prebake.
    if (logFileError(log)) return cold();
    if (createArgs.rest.length !== 1) return cold(); // runc reports the usage error
    const bundle = resolve(flagValue(createArgs, 'bundle') ?? '.');
    let spec: Spec;
    try {
      spec = JSON.parse(readFileSync(join(bundle, 'config.json'), 'utf8')) as Spec;
    } catch {
      return cold(); // runc reports the unreadable bundle itself
    }
    netnsPath = spec.linux?.namespaces?.find((n) => n.type === 'network')?.path;
    captureSpec(spec, cfg, bundle);
    plan = planRestore(call, createArgs, cfg, spec, bundle, early !== undefined);
  } catch (e) {
    log.warn({ id: createArgs?.rest[0] }, `cold start: ${(e as Error).message}`);
  }
  if (cfg.trustAny && plan) log.warn({ id: plan.id }, `trustAnyCheckpoint is set in the runtime's config: checkpoints are restored whoever signed them (key ${plan.keyId === 'none' ? 'none' : shortId(plan.keyId)}); for development only`);
  const failed = (p: RestorePlan, f: Failure) =>
    log.warn(
      { id: p.id },
      f.excess ? `cold start: the container restored from ${p.source} holds more than its spec grants, killed before it ran again: ${f.reason}` : `cold start: restore of ${p.id} from ${p.imagePath} failed: ${f.reason}`,
    );
  if (early) {
    const settled = settleEarly(early, plan, call, createArgs, cfg, netnsPath, log);
    if (settled === 'accepted') return 0; // bin/prebake resumes it once this program is gone
    if (settled.abandoned) return abandon();
    if (settled.reason !== undefined) {
      failed(plan!, settled as Failure);
      plan = null;
    } else {
      log.debug({ id: createArgs?.rest[0] }, 'early restore refused before its tasks ran again; cleared away');
      if (plan) log.debug({ id: plan.id }, 'the early restore was not the planned one; restoring again');
    }
  }
  if (plan && createArgs) {
    const t0 = performance.now();
    const failure = restore(plan, call, createArgs, cfg, () => caller !== undefined && !runBy(caller));
    if (failure?.abandoned) return abandon();
    if (failure === null) {
      log.info({ id: plan.id, ms: Math.round(performance.now() - t0) }, `restored ${plan.id} from ${plan.source}`);
      return 0;
    }
    failed(plan, failure);
  }
  return coldCreate(argv, createArgs, cfg);
}
