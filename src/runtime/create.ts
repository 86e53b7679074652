// `create`: restore the container from the checkpoint its image carries, or fall back to the
// ordinary `runc create` with the original arguments. A bad checkpoint costs time, never the start.

import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { constants } from 'node:os';
import { basename, join, resolve } from 'node:path';
import type { Spec } from '../../oci/runtime-spec.ts';
import { CHECKPOINT_DIR } from '../checkpoint/manifest.ts';
import { checkpointRequest, resolveInRootfs, rootfsOf } from '../checkpoint/locate.ts';
import { chooseCheckpoint } from '../checkpoint/verify.ts';
import { hostFacts } from '../lib/host.ts';
import { CREATE_FLAGS, type ParsedArgs, type RuntimeCall, flagIsSet, flagValue, parseFlags } from './argv.ts';
import { type RuntimeConfig, containerStateDir } from './config.ts';
import { type Logger, logFileError } from './log.ts';

export const RESTORED_MARKER = 'restored';

/** Exit status of a finished child, the way a shell reports it. */
function statusOf(r: ReturnType<typeof spawnSync>): number {
  if (r.error) throw r.error;
  if (r.signal) return 128 + (constants.signals[r.signal] ?? 0);
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
  imagePath: string;
  stateDir: string;
  source: string;
  /** The network namespace the container joins by path, if any. */
  netnsPath?: string;
  /** Sent to the restored process so it can renew what must differ per replica (seeds, ids). */
  restoreSignal?: NodeJS.Signals;
}

export const RESTORE_SIGNAL_ANNOTATION = 'io.prebake.restore-signal';
export const RESTORE_SIGNAL_ENV = 'PREBAKE_RESTORE_SIGNAL';

/** The signal named by the annotation or env (e.g. SIGUSR2 or USR2); an unknown name is an error. */
export function restoreSignalOf(spec: Spec): NodeJS.Signals | undefined {
  const prefix = `${RESTORE_SIGNAL_ENV}=`;
  const raw = spec.annotations?.[RESTORE_SIGNAL_ANNOTATION] ?? spec.process?.env?.findLast((e) => e.startsWith(prefix))?.slice(prefix.length);
  if (!raw) return undefined;
  const name = (raw.startsWith('SIG') ? raw : `SIG${raw}`).toUpperCase();
  if (!(name in constants.signals) || name === 'SIGKILL' || name === 'SIGSTOP') throw new Error(`restore signal ${JSON.stringify(raw)} is not a signal a process can handle`);
  return name as NodeJS.Signals;
}

