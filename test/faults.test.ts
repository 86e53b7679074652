// Faults around a restore: CRIU missing, prebake killed in the middle of a restore. Each ends in a
// running container or a clean slate after the engine's delete --force.

import test from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { NetnsClient } from '../src/lib/netns.ts';
import { bakeNoop, type BakedFunction, PORT } from './helpers/baked.ts';
import { overlayBundle, PREBAKE, run, runtimeDirs, uniqueName } from './helpers/bundle.ts';

let baked: BakedFunction;
test.before(async () => {
  baked = await bakeNoop();
});
test.after.always(() => baked?.cleanup());

function replica(t: import('ava').ExecutionContext) {
  const b = overlayBundle(baked.layers);
  const rt = runtimeDirs();
  const id = uniqueName('fault');
  t.teardown(async () => {
    await run(PREBAKE, ['--root', rt.root, 'delete', '--force', id]);
    b.cleanup();
    rt.cleanup();
  });
  b.writeSpec(baked.spec(b.netnsPath));
  return { b, rt, id };
}

test('CRIU missing (runc --criu pointing nowhere): cold start that serves, reason logged', async (t) => {
  const { b, rt, id } = replica(t);
  const c = await run(PREBAKE, ['--root', rt.root, '--criu', '/nonexistent/criu', '--log', rt.log, '--log-format', 'json', 'create', '--bundle', b.dir, id]);
  t.is(c.code, 0, c.output);
  t.is((await run(PREBAKE, ['--root', rt.root, 'start', id])).code, 0);
  const client = await NetnsClient.start(b.netns);
  t.teardown(() => client.close());
  t.is(JSON.parse((await client.waitHttp({ port: PORT, path: '/', timeoutMs: 20000 })).body).served, 1);
  t.regex(rt.logLines().find((l) => l.level === 'warning')?.msg ?? '', /cold start: .*\/nonexistent\/criu/);
});

test('prebake killed with SIGKILL during a restore, then the engine\'s delete --force: nothing is left', async (t) => {
  for (const delayMs of [5, 40, 80]) {
    const { b, rt, id } = replica(t);
    const child = spawn(PREBAKE, ['--root', rt.root, '--log', rt.log, '--log-format', 'json', 'create', '--bundle', b.dir, id], { stdio: 'ignore' });
    await new Promise((r) => setTimeout(r, delayMs));
    child.kill('SIGKILL');
    await new Promise((r) => child.on('exit', r));
    // runc restore may still be finishing on its own; the engine gives up and force-deletes.
    await new Promise((r) => setTimeout(r, 500));
    const del = await run(PREBAKE, ['--root', rt.root, 'delete', '--force', id]);
    t.is(del.code, 0, `after ${delayMs} ms: ${del.output}`);
    t.false(existsSync(join(rt.root, id)), `runc state gone (killed after ${delayMs} ms)`);
    t.false(existsSync(join(rt.state, id)), `prebake state gone (killed after ${delayMs} ms)`);
    const ps = spawnSync('pgrep', ['-f', `criu.*${id}|runc.*${id}`], { encoding: 'utf8' }).stdout.trim();
    t.is(ps, '', `no runc or CRIU process left for ${id}`);
    t.is(spawnSync('ip', ['netns', 'pids', b.netns], { encoding: 'utf8' }).stdout.trim(), '', `no process left in the container's network namespace`);
  }
});
