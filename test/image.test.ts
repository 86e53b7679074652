// The image module: reference syntax, round trips through oci, oci-archive and docker-archive
// (checked by skopeo and umoci), digest checks, whiteouts, and hostile layers refused without a
// byte written outside the rootfs.

import test, { type ExecutionContext } from 'ava';
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sha256 } from '../src/image/blob.ts';
import { packLayer } from '../src/image/pack.ts';
import { readImage } from '../src/image/read.ts';
import { parseImageRef, TRANSPORTS } from '../src/image/ref.ts';
import { unpackLayers } from '../src/image/unpack.ts';
import { scratchImage, writeImage } from '../src/image/write.ts';
import { type Member, tarOf } from './helpers/tar.ts';
import { tarLayer, tempDir } from './helpers/tmp.ts';


const sh = (cmd: string, args: string[]) => execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });



// A tiny base image, oci:<base>:base — busybox, /bin/sh, /etc/passwd, /data/keep — shared read-only.
let base: string;
test.before(async () => {
  base = mkdtempSync(join(tmpdir(), 'prebake-image-base-'));
  const rootfs = join(base, 'rootfs');
  mkdirSync(join(rootfs, 'bin'), { recursive: true });
  mkdirSync(join(rootfs, 'etc'));
  mkdirSync(join(rootfs, 'data'));
  cpSync('/bin/busybox', join(rootfs, 'bin/busybox'));
  symlinkSync('busybox', join(rootfs, 'bin/sh'));
  writeFileSync(join(rootfs, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
  writeFileSync(join(rootfs, 'data/keep'), 'kept\n');
  const layer = await packLayer(rootfs, '/');
  await writeImage(`oci:${base}/layout:base`, { source: scratchImage({ Cmd: ['/bin/sh'], Env: ['PATH=/bin', 'MODE=cold'] }), addLayer: layer, createdBy: 'test base' });
  await layer.cleanup();
});
test.after.always(() => rmSync(base, { recursive: true, force: true }));

/** The test's base image, read; its temp files go when the test ends. */
async function baseSource(t: ExecutionContext) {
  const source = await readImage(`oci:${base}/layout:base`);
  t.teardown(() => source.cleanup());
  return source;
}

/** A checkpoint-like tree packed as the layer prebake-build adds. */
async function prebakeLayer(t: ExecutionContext) {
  const dir = tempDir(t, 'prebake-image-test-');
  mkdirSync(join(dir, 'checkpoint'));
  writeFileSync(join(dir, 'manifest.json'), '{"format":1}\n');
  writeFileSync(join(dir, 'checkpoint/pages-1.img'), Buffer.alloc(8192, 7));
  const layer = await packLayer(dir, '/.prebake');
  t.teardown(() => layer.cleanup());
  return layer;
}

const BAKE = {
  env: { PREBAKE_CHECKPOINT: '/.prebake', MODE: 'warm' },
  labels: { 'io.prebake.format': '1' },
  annotations: { 'io.prebake.checkpoint': '/.prebake' },
};

test('references: the skopeo/podman transports parse; an unknown or malformed one names the reference and the transports', (t) => {
  t.deepEqual(parseImageRef('oci:/x/y:v1'), { transport: 'oci', path: '/x/y', tag: 'v1' });
  t.deepEqual(parseImageRef('oci:dir'), { transport: 'oci', path: 'dir' });
  t.deepEqual(parseImageRef('oci-archive:a.tar:latest'), { transport: 'oci-archive', path: 'a.tar', tag: 'latest' });
  t.deepEqual(parseImageRef('docker-archive:a.tar:localhost:5000/fn/noop:1.0'), { transport: 'docker-archive', path: 'a.tar', name: 'localhost:5000/fn/noop:1.0' });
  t.deepEqual(parseImageRef('docker-archive:a.tar'), { transport: 'docker-archive', path: 'a.tar' });
  t.deepEqual(parseImageRef('docker-daemon:noop:baked'), { transport: 'docker-daemon', name: 'noop:baked' });
  t.deepEqual(parseImageRef('containerd:noop:1'), { transport: 'containerd', namespace: 'default', name: 'docker.io/library/noop:1' });
  t.deepEqual(parseImageRef('containerd:k8s.io/docker.io/library/noop:1'), { transport: 'containerd', namespace: 'k8s.io', name: 'docker.io/library/noop:1' });
  t.deepEqual(parseImageRef('containerd:ghcr.io/fn/noop:1'), { transport: 'containerd', namespace: 'default', name: 'ghcr.io/fn/noop:1' });
  t.deepEqual(parseImageRef('containers-storage:fn/noop:1'), { transport: 'containers-storage', name: 'fn/noop:1' });
  const supported = TRANSPORTS.map((s) => s.replace(/[[\]]/g, '\\$&')).join(', ');
  t.throws(() => parseImageRef('dir:/x'), { message: new RegExp(`"dir:/x": unknown transport "dir"; supported: ${supported}`) });
  t.throws(() => parseImageRef('busybox'), { message: /"busybox": no transport; supported: oci:DIR/ });
  t.throws(() => parseImageRef('docker-daemon:busybox'), { message: /"docker-daemon:busybox": "busybox" is not NAME:TAG; supported:/ });
  t.throws(() => parseImageRef('docker-archive:x.tar:Busybox:1'), { message: /is not NAME:TAG/ });
  t.throws(() => parseImageRef('oci::tag'), { message: /the path is empty/ });
});

test('oci → oci with an added layer: blobs reused, skopeo inspects it, umoci unpacks it with the layer and the env', async (t) => {
  const dir = tempDir(t, 'prebake-image-test-');
  const source = await baseSource(t);
  const layer = await prebakeLayer(t);
  const out = join(dir, 'out');
  const written = await writeImage(`oci:${out}:baked`, { source, addLayer: layer, ...BAKE });

  const inspect = JSON.parse(sh('skopeo', ['inspect', `oci:${out}:baked`]));
  t.is(inspect.Digest, written.manifestDigest);
  t.deepEqual(inspect.Layers, [source.layers[0]!.digest, layer.digest]);
  t.deepEqual(inspect.Env, ['PATH=/bin', 'MODE=warm', 'PREBAKE_CHECKPOINT=/.prebake']);
  t.is(inspect.Labels['io.prebake.format'], '1');
  t.deepEqual(
    readFileSync(join(out, 'blobs/sha256', source.layers[0]!.digest.slice(7))),
    readFileSync(source.layers[0]!.path),
    'the source layer is copied byte for byte',
  );

  const back = await readImage(`oci:${out}:baked`);
  t.teardown(() => back.cleanup());
  t.deepEqual(back.manifest.annotations, BAKE.annotations);
  t.deepEqual(back.config.rootfs.diff_ids, [source.layers[0]!.diffId, layer.diffId]);
  t.deepEqual(back.config.history?.map((h) => h.created_by), ['test base', 'prebake-build']);

  const bundle = join(dir, 'bundle');
  sh('umoci', ['unpack', '--image', `${out}:baked`, bundle]);
  t.is(readFileSync(join(bundle, 'rootfs/.prebake/manifest.json'), 'utf8'), '{"format":1}\n');
  t.is(statSync(join(bundle, 'rootfs/.prebake/checkpoint/pages-1.img')).size, 8192);
  t.true(statSync(join(bundle, 'rootfs/bin/busybox')).isFile());
  const config = JSON.parse(readFileSync(join(bundle, 'config.json'), 'utf8'));
  t.true(config.process.env.includes('PREBAKE_CHECKPOINT=/.prebake'));

  // The same layout takes a second tag; the first stays.
  await writeImage(`oci:${out}:again`, { source, addLayer: layer });
  const index = JSON.parse(readFileSync(join(out, 'index.json'), 'utf8'));
  t.deepEqual(index.manifests.map((d: { annotations: Record<string, string> }) => d.annotations['org.opencontainers.image.ref.name']), ['baked', 'again']);
});

test('a failed write leaves the destination untouched', async (t) => {
  const dir = tempDir(t, 'prebake-image-test-');
  const source = await baseSource(t);
  const missing = { ...(await prebakeLayer(t)), path: join(dir, 'no-such-layer') };
  await t.throwsAsync(writeImage(`oci:${dir}/out:x`, { source, addLayer: missing }), { message: /writing image oci:.*\/out:x: .*no-such-layer/ });
  await t.throwsAsync(writeImage(`docker-archive:${dir}/out.tar:a/b:1`, { source, addLayer: missing }), { message: /no-such-layer/ });
  t.deepEqual(readdirSync(dir), []);
});

test('oci → docker-archive: skopeo inspects it and copies it back; docker 20.10-style archives with several images read by name', async (t) => {
  const dir = tempDir(t, 'prebake-image-test-');
  const source = await baseSource(t);
  const layer = await prebakeLayer(t);
  const file = join(dir, 'baked.tar');
  await writeImage(`docker-archive:${file}:fn/noop:baked`, { source, addLayer: layer, ...BAKE });
  const inspect = JSON.parse(sh('skopeo', ['inspect', `docker-archive:${file}`]));
  t.deepEqual(inspect.Layers, [source.layers[0]!.diffId, layer.diffId]); // skopeo names docker-archive layers by diffID
  t.true(inspect.Env.includes('PREBAKE_CHECKPOINT=/.prebake'));
  sh('skopeo', ['copy', '-q', `docker-archive:${file}`, `oci:${dir}/copied:x`]);
  t.is(JSON.parse(sh('skopeo', ['inspect', '--config', `oci:${dir}/copied:x`])).rootfs.diff_ids.length, 2);

  const back = await readImage(`docker-archive:${file}:fn/noop:baked`);
  t.teardown(() => back.cleanup());
  t.deepEqual(back.layers.map((l) => [l.digest, l.diffId]), [[source.layers[0]!.digest, source.layers[0]!.diffId], [layer.digest, layer.diffId]]);
  const rootfs = join(dir, 'rootfs');
  await unpackLayers(back.layers, rootfs);
  t.true(existsSync(join(rootfs, '.prebake/checkpoint/pages-1.img')));

  // What skopeo writes: <diffid>.tar, <id>/layer.tar symlinks to it, a repositories file.
  sh('skopeo', ['copy', '-q', `oci:${base}/layout:base`, `docker-archive:${dir}/skopeo.tar:fn/base:1`]);
  const fromSkopeo = await readImage(`docker-archive:${dir}/skopeo.tar:docker.io/fn/base:1`);
  t.teardown(() => fromSkopeo.cleanup());
  t.is(fromSkopeo.layers[0]!.diffId, source.layers[0]!.diffId);

  // What docker 20.10 `docker save a b` writes: <id>/layer.tar (uncompressed), <config hex>.json, shared layers as symlinks.
  const plain = await tarLayer(dir, [{ name: 'hello', content: 'hi\n' }], 'none');
  const config = (tags: string) => Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: { Env: [`TAGS=${tags}`] }, rootfs: { type: 'layers', diff_ids: [plain.diffId] } }));
  const [c1, c2] = [config('one'), config('two')];
  const archive = join(dir, 'legacy.tar');
  writeFileSync(
    archive,
    await tarOf([
      { name: 'aaaa/layer.tar', content: readFileSync(plain.path) },
      { name: 'bbbb/layer.tar', type: 'symlink', linkname: '../aaaa/layer.tar' },
      { name: `${sha256(c1).slice(7)}.json`, content: c1 },
      { name: `${sha256(c2).slice(7)}.json`, content: c2 },
      {
        name: 'manifest.json',
        content: JSON.stringify([
          { Config: `${sha256(c1).slice(7)}.json`, RepoTags: ['one:1'], Layers: ['aaaa/layer.tar'] },
          { Config: `${sha256(c2).slice(7)}.json`, RepoTags: ['two:2', 'docker.io/library/two:latest'], Layers: ['bbbb/layer.tar'] },
        ]),
      },
    ]),
  );
  const two = await readImage(`docker-archive:${archive}:two:latest`);
  t.teardown(() => two.cleanup());
  t.deepEqual(two.config.config?.Env, ['TAGS=two']);
  t.is(two.layers[0]!.digest, plain.digest);
  t.is(two.configDigest, sha256(c2));
  await t.throwsAsync(readImage(`docker-archive:${archive}:three:3`), {
    message: /docker-archive:.*legacy\.tar:three:3: has no image tagged "three:3" \(tags present: "one:1", "two:2", "docker\.io\/library\/two:latest"\)/,
  });
  await t.throwsAsync(readImage(`docker-archive:${archive}`), { message: /holds 2 images; name one by tag/ });
});

