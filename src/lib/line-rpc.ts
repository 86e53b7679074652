// A helper process driven over its stdin and stdout, one JSON command per line each way: the
// command carries an id, the answer {id, ok, result | error}. The network clients (NetnsClient,
// EngineClient) are such processes.

import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';

export class LineRpc {
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private nextId = 1;

  /** `what` names the process in the error its exit gives to the calls still waiting. */
  constructor(
    private readonly child: ChildProcess,
    what: string,
  ) {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const m = JSON.parse(line) as { id: number; ok: boolean; result?: unknown; error?: string };
      const p = this.pending.get(m.id);
      this.pending.delete(m.id);
      if (m.ok) p?.resolve(m.result);
      else p?.reject(new Error(m.error));
    });
    child.on('exit', (code) => {
      for (const p of this.pending.values()) p.reject(new Error(`${what} exited (${code})`));
      this.pending.clear();
    });
  }

  call(cmd: Record<string, unknown>): Promise<unknown> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.child.stdin!.write(`${JSON.stringify({ ...cmd, id })}\n`);
    });
  }

  /** The process's pid (to pin it to a CPU, say). */
  get pid(): number | undefined {
    return this.child.pid;
  }

  close(): void {
    this.child.stdin!.end();
    this.child.kill();
  }
}
