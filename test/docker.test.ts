// docker run --runtime=prebake against a real dockerd (and containerd) started by the test: an
// image baked by prebake-build --target docker is restored, serves on a published port, logs,
// stops with its exit status, and falls back to a cold start when the container does not fit;
// attached `run --rm`, kill and rm -f end it with nothing left of its runtime state.

import test from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { REPO } from '../lab/bundle.ts';
import { noopImage } from './helpers/images.ts';
import { argvRecorder, bakeNoopInto, type Containerd, type Dockerd, httpGet, footprintLeft, type Footprint, isMounted, processesInNetns, startContainerd, startDockerd } from './helpers/engines.ts';

const IMAGE = 'prebake/noop:baked';
let ctd: Containerd;
let dk: Dockerd;
let dir: string;
let recorder: ReturnType<typeof argvRecorder> | undefined;
let port = 18100 + (process.pid % 400);

test.before(async (t) => {
  dir = mkdtempSync(join(tmpdir(), 'prebake-docker-test-'));
  recorder = argvRecorder(dir);
  ctd = await startContainerd();
  dk = await startDockerd(ctd, { runtimePath: recorder.runtime });
  await bakeNoopInto(t, 'docker', `docker-daemon:${IMAGE}`, dk.env);
});

test.after.always(async (t) => {
  // Each distinct call shape once, with the container id as $ID and its bundle dir as $B.
  const shapes = recorder?.shapes((l: string) => l.replace(/\S*\/([0-9a-f]{64})(?=[/\s])/g, '$B').replace(/[0-9a-f]{64}/g, '$ID').replace(/\/tmp\/\S+?(\d+)(?=[\s.])/g, '<tmp>'));
  if (shapes?.length) t.log(`argv dockerd sent to the runtime:\n${shapes.join('\n')}`);
  await dk?.stop();
  await ctd?.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** prebake's log for a running container: dockerd's bundle dir in containerd's state. */
function prebakeLog(id: string): { level: string; msg: string }[] {
  const file = join(ctd.state, 'io.containerd.runtime.v2.task/moby', id, 'log.json');
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.includes('"msg"'))
    .map((l) => JSON.parse(l));
}

/** A running docker container's footprint: runc's and prebake's state under dockerd's runc root, containerd's bundle. */
async function footprintOf(id: string): Promise<Footprint> {
  const root = join(dk.execRoot, 'runtime-runc/moby');
  const st = JSON.parse(await dk.docker(['inspect', id]))[0];
  return {
    dirs: {
      runc: join(root, id),
      prebake: join(process.env.PREBAKE_STATE_DIR ?? '/run/prebake', root, id),
      bundle: join(ctd.state, 'io.containerd.runtime.v2.task/moby', id),
    },
    pid: st.State.Pid as number,
    // dockerd unmounts the namespace's file lazily (a periodic sweep): what must go at once is every process in it.
    netns: statSync(st.NetworkSettings.SandboxKey as string).ino,
    rootfs: st.GraphDriver.Data.MergedDir as string,
  };
}

async function runDetached(args: string[]): Promise<{ id: string; port: number }> {
  const p = port++;
  const id = (await dk.docker(['run', '-d', '--runtime=prebake', '-p', `127.0.0.1:${p}:8080`, ...args])).trim();
  return { id, port: p };
}

test.serial('docker run -d restores the baked function: HTTP on the published port, docker logs after the restore', async (t) => {
  const { id, port: p } = await runDetached([IMAGE]);
  t.teardown(() => dk.docker(['rm', '-f', id]));
  const first = await httpGet(p);
  t.true(first.served > 1, `served ${first.served}: a cold start would say 1`);
  t.true(prebakeLog(id).some((l) => /^restored /.test(l.msg)));
  const logs = await dk.docker(['logs', id]);
  t.regex(logs, new RegExp(`request ${first.served} GET /`), 'output written after the restore reaches docker logs');
  const inspect = JSON.parse(await dk.docker(['inspect', id]))[0];
  t.is(inspect.State.Status, 'running');
  t.regex(inspect.NetworkSettings.IPAddress, /^\d+\.\d+\.\d+\.\d+$/);
  // The replica has the hostname docker gave it, not the bake's (its environment keeps the baked HOSTNAME).
  t.is((await dk.docker(['exec', id, 'hostname'])).trim(), inspect.Config.Hostname);
  t.not(inspect.Config.Hostname, 'prebake');
});

test.serial('two containers of the image at once are both restored, each with its own address', async (t) => {
  const a = await runDetached([IMAGE]);
  const b = await runDetached([IMAGE]);
  t.teardown(() => dk.docker(['rm', '-f', a.id, b.id]));
  const [ra, rb] = [await httpGet(a.port), await httpGet(b.port)];
  t.true(ra.served > 1 && rb.served > 1);
  t.is(ra.served, rb.served, 'both continue from the same checkpoint');
  const ips = await Promise.all([a, b].map(async (c) => JSON.parse(await dk.docker(['inspect', c.id]))[0].NetworkSettings.IPAddress));
  t.not(ips[0], ips[1]);
});

test.serial('ten containers of the image started at once are all restored, each serving on its own', async (t) => {
  const cs = await Promise.all(Array.from({ length: 10 }, () => runDetached([IMAGE])));
  t.teardown(() => dk.docker(['rm', '-f', ...cs.map((c) => c.id)]));
  const answers = await Promise.all(cs.map((c) => httpGet(c.port)));
  for (const a of answers) t.true(a.served > 1, `served ${a.served}`);
  // One more request to the first moves its count only.
  await httpGet(cs[0]!.port);
  const again = await Promise.all(cs.map((c) => httpGet(c.port)));
  t.deepEqual(
    again.map((a) => a.served),
    answers.map((a, i) => a.served + (i === 0 ? 2 : 1)),
  );
});

test.serial('exec, top, pause and unpause work on a restored container; stop hands its exit status to docker', async (t) => {
  const { id, port: p } = await runDetached([IMAGE]);
  t.teardown(() => dk.docker(['rm', '-f', id]));
  t.true((await httpGet(p)).served > 1);
  t.is((await dk.docker(['exec', id, 'python3', '-c', 'print(6*7)'])).trim(), '42');
  t.regex(await dk.docker(['top', id]), /function\.py/);
  await dk.docker(['pause', id]);
  t.is(JSON.parse(await dk.docker(['inspect', id]))[0].State.Status, 'paused');
  await dk.docker(['unpause', id]);
  t.true((await httpGet(p)).served > 2);
  await dk.docker(['stop', '-t', '5', id]);
  const state = JSON.parse(await dk.docker(['inspect', id]))[0].State;
  t.is(state.Status, 'exited');
  t.is(state.ExitCode, 0, 'the function exits 0 on SIGTERM');
  t.is((await dk.docker(['wait', id])).trim(), '0');
});

test.serial('a container that drops capabilities, or runs another command, starts cold and says why', async (t) => {
  const { id, port: p } = await runDetached(['--cap-drop', 'ALL', IMAGE]);
  t.teardown(() => dk.docker(['rm', '-f', id]));
  t.is((await httpGet(p)).served, 1);
  const warning = prebakeLog(id).find((l) => l.level === 'warning');
  t.regex(warning?.msg ?? '', /cold start: security: baked bounding capabilities .*CAP_CHOWN/);
  // The process that serves holds exactly what --cap-drop ALL leaves: nothing.
  const pid = JSON.parse(await dk.docker(['inspect', id]))[0].State.Pid as number;
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  for (const set of ['CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb']) t.regex(status, new RegExp(`^${set}:\\s+0{16}$`, 'm'), set);
  const out = await dk.docker(['run', '--rm', '--runtime=prebake', IMAGE, 'python3', '-c', 'print("asked for")']);
  t.is(out.trim(), 'asked for');
});

test.serial('docker restart restores the container again', async (t) => {
  const { id, port: p } = await runDetached([IMAGE]);
  t.teardown(() => dk.docker(['rm', '-f', id]));
  t.true((await httpGet(p)).served > 1);
  await dk.docker(['restart', '-t', '5', id]);
  const again = await httpGet(p);
  t.true(again.served > 1, `served ${again.served} after restart: restored again`);
  // containerd makes the bundle (and its log.json) anew for the restarted task.
  t.true(prebakeLog(id).some((l) => /^restored /.test(l.msg)));
});

test.serial('a container that does not fit the checkpoint starts cold, works, and the log says why', async (t) => {
  const cases: [string[], RegExp][] = [
    [['-t'], /baked without a terminal, the container asks for one/],
    [['--read-only'], /readonly rootfs false was baked, the container asks for true/],
    [['--user', '1000'], /user 0:0 was baked, the container asks for 1000:0/],
    [['-v', `${dir}:/data`], /mount destinations differ .*\+\/data/],
    [['-e', 'DEBUG=1'], /environment differs .*\+DEBUG/],
  ];
  for (const [flags, reason] of cases) {
    const { id, port: p } = await runDetached([...flags, IMAGE]);
    t.teardown(() => dk.docker(['rm', '-f', id]));
    t.is((await httpGet(p)).served, 1, `${flags.join(' ')}: a cold start`);
    t.regex(prebakeLog(id).find((l) => l.level === 'warning')?.msg ?? '', reason, flags.join(' '));
  }
});

test.serial('an image that is not prebaked runs through prebake as through runc', async (t) => {
  const out = await dk.docker(['run', '--rm', '--runtime=prebake', 'prebake/spec-probe:1', '/bin/busybox', 'echo', 'plain']);
  t.is(out.trim(), 'plain');
  const r = spawnSync('docker', ['run', '--rm', '--runtime=prebake', 'prebake/spec-probe:1', '/bin/busybox', 'sh', '-c', 'exit 3'], { env: dk.env });
  t.is(r.status, 3);
});

test.serial('attached docker run --rm: restored, its output reaches the client, stop ends the run with 0 and removes everything', async (t) => {
  const p = port++;
  const name = `pbk-attached-${process.pid}`;
  const child = spawn('docker', ['run', '--rm', '--name', name, '--runtime=prebake', '-p', `127.0.0.1:${p}:8080`, IMAGE], { env: dk.env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((r) => child.on('exit', r));
  t.teardown(async () => {
    child.kill('SIGKILL');
    await dk.docker(['rm', '-f', name]).catch(() => {});
  });
  const first = await httpGet(p);
  t.true(first.served > 1, `served ${first.served}: a cold start would say 1`);
  const id = (await dk.docker(['inspect', '--format', '{{.Id}}', name])).trim();
  t.true(prebakeLog(id).some((l) => /^restored /.test(l.msg)));
  const f = await footprintOf(id);
  for (const [k, d] of Object.entries(f.dirs)) t.true(existsSync(d), `${k} state at ${d} while the container runs`);
  for (let i = 0; i < 100 && !out.includes(`request ${first.served} GET /`); i++) await new Promise((r) => setTimeout(r, 50));
  t.regex(out, new RegExp(`request ${first.served} GET /`), 'what the restored process prints reaches the attached client');
  await dk.docker(['stop', '-t', '5', name]);
  t.is(await exited, 0, 'docker run returns the exit status of the restored process (0 on SIGTERM)');
  t.is((await dk.docker(['ps', '-aq', '--filter', `name=^${name}$`])).trim(), '', '--rm removed the container');
  t.deepEqual(await footprintLeft(f), []);
});

test.serial('docker kill of a restored container: the exit status of the signal reaches inspect and docker wait; its state is gone', async (t) => {
  const a = await runDetached([IMAGE]);
  const b = await runDetached([IMAGE]);
  t.teardown(() => dk.docker(['rm', '-f', a.id, b.id]));
  t.true((await httpGet(a.port)).served > 1);
  t.true((await httpGet(b.port)).served > 1);
  const fa = await footprintOf(a.id);
  const fb = await footprintOf(b.id);
  await dk.docker(['kill', a.id]);
  t.is((await dk.docker(['wait', a.id])).trim(), '137', 'SIGKILL: 128 + 9');
  let state = JSON.parse(await dk.docker(['inspect', a.id]))[0].State;
  t.is(state.Status, 'exited');
  t.is(state.ExitCode, 137);
  t.false(state.OOMKilled);
  t.true((await httpGet(b.port)).served > 2, 'the other container is untouched');
  // The restored process kept the SIGTERM handler it had at bake time: it exits 0.
  await dk.docker(['kill', '--signal', 'TERM', b.id]);
  t.is((await dk.docker(['wait', b.id])).trim(), '0');
  state = JSON.parse(await dk.docker(['inspect', b.id]))[0].State;
  t.is(state.Status, 'exited');
  t.is(state.ExitCode, 0);
  // An exited container keeps its docker record, but not its task: runc's and prebake's state are gone.
  t.deepEqual(await footprintLeft(fa), []);
  t.deepEqual(await footprintLeft(fb), []);
});

test.serial('docker rm -f of a running restored container leaves no runc state, prebake state, process or rootfs mount', async (t) => {
  const { id, port: p } = await runDetached([IMAGE]);
  t.teardown(() => dk.docker(['rm', '-f', id]).catch(() => {}));
  t.true((await httpGet(p)).served > 1);
  t.true(prebakeLog(id).some((l) => /^restored /.test(l.msg)));
  const f = await footprintOf(id);
  for (const [k, d] of Object.entries(f.dirs)) t.true(existsSync(d), `${k} state at ${d} while the container runs`);
  t.deepEqual(processesInNetns(f.netns), [f.pid], 'the restored process is in the network namespace docker made');
  t.true(isMounted(f.rootfs), `its rootfs ${f.rootfs} is mounted while it runs`);
  t.true(existsSync(join(f.dirs.prebake!, 'criu')), 'prebake state holds the restore of this container');
  await dk.docker(['rm', '-f', id]);
  t.is((await dk.docker(['ps', '-aq', '--no-trunc'])).split('\n').filter((l) => l === id).length, 0);
  t.deepEqual(await footprintLeft(f), []);
  const list = spawnSync('runc', ['--root', join(dk.execRoot, 'runtime-runc/moby'), 'list', '-q'], { encoding: 'utf8' });
  t.false(list.stdout.split('\n').includes(id), 'runc no longer lists it');
});

test.serial('a create that fails shows the engine the same one-line error through prebake as through runc', async (t) => {
  // Another command than the baked one: prebake starts it cold, and runc's create fails.
  const attempt = (runtime: string) => spawnSync('docker', ['run', '--rm', `--runtime=${runtime}`, IMAGE, '/no/such/binary'], { env: dk.env, encoding: 'utf8' });
  const [viaRunc, viaPrebake] = [attempt('runc'), attempt('prebake')];
  // docker's own hint ("Run 'docker run --help'") follows the daemon's one line; its warnings
  // about the host ("IPv4 forwarding is disabled") come before it.
  const message = (r: ReturnType<typeof attempt>) => r.stderr.trim().split('\n').find((l) => !l.startsWith('WARNING:'))!.replace(/[0-9a-f]{64}/g, '$ID');
  t.log(`docker run with prebake: ${message(viaPrebake)}`);
  t.not(viaRunc.status, 0);
  t.is(viaPrebake.status, viaRunc.status);
  t.regex(message(viaPrebake), /^docker: Error response from daemon: .*OCI runtime create failed: .*"\/no\/such\/binary": stat \/no\/such\/binary: no such file or directory/);
  t.is(message(viaPrebake), message(viaRunc));
});

/** dockerd's daemon.json replaced by `conf` and reloaded (SIGHUP); resolves once `docker info` lists exactly `names`. */
async function reloadRuntimes(conf: Record<string, unknown>, names: string[]): Promise<void> {
  writeFileSync(join(dirname(dk.dataRoot), 'daemon.json'), JSON.stringify(conf));
  process.kill(Number(readFileSync(dk.pidfile, 'utf8').trim()), 'SIGHUP');
  const want = (r: Record<string, unknown>) => names.every((n) => n in r) && !['prebake', 'pbk-alt'].some((n) => !names.includes(n) && n in r);
  for (let i = 0; i < 200; i++) {
    if (want(JSON.parse(await dk.docker(['info', '--format', '{{json .Runtimes}}'])))) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`dockerd did not reload its runtimes to ${names.join(', ')}`);
}

test.serial('prebake registered under another name: prebake-build --runtime NAME bakes through it, and docker run --runtime=NAME restores', async (t) => {
  const file = join(dirname(dk.dataRoot), 'daemon.json');
  const original = JSON.parse(readFileSync(file, 'utf8')) as { runtimes: Record<string, { path: string }> };
  const { prebake, ...others } = original.runtimes;
  // Only the name changes: "prebake" is not registered while this test runs.
  await reloadRuntimes({ ...original, runtimes: { ...others, 'pbk-alt': prebake } }, ['pbk-alt']);
  t.teardown(() => reloadRuntimes(original, ['prebake']));
  const src = await noopImage();
  const bake = (extra: string[]) => spawnSync(join(REPO, 'bin/prebake-build'), ['--target', 'docker', ...extra, '--quiet', `oci:${src}:latest`, 'docker-daemon:prebake/noop:alt'], { env: dk.env, encoding: 'utf8' });
  const without = bake([]);
  t.is(without.status, 1, without.stderr);
  t.regex(without.stderr, /^prebake-build: --target docker: could not capture the engine's spec: no runtime named "prebake" is registered with dockerd .*--runtime NAME names another\)\n$/);
  const r = bake(['--runtime', 'pbk-alt']);
  t.is(r.status, 0, r.stderr);
  t.is(r.stdout, 'docker-daemon:prebake/noop:alt\n');
  const p = port++;
  const id = (await dk.docker(['run', '-d', '--runtime=pbk-alt', '-p', `127.0.0.1:${p}:8080`, 'prebake/noop:alt'])).trim();
  t.teardown(() => dk.docker(['rm', '-f', id]));
  const first = await httpGet(p);
  t.true(first.served > 1, `served ${first.served}: a cold start would say 1`);
  t.true(prebakeLog(id).some((l) => /^restored /.test(l.msg)), JSON.stringify(prebakeLog(id)));
});

