// Runs a command whose stdout and stderr are an anonymous pipe. Node gives children socketpairs,
// which CRIU cannot dump when the other end is outside the container; a pipe it dumps and
// re-attaches. `sh` makes the pipe (to `cat`, whose output is ours) and reports the exit status.

import { spawn } from 'node:child_process';
import type { Readable } from 'node:stream';

export interface PipedCommand {
  /** The command's exit status (the pipe stays open while anything it started holds it). */
  exit: Promise<number>;
  /** Everything written to the pipe, by the command and by whatever inherited it. */
  output: Readable;
  /** Stops the reader side once the output is no longer wanted. */
  close(): void;
}

export function spawnPiped(cmd: string, args: readonly string[], env?: NodeJS.ProcessEnv): PipedCommand {
  const sh = spawn('sh', ['-c', '{ "$@" 3>&- 2>&1; echo $? >&3; } | cat', 'sh', cmd, ...args], {
    stdio: ['ignore', 'pipe', 'inherit', 'pipe'],
    env: env ?? process.env,
  });
  const exit = new Promise<number>((resolve, reject) => {
    let status = '';
    const fd3 = sh.stdio[3] as Readable;
    fd3.on('data', (d: Buffer) => {
      status += d.toString();
      if (status.includes('\n')) resolve(Number(status.trim()));
    });
    fd3.on('end', () => reject(new Error(`${cmd} did not report an exit status`)));
    sh.on('error', reject);
  });
  return {
    exit,
    output: sh.stdout!,
    close: () => {
      sh.stdout!.destroy();
      sh.kill();
    },
  };
}
