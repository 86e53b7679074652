// docker as users install it: the system containerd and dockerd with their default paths
// (/run/containerd/containerd.sock, /var/lib/docker, exec root /var/run/docker, which is /run/docker
// on Debian, where /var/run is a symlink to /run), started here only if no dockerd runs and stopped
// again, and prebake registered the way a user does it, `prebake install docker` (the default
// /etc/docker/daemon.json, dockerd reloaded with SIGHUP), `prebake uninstall docker` at the end. The
// noop function is baked into the system dockerd; a replica is restored, the containers that do not
// fit (capabilities dropped, read-only rootfs, another user, another command) start cold with the
// reason logged; the refused early restores leave no mount or state behind. ctr against the same
// system containerd (its default address and namespace) restores a --target containerd bake.

import test, { type ExecutionContext } from 'ava';
import { type ChildProcess, execFile, spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readdirSync, readFileSync, realpathSync, rmdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { PREBAKE } from '../lab/bundle.ts';
import { bakeNoopInto, httpGet } from './helpers/engines.ts';

const run = promisify(execFile);

const SOCKET = '/var/run/docker.sock';
const CONTAINERD_SOCKET = '/run/containerd/containerd.sock';
const DAEMON_JSON = '/etc/docker/daemon.json';
const STATE_BASE = process.env.PREBAKE_STATE_DIR ?? '/run/prebake';
const IMAGE = `prebake-system-test/noop:baked-${process.pid}`;
const SPEC_PROBE = 'prebake/spec-probe:1';
/** Where runc (and, under STATE_BASE, prebake) keep a docker container's state: both spellings of the exec root. */
const RUNC_ROOTS = ['/var/run/docker/runtime-runc/moby', '/run/docker/runtime-runc/moby'];

const onPath = (cmd: string) => spawnSync(cmd, ['--version'], { stdio: 'ignore' }).error === undefined;
const missing = ['docker', 'dockerd'].filter((c) => !onPath(c));
/** Debian's package, or (on a host without dpkg) its commands on PATH. */
const dpkgSays = spawnSync('dpkg-query', ['-W', '-f=${db:Status-Abbrev}', 'docker.io'], { encoding: 'utf8' });
const packaged = dpkgSays.error ? missing.length === 0 : dpkgSays.status === 0 && dpkgSays.stdout.startsWith('ii');
const skipReason = packaged ? '' : `docker.io is not installed${missing.length ? ` (no ${missing.join(', ')} on PATH)` : ''}`;
if (skipReason) console.log(`system-docker.test.ts: skipped: ${skipReason}`);
const serial = (title: string, fn: (t: ExecutionContext) => Promise<void>) =>
  skipReason ? test.serial.skip(`${title} [skipped: ${skipReason}]`, () => {}) : test.serial(title, fn);

interface Started {
  name: string;
  child: ChildProcess;
  exited: Promise<void>;
  /** Set once it has ended (or could not be started). */
  ended?: string;
  log: string;
}

let dir = '';
let env: NodeJS.ProcessEnv = process.env;
const started: Started[] = [];
let daemonJsonBefore: Buffer | null = null;
let installed = false;
let uninstalled = false;
let bakedProbe = false;
let mountsBefore: string[] = [];
let statePartsBefore: string[] = [];
let counter = 0;
/** Every container this file made, by id: none may be left. */
const ours = new Set<string>();
const names: string[] = [];

// ctr waits 10 s for a socket that is not there unless told otherwise.
const ctrOk = () => existsSync(CONTAINERD_SOCKET) && spawnSync('ctr', ['--connect-timeout', '2s', '--address', CONTAINERD_SOCKET, 'version'], { stdio: 'ignore', timeout: 10_000 }).status === 0;
/** ctr against the system containerd, its default address and namespace (no CONTAINERD_ADDRESS, no -n). */
const systemEnv = (): NodeJS.ProcessEnv => {
  const e = { ...env };
  delete e.CONTAINERD_ADDRESS;
  delete e.CONTAINERD_NAMESPACE;
  return e;
};
const ctr = (args: string[]) => spawnSync('ctr', args, { env: systemEnv(), encoding: 'utf8' });

async function docker(args: string[]): Promise<string> {
  try {
    return (await run('docker', args, { env, maxBuffer: 64 << 20 })).stdout;
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new Error(`docker ${args.join(' ')}: ${(err.stderr || err.message).trim()}`, { cause: e });
  }
}

const dockerOk = (args: string[]) => spawnSync('docker', args, { env, stdio: 'ignore', timeout: 10_000 }).status === 0;

/** Starts a system daemon with its default paths, its output to a log under our temp dir. */
function startDaemon(name: string, cmd: string, args: string[]): Started {
  const log = join(dir, `${name}.log`);
  const fd = openSync(log, 'a');
  // A process group of its own: a Ctrl-C of ava must not stop it before its containers are removed.
  const child = spawn(cmd, args, { stdio: ['ignore', fd, fd], detached: true });
  closeSync(fd);
  const s: Started = { name, child, exited: Promise.resolve(), log };
  s.exited = new Promise<void>((r) => {
    child.once('exit', (code, signal) => {
      s.ended = signal ?? `exit ${code}`;
      r();
    });
    child.once('error', (e) => {
      s.ended ??= `not started: ${e.message}`;
      r();
    });
  });
  started.push(s);
  return s;
}

const tail = (s: Started) => (existsSync(s.log) ? readFileSync(s.log, 'utf8').trim().split('\n').slice(-5).join(' | ') : '');

async function waitServing(s: Started, probe: () => boolean, timeoutMs = 60_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!probe()) {
    if (s.ended) throw new Error(`${s.name} ended (${s.ended}): ${tail(s)}`);
    if (Date.now() > end) throw new Error(`${s.name} not serving after ${timeoutMs / 1000} s: ${tail(s)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** SIGTERM, SIGKILL after 30 s; resolves once it has exited. */
async function stopDaemon(s: Started): Promise<void> {
  if (!s.ended) {
    s.child.kill('SIGTERM');
    const timer = setTimeout(() => s.child.kill('SIGKILL'), 30_000);
    await s.exited;
    clearTimeout(timer);
  }
}

/**
 * `prebake install|uninstall docker` SIGHUPs every dockerd on the host (`pkill -HUP -x dockerd`),
 * and a dockerd that has not yet installed its reload handler dies of it: the private dockerds of
 * the test files running beside this one. Before each, wait (up to 60 s) until every dockerd on
 * the host serves its API (which it does only once the handler is in place).
 */
async function dockerdsSettled(): Promise<void> {
  const end = Date.now() + 60_000;
  for (;;) {
    const starting: string[] = [];
    for (const p of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
      let argv: string[];
      try {
        if (readFileSync(`/proc/${p}/comm`, 'utf8').trim() !== 'dockerd') continue;
        argv = readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0');
      } catch {
        continue;
      }
      const hosts = argv.flatMap((a, i) => (a === '-H' || a === '--host' ? [argv[i + 1] ?? ''] : /^(-H|--host)=/.test(a) ? [a.replace(/^[^=]*=/, '')] : []));
      const sockets = (hosts.length ? hosts : [`unix://${SOCKET}`]).filter((h) => h.startsWith('unix://')).map((h) => h.slice('unix://'.length));
      const serving = sockets.some((s) => spawnSync('curl', ['-s', '-m', '2', '--unix-socket', s, 'http://docker/_ping'], { encoding: 'utf8' }).stdout === 'OK');
      if (!serving && sockets.length) starting.push(p);
    }
    if (!starting.length || Date.now() > end) return;
    await new Promise((r) => setTimeout(r, 200));
  }
}

