// podman as users run it: its default storage (/var/lib/containers/storage, run root
// /run/containers/storage), its default network and runc root, and prebake registered the way a
// user does it, `prebake install podman` (/etc/containers/containers.conf), `prebake uninstall
// podman` at the end. The noop function is baked with --target podman into the default storage;
// `podman run --runtime prebake` restores it and serves on a published port, a container that does
// not fit (--cap-drop ALL) starts cold with the reason logged, and afterwards no container, image,
// mount or prebake state of this file is left and containers.conf has its bytes of before.

import test, { type ExecutionContext } from 'ava';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PREBAKE } from '../lab/bundle.ts';
import { bakeNoopInto, httpGet } from './helpers/engines.ts';

const CONF = '/etc/containers/containers.conf';
const STATE_BASE = process.env.PREBAKE_STATE_DIR ?? '/run/prebake';
const IMAGE = `localhost/prebake-system-test/noop:baked-${process.pid}`;
const SPEC_PROBE = 'localhost/prebake/spec-probe:1';

const installed = spawnSync('podman', ['--version'], { stdio: 'ignore' }).error === undefined;
const skipReason = installed ? '' : 'podman is not installed';
if (skipReason) console.log(`system-podman.test.ts: skipped: ${skipReason}`);
const serial = (title: string, fn: (t: ExecutionContext) => Promise<void>) =>
  skipReason ? test.serial.skip(`${title} [skipped: ${skipReason}]`, () => {}) : test.serial(title, fn);

/** podman with its defaults: no CONTAINERS_CONF, CONTAINERS_STORAGE_CONF or CONTAINERS_REGISTRIES_CONF of the caller. */
const env: NodeJS.ProcessEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^CONTAINERS_/.test(k)));
const podman = (args: string[]) => spawnSync('podman', args, { env, encoding: 'utf8' });

let dir = '';
let confBefore: Buffer | null = null;
let registered = false;
/** What the test wrote into containers.conf before the install (see before), or ''. */
let ulimits = '';
let probeBefore = true;
let mountsBefore: string[] = [];
const ids: string[] = [];

const mountLines = () => readFileSync('/proc/self/mountinfo', 'utf8').split('\n');

test.before(async (t) => {
  if (skipReason) return;
  dir = mkdtempSync(join(tmpdir(), 'prebake-system-podman-'));
  const info = JSON.parse(podman(['info', '--format', 'json']).stdout || '{}') as { store?: { graphRoot?: string; runRoot?: string } };
  t.log(`podman storage: ${info.store?.graphRoot} (run root ${info.store?.runRoot})`);
  if (info.store?.graphRoot !== '/var/lib/containers/storage') throw new Error(`podman's storage is ${info.store?.graphRoot}, not its default /var/lib/containers/storage`);
  mountsBefore = mountLines();
  confBefore = existsSync(CONF) ? readFileSync(CONF) : null;
  // podman gives root's containers 1048576 open files and more processes than the host's hard
  // limits; where root lacks CAP_SYS_RESOURCE (a
  // sandbox) runc cannot set that, with or without prebake. The host's own limit then goes into
  // containers.conf, as an operator of such a host would put it, and the file's bytes come back.
  const capEff = BigInt(`0x${/^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'))![1]}`);
  if (!(capEff & (1n << 24n))) {
    if (confBefore !== null) throw new Error(`root lacks CAP_SYS_RESOURCE here and ${CONF} exists: podman's default ulimits cannot be set, and the test will not edit an existing file`);
    const hard = (name: string) => new RegExp(`^${name}\\s+\\S+\\s+(\\S+)`, 'm').exec(readFileSync('/proc/self/limits', 'utf8'))![1];
    // (nproc as the private podman of lab/engines/daemons.ts has it: the host's hard limit itself is refused.)
    const [files, procs] = [hard('Max open files'), String(Math.min(32768, Number(hard('Max processes'))))];
    ulimits = `[containers]\ndefault_ulimits = ["nofile=${files}:${files}", "nproc=${procs}:${procs}"]\n`;
    writeFileSync(CONF, ulimits);
    t.log(`root lacks CAP_SYS_RESOURCE: ${CONF} gets default_ulimits nofile=${files}, nproc=${procs} (removed at the end)`);
  }
  probeBefore = podman(['image', 'exists', SPEC_PROBE]).status === 0;
  const r = spawnSync(PREBAKE, ['install', 'podman'], { env, encoding: 'utf8' });
  t.log(`prebake install podman: ${`${r.stdout}${r.stderr}`.trim()}`);
  if (r.status !== 0) throw new Error(`prebake install podman: exit ${r.status}: ${r.stderr}`);
  registered = true;
  const t0 = Date.now();
  await bakeNoopInto(t, 'podman', `containers-storage:${IMAGE.replace(/^localhost\//, '')}`, env);
  t.log(`baked ${IMAGE} into podman's default storage in ${Date.now() - t0} ms`);
});

