// podman run with the prebake runtime, with podman's storage and config in a temp dir
// (startPodman): an image baked with prebake-build --target podman is restored, serves on a
// published port, logs; exec, top, pause/unpause, stop, kill and rm -f behave as with runc; two
// containers of the image are independent; a terminal run starts cold and says why.

import test from 'ava';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PREBAKE } from '../lab/bundle.ts';
import { argvRecorder, bakeNoopInto, footprintLeft, type Footprint, httpGet, isMounted, type Podman, processesInNetns, startPodman } from './helpers/engines.ts';

const IMAGE = 'localhost/prebake/noop:baked';
let pm: Podman;
let dir: string;
let recorder: ReturnType<typeof argvRecorder> | undefined;
let port = 18700 + (process.pid % 200);
const podman = (args: string[]) => spawnSync('podman', args, { env: pm.env, encoding: 'utf8' });

test.before(async (t) => {
  dir = mkdtempSync(join(tmpdir(), 'prebake-podman-test-'));
  // The runtime podman knows as "prebake".
  recorder = argvRecorder(dir);
  pm = await startPodman({ runtimePath: recorder.runtime });
  await bakeNoopInto(t, 'podman', `containers-storage:${IMAGE.replace(/^localhost\//, '')}`, pm.env);
});

test.after.always(async (t) => {
  const shapes = recorder?.shapes((l: string) => l.replaceAll(pm.dir, '<dir>').replace(/[0-9a-f]{64}/g, '$ID').replace(/exec-process-\d+/g, 'exec-process-N'));
  if (shapes?.length) t.log(`argv podman sent to the runtime:\n${shapes.join('\n')}`);
  await pm?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});


function runDetached(flags: string[] = []): { id: string; port: number } {
  const p = port++;
  const run = podman(['run', '-d', '--runtime', 'prebake', '-p', `127.0.0.1:${p}:8080`, ...flags, IMAGE]);
  if (run.status !== 0) throw new Error(`podman run: ${run.stderr}`);
  return { id: run.stdout.trim(), port: p };
}

const inspect = (id: string) => JSON.parse(podman(['inspect', id]).stdout)[0];

/** The runc root podman gave the runtime on create (it passes none: runc's default). */
function runcRoot(id: string): string {
  const create = readFileSync(recorder!.log, 'utf8')
    .split('\n')
    .find((l) => / create /.test(` ${l} `) && l.endsWith(id));
  return /(?:^|\s)--?root[= ](\S+)/.exec(create ?? '')?.[1] ?? '/run/runc';
}

interface PodmanFootprint extends Footprint {
  conmon: number;
  /** The network namespace file podman made. */
  netnsFile: string;
}

function footprintOf(id: string): PodmanFootprint {
  const st = inspect(id);
  const root = runcRoot(id);
  const netnsFile = st.NetworkSettings.SandboxKey as string;
  return {
    dirs: { runc: join(root, id), prebake: join(process.env.PREBAKE_STATE_DIR ?? '/run/prebake', root, id) },
    pid: st.State.Pid,
    conmon: st.State.ConmonPid,
    netnsFile,
    netns: statSync(netnsFile).ino,
    rootfs: st.GraphDriver.Data.MergedDir,
  };
}

/** What is still there of a container that is gone (or whose task is), polled; conmon too. */
function leftovers(f: PodmanFootprint, opts: { netnsFile: boolean } = { netnsFile: true }): Promise<string[]> {
  return footprintLeft(f, {
    [`conmon ${f.conmon}`]: () => existsSync(`/proc/${f.conmon}`),
    ...(opts.netnsFile ? { [`network namespace ${f.netnsFile}`]: () => existsSync(f.netnsFile) } : {}),
  });
}

