// Lazy restore (prebake-build --memory lazy): CRIU restores the tasks without their anonymous
// memory, and its lazy-pages daemon, which bin/prebake starts on the verified store's copy of the
// pages, serves each page on first touch and copies in the rest right after. The function here
// fills 48 MiB with a pattern at start and checks it on every request: a restored replica must
// serve the baked process's token and see every byte, and the daemon must be gone once all pages
// are in, or at once when the restore is refused; a daemon that cannot start leaves an eager
// restore of the same pages.

import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NetnsClient } from '../src/lib/netns.ts';
import { bakeNoop, type BakedFunction, PORT, pythonHttpFunction } from '../lab/baked.ts';
import { PREBAKE, runtimeDirs, uniqueName } from '../lab/bundle.ts';
import type { Spec } from '../oci/runtime-spec.ts';
import { LAZY_AUTO_BYTES } from '../src/checkpoint/write.ts';
import { STATE_FILES } from '../src/contract.ts';
import { lazyRestoreCheck } from '../src/lib/host.ts';
import { killAndDelete, lazyPagesDaemons, run, testReplica } from './helpers/bundle.ts';

const SOURCE = pythonHttpFunction(
  `
import hashlib, os
token = os.urandom(8).hex()
# 48 MiB of anonymous memory, a different page everywhere, and its digest.
data = bytearray(48 << 20)
for i in range(0, len(data), 4096):
    data[i:i + 8] = i.to_bytes(8, 'little')
digest = hashlib.sha256(data).hexdigest()
`,
  "f'{token} {hashlib.sha256(data).hexdigest() == digest}'",
);

/** The tests of a lazy restore need a kernel whose userfaultfd has the fork and remap events (as this project's machines do). */
const uffd = lazyRestoreCheck();
const noLazy = uffd.ok ? '' : `this kernel's userfaultfd lacks what a lazy restore needs (criu check --feature uffd-noncoop: ${uffd.detail})`;
if (noLazy) console.log(`lazy.test.ts: the lazy restore tests skipped: ${noLazy}`);
const lazyTest = (title: string, fn: (t: ExecutionContext) => Promise<void> | void) => (noLazy ? test.serial.skip(`${title} [skipped: ${noLazy}]`, () => {}) : test.serial(title, fn));

let lazy: BakedFunction;
/** The baked process's token, as the first restored replica serves it. */
let bakeToken = '';

test.before(async () => {
  lazy = await bakeNoop({ source: SOURCE, memory: 'lazy' });
});
test.after.always(() => lazy?.cleanup());

async function until(f: () => boolean, ms: number): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end; await new Promise((r) => setTimeout(r, 20))) if (f()) return true;
  return f();
}

/** Creates and starts a replica; returns its first answer, the log, and the lazy-pages daemon's pid (read from the state while it runs). */
async function replica(t: ExecutionContext, prefix: string, dropCaps = false, criu?: string, change?: (s: Spec) => void, text?: (json: string) => string) {
  const { b, rt, id } = testReplica(t, lazy.layers, prefix);
  b.writeSpec(lazy.spec(b.netnsPath, (s) => {
    if (dropCaps) s.process!.capabilities = { bounding: [], effective: [], inheritable: [], permitted: [], ambient: [] };
    change?.(s);
  }));
  if (text) writeFileSync(join(b.dir, 'config.json'), text(readFileSync(join(b.dir, 'config.json'), 'utf8')));
  const client = await NetnsClient.start(b.netns);
  t.teardown(() => client.close());
  const state = join(rt.state, id);
  const create = await run(PREBAKE, ['--root', rt.root, ...(criu ? ['--criu', criu] : []), '--log', rt.log, '--log-format', 'json', '--debug', 'create', '--bundle', b.dir, id]);
  t.teardown(() => create.close());
  t.is(create.code, 0, create.output);
  const pidFile = join(state, STATE_FILES.lazyPid);
  const daemon = existsSync(pidFile) ? Number(readFileSync(pidFile, 'utf8')) : undefined;
  t.is((await run(PREBAKE, ['--root', rt.root, 'start', id])).code, 0);
  const first = await client.waitHttp({ port: PORT, path: '/', timeoutMs: 20_000 });
  return { first: first.body, log: rt.logLines(), daemon, state, rt, id };
}

