// The restore bin/prebake starts beside the Node program's start-up: a checkpoint the checks
// refuse is never resumed, not even for a moment. The function here appends "<token> <count>"
// to a file in its rootfs every 2 ms from a thread of its own; a restored process keeps the
// token it had at the bake and counts on from there, a cold one draws a new token. The file
// is part of the rootfs changes the checkpoint layer carries, so each replica's writable
// layer shows what every process of that replica wrote.

import test from 'ava';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { NetnsClient } from '../src/lib/netns.ts';
import { bakeNoop, type BakedFunction, PORT } from './helpers/baked.ts';
import { killAndDelete, PREBAKE, run, testReplica } from './helpers/bundle.ts';

const SOURCE = `
import http.server, os, threading, time
token = os.urandom(8).hex()
count = 0
def tick():
    global count
    with open('/var/ticks', 'a', buffering=1) as f:
        while True:
            count += 1
            f.write(f'{token} {count}\\n')
            time.sleep(0.002)
threading.Thread(target=tick, daemon=True).start()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f'{token} {count}'.encode()
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(('0.0.0.0', ${PORT}), H).serve_forever()
`;

let baked: BakedFunction;
let bakeToken: string;
let bakeCount: number;
test.before(async () => {
  baked = await bakeNoop({ source: SOURCE });
  const lines = readFileSync(join(baked.layers[0]!, 'var/ticks'), 'utf8').trim().split('\n');
  [bakeToken, bakeCount] = ((l) => [l[0]!, Number(l[1])])(lines.at(-1)!.split(' '));
});
test.after.always(() => baked?.cleanup());

/** Creates a replica (with --debug), starts it, and returns what its processes wrote once it serves. */
async function replica(t: import('ava').ExecutionContext, prefix: string, dropCaps: boolean) {
  const { b, rt, id } = testReplica(t, baked.layers, prefix);
  b.writeSpec(baked.spec(b.netnsPath, (s) => {
    if (dropCaps) s.process!.capabilities = { bounding: [], effective: [], inheritable: [], permitted: [], ambient: [] };
  }));
  const client = await NetnsClient.start(b.netns);
  t.teardown(() => client.close());
  const create = await run(PREBAKE, ['--root', rt.root, '--log', rt.log, '--log-format', 'json', '--debug', 'create', '--bundle', b.dir, '--pid-file', join(b.dir, 'init.pid'), id]);
  t.teardown(() => create.close());
  t.is(create.code, 0, create.output);
  t.is((await run(PREBAKE, ['--root', rt.root, 'start', id])).code, 0);
  const first = await client.waitHttp({ port: PORT, path: '/', timeoutMs: 20_000 });
  await new Promise((r) => setTimeout(r, 100));
  const ticks = join(b.upper, 'var/ticks');
  const lines = existsSync(ticks) ? readFileSync(ticks, 'utf8').trim().split('\n').map((l) => l.split(' ')) : [];
  const written = { bake: lines.filter(([tok, n]) => tok === bakeToken && Number(n) > bakeCount).length, other: lines.filter(([tok]) => tok !== bakeToken).length };
  const log = rt.logLines();
  t.is((await killAndDelete(rt, id)).code, 0);
  return { first: first.body, written, log };
}

test('a checkpoint the checks refuse is never resumed: its process writes nothing, the cold one does', async (t) => {
  const r = await replica(t, 'refused', true);
  t.true(r.log.some((l) => l.level === 'debug' && /early restore refused before its tasks ran again/.test(l.msg)), JSON.stringify(r.log));
  t.true(r.log.some((l) => l.level === 'warning' && /^cold start: .*capabilities/.test(l.msg)), JSON.stringify(r.log));
  t.not(r.first.split(' ')[0], bakeToken, 'the replica that serves is a cold one');
  t.is(r.written.bake, 0, 'the restored process never ran: it wrote nothing after the bake');
  t.true(r.written.other > 0, 'the cold process writes (so the file shows what runs)');
});

test('the same checkpoint passing the checks is resumed: the restored process counts on in the same file', async (t) => {
  const r = await replica(t, 'resumed', false);
  t.true(r.log.some((l) => l.level === 'info' && /^restored /.test(l.msg)), JSON.stringify(r.log));
  t.is(r.first.split(' ')[0], bakeToken, 'the replica that serves has the bake token');
  t.true(r.written.bake > 0, 'the restored process wrote on after the bake');
  t.is(r.written.other, 0);
});