function prebake(args: string[]): { status: number | null; out: string } {
  const r = spawnSync(PREBAKE, args, { env, encoding: 'utf8' });
  return { status: r.status, out: `${r.stdout}${r.stderr}`.trim() };
}

async function waitRuntimes(registered: boolean): Promise<void> {
  const end = Date.now() + 20_000;
  for (;;) {
    const runtimes = await docker(['info', '--format', '{{json .Runtimes}}']);
    if (/"prebake"/.test(runtimes) === registered) return;
    if (Date.now() > end) throw new Error(`dockerd's runtimes after 20 s: ${runtimes.trim()} (prebake ${registered ? 'missing' : 'still there'})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** mountinfo lines of runc's and prebake's state of the system dockerd's containers (either spelling of its exec root). */
function stateMounts(): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((l) => /criu-root|\/run\/prebake|runtime-runc/.test(l) && l.includes('/run/docker/'));
}

/** The state dirs a container of the system dockerd has: runc's and prebake's, under both spellings. */
const stateDirsOf = (id: string) => RUNC_ROOTS.flatMap((r) => [join(r, id), join(STATE_BASE, r, id)]);

/**
 * prebake's state parents for the system dockerd, outermost first, for removal when they were not
 * there before (and are empty); not <state>/run, which the other engines' state shares.
 */
const stateParents = () =>
  RUNC_ROOTS.flatMap((r) => r.split('/').slice(1).map((_, i, a) => join(STATE_BASE, ...a.slice(0, i + 1)))).filter((d, i, all) => all.indexOf(d) === i && d !== join(STATE_BASE, 'run'));

/** prebake's log for a running container: the --log file dockerd gives the runtime, in containerd's bundle dir. */
function prebakeLog(id: string): { level: string; msg: string }[] {
  const bundles = ['/run/containerd', '/run/docker/containerd/daemon'].map((s) => join(s, 'io.containerd.runtime.v2.task/moby', id));
  const bundle = bundles.find((b) => existsSync(join(b, 'log.json')));
  if (!bundle) throw new Error(`no log.json in ${bundles.join(' or ')}`);
  return readFileSync(join(bundle, 'log.json'), 'utf8')
    .split('\n')
    .filter((l) => l.includes('"msg"'))
    .map((l) => JSON.parse(l));
}

function nameOf(): string {
  const name = `pbk-sys-${process.pid}-${++counter}`;
  names.push(name);
  return name;
}

/**
 * `docker run --runtime=prebake --name <unique> ARGS`; the container's id is kept (from --cidfile,
 * which docker writes before the runtime is called: also when the runtime's create fails).
 */
function dockerRun(t: ExecutionContext, args: string[]): { status: number | null; stdout: string; stderr: string } {
  const name = nameOf();
  const cidfile = join(dir, `${name}.cid`);
  t.teardown(() => docker(['rm', '-f', name]).catch(() => {}));
  const r = spawnSync('docker', ['run', '--name', name, '--cidfile', cidfile, '--runtime=prebake', ...args], { env, encoding: 'utf8' });
  if (existsSync(cidfile)) ours.add(readFileSync(cidfile, 'utf8').trim());
  return r;
}

/** `docker run -d` with 8080 published on a loopback port docker picks; fails with docker's message. */
async function runDetached(t: ExecutionContext, args: string[]): Promise<{ id: string; port: number }> {
  const r = dockerRun(t, ['-d', '-p', '127.0.0.1::8080', ...args]);
  if (r.status !== 0) throw new Error(`docker run -d ${args.join(' ')}: exit ${r.status}: ${r.stderr.trim()}`);
  const id = r.stdout.trim();
  const port = Number((await docker(['port', id, '8080/tcp'])).trim().split('\n')[0]!.split(':').at(-1));
  return { id, port };
}

test.before(async (t) => {
  if (skipReason) return;
  if (missing.length) throw new Error(`docker.io is installed, but ${missing.join(' and ')} is not on PATH (${process.env.PATH})`);
  dir = mkdtempSync(join(tmpdir(), 'prebake-system-docker-'));
  // The system daemon, whatever a docker context or DOCKER_HOST of the caller says; a client config of our own.
  env = { ...process.env, DOCKER_HOST: `unix://${SOCKET}`, DOCKER_CONFIG: join(dir, 'client') };
  for (const k of ['DOCKER_CONTEXT', 'DOCKER_TLS_VERIFY', 'DOCKER_CERT_PATH']) delete env[k];
  t.log(`/var/run is ${existsSync('/var/run') ? realpathSync('/var/run') : 'absent'}; exec root /var/run/docker`);
  mountsBefore = stateMounts();
  statePartsBefore = stateParents().filter((d) => existsSync(d));
  daemonJsonBefore = existsSync(DAEMON_JSON) ? readFileSync(DAEMON_JSON) : null;

  const t0 = Date.now();
  if (dockerOk(['version'])) {
    t.log('a system dockerd runs: using it, it stays running');
  } else {
    // A dockerd that is still starting (its pid file names a live one) is the system's, not ours.
    const pid = existsSync('/var/run/docker.pid') ? Number(readFileSync('/var/run/docker.pid', 'utf8').trim()) : 0;
    if (pid && existsSync(`/proc/${pid}`)) throw new Error(`a system dockerd (pid ${pid}) runs but does not answer on ${SOCKET}`);
    if (!ctrOk()) {
      if (!onPath('containerd')) throw new Error('containerd is not installed (docker.io depends on it)');
      // containerd's defaults: /etc/containerd/config.toml if there is one, /var/lib/containerd, /run/containerd.
      const c = startDaemon('containerd', 'containerd', []);
      await waitServing(c, ctrOk);
      t.log(`started the system containerd (pid ${c.child.pid}), log ${c.log}`);
    }
    // As Debian's docker.service starts it (without systemd's -H fd://): every path its default.
    const d = startDaemon('dockerd', 'dockerd', [`--containerd=${CONTAINERD_SOCKET}`]);
    await waitServing(d, () => dockerOk(['version']));
    t.log(`started the system dockerd (pid ${d.child.pid}), log ${d.log}`);
  }
  const dockerRoot = (await docker(['info', '--format', '{{.DockerRootDir}}'])).trim();
  if (dockerRoot !== '/var/lib/docker') throw new Error(`the dockerd on ${SOCKET} keeps its data in ${dockerRoot}, not /var/lib/docker`);
  t.log(`dockerd up in ${Date.now() - t0} ms`);

  await dockerdsSettled();
  const inst = prebake(['install', 'docker']);
  t.log(`prebake install docker: ${inst.out}`);
  if (inst.status !== 0) throw new Error(`prebake install docker: exit ${inst.status}: ${inst.out}`);
  installed = /registered in/.test(inst.out);
  if (!installed) {
    // Registered already (by the user): it stays, and must be this checkout's prebake.
    const path = (JSON.parse(readFileSync(DAEMON_JSON, 'utf8')) as { runtimes?: { prebake?: { path?: string } } }).runtimes?.prebake?.path ?? '';
    if (!existsSync(path) || realpathSync(path) !== realpathSync(PREBAKE)) throw new Error(`${DAEMON_JSON} names another prebake (${path}) than ${PREBAKE}`);
  } else if (!/dockerd reloaded \(SIGHUP\)/.test(inst.out)) throw new Error(`prebake install docker did not reload dockerd: ${inst.out}`);
  await waitRuntimes(true);

  bakedProbe = !dockerOk(['image', 'inspect', SPEC_PROBE]);
  const t1 = Date.now();
  await bakeNoopInto(t, 'docker', `docker-daemon:${IMAGE}`, env);
  t.log(`baked ${IMAGE} into the system dockerd in ${Date.now() - t1} ms`);
});

test.after.always(async (t) => {
  if (skipReason) return;
  try {
    const left = names.filter((n) => dockerOk(['container', 'inspect', n]));
    if (left.length) await docker(['rm', '-f', ...left]).catch((e) => t.log(String(e)));
    if (dockerOk(['image', 'inspect', IMAGE])) await docker(['rmi', IMAGE]).catch((e) => t.log(String(e)));
    if (bakedProbe && dockerOk(['image', 'inspect', SPEC_PROBE])) await docker(['rmi', SPEC_PROBE]).catch((e) => t.log(String(e)));
    if (installed && !uninstalled) {
      await dockerdsSettled();
      const r = prebake(['uninstall', 'docker']);
      t.log(`prebake uninstall docker: ${r.out}`);
    }
  } finally {
    // What this file started, newest first (dockerd before its containerd), each waited for.
    for (const s of [...started].reverse()) {
      const t0 = Date.now();
      await stopDaemon(s);
      t.log(`stopped the ${s.name} started here (pid ${s.child.pid}, ${s.ended}) in ${Date.now() - t0} ms: ${tail(s).split(' | ').at(-1)}`);
    }
    // After a failure: what is left of our containers (a test has failed on it) goes, not to break the host.
    for (const l of stateMounts().filter((l) => !mountsBefore.includes(l) && [...ours].some((id) => l.includes(id)))) {
      const point = l.split(' ')[4]!.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
      spawnSync('umount', ['-l', point], { stdio: 'ignore' });
      t.log(`unmounted ${point}, left by a container of this file`);
    }
    for (const d of [...ours].flatMap(stateDirsOf)) {
      if (!existsSync(d)) continue; // or gone already under its other spelling
      // Never into a mount (criu-root is the container's rootfs).
      const real = realpathSync(d);
      if (readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => l.split(' ')[4]?.startsWith(real))) {
        t.log(`left ${d}: a mount under it remains`);
        continue;
      }
      rmSync(d, { recursive: true, force: true });
      t.log(`removed ${d}, left by a container of this file`);
    }
    if (started.length) for (const d of stateParents().reverse()) if (!statePartsBefore.includes(d)) try { rmdirSync(d); } catch { /* not empty or absent */ }
    const mounts = stateMounts().filter((l) => !mountsBefore.includes(l));
    if (mounts.length) t.log(`mounts left:\n${mounts.join('\n')}`);
    if (dir) rmSync(dir, { recursive: true, force: true });
  }
});