test.serial('prebake-build --memory lazy says so in the signed manifest, with the bytes CRIU may restore lazily', (t) => {
  t.is(lazy.manifest.memory?.restore, 'lazy');
  t.true((lazy.manifest.memory?.lazyBytes ?? 0) >= 48 << 20, `lazyBytes ${lazy.manifest.memory?.lazyBytes}`);
});

lazyTest('a lazy checkpoint restores with every byte of its memory, and the daemon leaves once all pages are in', async (t) => {
  const r = await replica(t, 'lazy');
  const restored = r.log.find((l) => /^restored /.test(l.msg));
  t.truthy(restored, JSON.stringify(r.log));
  t.is((restored as { memory?: string }).memory, 'lazy');
  t.regex(restored!.msg, /memory restored lazily/);
  const [token, ok] = r.first.split(' ');
  t.is(ok, 'True', 'the 48 MiB read back as they were baked');
  bakeToken = token!;
  t.truthy(r.daemon, 'the state named the lazy-pages daemon');
  t.true(await until(() => !existsSync(`/proc/${r.daemon}`) || readFileSync(`/proc/${r.daemon}/stat`, 'utf8').includes(') Z'), 10_000), 'the daemon exits once every page is in');
  t.is((await killAndDelete(r.rt, r.id)).code, 0);
});

lazyTest('a lazy checkpoint the checks refuse on the early path starts cold, its daemon killed with the restore', async (t) => {
  lazy.importToStore();
  const r = await replica(t, 'lazy-refused', true);
  t.true(r.log.some((l) => l.level === 'debug' && /early restore refused before its tasks ran again/.test(l.msg)), JSON.stringify(r.log));
  t.true(r.log.some((l) => l.level === 'warning' && /^cold start: .*capabilities/.test(l.msg)), JSON.stringify(r.log));
  const [token, ok] = r.first.split(' ');
  t.is(ok, 'True');
  t.truthy(bakeToken, 'the accepted replica ran first');
  t.not(token, bakeToken, 'the replica that serves is a cold one');
  t.deepEqual(lazyPagesDaemons(r.state), [], 'no lazy-pages daemon left');
  t.is((await killAndDelete(r.rt, r.id)).code, 0);
});

lazyTest('an accepted lazy checkpoint on the early path serves the baked token', async (t) => {
  const r = await replica(t, 'lazy-early');
  t.true(r.log.some((l) => /^restored .*memory restored lazily/.test(l.msg)), JSON.stringify(r.log));
  const [token, ok] = r.first.split(' ');
  t.is(ok, 'True');
  t.truthy(bakeToken, 'the accepted replica ran first');
  t.is(token, bakeToken);
  t.true(await until(() => lazyPagesDaemons(r.state).length === 0, 10_000), 'the daemon exits once every page is in');
  t.is((await killAndDelete(r.rt, r.id)).code, 0);
});

