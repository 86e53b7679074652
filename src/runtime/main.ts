// The Node side of the `prebake` runtime: bin/prebake hands it `create`, `--version` and
// prebake's own commands; anything else reaching it is passed to runc unchanged.

import { spawnSync } from 'node:child_process';
import { parseRuntimeCall, flagIsSet, flagValue } from './argv.ts';
import { loadRuntimeConfig } from './config.ts';
import { restoreOrCreate } from './create.ts';
import { createLogger } from './log.ts';

declare const PREBAKE_VERSION: string | undefined;
export const VERSION = typeof PREBAKE_VERSION === 'string' ? PREBAKE_VERSION : 'dev';

function passThrough(runc: string, argv: readonly string[]): number {
  const r = spawnSync(runc, argv, { stdio: 'inherit' });
  if (r.error) {
    process.stderr.write(`prebake: cannot run ${runc}: ${r.error.message}\n`);
    return 127;
  }
  return r.status ?? 1;
}

export async function main(argv: readonly string[]): Promise<number> {
  const cfg = loadRuntimeConfig();
  let call;
  try {
    call = parseRuntimeCall(argv);
  } catch {
    return passThrough(cfg.runc, argv); // runc prints its own usage error
  }
  if (flagIsSet(call.global, 'version')) {
    // runc's lines first and unchanged (engines and runc's own tests parse them), then prebake's.
    const status = passThrough(cfg.runc, ['--version']);
    process.stdout.write(`prebake version ${VERSION}\n`);
    return status;
  }
  switch (call.command) {
    case 'create': {
      const log = createLogger({
        file: flagValue(call.global, 'log'),
        format: flagValue(call.global, 'log-format'),
        debug: flagIsSet(call.global, 'debug'),
      });
      // Set by bin/prebake when it started the restore itself (see its early_restore).
      const env = process.env;
      const num = (v: string | undefined) => (v && /^\d+$/.test(v) ? Number(v) : undefined);
      const runcPid = num(env.PREBAKE_EARLY_RUNC);
      const shellPid = num(env.PREBAKE_EARLY_SHELL);
      const status = num(env.PREBAKE_EARLY_STATUS);
      const caller = num(env.PREBAKE_SHELL);
      const early = env.PREBAKE_EARLY
        ? { dir: env.PREBAKE_EARLY, ...(runcPid ? { runcPid } : {}), ...(shellPid ? { shellPid } : {}), ...(status !== undefined ? { status } : {}) }
        : undefined;
      for (const k of ['PREBAKE_EARLY', 'PREBAKE_EARLY_RUNC', 'PREBAKE_EARLY_SHELL', 'PREBAKE_EARLY_STATUS', 'PREBAKE_SHELL']) delete env[k];
      return restoreOrCreate(argv, call, cfg, log, early, caller);
    }
    case 'doctor': {
      const { doctor } = await import('./doctor.ts');
      return doctor(cfg, call.args, flagValue(call.global, 'criu') ?? 'criu');
    }
    default:
      return passThrough(cfg.runc, argv);
  }
}
