// Checkpoints written by an attacker, on real runc and CRIU: each ends in a cold start that
// serves (or a refusal) with the reason logged, and the process that serves holds exactly what
// its spec grants. The forgeries edit CRIU's own images (core-*.img creds) the way an image
// author can: with all capabilities and no no_new_privs, manifest digests made to fit.

import test, { type ExecutionContext } from 'ava';
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Spec } from '../oci/runtime-spec.ts';
import { type CheckpointManifest, parseManifest } from '../src/checkpoint/manifest.ts';
import { markManifest } from '../src/checkpoint/write.ts';
import { importCheckpoint, storeEntry } from '../src/checkpoint/store.ts';
import { DEFAULT_KEY, generateKey, loadSigningKey, loadTrustStore, signCheckpoint, verifyManifestSignature } from '../src/checkpoint/trust.ts';
import { readSigned } from '../src/checkpoint/verify.ts';
import { NetnsClient } from '../src/lib/netns.ts';
import { loadRuntimeConfig } from '../src/runtime/config.ts';
import { PORT, WARMUP } from '../lab/baked.ts';
import { PREBAKE } from '../lab/bundle.ts';
import { run, testReplica } from './helpers/bundle.ts';
import { describeCredentials, readImage, writeImage } from './helpers/criu-image.ts';
import { sharedBake } from './helpers/shared-bake.ts';
import { tempDir } from './helpers/tmp.ts';

const noop = sharedBake('prebake-hostile-layer-');

const ckpt = (layer: string) => join(layer, '.prebake');

/**
 * Makes the copy's checkpoint one of its own for the host's store: its manifest new (created now),
 * signed by the trusted key. Tests that remove or import the honest bake's store entry, running
 * at once, then cannot change which entry this one's create finds. The entry's path.
 */
function ownCheckpoint(layer: string): string {
  const file = join(ckpt(layer), 'manifest.json');
  const m = JSON.parse(readFileSync(file, 'utf8')) as CheckpointManifest;
  m.created = `${new Date().toISOString()} ${layer}`;
  writeFileSync(file, `${JSON.stringify(m, null, 2)}\n`);
  markManifest(ckpt(layer));
  signCheckpoint(ckpt(layer), loadSigningKey(DEFAULT_KEY));
  return noop.remember(layer);
}

/** Imports the copy's checkpoint into the host's store, as a first restore would. */
function importLayer(layer: string): void {
  const { manifest: bytes, signature } = readSigned(ckpt(layer));
  const keyId = verifyManifestSignature(bytes, signature, loadTrustStore(loadRuntimeConfig().trustDir));
  importCheckpoint(loadRuntimeConfig().store, ckpt(layer), bytes, signature, parseManifest(bytes.toString()), keyId);
}

/** Rewrites the manifest after a forgery: digests made to fit, and `edit` on top. Not signed again. */
function fitManifest(layer: string, edit: (m: CheckpointManifest) => void = () => {}): void {
  const file = join(ckpt(layer), 'manifest.json');
  const m = JSON.parse(readFileSync(file, 'utf8')) as CheckpointManifest;
  for (const name of Object.keys(m.files)) {
    const data = readFileSync(join(ckpt(layer), 'checkpoint', name));
    m.files[name] = { size: data.length, sha256: createHash('sha256').update(data).digest('hex') };
  }
  edit(m);
  writeFileSync(file, `${JSON.stringify(m, null, 2)}\n`);
  markManifest(ckpt(layer));
  noop.remember(layer);
}

/**
 * Every capability this host's root holds (its bounding set: CRIU, root on the host, can grant
 * no more) in the creds of every task, no_new_privs off.
 */
function forgeAllCaps(layer: string): void {
  const dir = join(ckpt(layer), 'checkpoint');
  const host = BigInt(`0x${/^CapBnd:\s*(\S+)/m.exec(readFileSync('/proc/self/status', 'utf8'))![1]}`);
  const words = [Number(host & 0xffffffffn), Number(host >> 32n)];
  const cores = readdirSync(dir).filter((f) => /^core-\d+\.img$/.test(f));
  for (const f of cores) {
    const img = readImage(join(dir, f));
    const creds = img.entries[0]!.thread_core.creds;
    for (const set of ['cap_prm', 'cap_eff', 'cap_bnd']) creds[set] = [...words];
    creds.no_new_privs = 0;
    writeImage(join(dir, f), img);
  }
  for (const c of Object.values(describeCredentials(dir))) if (c.eff !== host || c.noNewPrivs) throw new Error('forgery did not take');
}