serial('docker run -d --runtime=prebake restores the baked function; exec hostname is the one docker gave it', async (t) => {
  const { id, port } = await runDetached(t, [IMAGE]);
  const first = await httpGet(port);
  t.true(first.served > 1, `served ${first.served}: a cold start would say 1`);
  t.true(
    prebakeLog(id).some((l) => /^restored /.test(l.msg)),
    'prebake logged the restore',
  );
  const hostname = (await docker(['inspect', '-f', '{{.Config.Hostname}}', id])).trim();
  t.is((await docker(['exec', id, 'hostname'])).trim(), hostname);
  t.not(hostname, 'prebake', "not the bake's hostname");
});

serial('--cap-drop ALL, --read-only, --user 1000 and another command start cold, with the reason in the log', async (t) => {
  const cases: [string, string[], RegExp][] = [
    ['--cap-drop ALL', ['--cap-drop', 'ALL', IMAGE], /cold start: security: baked bounding capabilities .*CAP_CHOWN/],
    ['--read-only', ['--read-only', IMAGE], /readonly rootfs false was baked, the container asks for true/],
    ['--user 1000', ['--user', '1000', IMAGE], /user 0:0 was baked, the container asks for 1000:0/],
  ];
  // Each case on its own: one that fails does not hide the others.
  const each = async (what: string, check: () => Promise<void>) => {
    try {
      await check();
    } catch (e) {
      t.fail(`${what}: ${(e as Error).message}`);
    }
  };
  for (const [what, args, reason] of cases)
    await each(what, async () => {
      const { id, port } = await runDetached(t, args);
      t.is((await httpGet(port)).served, 1, `${what}: a cold start`);
      const log = prebakeLog(id);
      t.regex(log.find((l) => l.level === 'warning')?.msg ?? '', reason, `${what}: ${JSON.stringify(log)}`);
      t.false(
        log.some((l) => l.level === 'error'),
        `${what}: no error logged`,
      );
      await docker(['rm', '-f', id]);
    });

  // Another command, as given (it exits at once: its bundle and log are gone with it).
  await each("python3 -c 'print(1)'", async () => {
    const r = dockerRun(t, ['--rm', IMAGE, 'python3', '-c', 'print(1)']);
    t.notRegex(r.stderr, /OCI runtime create failed/);
    t.is(r.status, 0, r.stderr);
    t.is(r.stdout, '1\n');
  });
  // The same cold start, while it runs long enough to read the reason in its log.
  await each('another command, its log', async () => {
    const { id } = await runDetached(t, [IMAGE, 'python3', '-c', 'import time; print(1, flush=True); time.sleep(120)']);
    const log = prebakeLog(id);
    t.regex(log.find((l) => l.level === 'warning')?.msg ?? '', /the container runs \["python3","-c",.*\], the checkpoint is of \["python3","\/app\/function\.py"\]/, JSON.stringify(log));
    t.false(log.some((l) => /^restored /.test(l.msg)));
    t.is((await docker(['logs', id])).trim(), '1');
    await docker(['rm', '-f', id]);
  });
});