test('docker-archive in the OCI-in-docker-archive layout of docker 25+ (blobs/sha256/…)', async (t) => {
  const dir = tempDir(t, 'prebake-image-test-');
  const source = await baseSource(t);
  const blob = (digest: string) => `blobs/sha256/${digest.slice(7)}`;
  const layout = join(base, 'layout');
  const file = join(dir, 'docker25.tar');
  const members = ['oci-layout', 'index.json', blob(source.configDigest), ...source.layers.map((l) => blob(l.digest))];
  const entry = { Config: blob(source.configDigest), RepoTags: ['fn/base:1'], Layers: source.layers.map((l) => blob(l.digest)) };
  writeFileSync(file, await tarOf([...members.map((name) => ({ name, content: readFileSync(join(layout, name)) })), { name: 'manifest.json', content: JSON.stringify([entry]) }]));
  const image = await readImage(`docker-archive:${file}:fn/base:1`);
  t.teardown(() => image.cleanup());
  t.is(image.configDigest, source.configDigest);
  t.deepEqual(image.layers.map((l) => [l.digest, l.diffId, l.mediaType]), source.layers.map((l) => [l.digest, l.diffId, l.mediaType]));

  // A blob whose content does not match the digest its path names is caught.
  const bad = join(dir, 'bad.tar');
  writeFileSync(bad, await tarOf([{ name: blob(source.configDigest), content: '{}' }, ...source.layers.map((l) => ({ name: blob(l.digest), content: readFileSync(l.path) })), { name: 'manifest.json', content: JSON.stringify([entry]) }]));
  await t.throwsAsync(readImage(`docker-archive:${bad}`), { message: new RegExp(`config ${blob(source.configDigest)} has sha256:[0-9a-f]{64}, its name says ${source.configDigest}`) });
});

