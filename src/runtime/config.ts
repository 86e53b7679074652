// Where the runtime finds runc and keeps its own per-container state. The runc binary comes
// from PREBAKE_RUNC, else the "runc" key of /etc/prebake/config.json (PREBAKE_CONFIG), else PATH.

import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

export const DEFAULT_RUNC_ROOT = '/run/runc';

export interface RuntimeConfig {
  runc: string;
  /** Base of prebake's state; a container's state is <stateBase><runc root>/<id>. */
  stateBase: string;
}

export function loadRuntimeConfig(env: NodeJS.ProcessEnv = process.env): RuntimeConfig {
  let runc = env.PREBAKE_RUNC;
  if (!runc) {
    try {
      const conf = JSON.parse(readFileSync(env.PREBAKE_CONFIG ?? '/etc/prebake/config.json', 'utf8')) as { runc?: unknown };
      if (typeof conf.runc === 'string' && conf.runc) runc = conf.runc;
    } catch {
      /* no config file: defaults */
    }
  }
  return { runc: runc || 'runc', stateBase: env.PREBAKE_STATE_DIR ?? '/run/prebake' };
}

/** prebake's state directory for one container, mirroring runc's --root under stateBase. */
export function containerStateDir(cfg: RuntimeConfig, runcRoot: string | undefined, id: string): string {
  return join(cfg.stateBase, resolve(runcRoot ?? DEFAULT_RUNC_ROOT), id);
}