/** A runc that records each call's argv (one line each) before it runs the real one. */
function recordingRunc(t: ExecutionContext): { env: NodeJS.ProcessEnv; calls: () => string[] } {
  const dir = tempDir(t, 'prebake-hostile-runc-');
  const log = join(dir, 'calls');
  writeFileSync(join(dir, 'runc'), `#!/bin/sh\nprintf '%s\\n' "$*" >> '${log}'\nexec runc "$@"\n`, { mode: 0o755 });
  return { env: { ...process.env, PREBAKE_RUNC: join(dir, 'runc') }, calls: () => (existsSync(log) ? readFileSync(log, 'utf8').trim().split('\n') : []) };
}

/** Creates and starts a replica of `layers`; returns the log, runc's calls and the serving process's status. */
async function replica(t: ExecutionContext, layers: string[], prefix: string, change?: (s: Spec) => void) {
  const runc = recordingRunc(t);
  const { b, rt, id } = testReplica(t, layers, prefix, runc.env);
  b.writeSpec(noop.baked.spec(b.netnsPath, change));
  const client = await NetnsClient.start(b.netns);
  t.teardown(() => client.close());
  const pidFile = join(b.dir, 'init.pid');
  const c = await run(PREBAKE, ['--root', rt.root, '--log', rt.log, '--log-format', 'json', 'create', '--bundle', b.dir, '--pid-file', pidFile, id], runc.env);
  t.teardown(() => c.close());
  t.is(c.code, 0, c.output);
  t.is((await run(PREBAKE, ['--root', rt.root, 'start', id], runc.env)).code, 0);
  const r = await client.waitHttp({ port: PORT, path: '/', timeoutMs: 20_000 });
  const served = (JSON.parse(r.body) as { served: number }).served;
  const pid = readFileSync(pidFile, 'utf8').trim();
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name: string) => new RegExp(`^${name}:[ \\t]*(.*)$`, 'm').exec(status)![1]!.trim();
  const spec = JSON.parse(readFileSync(join(b.dir, 'config.json'), 'utf8')) as Spec;
  return { log: rt.logLines(), calls: runc.calls(), served, capEff: BigInt(`0x${field('CapEff')}`), noNewPrivs: field('NoNewPrivs'), spec, state: rt.state, root: rt.root, id, pid };
}

const CAP_BITS: Record<string, number> = { CAP_KILL: 5, CAP_NET_BIND_SERVICE: 10, CAP_AUDIT_WRITE: 29 };
const maskOf = (caps: string[] | undefined) => (caps ?? []).reduce((m, c) => m | (1n << BigInt(CAP_BITS[c]!)), 0n);

/** A cold start that serves with exactly the spec's effective capabilities, the reason logged, runc never asked to restore. */
function coldAndRefusedBeforeCriu(t: ExecutionContext, r: Awaited<ReturnType<typeof replica>>, reason: RegExp): void {
  t.is(r.served, 1, 'a cold process serves (a restored one would count on from the bake)');
  t.is(r.capEff, maskOf(r.spec.process!.capabilities!.effective), 'CapEff is exactly the spec\'s');
  t.is(r.noNewPrivs, '1');
  const warning = r.log.find((l) => l.level === 'warning')?.msg ?? '';
  t.regex(warning, reason, JSON.stringify(r.log));
  t.deepEqual(r.calls.filter((c) => / restore /.test(` ${c} `)), [], 'runc (and so CRIU) never restored anything');
}

test('the capability forge: all capabilities in core-*.img, digests made to fit, signature kept: refused before CRIU, cold start', async (t) => {
  const layer = noop.layerCopy(t);
  forgeAllCaps(layer);
  fitManifest(layer);
  const r = await replica(t, [layer, ...noop.baked.baseLayers], 'forge');
  coldAndRefusedBeforeCriu(t, r, /^cold start: checkpoint not signed by a trusted key \(the signature by key id [0-9a-f]{16} does not match manifest\.json\)$/);
});