test('oci-archive round trip', async (t) => {
  const dir = tempDir(t, 'prebake-image-test-');
  const source = await baseSource(t);
  const layer = await prebakeLayer(t);
  const file = join(dir, 'baked.oci.tar');
  const written = await writeImage(`oci-archive:${file}:baked`, { source, addLayer: layer, ...BAKE });
  t.is(JSON.parse(sh('skopeo', ['inspect', `oci-archive:${file}:baked`])).Digest, written.manifestDigest);
  const back = await readImage(`oci-archive:${file}:baked`);
  t.is(back.configDigest, written.configDigest);
  t.deepEqual(back.layers.map((l) => l.digest), [source.layers[0]!.digest, layer.digest]);
  t.deepEqual(back.manifest.annotations, BAKE.annotations);
  const temp = join(back.layers[0]!.path, '../../../..');
  t.true(existsSync(temp));
  await back.cleanup();
  t.false(existsSync(temp), 'cleanup removes the unpacked archive');
  // The same inputs give the same bytes, from the layer up.
  t.is((await prebakeLayer(t)).digest, layer.digest);
  const created = new Date(written.config.created!);
  const [a, b] = [join(dir, 'a.tar'), join(dir, 'b.tar')];
  for (const f of [a, b]) await writeImage(`oci-archive:${f}:baked`, { source, addLayer: layer, ...BAKE, created });
  t.deepEqual(readFileSync(a), readFileSync(b));
  t.deepEqual(readFileSync(a), readFileSync(file));
});

