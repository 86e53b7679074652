// Baking a sample function (lab/functions.ts) with prebake-build: ready when GET / answers,
// checkpointed after warm-up requests of the function's own work (one, or the recipe's warmups),
// for a target engine.

import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Target } from '../../src/bake/target.ts';
import { FUNCTION_PORT, FUNCTIONS, type FunctionName, type FunctionRecipe, functionImage } from '../functions.ts';
import { packageRoot } from '../../src/lib/paths.ts';

const run = promisify(execFile);

/** prebake-build's readiness and warm-up options for a function; a warm-up body is written into `scratch`. */
function functionBakeArgs(name: FunctionName, scratch: string): string[] {
  const r: FunctionRecipe = FUNCTIONS[name];
  const args = ['--ready', `http:${FUNCTION_PORT}/`, '--warmup', String(r.warmups ?? 1), '--warmup-request', `${r.warmup.method} ${r.warmup.path}`];
  if (r.warmup.body) {
    writeFileSync(join(scratch, `${name}.body`), r.warmup.body);
    args.push('--warmup-body', join(scratch, `${name}.body`));
  }
  return args;
}

interface BakeOptions {
  target: Target;
  /** prebake-build's DEST: oci:DIR:TAG, docker-daemon:NAME:TAG, containerd:NAME:TAG, containers-storage:NAME:TAG. */
  dest: string;
  /** The environment prebake-build runs with (DOCKER_HOST, CONTAINERD_ADDRESS, CONTAINERS_CONF, …). */
  env?: NodeJS.ProcessEnv;
}

/** Builds the function's image (cached) and bakes it into `dest`. */
export async function bakeFunction(name: FunctionName, o: BakeOptions): Promise<void> {
  const image = await functionImage(name);
  const scratch = mkdtempSync(join(tmpdir(), 'prebake-bake-'));
  try {
    const args = ['--quiet', '--target', o.target, ...functionBakeArgs(name, scratch), `oci:${image}:latest`, o.dest];
    await run(join(packageRoot(), 'bin/prebake-build'), args, { env: o.env ?? process.env, maxBuffer: 64 << 20 });
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new Error(`baking ${name} for ${o.target}: ${(err.stderr || err.message).trim()}`, { cause: e });
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}