/** Works out whether and how this create can be a restore; throws with the reason if not. */
function planRestore(call: RuntimeCall, createArgs: ParsedArgs, cfg: RuntimeConfig, spec: Spec, bundle: string): RestorePlan | null {
  const req = checkpointRequest(spec);
  if (req.kind === 'none') return null;
  if (req.kind === 'off') throw new Error(`checkpoint turned off by ${req.source}`);
  for (const f of CREATE_FLAGS) {
    const v = flagValue(createArgs, f.name);
    if (f.onRestore === 'refuse' && v !== undefined && v !== '0' && v !== '')
      throw new Error(`create --${f.name} ${v} cannot be honoured by a restore`);
  }
  const id = createArgs.rest[0]!;
  const root = resolveInRootfs(rootfsOf(spec, bundle), req.path);
  const facts = hostFacts(flagValue(call.global, 'criu') ?? 'criu', cfg.stateBase);
  const chosen = chooseCheckpoint(root, spec, facts, cfg.stateBase);
  const netnsPath = spec.linux?.namespaces?.find((n) => n.type === 'network')?.path;
  const restoreSignal = restoreSignalOf(spec);
  return {
    ...(netnsPath ? { netnsPath } : {}),
    ...(restoreSignal ? { restoreSignal } : {}),
    id,
    bundle,
    imagePath: join(chosen.dir, CHECKPOINT_DIR),
    stateDir: containerStateDir(cfg, flagValue(call.global, 'root'), id),
    // Which of several named checkpoints was chosen, if there are several.
    source: `${req.path}${chosen.dir === root ? '' : `/${basename(chosen.dir)}`} (${req.source})`,
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

export const CAPTURE_ENV = 'PREBAKE_CAPTURE_SPEC';

/**
 * prebake-build learns the exact spec an engine generates (mounts, capabilities, seccomp profile)
 * by running a probe container whose env holds PREBAKE_CAPTURE_SPEC=<token>: the spec is copied
 * to <state>/captures/<token>.json. The token names the file and nothing else.
 */
function captureSpec(spec: Spec, cfg: RuntimeConfig, bundle: string): void {
  const prefix = `${CAPTURE_ENV}=`;
  const token = spec.process?.env?.find((e) => e.startsWith(prefix))?.slice(prefix.length);
  if (!token || !/^[A-Za-z0-9_-]{1,64}$/.test(token)) return;
  mkdirSync(join(cfg.stateBase, 'captures'), { recursive: true, mode: 0o700 });
  // CRIU checks the mode of the root directory too, which the engine sets on its rootfs mount.
  let rootfsMode: number | undefined;
  try {
    rootfsMode = statSync(rootfsOf(spec, bundle)).mode & 0o7777;
  } catch {
    /* no rootfs to look at */
  }
  // Whole or not at all: a full disk must not leave prebake-build a truncated spec to read.
  const file = join(cfg.stateBase, 'captures', `${token}.json`);
  try {
    writeFileSync(`${file}.${process.pid}`, JSON.stringify({ ...spec, ...(rootfsMode !== undefined ? { 'io.prebake.rootfsMode': rootfsMode } : {}) }));
    renameSync(`${file}.${process.pid}`, file);
  } catch (e) {
    rmSync(`${file}.${process.pid}`, { force: true });
    throw e;
  }
}

/** The restored init's pid, from the pid file create was given, else from runc state. */
function restoredPid(call: RuntimeCall, plan: RestorePlan, pidFile: string | undefined, cfg: RuntimeConfig): string | undefined {
  let pid: string | undefined;
  try {
    pid = pidFile ? readFileSync(pidFile, 'utf8').trim() : undefined;
  } catch {
    /* fall back to runc state */
  }
  if (!pid) {
    const st = spawnSync(cfg.runc, [...globalsWithoutLog(call.global), 'state', plan.id], { encoding: 'utf8' });
    pid = String((JSON.parse(st.stdout || '{}') as { pid?: number }).pid ?? '');
  }
  return /^\d+$/.test(pid) ? pid : undefined;
}

/** Removes what a restore attempt left: runc's container (if any), CRIU's network lock, prebake's state. */
function discardAttempt(plan: RestorePlan, call: RuntimeCall, cfg: RuntimeConfig): void {
  spawnSync(cfg.runc, [...globalsWithoutLog(call.global), 'delete', '--force', plan.id], { stdio: 'ignore' });
  if (plan.netnsPath) unlockNetwork(plan.netnsPath);
  // The marker first: a cold container must not find one, or its start would be skipped.
  rmSync(join(plan.stateDir, RESTORED_MARKER), { force: true });
  rmSync(plan.stateDir, { recursive: true, force: true });
}

/**
 * Makes the container's state dir with every file the attempt writes there: CRIU's work dir and
 * log, runc's log and the `restored` marker. All of it exists before runc starts, so a state dir
 * that has no room left (no inode for another file) is a cold start with that reason, and once
 * runc has restored the container nothing is left to write for the engine's `start` to be right.
 * CRIU and runc write into the logs they find; a log that cannot take its lines costs the lines.
 */
function prepareState(plan: RestorePlan): { work: string; runcLog: string } {
  const work = join(plan.stateDir, 'criu');
  const runcLog = join(plan.stateDir, 'runc-restore.log');
  rmSync(plan.stateDir, { recursive: true, force: true });
  try {
    mkdirSync(work, { recursive: true });
    writeFileSync(join(work, 'restore.log'), '', { mode: 0o600 }); // the mode CRIU gives its log
    writeFileSync(runcLog, '', { mode: 0o644 }); // and runc its own
    writeFileSync(join(plan.stateDir, RESTORED_MARKER), '');
  } catch (e) {
    rmSync(plan.stateDir, { recursive: true, force: true });
    throw new Error(`cannot write prebake's state in ${plan.stateDir}: ${(e as Error).message}`);
  }
  return { work, runcLog };
}

/** Runs `runc restore --detach` for the plan; returns null on success, the reason otherwise. */
function restore(plan: RestorePlan, call: RuntimeCall, createArgs: ParsedArgs, cfg: RuntimeConfig): string | null {
  let state: { work: string; runcLog: string };
  try {
    state = prepareState(plan);
  } catch (e) {
    return (e as Error).message;
  }
  const { work, runcLog } = state;
  const args = [...globalsWithoutLog(call.global), '--log', runcLog, '--log-format', 'json', 'restore', '--detach'];
  args.push('--image-path', plan.imagePath, '--work-path', work, '--bundle', plan.bundle);
  const pidFile = flagValue(createArgs, 'pid-file');
  if (pidFile !== undefined) args.push('--pid-file', pidFile);
  const console = flagValue(createArgs, 'console-socket');
  if (console !== undefined) args.push('--console-socket', console);
  if (flagIsSet(createArgs, 'no-pivot')) args.push('--no-pivot');
  args.push(plan.id);
  let reason: string;
  try {
    // The restored process takes runc's stdio in place of the pipes it had at bake time.
    const status = statusOf(spawnSync(cfg.runc, args, { stdio: 'inherit' }));
    if (status === 0) {
      const pid = restoredPid(call, plan, pidFile, cfg);
      if (!plan.netnsPath && pid) spawnSync('nsenter', [`--net=/proc/${pid}/ns/net`, 'ip', 'link', 'set', 'lo', 'up'], { stdio: 'ignore' });
      if (plan.restoreSignal && pid) process.kill(Number(pid), plan.restoreSignal);
      return null;
    }
    reason = failureReason(runcLog, join(work, 'restore.log'));
  } catch (e) {
    // A restored container prebake cannot finish (its process gone before the restore signal)
    // is torn down like a failed restore: the cold start below replaces it.
    reason = (e as Error).message;
  }
  discardAttempt(plan, call, cfg);
  return reason;
}

/** The ordinary `runc create`, with the caller's argv and its extra descriptors. */
function coldCreate(argv: readonly string[], createArgs: ParsedArgs | null, cfg: RuntimeConfig): number {
  const preserve = Number(createArgs ? (flagValue(createArgs, 'preserve-fds') ?? 0) : 0) || 0;
  const listen = Number(process.env.LISTEN_FDS ?? 0) || 0;
  const extra = Array.from({ length: Math.max(preserve, listen) }, (_, i) => i + 3);
  return statusOf(spawnSync(cfg.runc, argv, { stdio: ['inherit', 'inherit', 'inherit', ...extra] }));
}

export function restoreOrCreate(argv: readonly string[], call: RuntimeCall, cfg: RuntimeConfig, log: Logger): number {
  let createArgs: ParsedArgs | null = null;
  let plan: RestorePlan | null = null;
  try {
    createArgs = parseFlags(CREATE_FLAGS, call.args, 'runc create');
    // A --log file that cannot be opened (no space left for it) fails runc's create: runc,
    // given the same flags, reports it in its own words, as it would without prebake.
    if (logFileError(log)) return coldCreate(argv, createArgs, cfg);
    if (createArgs.rest.length !== 1) return coldCreate(argv, createArgs, cfg); // runc reports the usage error
    const bundle = resolve(flagValue(createArgs, 'bundle') ?? '.');
    let spec: Spec;
    try {
      spec = JSON.parse(readFileSync(join(bundle, 'config.json'), 'utf8')) as Spec;
    } catch {
      return coldCreate(argv, createArgs, cfg); // runc reports the unreadable bundle itself
    }
    captureSpec(spec, cfg, bundle);
    plan = planRestore(call, createArgs, cfg, spec, bundle);
  } catch (e) {
    log.warn({ id: createArgs?.rest[0] }, `cold start: ${(e as Error).message}`);
  }
  if (plan && createArgs) {
    const t0 = performance.now();
    const why = restore(plan, call, createArgs, cfg);
    if (why === null) {
      log.info({ id: plan.id, ms: Math.round(performance.now() - t0) }, `restored ${plan.id} from ${plan.source}`);
      return 0;
    }
    log.warn({ id: plan.id }, `cold start: restore of ${plan.id} from ${plan.imagePath} failed: ${why}`);
  }
  return coldCreate(argv, createArgs, cfg);
}