test('a flipped byte in a blob or a wrong diff_id is caught, naming the blob', async (t) => {
  const dir = tempDir(t, 'prebake-image-test-');
  cpSync(join(base, 'layout'), join(dir, 'layout'), { recursive: true });
  const good = await readImage(`oci:${dir}/layout:base`);
  const { digest, path } = good.layers[0]!;
  const bytes = readFileSync(path);
  bytes[bytes.length >> 1]! ^= 0x01;
  writeFileSync(path, bytes);
  await t.throwsAsync(readImage(`oci:${dir}/layout:base`), { message: new RegExp(`reading image oci:.*: layer 0 \\(${digest}\\): blob .* has sha256:[0-9a-f]{64}, expected ${digest}`) });

  const layer = await tarLayer(dir, [{ name: 'f', content: 'x' }]);
  await t.throwsAsync(unpackLayers([{ ...layer, diffId: `sha256:${'0'.repeat(64)}` }], join(dir, 'rootfs')), {
    message: new RegExp(`layer 0 \\(${layer.digest}\\): its uncompressed content has ${layer.diffId}, the config's rootfs.diff_ids says sha256:0{64}`),
  });
});

test('a missing tag names the tags present', async (t) => {
  await t.throwsAsync(readImage(`oci:${base}/layout:nope`), { message: /reading image oci:.*:nope: has no image tagged "nope" \(tags present: "base"\)/ });
  await t.throwsAsync(readImage(`oci:${base}/no-such-dir:x`), { message: /is not an OCI image layout/ });
});