test('a forged manifest claiming all capabilities, honest digests, over an all-capabilities checkpoint: refused before CRIU', async (t) => {
  const layer = noop.layerCopy(t);
  forgeAllCaps(layer);
  fitManifest(layer, (m) => {
    const names = Object.entries(CAP_BITS).map(([n]) => n);
    for (const set of ['bounding', 'effective', 'permitted'] as const) m.spec.security.capabilities[set] = names;
    m.spec.security.noNewPrivileges = false;
  });
  const r = await replica(t, [layer, ...noop.baked.baseLayers], 'claims');
  coldAndRefusedBeforeCriu(t, r, /^cold start: checkpoint not signed by a trusted key \(the signature .* does not match manifest\.json\)$/);
});

test('a checkpoint signed by a key the host does not trust: refused before CRIU, cold start', async (t) => {
  const layer = noop.layerCopy(t);
  forgeAllCaps(layer);
  fitManifest(layer);
  const keyFile = join(tempDir(t, 'prebake-hostile-key-'), 'evil.key');
  const { keyId } = generateKey(keyFile);
  signCheckpoint(ckpt(layer), loadSigningKey(keyFile));
  const r = await replica(t, [layer, ...noop.baked.baseLayers], 'untrusted');
  coldAndRefusedBeforeCriu(t, r, new RegExp(`^cold start: checkpoint not signed by a trusted key \\(key id ${keyId.slice(0, 16)} is not in the trust store\\)$`));
});

test('a trusted, signed checkpoint whose pages changed after signing: refused before any CRIU process starts', async (t) => {
  const layer = noop.layerCopy(t);
  const pages = join(ckpt(layer), 'checkpoint', readdirSync(join(ckpt(layer), 'checkpoint')).find((f) => /^pages-\d+\.img$/.test(f))!);
  const data = readFileSync(pages);
  const at = data.length >> 1;
  data.writeUInt8(data.readUInt8(at) ^ 0xff, at);
  writeFileSync(pages, data);
  // The manifest is the honest bake's, made new to the host's store and signed by the trusted key.
  const m = JSON.parse(readFileSync(join(ckpt(layer), 'manifest.json'), 'utf8')) as CheckpointManifest;
  m.created = new Date().toISOString();
  writeFileSync(join(ckpt(layer), 'manifest.json'), `${JSON.stringify(m, null, 2)}\n`);
  markManifest(ckpt(layer));
  signCheckpoint(ckpt(layer), loadSigningKey(DEFAULT_KEY));
  const r = await replica(t, [layer, ...noop.baked.baseLayers], 'pages');
  coldAndRefusedBeforeCriu(t, r, /^cold start: checkpoint file pages-\d+\.img does not match its sha256 in the manifest$/);
  t.false(existsSync(join(r.state, r.id, 'criu')), 'no CRIU work dir was ever made for it');
  t.false(existsSync(storeEntry(loadRuntimeConfig().store, readFileSync(join(ckpt(layer), 'manifest.json')))), 'nothing of it in the store');
});

/**
 * The last line: a checkpoint a trusted key signed that still holds more than the spec grants
 * (a bake key used carelessly, a bug). CRIU restores it; its tasks' own kernel state is read
 * while they are stopped, and they are killed before they run.
 */
for (const early of [false, true])
  test(`signed by the trusted key yet holding all capabilities: killed while stopped${early ? ' (early restore, checkpoint already in the store)' : ''}, cold start with exactly the spec's capabilities`, async (t) => {
    const layer = noop.layerCopy(t);
    forgeAllCaps(layer);
    fitManifest(layer, (m) => void (m.created = `${m.created} ${early}`));
    signCheckpoint(ckpt(layer), loadSigningKey(DEFAULT_KEY));
    noop.remember(layer);
    if (early) await replica(t, [layer, ...noop.baked.baseLayers], 'seed'); // imports it
    const r = await replica(t, [layer, ...noop.baked.baseLayers], early ? 'excess-early' : 'excess');
    t.is(r.served, 1, 'a cold process serves');
    t.is(r.capEff, maskOf(r.spec.process!.capabilities!.effective));
    t.is(r.noNewPrivs, '1');
    t.regex(r.log.find((l) => l.level === 'warning')?.msg ?? '', /^cold start: the container restored from .* holds more than its spec grants, killed before it ran again: task \d+ has Cap(Inh|Prm|Eff|Bnd|Amb) CAP_/);
    t.true(r.calls.some((c) => / restore /.test(` ${c} `)), 'CRIU restored it (signed and trusted), the check came after');
  });

