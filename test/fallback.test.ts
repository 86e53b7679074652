// Fallback and refusal on real runc and CRIU: a checkpoint that is missing, damaged, incompatible,
// turned off or fails inside CRIU costs a cold start, never the container; a checkpoint path that
// leaves the rootfs ("..", symlinks) is refused without reading what it points at. Each variant is
// a copy of one shared bake's checkpoint layer, changed the way the test needs.

import test, { type ExecutionContext } from 'ava';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Spec } from '../oci/runtime-spec.ts';
import { CHECKPOINT_ANNOTATION } from '../src/contract.ts';
import type { CheckpointManifest } from '../src/checkpoint/manifest.ts';
import { markManifest } from '../src/checkpoint/write.ts';
import { DEFAULT_KEY, loadSigningKey, signCheckpoint } from '../src/checkpoint/trust.ts';
import { NetnsClient } from '../src/lib/netns.ts';
import { PREBAKE, rawRestoreEnv, runtimeDirs, type OverlayBundle } from '../lab/bundle.ts';
import { functionPids, killAndDelete, run, testReplica } from './helpers/bundle.ts';
import { PORT, WARMUP } from '../lab/baked.ts';
import { readImage, writeImage } from './helpers/criu-image.ts';
import { sharedBake } from './helpers/shared-bake.ts';
import { served, tempDir } from './helpers/tmp.ts';

const noop = sharedBake('prebake-fbtest-layer-');

/** A valid-looking checkpoint on the host, outside any rootfs: `<dir>/.prebake`. */
function hostDecoy(t: ExecutionContext): string {
  const dir = tempDir(t, 'prebake-fbtest-decoy-');
  execFileSync('cp', ['-a', join(noop.baked.layers[0]!, '.prebake'), join(dir, '.prebake')]);
  return dir;
}

function editManifest(layer: string, edit: (m: CheckpointManifest) => void): void {
  const file = join(layer, '.prebake/manifest.json');
  const m = JSON.parse(readFileSync(file, 'utf8')) as CheckpointManifest;
  edit(m);
  writeFileSync(file, `${JSON.stringify(m, null, 2)}\n`);
  markManifest(join(layer, '.prebake'));
  // Signed again with the host's key: a trusted signer's broken checkpoint, which reaches CRIU.
  signCheckpoint(join(layer, '.prebake'), loadSigningKey(DEFAULT_KEY));
  noop.remember(layer);
}

/** Removes checkpoint files and their entries in the manifest: every check passes, CRIU cannot use it. */
function dropCheckpointFiles(layer: string, ...names: string[]): void {
  for (const n of names) rmSync(join(layer, '.prebake/checkpoint', n));
  editManifest(layer, (m) => {
    for (const n of names) delete m.files[n];
  });
}

function setCheckpointEnv(s: Spec, value: string): void {
  s.process!.env = [...s.process!.env!.filter((e) => !e.startsWith('PREBAKE_CHECKPOINT=')), `PREBAKE_CHECKPOINT=${value}`];
}