serial('ctr against the system containerd (/run/containerd, namespace default): an image baked with --target containerd is restored by ctr run --runc-binary prebake, and nothing of it is left', async (t) => {
  if (!ctrOk()) {
    t.log(`skipped: the dockerd here runs a containerd of its own; none answers on ${CONTAINERD_SOCKET}`);
    t.pass();
    return;
  }
  const ref = `docker.io/prebake-system-test/noop:ctr-${process.pid}`;
  const id = `pbk-sys-ctr-${process.pid}`;
  const probeThere = ctr(['images', 'inspect', `docker.io/${SPEC_PROBE}`]).status === 0;
  const mounts0 = readFileSync('/proc/self/mountinfo', 'utf8').split('\n');
  t.teardown(() => {
    ctr(['task', 'kill', '-s', 'KILL', id]);
    ctr(['task', 'delete', '-f', id]);
    ctr(['container', 'delete', id]);
    ctr(['images', 'rm', ref]);
    if (!probeThere) ctr(['images', 'rm', `docker.io/${SPEC_PROBE}`]);
  });
  await bakeNoopInto(t, 'containerd', `containerd:${ref}`, systemEnv());
  const r = ctr(['run', '-d', '--runc-binary', PREBAKE, ref, id]);
  t.is(r.status, 0, r.stderr);
  let pid = 0;
  for (let i = 0; i < 100 && !pid; i++) {
    pid = Number(new RegExp(`^${id}\\s+(\\d+)\\s+RUNNING`, 'm').exec(ctr(['task', 'ls']).stdout)?.[1] ?? 0);
    if (!pid) await new Promise((res) => setTimeout(res, 50));
  }
  const c = spawnSync('nsenter', [`--net=/proc/${pid}/ns/net`, 'curl', '-s', '-m', '5', 'http://127.0.0.1:8080/'], { encoding: 'utf8' });
  t.true((JSON.parse(c.stdout || '{}') as { served?: number }).served! > 1, `restored (a cold start answers 1): ${c.stdout} ${c.stderr}`);
  const bundle = join('/run/containerd/io.containerd.runtime.v2.task/default', id);
  t.regex(readFileSync(join(bundle, 'log.json'), 'utf8'), new RegExp(`"msg":"restored ${id} from /\\.prebake`));
  t.true(existsSync(join(STATE_BASE, '/run/containerd/runc/default', id)), "prebake's state of the restored task is under the shim's runc root");
  ctr(['task', 'kill', '-s', 'KILL', id]);
  for (let i = 0; i < 100 && ctr(['task', 'delete', id]).status !== 0; i++) await new Promise((res) => setTimeout(res, 50));
  t.is(ctr(['container', 'delete', id]).status, 0);
  for (const d of [join('/run/containerd/runc/default', id), join(STATE_BASE, '/run/containerd/runc/default', id), bundle]) t.false(existsSync(d), `${d} is gone`);
  const left = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => !mounts0.includes(l) && l.includes(id));
  t.deepEqual(left, [], 'no mount of the task is left');
});