test.serial('a lazy checkpoint whose daemon cannot start (no userfaultfd, say) is restored eagerly, every byte as baked', async (t) => {
  // The CRIU runc is told to use (--criu), refusing the lazy-pages mode only.
  const dir = mkdtempSync(join(tmpdir(), 'prebake-nolazy-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const criu = join(dir, 'criu');
  writeFileSync(criu, `#!/bin/sh\n[ "$1" = lazy-pages ] && { echo 'userfaultfd is not supported' >&2; exit 1; }\nexec criu "$@"\n`, { mode: 0o755 });
  const r = await replica(t, 'lazy-nouffd', false, criu);
  const restored = r.log.find((l) => /^restored /.test(l.msg));
  t.is((restored as { memory?: string } | undefined)?.memory, 'eager', JSON.stringify(r.log));
  t.is(r.first.split(' ')[1], 'True', 'the 48 MiB read back as they were baked');
  t.deepEqual(lazyPagesDaemons(r.state), []);
  t.is((await killAndDelete(r.rt, r.id)).code, 0);
});

/** A spec whose memory cgroup keeps the OOM killer from the container (docker's --oom-kill-disable). */
const noOomKiller = (s: Spec) => {
  s.linux!.resources = { ...(s.linux!.resources ?? {}), memory: { limit: 512 << 20, disableOOMKiller: true } };
};

lazyTest('a spec that keeps the OOM killer from the container restores the lazy checkpoint eagerly, every byte as baked', async (t) => {
  const r = await replica(t, 'lazy-nooom', false, undefined, noOomKiller);
  const restored = r.log.find((l) => /^restored /.test(l.msg));
  t.is((restored as { memory?: string } | undefined)?.memory, 'eager', JSON.stringify(r.log));
  t.is(r.daemon, undefined, 'no lazy-pages daemon was started');
  const [token, ok] = r.first.split(' ');
  t.is(ok, 'True', 'the 48 MiB read back as they were baked');
  t.truthy(bakeToken, 'the accepted replica ran first');
  t.is(token, bakeToken, 'the replica that serves is the restored one');
  t.is((await killAndDelete(r.rt, r.id)).code, 0);
});

lazyTest('a spec keeping the OOM killer away in a spelling bin/prebake does not read gets the lazy restore refused: cold, with the reason', async (t) => {
  // JSON's escape of one letter of the name: runc and the Node program read disableOOMKiller, bin/prebake's scan of the text does not.
  const r = await replica(t, 'lazy-nooom-escaped', false, undefined, noOomKiller, (json) => json.replace('"disableOOMKiller"', '"disableOOMKille\\u0072"'));
  t.true(r.log.some((l) => l.level === 'warning' && /^cold start: .*restored lazily and the spec disables the OOM killer/.test(l.msg)), JSON.stringify(r.log));
  const [token, ok] = r.first.split(' ');
  t.is(ok, 'True');
  t.truthy(bakeToken, 'the accepted replica ran first');
  t.not(token, bakeToken, 'the replica that serves is a cold one');
  t.deepEqual(lazyPagesDaemons(r.state), []);
  t.is((await killAndDelete(r.rt, r.id)).code, 0);
});

test.serial("delete kills the lazy-pages daemon a create that died left in the container's state, and only while it works there", async (t) => {
  const rt = runtimeDirs();
  t.teardown(() => rt.cleanup());
  // Two containers' states: one whose pid file names a stand-in working in its CRIU dir (as the
  // daemon does), one whose names a process working elsewhere (a pid reused).
  const [daemonId, otherId] = [uniqueName('lazy-stale'), uniqueName('lazy-reused')];
  for (const id of [daemonId, otherId]) mkdirSync(join(rt.state, id, STATE_FILES.criuWork), { recursive: true });
  const daemon = spawn('sleep', ['60'], { cwd: join(rt.state, daemonId, STATE_FILES.criuWork), stdio: 'ignore' });
  const other = spawn('sleep', ['60'], { cwd: tmpdir(), stdio: 'ignore' });
  t.teardown(() => {
    daemon.kill('SIGKILL');
    other.kill('SIGKILL');
  });
  const daemonExit = new Promise<string | null>((res) => daemon.once('exit', (_code, sig) => res(sig)));
  writeFileSync(join(rt.state, daemonId, STATE_FILES.lazyPid), String(daemon.pid));
  writeFileSync(join(rt.state, otherId, STATE_FILES.lazyPid), String(other.pid));
  await run(PREBAKE, ['--root', rt.root, 'delete', otherId]);
  await run(PREBAKE, ['--root', rt.root, 'delete', daemonId]);
  t.is(await daemonExit, 'SIGKILL');
  t.true(existsSync(`/proc/${other.pid}`), 'a process outside the state dir is left alone');
  t.false(existsSync(join(rt.state, daemonId)), "prebake's state goes with it");
});

test('--memory auto keeps a small checkpoint eager', async (t) => {
  const small = await bakeNoop();
  t.teardown(() => small.cleanup());
  const m = small.manifest.memory!;
  t.is(m.restore, 'eager');
  t.true(m.lazyBytes > 0 && m.lazyBytes < LAZY_AUTO_BYTES, `lazyBytes ${m.lazyBytes}`);
});