test.after.always((t) => {
  if (skipReason) return;
  for (const id of ids) podman(['rm', '-f', '-t', '0', id]);
  podman(['rmi', '-f', IMAGE]);
  if (!probeBefore) podman(['rmi', '-f', SPEC_PROBE]);
  if (registered) {
    const r = spawnSync(PREBAKE, ['uninstall', 'podman'], { env, encoding: 'utf8' });
    t.log(`prebake uninstall podman: ${`${r.stdout}${r.stderr}`.trim()}`);
  }
  if (ulimits) rmSync(CONF, { force: true });
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** `podman run -d --runtime prebake -p 127.0.0.1:PORT:8080 ARGS` on a port podman picks. */
function runDetached(args: string[]): { id: string; port: number } {
  const r = podman(['run', '-d', '--runtime', 'prebake', '-p', '127.0.0.1::8080', ...args]);
  if (r.status !== 0) throw new Error(`podman run -d ${args.join(' ')}: exit ${r.status}: ${r.stderr.trim()}`);
  const id = r.stdout.trim();
  ids.push(id);
  const port = Number(podman(['port', id, '8080/tcp']).stdout.trim().split('\n')[0]!.split(':').at(-1));
  return { id, port };
}

/** What the container and prebake printed: podman gives the runtime no --log file, so prebake's lines reach podman logs. */
const logsOf = (id: string) => {
  const r = podman(['logs', id]);
  return `${r.stdout}${r.stderr}`;
};

serial('podman run --runtime prebake restores the baked image from the default storage, and a --cap-drop ALL run starts cold with the reason logged', async (t) => {
  const c = runDetached([IMAGE]);
  const served = (await httpGet(c.port)).served;
  t.true(served > 1, `served ${served}: a cold start would say 1 (${podman(['logs', c.id]).stderr.trim()})`);
  t.notRegex(logsOf(c.id), /cold start/, 'no cold start logged');

  const cold = runDetached(['--cap-drop', 'ALL', IMAGE]);
  t.is((await httpGet(cold.port)).served, 1, 'a cold start');
  t.regex(logsOf(cold.id), /cold start: security: baked bounding capabilities/);
  for (const id of [c.id, cold.id]) t.is(podman(['rm', '-f', '-t', '0', id]).status, 0);
});

serial('nothing of the containers is left (mounts, runc and prebake state), prebake uninstall podman gives containers.conf back', async (t) => {
  // podman's cleanup process unmounts a removed container's shm a moment later.
  const left = () => mountLines().filter((l) => !mountsBefore.includes(l) && ids.some((id) => l.includes(id)));
  for (let i = 0; i < 100 && left().length; i++) await new Promise((r) => setTimeout(r, 50));
  t.deepEqual(left(), [], 'no mount of a container of this file');
  for (const id of ids) for (const d of [join('/run/runc', id), join(STATE_BASE, '/run/runc', id)]) t.false(existsSync(d), `${d} is gone`);
  const r = spawnSync(PREBAKE, ['uninstall', 'podman'], { env, encoding: 'utf8' });
  registered = false;
  t.is(r.status, 0, r.stderr);
  if (ulimits) t.is(readFileSync(CONF, 'utf8'), ulimits, 'the file as it was before the install');
  else if (confBefore === null) t.false(existsSync(CONF), `${CONF} was absent, and is again`);
  else t.true(existsSync(CONF) && readFileSync(CONF).equals(confBefore), `${CONF} has its bytes of before`);
});