serial('nothing is left of the containers: no criu-root or prebake mount, no runc or prebake state, no container', async (t) => {
  for (const n of names) if (dockerOk(['container', 'inspect', n])) await docker(['rm', '-f', n]);
  t.is(ours.size, names.length, 'an id for each container made');
  // One spelling of the exec root is the other's real path: mountinfo has /run/docker/….
  const mountsNow = () => stateMounts().filter((l) => !mountsBefore.includes(l) && (started.length > 0 || [...ours].some((id) => l.includes(id))));
  const end = Date.now() + 5000;
  while (mountsNow().length && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
  t.deepEqual(mountsNow(), [], 'mountinfo lines with criu-root, /run/prebake or runtime-runc');
  t.deepEqual(
    [...ours].flatMap(stateDirsOf).filter((d) => existsSync(d)),
    [],
    'runc and prebake state dirs of the containers',
  );
  const all = (await docker(['ps', '-a', '--no-trunc', '--format', '{{.ID}} {{.Names}}'])).split('\n').filter(Boolean);
  t.deepEqual(
    all.filter((l) => names.includes(l.split(' ')[1]!) || ours.has(l.split(' ')[0]!)),
    [],
    'docker ps -a',
  );
});

serial('prebake uninstall docker gives /etc/docker/daemon.json back byte for byte (or absent as it was)', async (t) => {
  if (!installed) {
    t.pass('prebake was registered before this test: left registered');
    return;
  }
  await dockerdsSettled();
  const r = prebake(['uninstall', 'docker']);
  uninstalled = true;
  t.is(r.status, 0, r.out);
  t.regex(r.out, /removed from \/etc\/docker\/daemon\.json; dockerd (reloaded \(SIGHUP\)|signalled \(SIGHUP\); it drops a runtime no longer in daemon\.json only when restarted)/);
  if (daemonJsonBefore === null) t.false(existsSync(DAEMON_JSON), `${DAEMON_JSON} was absent, and is again`);
  else t.true(existsSync(DAEMON_JSON) && readFileSync(DAEMON_JSON).equals(daemonJsonBefore), `${DAEMON_JSON} has its bytes of before`);
  // dockerd (20.10) replaces its runtimes on SIGHUP only when daemon.json has a "runtimes" key: with
  // the file gone, or without the key, the running daemon keeps "prebake" until it restarts.
  const runtimesKey = daemonJsonBefore !== null && 'runtimes' in (JSON.parse(daemonJsonBefore.toString('utf8')) as object);
  if (runtimesKey) await waitRuntimes(false);
  else t.log(`the running dockerd keeps the prebake runtime until it restarts: ${daemonJsonBefore === null ? 'daemon.json is gone' : 'daemon.json has no "runtimes"'}, and dockerd's reload leaves its runtimes alone then`);
});
