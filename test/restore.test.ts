// Restore-on-create on real runc and CRIU: a baked Python function is restored (not cold-started),
// serves from its own network namespace, and the usual lifecycle commands work on it.

import test from 'ava';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { RESTORE_CRIU_CONF } from '../src/contract.ts';
import { NetnsClient } from '../src/lib/netns.ts';
import { loadRuntimeConfig } from '../src/runtime/config.ts';
import { PREBAKE, REPO } from '../lab/bundle.ts';
import { killAndDelete, run, testReplica } from './helpers/bundle.ts';
import { bakeNoop, type BakedFunction, WARMUP } from '../lab/baked.ts';
import { served } from './helpers/tmp.ts';

let baked: BakedFunction;
test.before(async () => {
  baked = await bakeNoop();
});
test.after.always(() => baked?.cleanup());


test('create restores a baked function: its request count goes on, prebake logs the restore', async (t) => {
  const { b, rt, id } = testReplica(t, baked.layers, 'restore');
  b.writeSpec(baked.spec(b.netnsPath));
  const client = await NetnsClient.start(b.netns);
  t.teardown(() => client.close());
  const pidFile = join(b.dir, 'init.pid');
  const create = await run(PREBAKE, ['--root', rt.root, '--log', rt.log, '--log-format', 'json', 'create', '--bundle', b.dir, '--pid-file', pidFile, id]);
  t.is(create.code, 0, create.output);
  t.true(existsSync(pidFile));
  const start = await run(PREBAKE, ['--root', rt.root, 'start', id]);
  t.is(start.code, 0, start.output);
  // The checkpoint was taken after the readiness probe and the warm-up requests.
  t.is(await served(client), WARMUP + 2);
  t.is(await served(client), WARMUP + 3);
  const log = rt.logLines();
  t.true(log.some((l) => l.level === 'info' && /^restored /.test(l.msg)), JSON.stringify(log));
  for (const l of log) t.deepEqual(typeof l.time + typeof l.level + typeof l.msg, 'stringstringstring');
  // runc restored it beside the Node program's start-up, CRIU told (by the config file in
  // prebake's state) to leave the tasks stopped; it serves above, so prebake resumed them.
  const criu = readFileSync(join(rt.state, id, 'criu', 'restore.log'), 'utf8');
  const conf = /^\(\S+\) Parsing config file (\S+\/criu\.conf)$/m.exec(criu)?.[1];
  t.is(resolve(conf!), join(REPO, 'dist/criu.conf'));
  t.is(readFileSync(conf!, 'utf8'), RESTORE_CRIU_CONF);

  const state = await run(PREBAKE, ['--root', rt.root, 'state', id]);
  t.is(JSON.parse(state.output).status, 'running');
  const ps = await run(PREBAKE, ['--root', rt.root, 'ps', '--format', 'json', id]);
  t.is((JSON.parse(ps.output) as number[]).length, 1);
  t.is((await run(PREBAKE, ['--root', rt.root, 'pause', id])).code, 0);
  t.is(JSON.parse((await run(PREBAKE, ['--root', rt.root, 'state', id])).output).status, 'paused');
  t.is((await run(PREBAKE, ['--root', rt.root, 'resume', id])).code, 0);
  t.is(await served(client), WARMUP + 4);
  const exec = await run(PREBAKE, ['--root', rt.root, 'exec', id, 'python3', '-c', 'print("inside")']);
  t.is(exec.output.trim(), 'inside');

  t.true(existsSync(join(rt.state, id)), 'prebake keeps per-container state while it lives');
  // Nobody but root reads prebake's state: its base is 0700.
  const base = loadRuntimeConfig().stateBase;
  t.is(statSync(base).mode & 0o777, 0o700, base);
  const del = await killAndDelete(rt, id);
  t.is(del.code, 0, del.output);
  t.false(existsSync(join(rt.root, id)), 'runc state removed');
  t.false(existsSync(join(rt.state, id)), 'prebake state removed');
});
