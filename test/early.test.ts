// The restore bin/prebake starts beside the Node program's start-up, CRIU leaving the restored
// tasks stopped until the Node program accepts the checkpoint: a checkpoint the checks refuse
// is never resumed, not even for a moment, whether the refusal comes while runc is still
// restoring or after it is done, and a Node program that dies before its verdict leaves
// nothing behind. The function here appends "<token> <count>"
// to a file in its rootfs every 2 ms from a thread of its own; a restored process keeps the
// token it had at the bake and counts on from there, a cold one draws a new token. The file
// is part of the rootfs changes the checkpoint layer carries, so each replica's writable
// layer shows what every process of that replica wrote.

import test from 'ava';
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NetnsClient } from '../src/lib/netns.ts';
import { bakeNoop, type BakedFunction, PORT, pythonHttpFunction } from '../lab/baked.ts';
import { PREBAKE } from '../lab/bundle.ts';
import { killAndDelete, run, testReplica } from './helpers/bundle.ts';
import { slowMkfifo } from './helpers/slow.ts';

const SOURCE = pythonHttpFunction(
  `
import os, threading, time
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
`,
  "f'{token} {count}'",
  { threads: true },
);

let baked: BakedFunction;
let bakeToken: string;
let bakeCount: number;
test.before(async () => {
  baked = await bakeNoop({ source: SOURCE });
  // The early restore is taken only for a checkpoint the host has verified before.
  baked.importToStore();
  const lines = readFileSync(join(baked.layers[0]!, 'var/ticks'), 'utf8').trim().split('\n');
  [bakeToken, bakeCount] = ((l) => [l[0]!, Number(l[1])])(lines.at(-1)!.split(' '));
});
test.after.always(() => baked?.cleanup());

/**
 * A Node program that starts late: after 1 s (runc has long finished restoring), it records
 * what runc and /proc say of the replica's init, then runs node, or with `exitWith`, exits.
 */
