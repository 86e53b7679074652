// Where the runtime finds runc, keeps its own per-container state and its verified checkpoints,
// and which checkpoints it trusts. From /etc/prebake/config.json (PREBAKE_CONFIG names another):
// "runc" (else PREBAKE_RUNC, else PATH), "store", "trust" (a directory of public keys),
// "restoreTimeout" (seconds, default 60) and "trustAnyCheckpoint" (development only). PREBAKE_STATE_DIR and PREBAKE_STORE_DIR move the
// state and the store. ("resident": false, which turns the resident verdict program off, is
// bin/prebake-create.sh's to read.)

import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { DEFAULT_STORE } from '../checkpoint/store.ts';
import { DEFAULT_TRUST_DIR } from '../checkpoint/trust.ts';

export const DEFAULT_RUNC_ROOT = '/run/runc';
export const DEFAULT_CONFIG = '/etc/prebake/config.json';

export interface RuntimeConfig {
  runc: string;
  /** Base of prebake's state; a container's state is <stateBase><runc root>/<id>. */
  stateBase: string;
  /** The verified store (checkpoint/store.ts). */
  store: string;
  /** The trust store: a directory of ed25519 public keys (*.pub). */
  trustDir: string;
  /** Restore unsigned and untrusted checkpoints too (development only; warned on every create). */
  trustAny: boolean;
  /** How long runc restore may take before it is stopped and the container starts cold. */
  restoreTimeoutMs: number;
}

export function loadRuntimeConfig(env: NodeJS.ProcessEnv = process.env): RuntimeConfig {
  let conf: { runc?: unknown; store?: unknown; trust?: unknown; trustAnyCheckpoint?: unknown; restoreTimeout?: unknown } = {};
  try {
    conf = JSON.parse(readFileSync(env.PREBAKE_CONFIG ?? DEFAULT_CONFIG, 'utf8')) as typeof conf;
  } catch {
    /* no config file: defaults */
  }
  const str = (v: unknown) => (typeof v === 'string' && v ? v : undefined);
  return {
    runc: env.PREBAKE_RUNC || str(conf.runc) || 'runc',
    // (Absolute: the resident program settles a restore after it has left the create's directory.)
    stateBase: resolve(env.PREBAKE_STATE_DIR || '/run/prebake'),
    store: resolve(env.PREBAKE_STORE_DIR || str(conf.store) || DEFAULT_STORE),
    trustDir: resolve(str(conf.trust) ?? DEFAULT_TRUST_DIR),
    trustAny: conf.trustAnyCheckpoint === true,
    restoreTimeoutMs: (typeof conf.restoreTimeout === 'number' && conf.restoreTimeout > 0 ? conf.restoreTimeout : 60) * 1000,
  };
}

/** prebake's state directory for one container, mirroring runc's --root under stateBase. */
export function containerStateDir(cfg: Pick<RuntimeConfig, 'stateBase'>, runcRoot: string | undefined, id: string): string {
  return join(cfg.stateBase, resolve(runcRoot ?? DEFAULT_RUNC_ROOT), id);
}

/** runc's rule for container ids (libcontainer's idRegex), checked before any path is built. */
export const validId = (id: string) => /^[\w+\-.]+$/.test(id) && id !== '.' && id !== '..';
