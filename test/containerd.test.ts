// containerd through ctr against a real containerd started by the test: an image baked with
// prebake-build --target containerd is restored by `ctr run --runc-binary bin/prebake`, with
// loopback up in its new network namespace; exec, ps, pause and resume work in it, its exit
// status reaches ctr, two tasks of the image are independent, and a terminal run starts cold.

import test, { type ExecutionContext } from 'ava';
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PREBAKE, REPO, uniqueName } from '../lab/bundle.ts';
import { argvRecorder, bakeNoopInto, type Containerd, footprintLeft, type Footprint, isMounted, processesInNetns, startContainerd } from './helpers/engines.ts';
import { cniNetwork } from '../lab/engines/cni.ts';
import { noopImage } from './helpers/images.ts';
import { lazyPagesDaemons } from './helpers/bundle.ts';

const IMAGE = 'docker.io/prebake/noop:baked';
let ctd: Containerd;
let env: NodeJS.ProcessEnv;
let dir: string;
let recorder: ReturnType<typeof argvRecorder> | undefined;
/** What the lifecycle tests hand ctr as --runc-binary: prebake behind a line that records each argv. */
let runtime: string;

test.before(async (t) => {
  dir = mkdtempSync(join(tmpdir(), 'prebake-ctr-test-'));
  recorder = argvRecorder(dir);
  runtime = recorder.runtime;
  ctd = await startContainerd();
  env = { ...process.env, CONTAINERD_ADDRESS: ctd.socket };
  await bakeNoopInto(t, 'containerd', 'containerd:prebake/noop:baked', env);
});