/** Restored: it continues the baked request count, and prebake kept the restore's state for it. */
async function assertRestored(t: import('ava').ExecutionContext, c: { id: string; port: number }): Promise<number> {
  const served = (await httpGet(c.port)).served;
  t.true(served > 1, `served ${served}: a cold start would say 1 (${podman(['logs', c.id]).stderr.trim()})`);
  const f = footprintOf(c.id);
  t.true(existsSync(join(f.dirs.prebake!, 'criu')), `prebake's restore state at ${f.dirs.prebake}`);
  return served;
}

test.serial('podman run --runtime prebake restores the baked function: HTTP on the published port, logs after the restore', async (t) => {
  const port = 18950 + (process.pid % 40);
  const run = podman(['run', '-d', '--runtime', PREBAKE, '-p', `127.0.0.1:${port}:8080`, IMAGE]);
  t.is(run.status, 0, run.stderr);
  const id = run.stdout.trim();
  t.teardown(() => podman(['rm', '-f', id]));
  let body = '';
  for (let i = 0; i < 200 && !body; i++) {
    body = spawnSync('curl', ['-s', '-m', '1', `http://127.0.0.1:${port}/`], { encoding: 'utf8' }).stdout;
    if (!body) await new Promise((r) => setTimeout(r, 50));
  }
  const served = (JSON.parse(body) as { served: number }).served;
  t.true(served > 1, `served ${served}: a cold start would say 1 (${podman(['logs', id]).stderr})`);
  t.regex(podman(['logs', id]).stdout, new RegExp(`request ${served} GET /`));
  const stop = podman(['stop', '-t', '5', id]);
  t.is(stop.status, 0, stop.stderr);
  t.is(podman(['inspect', '--format', '{{.State.ExitCode}}', id]).stdout.trim(), '0');
  t.is(podman(['wait', id]).stdout.trim(), '0', 'podman wait gives the exit status too');
});

test.serial('podman exec, top, pause and unpause work on a restored container', async (t) => {
  const c = runDetached();
  t.teardown(() => podman(['rm', '-f', '-t', '0', c.id]));
  const served = await assertRestored(t, c);
  const exec = podman(['exec', c.id, 'python3', '-c', 'print(6*7)']);
  t.is(exec.stdout.trim(), '42', exec.stderr);
  t.is(podman(['exec', c.id, 'sh', '-c', 'exit 3']).status, 3, "an exec's exit status reaches podman");
  const top = podman(['top', c.id]);
  t.regex(top.stdout, /^root\s+1\s+0\s.*python3 \/app\/function\.py/m, top.stderr);
  t.is(podman(['pause', c.id]).status, 0);
  t.is(inspect(c.id).State.Status, 'paused');
  t.is(podman(['unpause', c.id]).status, 0);
  t.is(inspect(c.id).State.Status, 'running');
  t.is((await httpGet(c.port)).served, served + 1, 'the same process serves on after unpause');
  t.regex(podman(['logs', c.id]).stdout, new RegExp(`request ${served + 1} GET /`));
});

test.serial('podman kill of a restored container: the exit status reaches inspect and podman wait, and its runtime state is gone', async (t) => {
  const [a, b] = [runDetached(), runDetached()];
  t.teardown(() => podman(['rm', '-f', '-t', '0', a.id, b.id]));
  await assertRestored(t, a);
  await assertRestored(t, b);
  const [fa, fb] = [footprintOf(a.id), footprintOf(b.id)];
  t.is(podman(['kill', a.id]).status, 0);
  t.is(podman(['wait', a.id]).stdout.trim(), '137', 'SIGKILL: 128 + 9');
  t.like(inspect(a.id).State, { Status: 'exited', ExitCode: 137 });
  // The restored process kept the SIGTERM handler it had at bake time: it exits 0.
  t.is(podman(['kill', '--signal', 'TERM', b.id]).status, 0);
  t.is(podman(['wait', b.id]).stdout.trim(), '0');
  t.like(inspect(b.id).State, { Status: 'exited', ExitCode: 0 });
  // An exited container keeps its podman record, not its runtime state.
  t.deepEqual(await leftovers(fa), []);
  t.deepEqual(await leftovers(fb), []);
});

