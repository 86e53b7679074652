// containerd through ctr against a real containerd started by the test: an image baked with
// prebake-build --target containerd is restored by `ctr run --runc-binary bin/prebake`, with
// loopback up in its new network namespace, and its exit status reaches ctr.

import test from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { PREBAKE, REPO } from './helpers/bundle.ts';
import { type Containerd, startContainerd } from './helpers/engines.ts';
import { noopImage } from './helpers/images.ts';

const IMAGE = 'docker.io/prebake/noop:baked';
let ctd: Containerd;
let env: NodeJS.ProcessEnv;

test.before(async (t) => {
  ctd = await startContainerd();
  env = { ...process.env, CONTAINERD_ADDRESS: ctd.socket };
  const r = spawnSync(join(REPO, 'bin/prebake-build'), ['--target', 'containerd', `oci:${await noopImage()}:latest`, 'containerd:prebake/noop:baked'], { env, encoding: 'utf8' });
  t.log(r.stderr.trim());
  if (r.status !== 0) throw new Error(`prebake-build failed: ${r.stderr}`);
});

test.after.always(async () => {
  await ctd?.stop();
});

const ctr = (args: string[]) => spawnSync('ctr', args, { env, encoding: 'utf8' });

async function taskPid(id: string): Promise<number> {
  for (let i = 0; i < 100; i++) {
    const m = new RegExp(`^${id}\\s+(\\d+)\\s+RUNNING`, 'm').exec(ctr(['task', 'ls']).stdout);
    if (m) return Number(m[1]);
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`task ${id} never ran`);
}

/** GET / from inside the task's network namespace. */
function get(pid: number): { served: number } {
  const c = spawnSync('nsenter', [`--net=/proc/${pid}/ns/net`, 'curl', '-s', '-m', '5', 'http://127.0.0.1:8080/'], { encoding: 'utf8' });
  if (c.status !== 0) throw new Error(`curl in task netns: exit ${c.status} ${c.stderr}`);
  return JSON.parse(c.stdout) as { served: number };
}

test.serial('ctr run restores the baked function, with loopback up in its new network namespace', async (t) => {
  const id = 'restored';
  t.teardown(() => {
    ctr(['task', 'kill', '-s', 'KILL', id]);
    ctr(['task', 'delete', '-f', id]);
    ctr(['container', 'delete', id]);
  });
  const run = ctr(['run', '-d', '--runc-binary', PREBAKE, IMAGE, id]);
  t.is(run.status, 0, run.stderr);
  const pid = await taskPid(id);
  t.true(get(pid).served > 1, 'a cold start would answer served 1');
  const log = spawnSync('cat', [join(ctd.state, 'io.containerd.runtime.v2.task/default', id, 'log.json')], { encoding: 'utf8' }).stdout;
  t.regex(log, /"msg":"restored restored from \/\.prebake/);
});

test.serial('the exit status of a restored task reaches ctr run', async (t) => {
  const id = 'attached';
  t.teardown(() => {
    ctr(['task', 'delete', '-f', id]);
    ctr(['container', 'delete', id]);
  });
  const child = spawn('ctr', ['run', '--rm', '--runc-binary', PREBAKE, IMAGE, id], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((r) => child.on('exit', r));
  const pid = await taskPid(id);
  t.true(get(pid).served > 1);
  ctr(['task', 'kill', '-s', 'TERM', id]);
  t.is(await exited, 0, 'the function exits 0 on SIGTERM and ctr run returns it');
  t.regex(out, /request \d+ GET \//, 'output after the restore reaches ctr');
});

test.serial('an image that is not prebaked runs through prebake under ctr as under runc', (t) => {
  const r = ctr(['run', '--rm', '--runc-binary', PREBAKE, 'docker.io/prebake/spec-probe:1', 'plain', '/bin/busybox', 'sh', '-c', 'echo plain; exit 3']);
  t.is(r.stdout.trim(), 'plain');
  t.is(r.status, 3);
});

test.serial('an image baked for two targets carries both checkpoints; ctr restores the containerd one', async (t) => {
  const r = spawnSync(join(REPO, 'bin/prebake-build'), ['--quiet', '--target', 'runc', '--target', 'containerd', `oci:${await noopImage()}:latest`, 'containerd:prebake/noop:multi'], { env, encoding: 'utf8' });
  t.is(r.status, 0, r.stderr);
  const id = 'multi';
  t.teardown(() => {
    ctr(['task', 'kill', '-s', 'KILL', id]);
    ctr(['task', 'delete', '-f', id]);
    ctr(['container', 'delete', id]);
  });
  t.is(ctr(['run', '-d', '--runc-binary', PREBAKE, 'docker.io/prebake/noop:multi', id]).status, 0);
  t.true(get(await taskPid(id)).served > 1);
  const log = spawnSync('cat', [join(ctd.state, 'io.containerd.runtime.v2.task/default', id, 'log.json')], { encoding: 'utf8' }).stdout;
  t.regex(log, /"msg":"restored multi from \/\.prebake\/containerd /);
});