test('a spec with a user namespace: a checkpoint baked without one would run as the host\'s root, so it starts cold', async (t) => {
  const r = await replica(t, noop.baked.layers, 'userns', (s) => {
    s.linux!.namespaces = [...s.linux!.namespaces!, { type: 'user' }];
    s.linux!.uidMappings = [{ containerID: 0, hostID: 0, size: 65536 }];
    s.linux!.gidMappings = [{ containerID: 0, hostID: 0, size: 65536 }];
    // sysfs cannot be mounted from a user namespace that does not own the network namespace
    // joined: the cold container gets the host's /sys bound read-only instead.
    s.mounts = s.mounts!.map((m) => (m.destination === '/sys' ? { destination: '/sys', type: 'bind', source: '/sys', options: ['rbind', 'ro', 'nosuid', 'noexec', 'nodev'] } : m));
  });
  t.is(r.served, 1);
  t.regex(r.log.find((l) => l.level === 'warning')?.msg ?? '', /^cold start: security: the container asks for a user namespace, the checkpoint was baked without one/);
});

test('a spec carrying org.criu.config (a CRIU config file runc would hand to CRIU) never reaches runc restore', async (t) => {
  noop.baked.importToStore(); // even where the early restore could start
  const conf = join(tempDir(t, 'prebake-hostile-conf-'), 'evil.conf');
  writeFileSync(conf, `action-script ${join(tempDir(t, 'prebake-hostile-ran-'), 'x')}\n`);
  const r = await replica(t, noop.baked.layers, 'criuconf', (s) => (s.annotations = { ...(s.annotations ?? {}), 'org.criu.config': conf }));
  t.is(r.served, 1);
  t.regex(r.log.find((l) => l.level === 'warning')?.msg ?? '', /^cold start: the spec carries the annotation org\.criu\.config, which runc would hand to CRIU: refused$/);
  t.deepEqual(r.calls.filter((c) => / restore /.test(` ${c} `)), []);
});

test('the honest checkpoint restores (what the refusals above are measured against)', async (t) => {
  const r = await replica(t, noop.baked.layers, 'honest');
  t.is(r.served, WARMUP + 2, JSON.stringify(r.log));
  t.true(r.log.some((l) => l.level === 'info' && /^restored .* key [0-9a-f]{16}\)$/.test(l.msg)), JSON.stringify(r.log));
});

/** The checkpoint's mountpoints image, with `edit` applied to its entries (the trusted key signs the result). */
function forgeMounts(layer: string, edit: (entries: { mountpoint: string; flags: number; sb_flags?: number }[]) => typeof entries): void {
  const dir = join(ckpt(layer), 'checkpoint');
  const file = readdirSync(dir).find((f) => /^mountpoints-\d+\.img$/.test(f))!;
  const img = readImage(join(dir, file));
  img.entries = edit(img.entries as never) as never;
  writeImage(join(dir, file), img);
  fitManifest(layer, (m) => void (m.created = `${m.created} mounts`));
  signCheckpoint(ckpt(layer), loadSigningKey(DEFAULT_KEY));
  noop.remember(layer);
}

const MS_RDONLY = 1;