test('unpack: whiteouts and opaque dirs; owners, modes, times, devices, fifos, hard and symbolic links kept', async (t) => {
  const dir = tempDir(t, 'prebake-image-test-');
  const rootfs = join(dir, 'rootfs');
  const y2k = new Date('2000-01-01T00:00:00Z');
  const lower = await tarLayer(dir, [
    { name: 'data/', type: 'directory', mode: 0o750, mtime: y2k },
    { name: 'data/keep', content: 'kept' },
    { name: 'data/gone', content: 'gone' },
    { name: 'data/gone-dir/inner', content: 'gone' },
    { name: 'data/suid', content: '#!/bin/sh\n', mode: 0o4755, uid: 1000, gid: 1001, mtime: y2k },
    { name: 'data/hard', type: 'link', linkname: 'data/keep' },
    { name: 'data/link', type: 'symlink', linkname: '/etc/passwd' },
    { name: 'data/fifo', type: 'fifo', mode: 0o600 },
    { name: 'dev/null', type: 'character-device', devmajor: 1, devminor: 3, mode: 0o666 },
    { name: 'opq/a', content: 'a' },
    { name: 'opq/sub/b', content: 'b' },
  ]);
  const upper = await tarLayer(dir, [
    { name: 'data/', type: 'directory', mode: 0o750, mtime: y2k }, // a diff carries the parent it changed
    { name: 'data/.wh.gone' },
    { name: 'data/.wh.gone-dir' },
    { name: 'opq/new', content: 'new' },
    { name: 'opq/newdir/file', content: 'new' }, // its directory comes into being implicitly
    { name: 'opq/.wh..wh..opq' },
  ]);
  await unpackLayers([lower, upper], rootfs);
  const data = join(rootfs, 'data');
  t.deepEqual(readdirSync(data).sort(), ['fifo', 'hard', 'keep', 'link', 'suid']);
  t.deepEqual(readdirSync(join(rootfs, 'opq')).sort(), ['new', 'newdir']);
  t.is(readFileSync(join(rootfs, 'opq/newdir/file'), 'utf8'), 'new');
  const suid = statSync(join(data, 'suid'));
  t.is(suid.mode & 0o7777, 0o4755);
  t.deepEqual([suid.uid, suid.gid], [1000, 1001]);
  t.is(suid.mtimeMs, y2k.getTime());
  const dataDir = statSync(data);
  t.is(dataDir.mode & 0o7777, 0o750);
  t.is(dataDir.mtimeMs, y2k.getTime(), 'directory times are set after their contents');
  t.is(statSync(join(data, 'hard')).ino, statSync(join(data, 'keep')).ino);
  t.is(readlinkSync(join(data, 'link')), '/etc/passwd');
  t.true(lstatSync(join(data, 'fifo')).isFIFO());
  const dev = lstatSync(join(rootfs, 'dev/null'));
  t.true(dev.isCharacterDevice());
  t.is(dev.rdev, (1 << 8) | 3);
});

