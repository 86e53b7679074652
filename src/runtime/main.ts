// The Node side of the `prebake` runtime: bin/prebake hands it `create` of a bundle that names a
// checkpoint (answered with a verdict on stdout), `--version` and `doctor`; anything else reaching
// it is passed to runc unchanged.

import { spawnSync } from 'node:child_process';
import { readSync, writeSync } from 'node:fs';
import { EARLY_ENV } from '../contract.ts';
import { nap } from '../lib/proc.ts';
import { parseRuntimeCall, flagIsSet, flagValue } from './argv.ts';
import { loadRuntimeConfig } from './config.ts';
import { answerCreate, napPause } from './create.ts';
import { resident } from './resident.ts';

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

/** A line from the shell on stdin (to its newline or its end), up to 256 bytes. */
function readStdin(): string {
  const buf = Buffer.alloc(256);
  let n = 0;
  for (;;) {
    let got: number;
    try {
      got = readSync(0, buf, n, buf.length - n, null);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EAGAIN') {
        nap(1);
        continue;
      }
      return '';
    }
    if (got === 0 || buf.subarray(n, (n += got)).includes(10) || n === buf.length) return buf.toString('utf8', 0, n);
  }
}

export async function main(argv: readonly string[]): Promise<number> {
  // (Not a runc command: bin/prebake-create.sh starts the resident program so, detached.)
  if (argv[0] === '--prebake-resident') return resident(argv[1], argv[2]);
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
      // Set by bin/prebake-create.sh (src/contract.ts, EARLY_ENV), which reads the verdict on stdout.
      const env = { ...process.env };
      for (const k of Object.values(EARLY_ENV)) delete process.env[k];
      await answerCreate(call, cfg, env, { write: (text) => writeSync(1, text), readLine: () => Promise.resolve(readStdin()), waits: { pause: napPause } });
      return 0;
    }
    case 'doctor': {
      const { doctor } = await import('./doctor.ts');
      return doctor(cfg, call.args, flagValue(call.global, 'criu') ?? 'criu');
    }
    default:
      return passThrough(cfg.runc, argv);
  }
}