test.after.always(async (t) => {
  const shapes = recorder?.shapes((l: string) => l.replaceAll(ctd.state, '<state>').replace(/\bctr-\w+-\d+-\d+\b/g, '$ID').replace(/\/tmp\/runc-process\d+/g, '<tmp>'));
  if (shapes?.length) t.log(`argv the runc shim sent to the runtime:\n${shapes.join('\n')}`);
  await ctd?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const ctr = (args: string[]) => spawnSync('ctr', args, { env, encoding: 'utf8' });

/** Kills and removes a container's task and the container, whatever state they are in (a test's teardown). */
function removeTask(id: string): void {
  ctr(['task', 'kill', '-s', 'KILL', id]);
  ctr(['task', 'delete', '-f', id]);
  ctr(['container', 'delete', id]);
}

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
  t.teardown(() => removeTask(id));
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

/** Bakes the noop image into containerd as docker.io/prebake/noop:<tag> with prebake-build's `flags`. */
async function bakeNoopTag(t: ExecutionContext, tag: string, flags: string[]): Promise<void> {
  const r = spawnSync(join(REPO, 'bin/prebake-build'), ['--quiet', ...flags, `oci:${await noopImage()}:latest`, `containerd:prebake/noop:${tag}`], { env, encoding: 'utf8' });
  t.is(r.status, 0, r.stderr);
}

test.serial('an image baked for two targets carries both checkpoints; ctr restores the containerd one', async (t) => {
  await bakeNoopTag(t, 'multi', ['--target', 'runc', '--target', 'containerd']);
  const id = 'multi';
  t.teardown(() => removeTask(id));
  t.is(ctr(['run', '-d', '--runc-binary', PREBAKE, 'docker.io/prebake/noop:multi', id]).status, 0);
  t.true(get(await taskPid(id)).served > 1);
  const log = spawnSync('cat', [join(ctd.state, 'io.containerd.runtime.v2.task/default', id, 'log.json')], { encoding: 'utf8' }).stdout;
  t.regex(log, /"msg":"restored multi from \/\.prebake\/containerd /);
});

test.serial('a lazy bake restores under ctr: the shim starts prebake, CRIU serves the pages, and no daemon or zombie is left', async (t) => {
  await bakeNoopTag(t, 'lazy', ['--memory', 'lazy', '--target', 'containerd']);
  const id = 'lazy';
  t.teardown(() => removeTask(id));
  t.is(ctr(['run', '-d', '--runc-binary', PREBAKE, 'docker.io/prebake/noop:lazy', id]).status, 0);
  const pid = await taskPid(id);
  t.true(get(pid).served > 1, 'a cold start would answer served 1');
  t.true(taskLog(id).some((l) => /^restored lazy from \/\.prebake .*memory restored lazily/.test(l.msg)), JSON.stringify(taskLog(id)));
  // The daemon outlives the create (its parent gone, the shim, a subreaper, adopts it) and exits
  // once every page is in: none may remain, running or unreaped, under the shim.
  const shim = Number(readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[1]);
  const lazyDaemons = () => lazyPagesDaemons(`/${id}/`);
  for (let i = 0; i < 250 && lazyDaemons().length; i++) await new Promise((res) => setTimeout(res, 20));
  t.deepEqual(lazyDaemons(), [], 'the lazy-pages daemon is gone, reaped');
  const kids = readFileSync(`/proc/${shim}/task/${shim}/children`, 'utf8').trim().split(/\s+/).filter(Boolean);
  t.deepEqual(kids.filter((k) => readFileSync(`/proc/${k}/stat`, 'utf8').includes(') Z ')), [], 'no zombie under the shim');
  t.true(get(pid).served > 2, 'still serving once the daemon is gone');
});

/** The runc shim's runc root for the default namespace (prebake's state mirrors it under /run/prebake). */
const RUNC_ROOT = '/run/containerd/runc/default';

function footprintOf(id: string, pid: number): Footprint {
  const bundle = join(ctd.state, 'io.containerd.runtime.v2.task/default', id);
  return {
    dirs: { runc: join(RUNC_ROOT, id), prebake: join(process.env.PREBAKE_STATE_DIR ?? '/run/prebake', RUNC_ROOT, id), bundle },
    pid,
    netns: statSync(`/proc/${pid}/ns/net`).ino,
    rootfs: join(bundle, 'rootfs'),
  };
}

/** prebake's log lines for a task (the shim's bundle dir holds log.json). */
function taskLog(id: string): { level: string; msg: string }[] {
  return readFileSync(join(ctd.state, 'io.containerd.runtime.v2.task/default', id, 'log.json'), 'utf8')
    .split('\n')
    .filter((l) => l.includes('"msg"'))
    .map((l) => JSON.parse(l));
}

/** An attached `ctr run` (or anything else) as a child, its output collected. */
function attached(cmd: string, args: string[]): { child: ChildProcess; exited: Promise<number | null>; waitFor(re: RegExp): Promise<void> } {
  const child = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((r) => child.on('exit', r));
  const waitFor = async (re: RegExp) => {
    for (let i = 0; i < 200 && !re.test(out); i++) await new Promise((r) => setTimeout(r, 50));
    if (!re.test(out)) throw new Error(`output never matched ${re}: ${JSON.stringify(out)}`);
  };
  return { child, exited, waitFor };
}

test.serial('ctr task exec, ps, pause and resume in a restored task; kill -s KILL ends ctr run with 137 and leaves nothing behind', async (t) => {
  const id = uniqueName('ctr-life');
  const run = attached('ctr', ['run', '--rm', '--runc-binary', runtime, IMAGE, id]);
  t.teardown(() => {
    run.child.kill('SIGKILL');
    removeTask(id);
  });
  const pid = await taskPid(id);
  const served = get(pid).served;
  t.true(served > 1, `served ${served}: a cold start would say 1`);
  t.true(taskLog(id).some((l) => l.msg.startsWith(`restored ${id} from /.prebake`)));
  const f = footprintOf(id, pid);
  for (const [k, d] of Object.entries(f.dirs)) t.true(existsSync(d), `${k} state at ${d} while the task runs`);
  t.true(isMounted(f.rootfs), `rootfs ${f.rootfs} mounted while the task runs`);

  // The exec lingers a moment after printing: ctr can lose the output of a process that exits
  // before its I/O copy has started (a race of ctr's, seen under load with runc alone as well).
  const exec = ctr(['task', 'exec', '--exec-id', 'answer', id, 'python3', '-c', 'import time; print(6*7, flush=True); time.sleep(0.3)']);
  t.is(exec.stdout.trim(), '42', exec.stderr);
  t.is(ctr(['task', 'exec', '--exec-id', 'three', id, 'sh', '-c', 'exit 3']).status, 3, "an exec's exit status reaches ctr");
  // A detached exec's fifos stay where ctr made them: in our dir, not in /run/containerd/fifo.
  t.is(ctr(['task', 'exec', '-d', '--fifo-dir', join(dir, 'fifo'), '--exec-id', 'sleeper', id, 'sleep', '600']).status, 0);
  let pids: number[] = [];
  for (let i = 0; i < 50 && pids.length < 2; i++) {
    pids = [...ctr(['task', 'ps', id]).stdout.matchAll(/^(\d+)\s/gm)].map((m) => Number(m[1]));
    if (pids.length < 2) await new Promise((r) => setTimeout(r, 50));
  }
  t.is(pids.length, 2, 'ctr task ps: the restored process and the exec');
  t.true(pids.includes(pid));
  t.deepEqual(processesInNetns(f.netns).sort(), pids.sort(), 'both in the restored network namespace');

  t.is(ctr(['task', 'pause', id]).status, 0);
  t.regex(ctr(['task', 'ls']).stdout, new RegExp(`^${id}\\s+${pid}\\s+PAUSED`, 'm'));
  t.is(ctr(['task', 'resume', id]).status, 0);
  t.regex(ctr(['task', 'ls']).stdout, new RegExp(`^${id}\\s+${pid}\\s+RUNNING`, 'm'));
  t.is(get(pid).served, served + 1, 'the same process serves on after resume');
  await run.waitFor(new RegExp(`request ${served + 1} GET /`));

  t.is(ctr(['task', 'kill', '-s', 'KILL', id]).status, 0);
  t.is(await run.exited, 137, 'ctr run returns 128 + SIGKILL');
  t.false(ctr(['container', 'ls', '-q']).stdout.split('\n').includes(id), '--rm removed the container');
  t.deepEqual(await footprintLeft(f), []);
});

test.serial('two tasks of the image at once are both restored and independent', async (t) => {
  const [a, b] = [uniqueName('ctr-two'), uniqueName('ctr-two')];
  t.teardown(() => {
    removeTask(a);
    removeTask(b);
  });
  for (const id of [a, b]) t.is(ctr(['run', '-d', '--runc-binary', runtime, IMAGE, id]).status, 0);
  const [pa, pb] = [await taskPid(a), await taskPid(b)];
  for (const id of [a, b]) t.true(taskLog(id).some((l) => l.msg.startsWith(`restored ${id} from /.prebake`)), id);
  const [fa, fb] = [footprintOf(a, pa), footprintOf(b, pb)];
  t.not(fa.netns, fb.netns, 'each in a network namespace of its own');
  const [ra, rb] = [get(pa).served, get(pb).served];
  t.true(ra > 1, `served ${ra}`);
  t.is(ra, rb, 'both continue from the same checkpoint');
  get(pa);
  t.is(get(pa).served, ra + 2);
  t.is(get(pb).served, rb + 1, "a's requests do not move b's count");
  // One goes, the other serves on.
  t.is(ctr(['task', 'kill', '-s', 'KILL', a]).status, 0);
  for (let i = 0; i < 100 && !new RegExp(`^${a}\\s+\\d+\\s+STOPPED`, 'm').test(ctr(['task', 'ls']).stdout); i++) await new Promise((r) => setTimeout(r, 50));
  const del = ctr(['task', 'delete', a]);
  t.regex(del.stderr, /exit code 137/, 'ctr task delete reports the exit status of the killed task');
  t.is(get(pb).served, rb + 2);
  t.is(ctr(['container', 'delete', a]).status, 0);
  t.deepEqual(await footprintLeft(fa), []);
  t.true(existsSync(fb.dirs.prebake!), "b's state is untouched");
});

test.serial('ctr run -t of the image baked without a terminal starts cold, says why, and works on its terminal', async (t) => {
  const id = uniqueName('ctr-tty');
  // ctr -t needs a terminal of its own: script(1) gives it one.
  const run = attached('script', ['-qec', `ctr run -t --rm --runc-binary ${runtime} ${IMAGE} ${id}`, '/dev/null']);
  t.teardown(() => {
    run.child.kill('SIGKILL');
    removeTask(id);
  });
  const pid = await taskPid(id);
  // A cold start: the function initialises afresh and says so on its terminal before it serves.
  await run.waitFor(/noop listening on 8080/);
  t.is(get(pid).served, 1, 'a cold start');
  t.regex(taskLog(id).find((l) => l.level === 'warning')?.msg ?? '', /^cold start: the checkpoint was baked without a terminal, the container asks for one$/);
  await run.waitFor(/request 1 GET \//);
  const f = footprintOf(id, pid);
  t.false(existsSync(f.dirs.prebake!), 'no prebake state for a cold start');
  t.is(ctr(['task', 'kill', '-s', 'TERM', id]).status, 0);
  t.is(await run.exited, 0, 'the exit status reaches ctr run through the terminal session');
  t.deepEqual(await footprintLeft(f), []);
});

test.serial('a task joining a network namespace by path (ctr --with-ns) is not restored into CRIU\'s own: it starts cold there and serves', async (t) => {
  // The image was baked in a namespace runc made: CRIU saved it and would re-create it on restore,
  // leaving the process unreachable in the namespace the task asked for.
  const id = uniqueName('ctr-withns');
  const netns = uniqueName('pbc');
  execFileSync('ip', ['netns', 'add', netns]);
  execFileSync('ip', ['netns', 'exec', netns, 'ip', 'link', 'set', 'lo', 'up']);
  t.teardown(() => {
    removeTask(id);
    spawnSync('ip', ['netns', 'delete', netns]);
  });
  const run = ctr(['run', '-d', '--runc-binary', PREBAKE, '--with-ns', `network:/var/run/netns/${netns}`, IMAGE, id]);
  t.is(run.status, 0, run.stderr);
  const pid = await taskPid(id);
  t.is(statSync(`/proc/${pid}/ns/net`).ino, statSync(`/var/run/netns/${netns}`).ino, 'the task runs in the namespace it asked for');
  let answer: { served: number } | undefined;
  for (let i = 0; i < 100 && !answer; i++) {
    const c = spawnSync('ip', ['netns', 'exec', netns, 'curl', '-s', '-m', '2', 'http://127.0.0.1:8080/'], { encoding: 'utf8' });
    if (c.status === 0 && c.stdout) answer = JSON.parse(c.stdout) as { served: number };
    else await new Promise((r) => setTimeout(r, 50));
  }
  t.is(answer?.served, 1, 'a cold start, reachable in the namespace');
  const warning = taskLog(id).find((l) => l.level === 'warning');
  t.log(warning?.msg);
  t.regex(warning?.msg ?? '', /cold start: the checkpoint was baked in a network namespace of its own, the container asks for a network namespace joined by path/);
});

test.serial('an image baked with --target containerd-netns restores into a CNI network namespace joined by path and answers on its CNI address; with --target containerd beside it, a plain ctr run restores too', async (t) => {
  await bakeNoopTag(t, 'cni', ['--target', 'containerd-netns', '--target', 'containerd']);
  const net = cniNetwork('prebake-ctr0', '10.250.78');
  const [id, plain, netns] = [uniqueName('ctr-cni'), uniqueName('ctr-cni-plain'), uniqueName('pbcni')];
  t.teardown(() => {
    removeTask(id);
    removeTask(plain);
    net.remove();
  });
  const { path, ip } = net.add(netns);
  const run = ctr(['run', '-d', '--runc-binary', PREBAKE, '--with-ns', `network:${path}`, 'docker.io/prebake/noop:cni', id]);
  t.is(run.status, 0, run.stderr);
  const pid = await taskPid(id);
  t.is(statSync(`/proc/${pid}/ns/net`).ino, statSync(path).ino, 'the restored task is in the namespace it joined');
  let answer: { served: number } | undefined;
  for (let i = 0; i < 100 && !answer; i++) {
    try {
      answer = (await (await fetch(`http://${ip}:8080/`, { signal: AbortSignal.timeout(2000) })).json()) as { served: number };
    } catch {
      await new Promise((res) => setTimeout(res, 50));
    }
  }
  t.true((answer?.served ?? 0) > 1, `restored, answering on its CNI address ${ip} (a cold start would answer served 1): ${JSON.stringify(answer)}`);
  t.true(taskLog(id).some((l) => /^restored .* from \/\.prebake\/containerd-netns /.test(l.msg)), JSON.stringify(taskLog(id)));
  // The checkpoint for a joined namespace left it out; a task with a namespace of its own gets
  // the other checkpoint, which CRIU saved its namespace in.
  t.is(ctr(['run', '-d', '--runc-binary', PREBAKE, 'docker.io/prebake/noop:cni', plain]).status, 0);
  t.true(get(await taskPid(plain)).served > 1, 'a plain ctr run of the same image restores as well');
  t.true(taskLog(plain).some((l) => /^restored .* from \/\.prebake\/containerd /.test(l.msg)), JSON.stringify(taskLog(plain)));
});