test('unpack: zstd layers', async (t) => {
  const dir = tempDir(t, 'prebake-image-test-');
  const layer = await tarLayer(dir, [{ name: 'z/file', content: 'zstd' }], 'zstd');
  await unpackLayers([layer], join(dir, 'rootfs'));
  t.is(readFileSync(join(dir, 'rootfs/z/file'), 'utf8'), 'zstd');
});

test('unpack refuses ../escape, /abs, a hardlink out of the rootfs and a write through a symlink, writing nothing outside', async (t) => {
  const dir = tempDir(t, 'prebake-image-test-');
  const outside = join(dir, 'outside');
  mkdirSync(outside);
  const absolute = join(outside, 'abs');
  const passwd = statSync('/etc/passwd');
  const cases: [string, Member[][], RegExp][] = [
    ['../escape', [[{ name: '../escape', content: 'x' }]], /layer 0 \(.*\): entry "\.\.\/escape" has a "\.\." path component, refused/],
    ['/abs', [[{ name: absolute, content: 'x' }]], /layer 0 \(.*\): entry ".*\/outside\/abs" has an absolute path, refused/],
    ['hardlink out', [[{ name: 'x', type: 'link', linkname: '../../etc/passwd' }]], /entry "x" links to "\.\.\/\.\.\/etc\/passwd", which has a "\.\." path component, refused/],
    ['hardlink to nothing', [[{ name: 'x', type: 'link', linkname: 'nothing' }]], /entry "x" links to "nothing", which is not an existing file in the rootfs, refused/],
    ['symlink then a/pwned', [[{ name: 'a', type: 'symlink', linkname: outside }, { name: 'a/pwned', content: 'x' }]], /layer 0 \(.*\): entry "a\/pwned" passes through the symlink "a", refused/],
    [
      'symlink, then a deeper entry in the next layer',
      [[{ name: 'etc', type: 'symlink', linkname: '../../outside' }], [{ name: 'etc/deeper/pwned', content: 'x' }]],
      /layer 1 \(.*\): entry "etc\/deeper\/pwned" passes through the symlink "etc", refused/,
    ],
    ['hardlink through a symlink', [[{ name: 'a', type: 'symlink', linkname: '/etc' }, { name: 'x', type: 'link', linkname: 'a/passwd' }]], /entry "x" links to "a\/passwd", which passes through the symlink "a", refused/],
  ];
  for (const [what, members, message] of cases) {
    const rootfs = join(dir, 'rootfs', what.replace(/\W/g, '_'));
    const layers = await Promise.all(members.map((m) => tarLayer(dir, m)));
    await t.throwsAsync(unpackLayers(layers, rootfs), { message }, what);
  }
  t.false(existsSync(join(dir, 'rootfs', 'escape')));
  t.false(existsSync(join(dir, 'escape')));
  t.deepEqual(readdirSync(outside), []);
  t.is(statSync('/etc/passwd').nlink, passwd.nlink);
});

// podman keeps its images in local storage, no daemon needed; the test image is removed afterwards.
const podman = (() => {
  try {
    sh('podman', ['info', '--format', '{{.Store.GraphRoot}}']);
    return true;
  } catch {
    return false;
  }
})();
(podman ? test : test.skip)('containers-storage round trip through podman load/save', async (t) => {
  const name = `prebake-test/image-${process.pid}:baked`;
  t.teardown(() => {
    try {
      sh('podman', ['rmi', `localhost/${name}`]);
    } catch {}
  });
  const source = await baseSource(t);
  const layer = await prebakeLayer(t);
  await writeImage(`containers-storage:${name}`, { source, addLayer: layer, ...BAKE });
  const back = await readImage(`containers-storage:${name}`);
  t.teardown(() => back.cleanup());
  t.deepEqual(back.config.rootfs.diff_ids, [source.layers[0]!.diffId, layer.diffId]);
  t.true(back.config.config?.Env?.includes('PREBAKE_CHECKPOINT=/.prebake'));
});
