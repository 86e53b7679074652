// A console-socket receiver (lab/console.py) that holds a container's pty master and
// relays what the container writes to its terminal.

import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { REPO } from './bundle.ts';

interface ConsoleReceiver {
  socket: string;
  output(): string;
  /** Resolves once the output matches. */
  waitFor(re: RegExp, timeoutMs?: number): Promise<void>;
  close(): void;
}

export async function startConsole(socket: string): Promise<ConsoleReceiver> {
  const child = spawn('python3', [join(REPO, 'lab/console.py'), socket], { stdio: ['ignore', 'pipe', 'inherit'] });
  let text = '';
  const listeners: (() => void)[] = [];
  child.stdout!.on('data', (d: Buffer) => {
    text += d.toString();
    for (const l of listeners) l();
  });
  const waitFor = (re: RegExp, timeoutMs = 10000) =>
    new Promise<void>((resolve, reject) => {
      const check = () => re.test(text) && resolve();
      listeners.push(check);
      check();
      setTimeout(() => reject(new Error(`console output never matched ${re}: ${JSON.stringify(text)}`)), timeoutMs).unref();
    });
  await waitFor(/^ready$/m);
  return { socket, output: () => text, waitFor, close: () => child.kill() };
}