for (const [what, edit, reason] of [
  [
    '/proc/sys left writable',
    (es: { mountpoint: string; flags: number }[]) => es.map((e) => (e.mountpoint === '/proc/sys' ? { ...e, flags: e.flags & ~MS_RDONLY } : e)),
    /read-only path \/proc\/sys is writable|mount \/proc\/sys .* not in the spec/,
  ],
  ['/proc/keys not masked', (es: { mountpoint: string }[]) => es.filter((e) => e.mountpoint !== '/proc/keys'), /masked path \/proc\/keys is open/],
] as const)
  test(`signed by the trusted key, its mount table forged (${what}): killed while stopped, cold start`, async (t) => {
    const layer = noop.layerCopy(t);
    forgeMounts(layer, edit as never);
    const r = await replica(t, [layer, ...noop.baked.baseLayers], 'mounts');
    t.is(r.served, 1, 'a cold process serves');
    t.regex(r.log.find((l) => l.level === 'warning')?.msg ?? '', new RegExp(`holds more than its spec grants, killed before it ran again: (${reason.source})`));
  });

for (const [what, make] of [
  ['manifest.sig is a FIFO', (layer: string) => execFileSync('mkfifo', [join(ckpt(layer), 'manifest.sig.fifo')]) && execFileSync('mv', ['-f', join(ckpt(layer), 'manifest.sig.fifo'), join(ckpt(layer), 'manifest.sig')])],
  ['manifest.json is a FIFO', (layer: string) => { rmSync(join(ckpt(layer), 'manifest.json')); execFileSync('mkfifo', [join(ckpt(layer), 'manifest.json')]); }],
  ['manifest.json is a device node (/dev/null\'s)', (layer: string) => { rmSync(join(ckpt(layer), 'manifest.json')); execFileSync('mknod', [join(ckpt(layer), 'manifest.json'), 'c', '1', '3']); }],
] as const)
  test(`${what}: never opened as one, cold start at once`, async (t) => {
    const layer = noop.layerCopy(t);
    make(layer);
    const t0 = performance.now();
    const r = await replica(t, [layer, ...noop.baked.baseLayers], 'fifo');
    t.true(performance.now() - t0 < 10_000, 'the create did not block');
    t.is(r.served, 1);
    t.regex(r.log.find((l) => l.level === 'warning')?.msg ?? '', /^cold start: .*manifest\.(sig|json) is not a regular file/);
  });

test('a create with the id of a running restored container fails as runc create does and leaves that container alone', async (t) => {
  noop.baked.importToStore();
  const first = await replica(t, noop.baked.layers, 'same');
  t.is(first.served, WARMUP + 2, JSON.stringify(first.log));
  const other = testReplica(t, noop.baked.layers, 'other');
  other.b.writeSpec(noop.baked.spec(other.b.netnsPath));
  const c = await run(PREBAKE, ['--root', first.root, 'create', '--bundle', other.b.dir, first.id]);
  t.not(c.code, 0, c.output);
  t.regex(c.output, /already exists/);
  t.regex(readFileSync(`/proc/${first.pid}/stat`, 'utf8').split(' ')[2]!, /^[RS]$/, 'the first container runs on');
  t.is(JSON.parse((await run(PREBAKE, ['--root', first.root, 'state', first.id])).output).status, 'running');
});

