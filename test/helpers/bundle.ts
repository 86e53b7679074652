// The prebake runtime driven as an engine drives it, for the runtime tests: run() with output and
// exit status on one pipe, kill and delete, a container-to-be of the test's own (lab/bundle.ts's
// overlay bundle and runtime dirs), the function's processes in a namespace.

import type { ExecutionContext } from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { overlayBundle, PREBAKE, runtimeDirs, uniqueName } from '../../lab/bundle.ts';

export interface RunResult {
  code: number;
  /** What was written to the pipe until the command exited. */
  output: string;
  /** Everything written to the pipe so far, by the command and whatever inherited it. */
  outputNow(): string;
  /** Stops reading the pipe. */
  close(): void;
}

/** Ends the output of a command run(): the shell's line with its exit status. */
const EXIT_MARK = '\u001eprebake-test-exit ';

/**
 * Runs a command with stdout and stderr on one real pipe (as engines give the runtime) and
 * resolves when it exits, not when the pipe closes: a container keeps the pipe it inherited.
 */
export async function run(cmd: string, args: string[], env?: NodeJS.ProcessEnv): Promise<RunResult> {
  // The shell writes the exit status into the same pipe after the command's own output, so the
  // output is whole once the status line has come through, however late `cat` runs. A container
  // the command started may hold the pipe and write more; outputNow() has that too.
  const sh = spawn('sh', ['-c', `{ "$@" 2>&1; printf '\\n${EXIT_MARK}%s\\n' "$?"; } | cat`, 'sh', cmd, ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: env ?? process.env,
  });
  let text = '';
  const markAt = () => text.indexOf(`\n${EXIT_MARK}`);
  const code = await new Promise<number>((resolve, reject) => {
    sh.stdout.on('data', (d: Buffer) => {
      text += d.toString();
      const at = markAt();
      const m = at >= 0 ? new RegExp(`^\\n${EXIT_MARK}(\\d+)\\n`).exec(text.slice(at)) : null;
      if (m) resolve(Number(m[1]));
    });
    sh.stdout.on('error', () => {});
    sh.stdout.on('close', () => reject(new Error(`${cmd} did not report an exit status`)));
    sh.on('error', reject);
  });
  const without = () => text.replace(new RegExp(`\\n${EXIT_MARK}\\d+\\n`), '');
  return {
    code,
    output: without(),
    outputNow: without,
    close: () => {
      sh.stdout.destroy();
      sh.kill();
    },
  };
}

/**
 * What an engine does to end a container: kill -9, wait until runc says stopped, delete.
 * Returns delete's result; runc's and prebake's state dirs are the caller's to check.
 */
export async function killAndDelete(rt: { root: string }, id: string): Promise<RunResult> {
  await run(PREBAKE, ['--root', rt.root, 'kill', id, 'KILL']);
  for (let i = 0; i < 100 && JSON.parse((await run(PREBAKE, ['--root', rt.root, 'state', id])).output).status !== 'stopped'; i++)
    await new Promise((r) => setTimeout(r, 20));
  return run(PREBAKE, ['--root', rt.root, 'delete', id]);
}

/**
 * A container-to-be of the test's own: an overlay bundle of `layers`, runtime dirs and an id; the
 * container (deleted with --force, as engines do), the bundle and the dirs go when the test ends.
 */
export function testReplica(t: ExecutionContext, layers: string[], prefix: string, env?: NodeJS.ProcessEnv) {
  const b = overlayBundle(layers);
  const rt = runtimeDirs();
  const id = uniqueName(prefix);
  t.teardown(async () => {
    await run(PREBAKE, ['--root', rt.root, 'delete', '--force', id], env);
    b.cleanup();
    rt.cleanup();
  });
  return { b, rt, id };
}

/** Processes in the network namespace that run the function (/app/function.py). */
export function functionPids(netns: string): number[] {
  const pids = spawnSync('ip', ['netns', 'pids', netns], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean).map(Number);
  return pids.filter((p) => {
    try {
      return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes('/app/function.py');
    } catch {
      return false;
    }
  });
}

/** Live or unreaped lazy-pages daemons of CRIU's whose command line names `path` (their work dir is a container's state). */
export function lazyPagesDaemons(path: string): number[] {
  return readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .filter((p) => {
      try {
        const argv = readFileSync(`/proc/${p}/cmdline`, 'utf8');
        return argv.split('\0').includes('lazy-pages') && argv.includes(path);
      } catch {
        return false;
      }
    })
    .map(Number);
}
