// Replica identity: replicas restored from one checkpoint share its memory (random state, ids);
// with PREBAKE_RESTORE_SIGNAL the runtime tells each restored process, which renews them.

import test from 'ava';
import { join } from 'node:path';
import { NetnsClient } from '../src/lib/netns.ts';
import { bakeNoop, PORT, pythonHttpFunction } from '../lab/baked.ts';
import { overlayBundle, PREBAKE, runtimeDirs, uniqueName } from '../lab/bundle.ts';
import { run } from './helpers/bundle.ts';

// Answers with its replica id and a random number; on SIGUSR2 it reseeds and takes a new id.
const SOURCE = pythonHttpFunction(
  String.raw`
import os, random, signal, sys, uuid, json
state = {"replica": str(uuid.uuid4()), "renewed": False}
random.seed(1234)
def renew(*_):
    random.seed(os.urandom(16))
    state["replica"] = str(uuid.UUID(bytes=os.urandom(16)))
    state["renewed"] = True
signal.signal(signal.SIGUSR2, renew)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
`,
  'json.dumps({**state, "random": random.random()})',
);

async function twoReplicas(t: import('ava').ExecutionContext, env: string[]) {
  const baked = await bakeNoop({ source: SOURCE, env });
  t.teardown(() => baked.cleanup());
  const rt = runtimeDirs();
  // Registered first, so it runs last (teardowns run in reverse): the replicas' deletes need rt.
  t.teardown(() => rt.cleanup());
  const out: { replica: string; random: number; renewed: boolean }[] = [];
  for (let i = 0; i < 2; i++) {
    const b = overlayBundle(baked.layers);
    const id = uniqueName('ident');
    t.teardown(async () => {
      await run(PREBAKE, ['--root', rt.root, 'delete', '--force', id]);
      b.cleanup();
    });
    b.writeSpec(baked.spec(b.netnsPath));
    const c = await run(PREBAKE, ['--root', rt.root, '--log', rt.log, '--log-format', 'json', 'create', '--bundle', b.dir, '--pid-file', join(b.dir, 'pid'), id]);
    t.is(c.code, 0, c.output);
    await run(PREBAKE, ['--root', rt.root, 'start', id]);
    const client = await NetnsClient.start(b.netns);
    t.teardown(() => client.close());
    // The signal handler runs as soon as the interpreter gets to it; poll briefly for it.
    let body = JSON.parse((await client.request({ port: PORT, path: '/' })).body);
    for (let k = 0; k < 20 && env.length && !body.renewed; k++) {
      await new Promise((r) => setTimeout(r, 25));
      body = JSON.parse((await client.request({ port: PORT, path: '/' })).body);
    }
    out.push(body);
  }
  t.is(rt.logLines().filter((l) => /^restored /.test(l.msg)).length, 2);
  return out;
}

test('without a restore signal, two replicas of one checkpoint give the same random numbers and id', async (t) => {
  const [a, b] = await twoReplicas(t, []);
  t.is(a!.replica, b!.replica);
  t.is(a!.random, b!.random, 'the random state was baked into both');
});

test('with PREBAKE_RESTORE_SIGNAL=SIGUSR2 each restored replica renews its seed and id', async (t) => {
  const [a, b] = await twoReplicas(t, ['PREBAKE_RESTORE_SIGNAL=SIGUSR2']);
  t.true(a!.renewed && b!.renewed);
  t.not(a!.replica, b!.replica);
  t.not(a!.random, b!.random);
});