/** The network namespace's iptables rules (iptables-save: scripts/setup.sh installs iptables). */
function firewall(netns: string): string {
  return execFileSync('ip', ['netns', 'exec', netns, 'iptables-save'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}


async function within<T>(p: Promise<T>, ms: number, what: () => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(what())), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}


interface Container {
  b: OverlayBundle;
  rt: ReturnType<typeof runtimeDirs>;
  id: string;
  client: NetnsClient;
  create: Awaited<ReturnType<typeof run>>;
}

/** Makes a bundle over `layers`, lets the test shape it, and runs `prebake create` on it. */
async function prebakeCreate(
  t: ExecutionContext,
  layers: string[],
  opts: { prefix: string; spec?: (s: Spec, b: OverlayBundle) => void; rootfs?: (rootfs: string, b: OverlayBundle) => void; env?: NodeJS.ProcessEnv },
): Promise<Container> {
  const { b, rt, id } = testReplica(t, layers, opts.prefix);
  opts.rootfs?.(b.rootfs, b);
  b.writeSpec(noop.baked.spec(b.netnsPath, (s) => opts.spec?.(s, b)));
  const client = await NetnsClient.start(b.netns);
  t.teardown(() => client.close());
  const create = await run(PREBAKE, ['--root', rt.root, '--log', rt.log, '--log-format', 'json', 'create', '--bundle', b.dir, '--pid-file', join(b.dir, 'init.pid'), id], opts.env);
  t.teardown(() => create.close());
  t.is(create.code, 0, create.output);
  return { b, rt, id, client, create };
}

/**
 * Checks that the container was created cold (runc's `created`, no prebake state), that it
 * serves its first request after `prebake start`, and deletes it leaving no state behind.
 */
async function checkColdLifecycle(t: ExecutionContext, c: Container): Promise<void> {
  const { b, rt, id, client } = c;
  const state = JSON.parse((await run('runc', ['--root', rt.root, 'state', id])).output) as { status: string; pid: number };
  t.is(state.status, 'created', 'a restored container would already be running');
  t.is(Number(readFileSync(join(b.dir, 'init.pid'), 'utf8')), state.pid, 'the pid file names the container runc created');
  t.false(existsSync(join(rt.state, id)), 'a cold container needs no prebake state');
  const start = await run(PREBAKE, ['--root', rt.root, 'start', id]);
  t.is(start.code, 0, start.output);
  const first = await within(client.waitHttp({ port: PORT, path: '/', timeoutMs: 20_000 }), 25_000, () => {
    const fw = firewall(b.netns);
    return `the container does not answer on :${PORT} in its netns${/CRIU/.test(fw) ? `; CRIU's network lock is still in place:\n${fw}` : ''}`;
  });
  // A restore would go on from the bake's count (probe + warm-up requests).
  t.is((JSON.parse(first.body) as { served: number }).served, 1, first.body);
  t.is(await served(client), 2);
  t.deepEqual(functionPids(b.netns), [state.pid], 'the function runs once, as the cold container');

  const del = await killAndDelete(rt, id);
  t.is(del.code, 0, del.output);
  t.false(existsSync(join(rt.root, id)), 'runc state removed');
  t.false(existsSync(join(rt.state, id)), 'prebake state removed');
  t.deepEqual(functionPids(b.netns), []);
}

/** prebake's one fallback warning for the container, checked against `reason`; no restore logged. */
function checkWarning(t: ExecutionContext, c: Container, reason: RegExp): string {
  const log = c.rt.logLines() as { level: string; msg: string; time: string; id?: string }[];
  for (const l of log) t.is(typeof l.time + typeof l.level + typeof l.msg, 'stringstringstring', JSON.stringify(l));
  t.false(
    log.some((l) => /^restored /.test(l.msg)),
    JSON.stringify(log),
  );
  const warnings = log.filter((l) => l.level === 'warning' && /^cold start: /.test(l.msg));
  t.is(warnings.length, 1, JSON.stringify(log));
  const w = warnings[0];
  t.is(w?.id, c.id);
  t.regex(w?.msg ?? '', reason);
  t.log(w?.msg);
  return w?.msg ?? '';
}

/** The whole fallback check: create, the logged reason, then the cold lifecycle. */
async function expectFallback(
  t: ExecutionContext,
  layers: string[],
  reason: RegExp,
  opts: Parameters<typeof prebakeCreate>[2],
): Promise<Container> {
  const c = await prebakeCreate(t, layers, opts);
  checkWarning(t, c, reason);
  await checkColdLifecycle(t, c);
  return c;
}

test('a container without a checkpoint marker is created exactly like runc create, without starting Node', async (t) => {
  // The image carries a checkpoint, but nothing in config.json names it; other PREBAKE_ variables
  // (the restore signal) do not matter without one. No Node to start: bin/prebake hands the
  // call to runc itself.
  const c = await prebakeCreate(t, noop.baked.layers, {
    prefix: 'plain',
    spec: (s) => {
      s.process!.env = [...s.process!.env!.filter((e) => !e.startsWith('PREBAKE_CHECKPOINT=')), 'PREBAKE_RESTORE_SIGNAL=SIGUSR2'];
    },
    env: { ...process.env, PREBAKE_NODE: '/nonexistent/node' },
  });
  t.deepEqual(c.rt.logLines(), [], 'prebake logs nothing for a container it only passes to runc');
  t.false(existsSync(c.rt.state), 'no prebake state at all');
  await checkColdLifecycle(t, c);
});

test('fallback: no Node to run prebake\'s restore: the container starts cold and the log says why', async (t) => {
  await expectFallback(t, noop.baked.layers, /^cold start: \/nonexistent\/node is not installed$/, { prefix: 'nonode', env: { ...process.env, PREBAKE_NODE: '/nonexistent/node' } });
});

test('fallback: the checkpoint directory is missing from the rootfs', async (t) => {
  // The image before baking, with the marker of a baked one.
  await expectFallback(t, noop.baked.baseLayers, /checkpoint path "\/\.prebake": .*\.prebake does not exist/, { prefix: 'missing' });
});

test('fallback: the checkpoint directory was renamed away in the writable layer', async (t) => {
  await expectFallback(t, noop.baked.layers, /\.prebake does not exist/, {
    prefix: 'renamed',
    rootfs: (rootfs) => {
      // mv across overlay layers: a copy up (or a redirect) and a whiteout over /.prebake.
      execFileSync('mv', [join(rootfs, '.prebake'), join(rootfs, '.prebake-gone')]);
    },
  });
});

test('fallback: a truncated pages image fails the size check', async (t) => {
  const layer = noop.layerCopy(t);
  const pages = join(layer, '.prebake/checkpoint/pages-1.img');
  const size = statSync(pages).size;
  truncateSync(pages, Math.floor(size / 2));
  await expectFallback(t, [layer, ...noop.baked.baseLayers], new RegExp(`pages-1\\.img is ${Math.floor(size / 2)} bytes, the manifest says ${size}`), {
    prefix: 'trunc',
  });
});

test('fallback: a pages image with one byte changed fails the sha256 check', async (t) => {
  const layer = noop.layerCopy(t);
  const pages = join(layer, '.prebake/checkpoint/pages-1.img');
  const data = readFileSync(pages);
  const at = data.length >> 1;
  data[at] = data[at]! ^ 0xff;
  writeFileSync(pages, data);
  await expectFallback(t, [layer, ...noop.baked.baseLayers], /pages-1\.img does not match its sha256/, { prefix: 'sha' });
});

test('fallback: a manifest written by another CRIU major version', async (t) => {
  const layer = noop.layerCopy(t);
  editManifest(layer, (m) => {
    m.versions.criu = '3.17';
  });
  await expectFallback(t, [layer, ...noop.baked.baseLayers], /written by CRIU 3\.17, this host has CRIU \d+\./, { prefix: 'criu3' });
});

test('fallback: a mount destination the checkpoint was not baked with', async (t) => {
  await expectFallback(t, noop.baked.layers, /mount destinations differ .*\+\/extra/, {
    prefix: 'mount',
    spec: (s) => {
      s.mounts!.push({ destination: '/extra', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev', 'mode=755'] });
    },
  });
});

test('fallback: a spec that drops the capabilities the checkpoint was baked with', async (t) => {
  await expectFallback(t, noop.baked.layers, /security: .*capabilities/, {
    prefix: 'caps',
    spec: (s) => {
      s.process!.capabilities = { bounding: [], effective: [], inheritable: [], permitted: [], ambient: [] };
    },
  });
});

test('fallback: annotation io.prebake.checkpoint=off wins over PREBAKE_CHECKPOINT', async (t) => {
  await expectFallback(t, noop.baked.layers, /checkpoint turned off by annotation io\.prebake\.checkpoint/, {
    prefix: 'off',
    spec: (s) => {
      t.true(s.process!.env!.includes('PREBAKE_CHECKPOINT=/.prebake'));
      s.annotations = { ...(s.annotations ?? {}), [CHECKPOINT_ANNOTATION]: 'off' };
    },
  });
});

/** A checkpoint that passes every check and that CRIU cannot restore: the attempt leaves nothing. */
async function failedRestore(t: ExecutionContext, layer: string, prefix: string): Promise<void> {
  const c = await prebakeCreate(t, [layer, ...noop.baked.baseLayers], { prefix });
  checkWarning(t, c, new RegExp(`^cold start: restore of ${c.id} from .* failed: `));
  // runc holds exactly the cold container, nothing of the restore; prebake's state went with it.
  const list = JSON.parse((await run('runc', ['--root', c.rt.root, 'list', '--format', 'json'])).output) as { id: string; status: string }[];
  t.deepEqual(
    list.map((x) => [x.id, x.status]),
    [[c.id, 'created']],
  );
  t.false(existsSync(join(c.rt.state, c.id)), 'no prebake state (CRIU work dir, runc restore log) is left');
  t.notRegex(firewall(c.b.netns), /CRIU/, "CRIU's network lock is left in the container's network namespace");
  await checkColdLifecycle(t, c);
}

test('fallback: restore fails inside CRIU before the process tree exists (pstree.img gone, manifest consistent)', async (t) => {
  const layer = noop.layerCopy(t);
  dropCheckpointFiles(layer, 'pstree.img');
  await failedRestore(t, layer, 'nopstree');
});

test('fallback: restore fails inside CRIU after the processes were made (pages-1.img gone, manifest consistent)', async (t) => {
  const layer = noop.layerCopy(t);
  dropCheckpointFiles(layer, 'pages-1.img');
  await failedRestore(t, layer, 'nopages');
});

/** Rewrites the checkpoint's inventory.img with another network lock method (CRIU's enum: 0 iptables, 1 nftables, 2 skip), digest updated. */
function setNetworkLockMethod(layer: string, method: number): void {
  const inventory = join(layer, '.prebake/checkpoint/inventory.img');
  const img = readImage(inventory);
  img.entries[0]!.network_lock_method = method;
  writeImage(inventory, img);
  const data = readFileSync(inventory);
  editManifest(layer, (m) => {
    m.files['inventory.img'] = { size: data.length, sha256: createHash('sha256').update(data).digest('hex') };
  });
}

test("fallback: a failed restore of a checkpoint taken with CRIU's iptables network lock leaves no lock behind", async (t) => {
  const layer = noop.layerCopy(t);
  setNetworkLockMethod(layer, 0);
  t.is(readImage(join(layer, '.prebake/checkpoint/inventory.img')).entries[0]!.network_lock_method, 0);
  dropCheckpointFiles(layer, 'pages-1.img');
  // What the test stands on: runc restore of this checkpoint on its own leaves CRIU's lock in the namespace.
  const raw = testReplica(t, [layer, ...noop.baked.baseLayers], 'iptlock-raw');
  raw.b.writeSpec(noop.baked.spec(raw.b.netnsPath));
  mkdirSync(join(raw.b.dir, 'criu-work'));
  const restore = await run('runc', ['--root', raw.rt.root, 'restore', '--detach', '--image-path', join(raw.b.rootfs, '.prebake/checkpoint'), '--work-path', join(raw.b.dir, 'criu-work'), '--bundle', raw.b.dir, raw.id], rawRestoreEnv(raw.b.dir));
  t.teardown(() => restore.close());
  t.not(restore.code, 0, restore.output);
  t.regex(firewall(raw.b.netns), /CRIU/, 'a failed raw restore leaves no lock: the test below would prove nothing');
  await failedRestore(t, layer, 'iptlock');
});

// Refusals: the path is resolved inside the rootfs only. Where it could reach a valid checkpoint
// outside the rootfs, a restore (served > 1) would show that prebake followed it.

for (const value of ['../../etc', '/../../etc', '/../decoy/.prebake', '/.prebake/../../decoy/.prebake']) {
  test(`refused: PREBAKE_CHECKPOINT=${value} leaves the rootfs`, async (t) => {
    await expectFallback(t, noop.baked.layers, /leaves the rootfs \("\.\."\)/, {
      prefix: 'dotdot',
      spec: (s) => setCheckpointEnv(s, value),
      // <bundle>/decoy/.prebake, one level above the rootfs: a checkpoint that would restore.
      rootfs: (_rootfs, b) => {
        mkdirSync(join(b.dir, 'decoy'));
        execFileSync('cp', ['-a', join(noop.baked.layers[0]!, '.prebake'), join(b.dir, 'decoy/.prebake')]);
      },
    });
  });
}

test('refused: /.prebake is a symlink to a checkpoint on the host', async (t) => {
  const decoy = hostDecoy(t);
  const layer = noop.layerCopy(t);
  rmSync(join(layer, '.prebake'), { recursive: true });
  symlinkSync(join(decoy, '.prebake'), join(layer, '.prebake'));
  await expectFallback(t, [layer, ...noop.baked.baseLayers], /\.prebake is a symlink, refused/, { prefix: 'symlink' });
});

test('refused: a symlink in the middle of the path (/link -> /)', async (t) => {
  const layer = noop.layerCopy(t);
  symlinkSync('/', join(layer, 'link'));
  await expectFallback(t, [layer, ...noop.baked.baseLayers], /link is a symlink, refused/, {
    prefix: 'midlink',
    spec: (s) => setCheckpointEnv(s, '/link/.prebake'),
  });
});

test('refused: a symlink in the middle of the path to a host directory holding a checkpoint', async (t) => {
  const decoy = hostDecoy(t);
  const layer = noop.layerCopy(t);
  symlinkSync(decoy, join(layer, 'link'));
  await expectFallback(t, [layer, ...noop.baked.baseLayers], /link is a symlink, refused/, {
    prefix: 'hostlink',
    spec: (s) => setCheckpointEnv(s, '/link/.prebake'),
  });
});

test('refused: /.prebake/checkpoint is a symlink to checkpoint images on the host', async (t) => {
  // The manifest in the rootfs is genuine (signed by a trusted key, not yet in the host's store)
  // and matches the host files it would be pointed at.
  const decoy = hostDecoy(t);
  const layer = noop.layerCopy(t);
  editManifest(layer, (m) => void (m.created = new Date().toISOString()));
  for (const f of ['manifest.json', 'manifest.sig']) execFileSync('cp', [join(layer, '.prebake', f), join(decoy, '.prebake', f)]);
  rmSync(join(layer, '.prebake/checkpoint'), { recursive: true });
  symlinkSync(join(decoy, '.prebake/checkpoint'), join(layer, '.prebake/checkpoint'));
  await expectFallback(t, [layer, ...noop.baked.baseLayers], /symlink|symbolic link/, { prefix: 'cplink' });
});

test('refused: /.prebake/manifest.json is a symlink to a manifest on the host', async (t) => {
  const decoy = hostDecoy(t);
  const layer = noop.layerCopy(t);
  rmSync(join(layer, '.prebake/manifest.json'));
  symlinkSync(join(decoy, '.prebake/manifest.json'), join(layer, '.prebake/manifest.json'));
  await expectFallback(t, [layer, ...noop.baked.baseLayers], /symlink|symbolic link/, { prefix: 'mflink' });
});

// Guard against a test bake that would make every fallback look like a cold start.
test('the shared bake restores when nothing is wrong (served goes on from the bake)', async (t) => {
  const c = await prebakeCreate(t, noop.baked.layers, { prefix: 'control' });
  t.true(
    c.rt.logLines().some((l) => l.level === 'info' && /^restored /.test(l.msg)),
    JSON.stringify(c.rt.logLines()),
  );
  t.is((await run(PREBAKE, ['--root', c.rt.root, 'start', c.id])).code, 0);
  t.is(await served(c.client), WARMUP + 2);
  const del = await run(PREBAKE, ['--root', c.rt.root, 'delete', '--force', c.id]);
  t.is(del.code, 0, del.output);
  t.false(existsSync(join(c.rt.root, c.id)));
  t.false(existsSync(join(c.rt.state, c.id)));
});