test.serial('podman rm -f of a running restored container leaves no runc state, prebake state, process, rootfs mount or network namespace', async (t) => {
  const c = runDetached();
  t.teardown(() => podman(['rm', '-f', '-t', '0', c.id]));
  await assertRestored(t, c);
  const f = footprintOf(c.id);
  for (const [k, d] of Object.entries(f.dirs)) t.true(existsSync(d), `${k} state at ${d} while the container runs`);
  t.deepEqual(processesInNetns(f.netns), [f.pid], 'the restored process is in the network namespace podman made');
  t.true(isMounted(f.rootfs), `its rootfs ${f.rootfs} is mounted while it runs`);
  const rm = podman(['rm', '-f', c.id]);
  t.is(rm.status, 0, rm.stderr);
  t.false(podman(['ps', '-aq', '--no-trunc']).stdout.split('\n').includes(c.id));
  t.deepEqual(await leftovers(f), []);
  t.false(spawnSync('runc', ['--root', runcRoot(c.id), 'list', '-q'], { encoding: 'utf8' }).stdout.split('\n').includes(c.id), 'runc no longer lists it');
});

test.serial('two containers of the image at once are both restored and independent', async (t) => {
  const [a, b] = [runDetached(), runDetached()];
  t.teardown(() => podman(['rm', '-f', '-t', '0', a.id, b.id]));
  const [ra, rb] = [await assertRestored(t, a), await assertRestored(t, b)];
  t.is(ra, rb, 'both continue from the same checkpoint');
  await httpGet(a.port);
  t.is((await httpGet(a.port)).served, ra + 2);
  t.is((await httpGet(b.port)).served, rb + 1, "a's requests do not move b's count");
  const [fa, fb] = [footprintOf(a.id), footprintOf(b.id)];
  t.not(fa.netns, fb.netns, 'each in a network namespace of its own');
  t.not(inspect(a.id).NetworkSettings.IPAddress, inspect(b.id).NetworkSettings.IPAddress);
});

test.serial('podman run -t of the image baked without a terminal starts cold, says why in podman logs, and works', async (t) => {
  const c = runDetached(['-t']);
  t.teardown(() => podman(['rm', '-f', '-t', '0', c.id]));
  t.is((await httpGet(c.port)).served, 1, 'a cold start');
  const logs = podman(['logs', c.id]);
  t.regex(logs.stdout + logs.stderr, /cold start: the checkpoint was baked without a terminal, the container asks for one/);
  t.regex(logs.stdout, /noop listening on 8080/, 'the function started afresh, on its terminal');
  const f = footprintOf(c.id);
  t.false(existsSync(f.dirs.prebake!), 'no prebake state for a cold start');
  t.is(podman(['stop', '-t', '5', c.id]).status, 0);
  t.is(podman(['wait', c.id]).stdout.trim(), '0');
  t.deepEqual(await leftovers(f), []);
});

test.serial('-e PREBAKE_CHECKPOINT=off starts the container cold although podman copies the image\'s checkpoint annotation', async (t) => {
  const c = runDetached(['-e', 'PREBAKE_CHECKPOINT=off']);
  t.teardown(() => podman(['rm', '-f', '-t', '0', c.id]));
  t.is(inspect(c.id).Config.Annotations?.['io.prebake.checkpoint'], '/.prebake', "the image's annotation is in the container's config");
  t.is((await httpGet(c.port)).served, 1, 'a cold start');
  const logs = podman(['logs', c.id]);
  t.regex(logs.stdout + logs.stderr, /cold start: checkpoint turned off by env PREBAKE_CHECKPOINT/);
  t.false(existsSync(footprintOf(c.id).dirs.prebake!), 'no prebake state for a cold start');
});
