// An HTTP client for containers started by an engine, reached either on the host (a published
// port, a container IP) or inside the network namespace of a process (a ctr task, which has only
// loopback): a small Python process that enters the namespace with setns(2) for each command and
// goes back to the host's, so one client serves every container. Driven over stdin, one JSON
// command per line, like NetnsClient (src/lib/netns.ts), whose results it returns.

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { LineRpc } from '../../src/lib/line-rpc.ts';
import type { HttpResult, Request } from '../../src/lib/netns.ts';

// One command per line in, one answer per line out. HTTP/1.0 over a plain socket: the functions
// answer HTTP/1.0 and close, so the answer is everything up to EOF.
const CLIENT = String.raw`
import base64, ctypes, json, os, socket, sys, time
libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000
HOST_NS = os.open('/proc/self/ns/net', os.O_RDONLY)

def setns(fd):
    if libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, 'setns: ' + os.strerror(e))

def request(c):
    body = base64.b64decode(c['body64']) if c.get('body64') else b''
    head = '%s %s HTTP/1.0\r\nHost: %s\r\nContent-Length: %d\r\nConnection: close\r\n' % (c.get('method') or 'GET', c.get('path') or '/', c['host'], len(body))
    for k, v in (c.get('headers') or {}).items():
        head += '%s: %s\r\n' % (k, v)
    t0 = time.perf_counter()
    s = socket.create_connection((c['host'], c['port']), timeout=(c.get('timeoutMs') or 30000) / 1000)
    try:
        s.sendall(head.encode('latin1') + b'\r\n' + body)
        chunks = []
        while True:
            d = s.recv(65536)
            if not d:
                break
            chunks.append(d)
    finally:
        s.close()
    ms = (time.perf_counter() - t0) * 1000
    raw = b''.join(chunks)
    sep = raw.find(b'\r\n\r\n')
    if not raw.startswith(b'HTTP/') or sep < 0:
        raise ConnectionError('no HTTP answer (%d bytes)' % len(raw))
    lines = raw[:sep].decode('latin1').split('\r\n')
    headers = {}
    for l in lines[1:]:
        k, _, v = l.partition(':')
        headers[k.strip().lower()] = v.strip()
    return {'status': int(lines[0].split()[1]), 'headers': headers, 'body': raw[sep + 4:].decode('latin1'), 'ms': ms}

def wait_http(c):
    end = time.monotonic() + (c.get('timeoutMs') or 30000) / 1000
    interval = (c.get('intervalMs') or 2) / 1000
    last = ''
    while True:
        try:
            r = request({**c, 'timeoutMs': 2000})
            if r['status'] < 500:
                return r
            last = 'HTTP %d' % r['status']
        except OSError as e:
            last = str(e)
        if time.monotonic() > end:
            raise TimeoutError('not ready after %d ms: %s' % (c.get('timeoutMs') or 30000, last))
        time.sleep(interval)

for line in sys.stdin:
    c = json.loads(line)
    try:
        fd = None
        if c.get('pid'):
            fd = os.open('/proc/%d/ns/net' % c['pid'], os.O_RDONLY)
            setns(fd)
        try:
            r = request(c) if c['op'] == 'http' else wait_http(c) if c['op'] == 'wait-http' else {'ok': True}
        finally:
            if fd is not None:
                setns(HOST_NS)
                os.close(fd)
        out = {'id': c['id'], 'ok': True, 'result': r}
    except Exception as e:
        out = {'id': c['id'], 'ok': False, 'error': '%s: %s' % (type(e).__name__, e)}
    sys.stdout.write(json.dumps(out) + '\n')
    sys.stdout.flush()
`;

/** Where a container listens: an address on the host, or 127.0.0.1 inside a process's network namespace. */
export type Endpoint = { host: string; port: number } | { pid: number; port: number };

export class EngineClient {
  private readonly rpc: LineRpc;

  private constructor() {
    // The system's Python, not a per-user shim that would add its own start-up to nothing we time.
    const python = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
    this.rpc = new LineRpc(spawn(python, ['-u', '-c', CLIENT], { stdio: ['pipe', 'pipe', 'inherit'] }), 'the HTTP client');
  }

  static async start(): Promise<EngineClient> {
    const c = new EngineClient();
    await c.rpc.call({ op: 'ping' });
    return c;
  }

  private static target(e: Endpoint): Record<string, unknown> {
    return 'pid' in e ? { pid: e.pid, host: '127.0.0.1', port: e.port } : { host: e.host, port: e.port };
  }

  request(e: Endpoint, r: Omit<Request, 'port'> & { timeoutMs?: number }): Promise<HttpResult> {
    return this.rpc.call({ op: 'http', ...r, ...EngineClient.target(e) }) as Promise<HttpResult>;
  }

  /** Polls until the endpoint answers HTTP with a status below 500. */
  waitHttp(e: Endpoint, r: Omit<Request, 'port'> & { timeoutMs?: number; intervalMs?: number }): Promise<HttpResult> {
    return this.rpc.call({ op: 'wait-http', ...r, ...EngineClient.target(e) }) as Promise<HttpResult>;
  }

  /** The client process's pid. */
  get pid(): number | undefined {
    return this.rpc.pid;
  }

  close(): void {
    this.rpc.close();
  }
}