function lateNode(t: import('ava').ExecutionContext, root: string, id: string, exitWith?: number) {
  const dir = mkdtempSync(join(tmpdir(), 'prebake-late-node-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const node = join(dir, 'node');
  writeFileSync(node, `#!/bin/sh
sleep 1
runc --root '${root}' state '${id}' > '${dir}/state.json' 2>&1
pid=$(sed -n 's/^ *"pid": *\\([0-9]*\\).*/\\1/p' '${dir}/state.json')
[ -n "$pid" ] && cut -d' ' -f3 /proc/$pid/stat > '${dir}/proc-state'
${exitWith === undefined ? `exec '${process.execPath}' "$@"` : `exit ${exitWith}`}
`);
  chmodSync(node, 0o755);
  const read = (f: string) => (existsSync(join(dir, f)) ? readFileSync(join(dir, f), 'utf8').trim() : '');
  return { node, restored: () => ({ status: (JSON.parse(read('state.json') || '{}') as { status?: string }).status, proc: read('proc-state') }) };
}

/** What the processes of a replica wrote in its ticks file: lines of the baked process after the bake, lines of others. */
function ticksIn(upper: string) {
  const ticks = join(upper, 'var/ticks');
  const lines = existsSync(ticks) ? readFileSync(ticks, 'utf8').trim().split('\n').map((l) => l.split(' ')) : [];
  return { bake: lines.filter(([tok, n]) => tok === bakeToken && Number(n) > bakeCount).length, other: lines.filter(([tok]) => tok !== bakeToken).length };
}

/** Creates a replica (with --debug), starts it, and returns what its processes wrote once it serves. */
async function replica(t: import('ava').ExecutionContext, prefix: string, dropCaps: boolean, late = false) {
  const { b, rt, id } = testReplica(t, baked.layers, prefix);
  b.writeSpec(baked.spec(b.netnsPath, (s) => {
    if (dropCaps) s.process!.capabilities = { bounding: [], effective: [], inheritable: [], permitted: [], ambient: [] };
  }));
  const client = await NetnsClient.start(b.netns);
  t.teardown(() => client.close());
  const node = late ? lateNode(t, rt.root, id) : undefined;
  const create = await run(PREBAKE, ['--root', rt.root, '--log', rt.log, '--log-format', 'json', '--debug', 'create', '--bundle', b.dir, '--pid-file', join(b.dir, 'init.pid'), id], node && { ...process.env, PREBAKE_NODE: node.node });
  t.teardown(() => create.close());
  t.is(create.code, 0, create.output);
  t.is((await run(PREBAKE, ['--root', rt.root, 'start', id])).code, 0);
  const first = await client.waitHttp({ port: PORT, path: '/', timeoutMs: 20_000 });
  await new Promise((r) => setTimeout(r, 100));
  const written = ticksIn(b.upper);
  const log = rt.logLines();
  t.is((await killAndDelete(rt, id)).code, 0);
  return { first: first.body, written, log, restored: node?.restored() };
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

test('a refusal after runc has finished restoring kills the tasks CRIU left stopped: they never ran', async (t) => {
  const r = await replica(t, 'refused-late', true, true);
  t.deepEqual(r.restored, { status: 'running', proc: 'T' }, 'runc had restored the container, its init stopped');
  t.true(r.log.some((l) => l.level === 'debug' && /early restore refused before its tasks ran again/.test(l.msg)), JSON.stringify(r.log));
  t.not(r.first.split(' ')[0], bakeToken, 'the replica that serves is a cold one');
  t.is(r.written.bake, 0, 'the restored process never ran: it wrote nothing after the bake');
  t.true(r.written.other > 0);
});

test('a Node program that dies before it settles the restore fails the create and leaves nothing: the stopped tasks are killed', async (t) => {
  const { b, rt, id } = testReplica(t, baked.layers, 'node-died');
  b.writeSpec(baked.spec(b.netnsPath));
  const node = lateNode(t, rt.root, id, 3);
  const create = await run(PREBAKE, ['--root', rt.root, '--log', rt.log, '--log-format', 'json', 'create', '--bundle', b.dir, '--pid-file', join(b.dir, 'init.pid'), id], { ...process.env, PREBAKE_NODE: node.node });
  t.teardown(() => create.close());
  t.is(create.code, 3, create.output);
  t.deepEqual(node.restored(), { status: 'running', proc: 'T' }, 'runc had restored the container, its init stopped');
  const state = await run('runc', ['--root', rt.root, 'state', id]);
  t.not(state.code, 0, 'no container left');
  t.regex(state.output, /does not exist/);
  t.false(existsSync(join(rt.state, id)), "no prebake state left");
  await new Promise((r) => setTimeout(r, 100));
  t.is(ticksIn(b.upper).bake, 0, 'the restored process never ran');
});

test('bin/prebake killed before the Node program settles: the Node program clears the restore away and creates nothing', async (t) => {
  const { b, rt, id } = testReplica(t, baked.layers, 'shell-killed');
  b.writeSpec(baked.spec(b.netnsPath));
  const node = lateNode(t, rt.root, id);
  const shell = spawn(PREBAKE, ['--root', rt.root, '--log', rt.log, '--log-format', 'json', 'create', '--bundle', b.dir, id], { stdio: 'ignore', env: { ...process.env, PREBAKE_NODE: node.node } });
  const exited = new Promise((r) => shell.on('exit', r));
  await new Promise((r) => setTimeout(r, 300));
  shell.kill('SIGKILL'); // runc restores on; the Node program starts after this
  await exited;
  const abandoned = () => rt.logLines().some((l) => l.level === 'warning' && /^create abandoned: /.test(l.msg));
  for (let i = 0; i < 200 && !abandoned(); i++) await new Promise((r) => setTimeout(r, 50));
  t.true(abandoned(), JSON.stringify(rt.logLines()));
  t.deepEqual(node.restored(), { status: 'running', proc: 'T' }, 'runc had restored the container, its init stopped');
  t.regex((await run('runc', ['--root', rt.root, 'state', id])).output, /does not exist/, 'no container left, none created');
  t.false(existsSync(join(rt.state, id)), 'no prebake state left');
  t.is(ticksIn(b.upper).bake, 0, 'the restored process never ran');
  t.is(ticksIn(b.upper).other, 0, 'no cold one either');
});

test('runc exits while the shell waits for a child of its own (a slow mkfifo reaps it): the restore is still accepted', async (t) => {
  // The verdict FIFO is made after runc has started; a shell waiting for mkfifo reaps any child
  // that exits meanwhile, runc too. Here mkfifo takes 0.5 s, long after runc has finished. (A
  // one-shot program: test/resident.test.ts has the resident program's case.)
  const env = { ...process.env, PATH: `${slowMkfifo(t)}:${process.env.PATH}`, PREBAKE_RESIDENT: 'off' };
  const { b, rt, id } = testReplica(t, baked.layers, 'slow-mkfifo', env);
  b.writeSpec(baked.spec(b.netnsPath));
  const create = await run(PREBAKE, ['--root', rt.root, '--log', rt.log, '--log-format', 'json', 'create', '--bundle', b.dir, id], env);
  t.teardown(() => create.close());
  t.is(create.code, 0, create.output);
  t.true(rt.logLines().some((l) => l.level === 'info' && /^restored /.test(l.msg)), JSON.stringify(rt.logLines()));
  t.is((await run(PREBAKE, ['--root', rt.root, 'start', id])).code, 0);
  const client = await NetnsClient.start(b.netns);
  t.teardown(() => client.close());
  t.is((await client.waitHttp({ port: PORT, path: '/', timeoutMs: 20_000 })).body.split(' ')[0], bakeToken, 'the replica that serves is the restored one');
  t.is((await killAndDelete(rt, id)).code, 0);
});
