// Many replicas of one checkpoint restored at the same time, each in its own PID and network
// namespace: all start restored, all serve, none disturbs another.

import test from 'ava';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { NetnsClient } from '../src/lib/netns.ts';
import { bakeNoop, type BakedFunction, PORT, WARMUP } from '../lab/baked.ts';
import { overlayBundle, PREBAKE, runtimeDirs, uniqueName } from '../lab/bundle.ts';
import { run } from './helpers/bundle.ts';

const REPLICAS = 20;
let baked: BakedFunction;
test.before(async () => {
  baked = await bakeNoop();
});
test.after.always(() => baked?.cleanup());

test(`${REPLICAS} creates of one prebaked image at once are all restored and serve independently`, async (t) => {
  const rt = runtimeDirs();
  const replicas = Array.from({ length: REPLICAS }, () => ({ b: overlayBundle(baked.layers), id: uniqueName('many') }));
  t.teardown(async () => {
    await Promise.all(replicas.map((r) => run(PREBAKE, ['--root', rt.root, 'delete', '--force', r.id])));
    for (const r of replicas) r.b.cleanup();
    rt.cleanup();
  });
  for (const r of replicas) r.b.writeSpec(baked.spec(r.b.netnsPath));
  const g = ['--root', rt.root, '--log', rt.log, '--log-format', 'json'];
  const created = await Promise.all(replicas.map((r) => run(PREBAKE, [...g, 'create', '--bundle', r.b.dir, '--pid-file', join(r.b.dir, 'pid'), r.id])));
  for (const c of created) t.is(c.code, 0, c.output);
  const started = await Promise.all(replicas.map((r) => run(PREBAKE, ['--root', rt.root, 'start', r.id])));
  for (const s of started) t.is(s.code, 0, s.output);
  const restored = rt.logLines().filter((l) => /^restored /.test(l.msg));
  t.is(restored.length, REPLICAS, JSON.stringify(rt.logLines().filter((l) => l.level !== 'info')));

  const clients = await Promise.all(replicas.map((r) => NetnsClient.start(r.b.netns)));
  t.teardown(() => clients.forEach((c) => c.close()));
  // Each replica continues the baked count on its own: two requests to one do not move another.
  const first = await Promise.all(clients.map((c) => c.request({ port: PORT, path: '/' })));
  for (const r of first) t.is(JSON.parse(r.body).served, WARMUP + 2);
  await clients[0]!.request({ port: PORT, path: '/' });
  const second = await Promise.all(clients.map((c) => c.request({ port: PORT, path: '/' })));
  t.deepEqual(
    second.map((r) => JSON.parse(r.body).served),
    replicas.map((_, i) => WARMUP + (i === 0 ? 4 : 3)),
  );
  for (const r of replicas) t.true(existsSync(join(rt.state, r.id, 'restored')) === false, 'start consumed the marker');
});