// Serial: it looks for any process blocked on a FIFO, which the other FIFO tests of this file make too.
test.serial('a restore that never ends (a file the checkpoint maps replaced by a FIFO, on which CRIU blocks) is stopped after restoreTimeout: cold start, nothing of it left', async (t) => {
  const layer = noop.layerCopy(t);
  // libuuid, which the baked python3 maps, is a FIFO in this replica's rootfs.
  const lib = join(layer, 'usr/lib/x86_64-linux-gnu');
  execFileSync('mkdir', ['-p', lib]);
  execFileSync('mkfifo', [join(lib, 'libuuid.so.1.3.0')]);
  const conf = join(tempDir(t, 'prebake-hostile-conf-'), 'config.json');
  writeFileSync(conf, JSON.stringify({ restoreTimeout: 3, trust: loadRuntimeConfig().trustDir }));
  const runc = recordingRunc(t);
  const env = { ...runc.env, PREBAKE_CONFIG: conf };
  const entry = ownCheckpoint(layer);
  for (const early of [false, true]) {
    // First sight (Node alone), then with the checkpoint in the store (runc started by the shell).
    if (early) importLayer(layer);
    else rmSync(entry, { recursive: true, force: true });
    const { b, rt, id } = testReplica(t, [layer, ...noop.baked.baseLayers], early ? 'hang-early' : 'hang', env);
    b.writeSpec(noop.baked.spec(b.netnsPath));
    const t0 = performance.now();
    const c = await run(PREBAKE, ['--root', rt.root, '--log', rt.log, '--log-format', 'json', 'create', '--bundle', b.dir, '--pid-file', join(b.dir, 'init.pid'), id], env);
    t.teardown(() => c.close());
    const ms = performance.now() - t0;
    t.is(c.code, 0, c.output);
    t.true(ms > 3000 && ms < 15_000, `${early ? 'early' : 'first sight'}: the create took ${Math.round(ms)} ms, from ${new Date(Date.now() - ms).toISOString()}; its log: ${readFileSync(rt.log, 'utf8')}`);
    t.regex(rt.logLines().find((l) => l.level === 'warning')?.msg ?? '', /runc restore did not finish within 3 s \(restoreTimeout\): stopped and cleared away/, JSON.stringify(rt.logLines()));
    t.true(runc.calls().some((l) => / restore /.test(` ${l} `)), 'CRIU was at work on it');
    t.false(readFileSync('/proc/self/mountinfo', 'utf8').includes(join(rt.state, id)), 'no mount of the attempt left');
    // (CRIU, or a task it restored: other tests' shells wait on their verdict FIFOs, and a created
    // container's init on runc's exec FIFO until its start.)
    const blocked = execFileSync('ps', ['-eo', 'pid,wchan:32,comm'], { encoding: 'utf8' }).split('\n').filter((l) => /wait_for_partner/.test(l) && /\s(criu|python3?)$/.test(l));
    t.deepEqual(blocked, [], 'no process left blocked on the FIFO (CRIU killed)');
    t.is(JSON.parse((await run(PREBAKE, ['--root', rt.root, 'state', id], env)).output).status, 'created', 'the cold container is there');
  }
});

test('the create killed by its engine while the Node program restores a checkpoint seen for the first time: the restore is stopped and cleared away, nothing is created', async (t) => {
  const layer = noop.layerCopy(t);
  // A restore that would never end (CRIU blocked on a FIFO the image put where python3 maps libuuid).
  execFileSync('mkdir', ['-p', join(layer, 'usr/lib/x86_64-linux-gnu')]);
  execFileSync('mkfifo', [join(layer, 'usr/lib/x86_64-linux-gnu/libuuid.so.1.3.0')]);
  rmSync(ownCheckpoint(layer), { recursive: true, force: true });
  const runc = recordingRunc(t);
  const { b, rt, id } = testReplica(t, [layer, ...noop.baked.baseLayers], 'killed', runc.env);
  b.writeSpec(noop.baked.spec(b.netnsPath));
  const shell = spawn(PREBAKE, ['--root', rt.root, '--log', rt.log, '--log-format', 'json', 'create', '--bundle', b.dir, id], { stdio: 'ignore', env: runc.env });
  const exited = new Promise((r) => shell.on('exit', r));
  for (let i = 0; i < 200 && !runc.calls().some((c) => / restore /.test(` ${c} `)); i++) await new Promise((r) => setTimeout(r, 50));
  t.true(runc.calls().some((c) => / restore /.test(` ${c} `)), 'runc restore started (first sight: from the Node program)');
  shell.kill('SIGKILL');
  await exited;
  const abandoned = () => rt.logLines().some((l) => l.level === 'warning' && /^create abandoned: /.test(l.msg));
  for (let i = 0; i < 200 && !abandoned(); i++) await new Promise((r) => setTimeout(r, 50));
  t.true(abandoned(), JSON.stringify(rt.logLines()));
  t.regex((await run('runc', ['--root', rt.root, 'state', id])).output, /does not exist/, 'no container left, none created');
  t.false(existsSync(join(rt.state, id)), 'no prebake state left');
  t.false(readFileSync('/proc/self/mountinfo', 'utf8').includes(join(rt.state, id)), 'no mount of the attempt left');
  t.deepEqual(runc.calls().filter((c) => / create /.test(` ${c} `)), [], 'no cold create either');
});
