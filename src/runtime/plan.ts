// Whether and how a create can be a restore: the checkpoint the spec names, authenticated,
// checked against the spec and the host and imported into the verified store (checkpoint/), and
// what the restored tasks may hold. Throws with the reason when the create must start cold.

import { existsSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { basename, join, resolve } from 'node:path';
import type { Spec } from '../../oci/runtime-spec.ts';
import { checkpointRequest, resolveInRootfs, rootfsOf } from '../checkpoint/locate.ts';
import { CHECKPOINT_DIR } from '../checkpoint/manifest.ts';
import { criuAnnotations } from '../checkpoint/security.ts';
import { shortId } from '../checkpoint/trust.ts';
import { chooseCheckpoint } from '../checkpoint/verify.ts';
import { CREATE_FLAGS, RESTORE_SIGNAL_ANNOTATION, RESTORE_SIGNAL_ENV, STATE_FILES } from '../contract.ts';
import { hostFacts } from '../lib/host.ts';
import { type ParsedArgs, type RuntimeCall, flagValue } from './argv.ts';
import { DEFAULT_RUNC_ROOT, type RuntimeConfig, containerStateDir, validId } from './config.ts';
import { type Expectations, expectationsOf } from './inspect.ts';

export interface RestorePlan {
  id: string;
  /** The key that signed the checkpoint ("none" under trustAnyCheckpoint). */
  keyId: string;
  /** What the spec grants the restored tasks (worked out before they exist). */
  expect: Expectations;
  /** CRIU's image directory: the verified store's copy. */
  imagePath: string;
  stateDir: string;
  /** Where runc writes the restored init's pid: create's --pid-file, else one in the state. */
  pidFile: string;
  /** Which checkpoint, for the log: its path in the image, how it was named, its key. */
  source: string;
  /** The network namespace the container joins by path, if any. */
  netnsPath?: string;
  /** Sent to the restored process so it can renew what must differ per replica (seeds, ids). */
  restoreSignal?: NodeJS.Signals;
  /** The spec's hostname, set in the restored UTS namespace (CRIU restores the baked one). */
  hostname?: string;
  /**
   * Why the memory must not be restored lazily under this spec, if it must not: with the OOM
   * killer kept from the container, a page the lazy-pages daemon cannot charge to its memory
   * cgroup ends the daemon, and the pages still to come read as zeros.
   */
  noLazy?: string;
}

/** The signal named by the annotation or env (e.g. SIGUSR2 or USR2); an unknown name is an error. */
export function restoreSignalOf(spec: Spec): NodeJS.Signals | undefined {
  const prefix = `${RESTORE_SIGNAL_ENV}=`;
  const raw = spec.annotations?.[RESTORE_SIGNAL_ANNOTATION] ?? spec.process?.env?.findLast((e) => e.startsWith(prefix))?.slice(prefix.length);
  if (!raw) return undefined;
  const name = (raw.startsWith('SIG') ? raw : `SIG${raw}`).toUpperCase();
  if (!(name in osConstants.signals) || name === 'SIGKILL' || name === 'SIGSTOP') throw new Error(`restore signal ${JSON.stringify(raw)} is not a signal a process can handle`);
  return name as NodeJS.Signals;
}

/**
 * The restore this create can be, or null if its spec names no checkpoint. `early`: runc is
 * restoring already (it made the container's dir in runc's root, which otherwise means the id is
 * in use).
 */
export function planRestore(call: RuntimeCall, createArgs: ParsedArgs, cfg: RuntimeConfig, spec: Spec, bundle: string, early: boolean): RestorePlan | null {
  const req = checkpointRequest(spec);
  if (req.kind === 'none') return null;
  if (req.kind === 'off') throw new Error(`checkpoint turned off by ${req.source}`);
  // runc create fails on an id in use, and a restore attempt must not touch that container.
  const id = createArgs.rest[0]!;
  if (!early && validId(id) && existsSync(join(resolve(flagValue(call.global, 'root') ?? DEFAULT_RUNC_ROOT), id))) throw new Error(`a container ${id} exists already`);
  for (const f of CREATE_FLAGS) {
    const v = flagValue(createArgs, f.name);
    if (f.onRestore === 'refuse' && v !== undefined && v !== '0' && v !== '') throw new Error(`create --${f.name} ${v} cannot be honoured by a restore`);
  }
  if (!validId(id)) throw new Error(`container id ${JSON.stringify(id)} is not one runc accepts`);
  // A restored container's masked directories are binds of one host tmpfs shared by every
  // restored container (HOST_MOUNTS): with CAP_SYS_ADMIN of the host's user namespace it could
  // remount that superblock read-write and write where every other one reads.
  const caps = spec.process?.capabilities;
  const userns = spec.linux?.namespaces?.some((n) => n.type === 'user');
  if (!userns && Object.values(caps ?? {}).some((set) => (set as string[] | undefined)?.includes('CAP_SYS_ADMIN')))
    throw new Error('the spec grants CAP_SYS_ADMIN, with which the container could remount the host tmpfs every restored container\'s masked directories are bound from');
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
  const stateDir = containerStateDir(cfg, flagValue(call.global, 'root'), id);
  const noLazy = spec.linux?.resources?.memory?.disableOOMKiller ? 'the spec disables the OOM killer' : spec.process?.oomScoreAdj === -1000 ? 'the spec sets oom_score_adj -1000' : undefined;
  return {
    ...(noLazy ? { noLazy } : {}),
    ...(hostname ? { hostname } : {}),
    ...(netnsPath ? { netnsPath } : {}),
    ...(restoreSignal ? { restoreSignal } : {}),
    id,
    keyId: chosen.keyId,
    // The masks and read-only paths the checkpoint was baked with stay after a restore.
    expect: expectationsOf(spec, bundle, { masked: chosen.manifest.spec.security.maskedPaths, readonly: chosen.manifest.spec.security.readonlyPaths }),
    imagePath: join(chosen.entry, CHECKPOINT_DIR),
    stateDir,
    pidFile: resolve(flagValue(createArgs, 'pid-file') || join(stateDir, STATE_FILES.pid)),
    // Which of several named checkpoints was chosen, if there are several.
    source: `${req.path}${chosen.dir === root ? '' : `/${basename(chosen.dir)}`} (${req.source}; key ${chosen.keyId === 'none' ? 'none' : shortId(chosen.keyId)})`,
  };
}
