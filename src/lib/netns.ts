// Network namespaces for bake runs, tests and benchmarks (`ip netns`), and an HTTP/TCP client
// that runs inside one: a small Node process started with `ip netns exec`, driven over stdin.

import { execFileSync, spawn } from 'node:child_process';
import { LineRpc } from './line-rpc.ts';

export function netnsPath(name: string): string {
  return `/var/run/netns/${name}`;
}

/** Creates a named network namespace with loopback up. */
export function createNetns(name: string): string {
  execFileSync('ip', ['netns', 'add', name], { stdio: ['ignore', 'ignore', 'pipe'] });
  loopbackUp(name);
  return netnsPath(name);
}

function loopbackUp(name: string): void {
  execFileSync('ip', ['-n', name, 'link', 'set', 'lo', 'up'], { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** Names the network namespace of a running process (`ip netns attach`), so clients can enter it. */
export function attachNetns(name: string, pid: number): void {
  execFileSync('ip', ['netns', 'attach', name, String(pid)], { stdio: ['ignore', 'ignore', 'pipe'] });
}

export function deleteNetns(name: string): void {
  try {
    execFileSync('ip', ['netns', 'delete', name], { stdio: 'ignore' });
  } catch {
    /* already gone */
  }
}

export interface HttpResult {
  status: number;
  headers: Record<string, string>;
  body: string;
  /** Milliseconds the request took, measured inside the namespace. */
  ms: number;
}

export interface Request {
  port: number;
  method?: string;
  path?: string;
  /** Request body, base64-encoded. */
  body64?: string;
  headers?: Record<string, string>;
}

// Runs inside the namespace: one JSON command per line in, one JSON answer per line out.
const CLIENT = String.raw`
const http = require('node:http'), net = require('node:net'), rl = require('node:readline');
const agent = new http.Agent({ keepAlive: false });
function request(c) {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const body = c.body64 ? Buffer.from(c.body64, 'base64') : undefined;
    const req = http.request({ host: '127.0.0.1', port: c.port, method: c.method || 'GET', path: c.path || '/', agent,
      headers: { ...(c.headers || {}), ...(body ? { 'content-length': body.length } : {}), connection: 'close' } }, (res) => {
      const chunks = [];
      res.on('data', (d) => chunks.push(d));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString('latin1'), ms: performance.now() - t0 }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.setTimeout(c.timeoutMs || 30000, () => req.destroy(new Error('request timed out')));
    req.end(body);
  });
}
function connect(port) {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port }, () => { s.destroy(); resolve(); });
    s.on('error', reject);
  });
}
async function until(c, f) {
  const end = Date.now() + (c.timeoutMs || 30000);
  let last;
  for (;;) {
    try { const r = await f(); if (!r || r.status < 500) return r || { ok: true }; last = 'HTTP ' + r.status; }
    catch (e) { last = e.message; }
    if (Date.now() > end) throw new Error('not ready after ' + (c.timeoutMs || 30000) + ' ms: ' + last);
    await new Promise((r) => setTimeout(r, c.intervalMs || 2));
  }
}
rl.createInterface({ input: process.stdin }).on('line', async (line) => {
  const c = JSON.parse(line);
  try {
    let r;
    if (c.op === 'http') r = await request(c);
    else if (c.op === 'wait-http') r = await until(c, () => request(c));
    else if (c.op === 'wait-tcp') r = await until(c, () => connect(c.port));
    else if (c.op === 'ping') r = { ok: true };
    else if (c.op === 'warm') {
      // n requests to a throwaway server of its own: the client's HTTP path (V8's compiled code)
      // is then as warm whatever it talks to next, however often that refused it first.
      const srv = http.createServer((q, s) => s.end('{}'));
      await new Promise((res) => srv.listen(0, '127.0.0.1', res));
      for (let i = 0; i < c.n; i++) await request({ port: srv.address().port, path: '/' });
      await new Promise((res) => srv.close(res));
      r = { ok: true };
    }
    process.stdout.write(JSON.stringify({ id: c.id, ok: true, result: r }) + '\n');
  } catch (e) {
    process.stdout.write(JSON.stringify({ id: c.id, ok: false, error: e.message }) + '\n');
  }
});
`;

/** A client living in a network namespace; start it before the thing it will talk to. */
export class NetnsClient {
  private readonly rpc: LineRpc;

  private constructor(netns: string) {
    const env = { ...process.env };
    delete env.NODE_EXTRA_CA_CERTS;
    delete env.NODE_OPTIONS;
    const child = spawn('ip', ['netns', 'exec', netns, process.execPath, '-e', CLIENT], { stdio: ['pipe', 'pipe', 'inherit'], env });
    this.rpc = new LineRpc(child, `the client in netns ${netns}`);
  }

  static async start(netns: string): Promise<NetnsClient> {
    const c = new NetnsClient(netns);
    await c.rpc.call({ op: 'ping' });
    return c;
  }

  request(r: Request & { timeoutMs?: number }): Promise<HttpResult> {
    return this.rpc.call({ op: 'http', ...r }) as Promise<HttpResult>;
  }

  /** Polls until the port answers HTTP with a status below 500. */
  waitHttp(r: Request & { timeoutMs?: number; intervalMs?: number }): Promise<HttpResult> {
    return this.rpc.call({ op: 'wait-http', ...r }) as Promise<HttpResult>;
  }

  /** Polls until a TCP connection to the port succeeds. */
  async waitTcp(port: number, timeoutMs?: number): Promise<void> {
    await this.rpc.call({ op: 'wait-tcp', port, timeoutMs });
  }

  /** Warms the client's HTTP path with `n` requests to a server of its own (see CLIENT). */
  async warm(n: number): Promise<void> {
    await this.rpc.call({ op: 'warm', n });
  }

  /** The client process's pid. */
  get pid(): number | undefined {
    return this.rpc.pid;
  }

  close(): void {
    this.rpc.close();
  }
}
