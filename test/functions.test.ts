// The sample functions of the cold-start study as images (images/<name>, lab/functions.ts):
// each image builds once and then comes from the cache, and, unpacked and started cold under runc,
// answers as its function should. Logs each function's cold start (spawn of `runc run` → first
// HTTP 200) and the initialisation time the function reports itself.

import test, { type ExecutionContext } from 'ava';
import { createReadStream, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import tar from 'tar-stream';
import { bakeFunction } from '../lab/engines/bake.ts';
import { functionSpec, runcDefaultSpec } from '../src/bake/spec.ts';
import { targetSpec } from '../src/bake/target.ts';
import { DIGIT_EIGHT, FUNCTION_PORT, FUNCTIONS, type FunctionName, type FunctionRecipe, functionImage, IMAGES_DIR } from '../lab/functions.ts';
import { storeEntry } from '../src/checkpoint/store.ts';
import { readImage } from '../src/image/read.ts';
import { loadRuntimeConfig } from '../src/runtime/config.ts';
import { unpackLayers } from '../src/image/unpack.ts';
import { type HttpResult, NetnsClient } from '../src/lib/netns.ts';
import { type PipedCommand, spawnPiped } from '../src/lib/pipe.ts';
import { overlayBundle, PREBAKE, rawRestoreEnv, runtimeDirs, uniqueName } from '../lab/bundle.ts';
import { run, type RunResult } from './helpers/bundle.ts';

// The first build of ml debootstraps a Python with scipy and scikit-learn: minutes; java's two rootfs
// (a JRE, and a JDK for javac) ~1.5 min each.
const BUILD_TIMEOUT = 40 * 60_000;
const NAMES = Object.keys(FUNCTIONS) as FunctionName[];

/** A held-out "2" of scikit-learn's digits (sample 1600), 8x8 pixels 0-16. */
const DIGIT_TWO = [
  0, 2, 13, 16, 12, 0, 0, 0, 0, 9, 15, 10, 16, 3, 0, 0, 0, 5, 7, 5, 16, 3, 0, 0, 0, 0, 0, 10, 14, 0, 0, 0,
  0, 0, 5, 16, 7, 0, 0, 0, 0, 0, 14, 16, 1, 3, 7, 1, 0, 3, 16, 12, 10, 16, 11, 1, 0, 0, 13, 16, 13, 7, 1, 0,
];

interface Status {
  ok: boolean;
  served: number;
  pid: number;
  initialised_at: number;
  init_seconds?: number;
  [key: string]: unknown;
}

const megabytes = (bytes: number) => `${(bytes / 1e6).toFixed(1)} MB`;

/** The member names of a gzip'd tar layer, and the content of those in `read`. */
async function layerMembers(path: string, read: string[] = []): Promise<{ names: string[]; content: Map<string, Buffer> }> {
  const names: string[] = [];
  const content = new Map<string, Buffer>();
  const extract = tar.extract();
  const piping = pipeline(createReadStream(path), createGunzip(), extract);
  for await (const entry of extract) {
    names.push(entry.header.name);
    const chunks: Buffer[] = [];
    for await (const c of entry) chunks.push(c as Buffer);
    if (read.includes(entry.header.name)) content.set(entry.header.name, Buffer.concat(chunks));
  }
  await piping;
  return { names, content };
}

/** Width and height from a JPEG's start-of-frame segment. */
function jpegSize(jpeg: Buffer): { width: number; height: number } {
  if (jpeg.length < 4 || jpeg.readUInt16BE(0) !== 0xffd8) throw new Error('not a JPEG: no SOI marker');
  let i = 2;
  while (i + 4 <= jpeg.length) {
    if (jpeg[i] !== 0xff) throw new Error(`no marker at byte ${i}`);
    const marker = jpeg[i + 1]!;
    if (marker === 0xff) {
      i += 1; // fill byte
      continue;
    }
    if (marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) {
      i += 2; // a marker without a segment
      continue;
    }
    // SOF0-SOF15, except DHT (C4), JPG (C8) and DAC (CC): length, precision, height, width.
    if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc)
      return { height: jpeg.readUInt16BE(i + 5), width: jpeg.readUInt16BE(i + 7) };
    if (marker === 0xda || marker === 0xd9) break; // scan data or the end, and no frame header yet
    i += 2 + jpeg.readUInt16BE(i + 2);
  }
  throw new Error('no SOF marker before the scan data');
}

for (const name of NAMES) {
  test.serial(`${name}: the image builds, and a second call takes it from the cache`, async (t) => {
    t.timeout(BUILD_TIMEOUT, `building the ${name} image`);
    const t0 = performance.now();
    const dir = await functionImage(name);
    const firstMs = performance.now() - t0;
    const index = statSync(join(dir, 'index.json')).mtimeMs;
    const t1 = performance.now();
    t.is(await functionImage(name), dir);
    const againMs = performance.now() - t1;
    t.is(statSync(join(dir, 'index.json')).mtimeMs, index, 'the cached layout is not rewritten');
    t.true(againMs < 2000, `a cached image is found in ${againMs.toFixed(0)} ms`);

    const image = await readImage(`oci:${dir}:latest`);
    try {
      const config = image.config.config ?? {};
      t.deepEqual(config.Cmd, [...FUNCTIONS[name].cmd]);
      t.deepEqual(Object.keys(config.ExposedPorts ?? {}), [`${FUNCTION_PORT}/tcp`]);
      t.true((config.Env ?? []).some((e) => e.startsWith('PATH=/usr/local/sbin:')), JSON.stringify(config.Env));
      t.is(image.layers.length, 2, 'a rootfs layer and an app layer');
      const recipe: FunctionRecipe = FUNCTIONS[name];
      const files = recipe.files.map((f) => `app/${f.split('/').pop()}`);
      const app = await layerMembers(image.layers[1]!.path, files);
      // What a compile step made is there too (java: javac's classes, one per source class at least).
      const made = app.names.filter((n) => n !== 'app' && !files.includes(n));
      t.deepEqual(app.names.filter((n) => !made.includes(n)), ['app', ...files].sort());
      if (recipe.compile) t.true(made.length >= files.length && made.every((n) => n.endsWith('.class')), made.join(' '));
      else t.deepEqual(made, []);
      for (const f of FUNCTIONS[name].files) t.deepEqual(app.content.get(`app/${f.split('/').pop()}`), readFileSync(join(IMAGES_DIR, f)), f);
      const [base, top] = image.layers.map((l) => l.size) as [number, number];
      t.log(`${name}: first call ${(firstMs / 1000).toFixed(1)} s (a build unless cached), second ${againMs.toFixed(0)} ms; layers (gzip): rootfs ${megabytes(base)}, app ${(top / 1000).toFixed(1)} kB`);
    } finally {
      await image.cleanup();
    }
  });
}

interface Cold {
  client: NetnsClient;
  /** The status the readiness probe got (served 1). */
  status: Status;
  /** runc exec in the container. */
  exec(args: string[]): Promise<RunResult>;
  /**
   * Waits for `lastLine` in the function's output (it prints a request's line once it has answered
   * it), sends SIGTERM and resolves with runc run's exit status and the output once it has exited.
   */
  stop(lastLine: string): Promise<{ code: number; output: string }>;
}

/** Starts the function's image cold under runc from an overlay of its unpacked layers; logs the times. */
async function startCold(t: ExecutionContext, name: FunctionName): Promise<Cold> {
  const image = await readImage(`oci:${await functionImage(name)}:latest`);
  const lower = mkdtempSync(join(tmpdir(), `prebake-ftest-${name}-`));
  const config = image.config.config ?? {};
  try {
    await unpackLayers(image.layers, join(lower, 'rootfs'));
  } finally {
    await image.cleanup();
  }
  const b = overlayBundle([join(lower, 'rootfs')]);
  const rt = runtimeDirs();
  const id = uniqueName(`fn-${name}`);
  let running: PipedCommand | undefined;
  let client: NetnsClient | undefined;
  t.teardown(async () => {
    client?.close();
    if (running) {
      await run('runc', ['--root', rt.root, 'kill', id, 'KILL']);
      await running.exit.catch(() => {});
      running.close();
    }
    await run('runc', ['--root', rt.root, 'delete', '--force', id]);
    b.cleanup();
    rt.cleanup();
    rmSync(lower, { recursive: true, force: true });
  });
  b.writeSpec(functionSpec({ args: config.Cmd ?? [], env: (config.Env ?? []).filter((e) => !e.startsWith('PATH=')), netns: b.netnsPath }));
  client = await NetnsClient.start(b.netns);
  const [t0, wall0] = [performance.now(), Date.now()];
  const runc = spawnPiped('runc', ['--root', rt.root, 'run', '--bundle', b.dir, id]);
  running = runc;
  let output = '';
  runc.output.on('data', (d: Buffer) => (output += d.toString()));
  const first = await client.waitHttp({ port: FUNCTION_PORT, path: '/', timeoutMs: 60_000, intervalMs: 2 });
  const coldMs = performance.now() - t0;
  t.is(first.status, 200, first.body);
  const status = JSON.parse(first.body) as Status;
  const init = status.init_seconds === undefined ? 'not reported' : `${(status.init_seconds * 1000).toFixed(0)} ms`;
  // The container shares the host's clock: initialised_at is comparable with the spawn time.
  t.log(`${name}: cold start ${coldMs.toFixed(0)} ms (spawn of runc run → first HTTP 200); init ${init}; spawn → initialised ${(status.initialised_at * 1000 - wall0).toFixed(0)} ms`);
  return {
    client,
    status,
    exec: (args) => run('runc', ['--root', rt.root, 'exec', id, ...args]),
    stop: async (lastLine) => {
      for (let i = 0; i < 500 && !output.split('\n').includes(lastLine); i++) await new Promise((r) => setTimeout(r, 10));
      await run('runc', ['--root', rt.root, 'kill', id, 'TERM']);
      const code = await runc.exit;
      running = undefined;
      await new Promise((r) => setTimeout(r, 10));
      runc.close();
      return { code, output };
    },
  };
}

const served = (r: HttpResult) => Number(r.headers['x-served']);

test.serial('noop answers cold with the shared JSON status (not restored), one line per request, SIGTERM exits 0', async (t) => {
  const f = await startCold(t, 'noop');
  t.deepEqual(Object.keys(f.status).sort(), ['function', 'init_seconds', 'initialised_at', 'ok', 'pid', 'replica', 'restored', 'served']);
  t.like(f.status, { ok: true, served: 1, function: 'noop', restored: false });
  const r = await f.client.request({ port: FUNCTION_PORT, method: 'POST', path: '/anything', body64: Buffer.from('x').toString('base64') });
  t.is(r.status, 200);
  t.is(r.headers['content-type'], 'application/json');
  t.like(JSON.parse(r.body), { ok: true, served: 2, pid: f.status.pid, initialised_at: f.status.initialised_at });
  t.is(served(r), 2);
  const exit = await f.stop('request 2 POST /anything');
  t.is(exit.code, 0, exit.output);
  t.deepEqual(exit.output.trim().split('\n'), ['noop listening on 8080', 'request 1 GET /', 'request 2 POST /anything']);
});

test.serial('markdown renders the Markdown it is sent to an HTML page', async (t) => {
  const f = await startCold(t, 'markdown');
  t.like(f.status, { ok: true, served: 1, function: 'markdown' });
  t.true(f.status.init_seconds! > 0 && f.status.init_seconds! < 30);
  const doc = '# Title\n\nSome *text* and a [link](https://example.org).\n\n- one\n- two\n';
  const r = await f.client.request({ port: FUNCTION_PORT, method: 'POST', path: '/render', body64: Buffer.from(doc).toString('base64') });
  t.is(r.status, 200, r.body);
  t.is(r.headers['content-type'], 'text/html; charset=utf-8');
  t.is(served(r), 2);
  t.regex(r.body, /^<!DOCTYPE html>\n<html lang="en">/);
  t.true(r.body.includes('<title>Title</title>'), r.body);
  t.true(r.body.includes('<h1>Title</h1>'), r.body);
  t.true(r.body.includes('<p>Some <em>text</em> and a <a href="https://example.org">link</a>.</p>'), r.body);
  t.true(r.body.includes('<ul>\n<li>one</li>\n<li>two</li>\n</ul>'), r.body);
  const bad = await f.client.request({ port: FUNCTION_PORT, method: 'POST', path: '/render', body64: Buffer.from([0xff, 0xfe]).toString('base64') });
  t.is(bad.status, 400);
  t.like(JSON.parse(bad.body), { ok: false, served: 3 });
  const exit = await f.stop('request 3 POST /render');
  t.is(exit.code, 0, exit.output);
  t.deepEqual(exit.output.trim().split('\n'), ['markdown listening on 8080', 'request 1 GET /', 'request 2 POST /render', 'request 3 POST /render']);
});

test.serial('resize shrinks the 1 MB JPEG it holds to 10% of its width and height', async (t) => {
  const f = await startCold(t, 'resize');
  const { width, height, source_bytes: bytes, source_sha256: digest } = f.status as Status & { width: number; height: number; source_bytes: number; source_sha256: string };
  t.deepEqual([width, height], [1600, 1200]);
  t.true(bytes > 750_000 && bytes < 1_250_000, `the source JPEG is about 1 MB: ${bytes} bytes`);
  const r = await f.client.request({ port: FUNCTION_PORT, path: '/resize' });
  t.is(r.status, 200, r.body);
  t.is(r.headers['content-type'], 'image/jpeg');
  t.is(served(r), 2);
  const jpeg = Buffer.from(r.body, 'latin1');
  t.deepEqual(jpegSize(jpeg), { width: width / 10, height: height / 10 });
  const again = await f.client.request({ port: FUNCTION_PORT, path: '/resize' });
  t.true(Buffer.from(again.body, 'latin1').equals(jpeg), 'the same picture every time');
  // Another process draws the same source, byte for byte: it is made from a fixed seed.
  const other = await f.exec(['python3', '-c', 'import hashlib, sys; sys.path.insert(0, "/app"); import function; print(hashlib.sha256(function.SOURCE_JPEG).hexdigest())']);
  t.is(other.code, 0, other.output);
  t.is(other.output.trim(), digest);
  const exit = await f.stop('request 3 GET /resize');
  t.is(exit.code, 0, exit.output);
  t.deepEqual(exit.output.trim().split('\n'), ['resize listening on 8080', 'request 1 GET /', 'request 2 GET /resize', 'request 3 GET /resize']);
});

test.serial('ml trains for over a second at initialisation, then classifies the digits it is sent', async (t) => {
  const f = await startCold(t, 'ml');
  t.like(f.status, { ok: true, served: 1, function: 'ml', trained_on: 1500 });
  t.true(f.status.init_seconds! >= 1, `init_seconds ${f.status.init_seconds}`);
  t.true((f.status.accuracy as number) > 0.9, `held-out accuracy ${f.status.accuracy}`);
  const post = (body: unknown) =>
    f.client.request({ port: FUNCTION_PORT, method: 'POST', path: '/predict', body64: Buffer.from(JSON.stringify(body)).toString('base64') });
  const r = await post({ features: [DIGIT_TWO, DIGIT_EIGHT] });
  t.is(r.status, 200, r.body);
  t.is(r.headers['content-type'], 'application/json');
  const answer = JSON.parse(r.body) as { ok: boolean; served: number; predictions: number[]; probabilities: number[] };
  t.like(answer, { ok: true, served: 2, predictions: [2, 8] });
  t.is(answer.probabilities.length, 2);
  t.like(JSON.parse((await post(DIGIT_TWO)).body), { served: 3, predictions: [2] });
  const fixed = await f.client.request({ port: FUNCTION_PORT, path: '/predict' });
  t.like(JSON.parse(fixed.body), { ok: true, served: 4, predictions: [8], label: 8 });
  for (const [i, body] of [{ features: [[1, 2, 3]] }, { features: [] }, [true, ...DIGIT_TWO.slice(1)], 'text'].entries()) {
    const bad = await post(body);
    t.is(bad.status, 400, `bad request ${i}: ${bad.body}`);
    t.like(JSON.parse(bad.body), { ok: false, served: 5 + i });
  }
  const exit = await f.stop('request 8 POST /predict');
  t.is(exit.code, 0, exit.output);
  t.deepEqual(exit.output.trim().split('\n'), ['ml listening on 8080', 'request 1 GET /', 'request 2 POST /predict', 'request 3 POST /predict', 'request 4 GET /predict', ...[5, 6, 7, 8].map((n) => `request ${n} POST /predict`)]);
});

test.serial('java searches the index it built at start-up, the same index in every process', async (t) => {
  const f = await startCold(t, 'java');
  t.like(f.status, { ok: true, served: 1, function: 'java', restored: false, documents: 40000, terms: 20000 });
  t.regex(String(f.status.index_sha256), /^[0-9a-f]{64}$/);
  t.regex(String(f.status.java_version), /^17\./);
  t.true(f.status.init_seconds! > 0.2, `init_seconds ${f.status.init_seconds}`);
  const search = (q: string) => f.client.request({ port: FUNCTION_PORT, method: 'POST', path: '/search', body64: Buffer.from(q).toString('base64') });
  const r = await search('ruquipel borbor zenhum zenmihum');
  t.is(r.status, 200, r.body);
  t.is(r.headers['content-type'], 'application/json');
  t.is(served(r), 2);
  const answer = JSON.parse(r.body) as { ok: boolean; served: number; matched: number; hits: { doc: number; score: number }[] };
  t.like(answer, { ok: true, served: 2 });
  t.true(answer.matched > 30000 && answer.matched <= 40000, `matched ${answer.matched}`);
  t.is(answer.hits.length, 10);
  t.deepEqual([...answer.hits].sort((a, b) => b.score - a.score), answer.hits, 'best first');
  const get = await f.client.request({ port: FUNCTION_PORT, path: '/search?q=ruquipel+borbor+zenhum+zenmihum' });
  t.deepEqual(JSON.parse(get.body).hits, answer.hits, 'GET /search?q= searches the same');
  for (const [i, bad] of ['', '123 !!', '\xff'].entries()) {
    const b = await f.client.request({ port: FUNCTION_PORT, method: 'POST', path: '/search', body64: Buffer.from(bad, 'latin1').toString('base64') });
    t.is(b.status, 400, `bad query ${i}: ${b.body}`);
    t.like(JSON.parse(b.body), { ok: false, served: 4 + i });
  }
  const exit = await f.stop('request 6 POST /search');
  t.is(exit.code, 0, exit.output);
  t.deepEqual(exit.output.trim().split('\n'), ['java listening on 8080', 'request 1 GET /', 'request 2 POST /search', 'request 3 GET /search?q=ruquipel+borbor+zenhum+zenmihum', ...[4, 5, 6].map((n) => `request ${n} POST /search`)]);
  javaIndex = String(f.status.index_sha256);
});

/** The index digest a cold java process reported, for the restored replicas to match. */
let javaIndex: string | undefined;

test.serial('node renders Markdown with YAML front matter to a sanitised, highlighted HTML page', async (t) => {
  const f = await startCold(t, 'node');
  t.like(f.status, { ok: true, served: 1, function: 'node', restored: false });
  t.regex(String(f.status.node_version), /^v18\./);
  t.true((f.status.modules as number) > 300, `modules ${f.status.modules}`);
  const render = (doc: string | Buffer) => f.client.request({ port: FUNCTION_PORT, method: 'POST', path: '/render', body64: Buffer.from(doc).toString('base64') });
  const doc = '---\ntitle: A <page>\ntags: [x, y, x]\n---\n# Heading\n\n```js\nconst a = 1;\n```\n\n<script>alert(1)</script><b>bold</b>\n';
  const r = await render(doc);
  t.is(r.status, 200, r.body);
  t.is(r.headers['content-type'], 'text/html; charset=utf-8');
  t.is(served(r), 2);
  t.regex(r.body, /^<!DOCTYPE html>\n<html lang="en">/);
  t.true(r.body.includes('<title>A &lt;page&gt;</title>'), r.body);
  t.true(r.body.includes('<ul class="tags"><li>x</li><li>y</li></ul>'), r.body);
  t.true(r.body.includes('<h1>Heading</h1>'), r.body);
  t.true(r.body.includes('<span class="hljs-keyword">const</span>'), r.body);
  t.true(r.body.includes('<b>bold</b>') && !r.body.includes('<script>'), r.body);
  const untitled = await render('# Only a heading\n');
  t.true(untitled.body.includes('<title>Only a heading</title>'), untitled.body);
  for (const [i, bad] of ['---\ntitle: [unclosed\n---\nx', '---\ntitle: 3\ncolour: red\n---\nx', Buffer.from([0xff, 0xfe])].entries()) {
    const b = await render(bad);
    t.is(b.status, 400, `bad document ${i}: ${b.body}`);
    t.like(JSON.parse(b.body), { ok: false, served: 4 + i });
  }
  const get = await f.client.request({ port: FUNCTION_PORT, path: '/render' });
  t.is(get.status, 400);
  const exit = await f.stop('request 7 GET /render');
  t.is(exit.code, 0, exit.output);
  t.deepEqual(exit.output.trim().split('\n'), ['node listening on 8080', 'request 1 GET /', ...[2, 3, 4, 5, 6].map((n) => `request ${n} POST /render`), 'request 7 GET /render']);
});

interface Replica {
  status: Status;
  client: NetnsClient;
}

/**
 * A function baked for runc by prebake-build (after its warm-up requests), unpacked; replicas of it
 * restored by the prebake runtime, or by a raw `runc restore` of its checkpoint, which sends no
 * restore signal: that replica still has the baked process's identity.
 */
async function bakedReplicas(t: ExecutionContext, name: FunctionName): Promise<(how: 'prebake' | 'raw runc restore') => Promise<Replica>> {
  const scratch = mkdtempSync(join(tmpdir(), `prebake-fbake-${name}-`));
  t.teardown(() => rmSync(scratch, { recursive: true, force: true }));
  const t0 = performance.now();
  await bakeFunction(name, { target: 'runc', dest: `oci:${scratch}/baked:latest` });
  const image = await readImage(`oci:${scratch}/baked:latest`);
  const lower = join(scratch, 'rootfs');
  try {
    await unpackLayers(image.layers, lower);
  } finally {
    await image.cleanup();
  }
  const config = image.config.config ?? {};
  // What the restores import of this bake into the verified store goes with the test.
  t.teardown(() => rmSync(storeEntry(loadRuntimeConfig().store, readFileSync(join(lower, '.prebake/manifest.json'))), { recursive: true, force: true }));
  t.log(`${name}: baked in ${((performance.now() - t0) / 1000).toFixed(1)} s (image cached)`);
  return async (how) => {
    const b = overlayBundle([lower]);
    const rt = runtimeDirs();
    const id = uniqueName(`fr-${name}`);
    let client: NetnsClient | undefined;
    t.teardown(async () => {
      client?.close();
      await run(PREBAKE, ['--root', rt.root, 'delete', '--force', id]);
      b.cleanup();
      rt.cleanup();
    });
    b.writeSpec(targetSpec('runc', runcDefaultSpec(), config, { rootfs: 'rootfs', hostRootfs: lower, nsPaths: { network: b.netnsPath }, scratch: join(b.dir, 'files') }));
    client = await NetnsClient.start(b.netns);
    const t1 = performance.now();
    if (how === 'prebake') {
      const created = await run(PREBAKE, ['--root', rt.root, '--log', rt.log, '--log-format', 'json', 'create', '--bundle', b.dir, id]);
      if (created.code !== 0) throw new Error(`prebake create: ${created.output}`);
      const started = await run(PREBAKE, ['--root', rt.root, 'start', id]);
      if (started.code !== 0) throw new Error(`prebake start: ${started.output}`);
    } else {
      mkdirSync(join(b.dir, 'criu-work'));
      const args = ['--root', rt.root, 'restore', '--detach', '--image-path', join(b.rootfs, '.prebake/checkpoint'), '--work-path', join(b.dir, 'criu-work'), '--bundle', b.dir, id];
      const restored = await run('runc', args, rawRestoreEnv(b.dir));
      if (restored.code !== 0) throw new Error(`runc restore: ${restored.output}`);
    }
    const first = await client.waitHttp({ port: FUNCTION_PORT, path: '/', timeoutMs: 60_000, intervalMs: 2 });
    const ms = performance.now() - t1;
    let status = JSON.parse(first.body) as Status;
    // The runtime's restore signal is handled as soon as the process is scheduled: give it a moment.
    for (let i = 0; how === 'prebake' && !status.restored && i < 100; i++) {
      await new Promise((r) => setTimeout(r, 20));
      status = JSON.parse((await client.request({ port: FUNCTION_PORT, path: '/' })).body) as Status;
    }
    t.log(`${name}: ${how} → first HTTP 200 in ${ms.toFixed(0)} ms; served ${status.served}, restored ${status.restored}, replica ${status.replica}`);
    return { status, client };
  };
}

for (const name of ['java', 'node'] as const) {
  test.serial(`${name}: baked after its warm-up and restored, each replica renews its identity and serves`, async (t) => {
    t.timeout(BUILD_TIMEOUT, `building and baking ${name}`);
    const start = await bakedReplicas(t, name);
    const wallBefore = Date.now() / 1000;
    const baked = await start('raw runc restore');
    const a = await start('prebake');
    const b = await start('prebake');
    const warmups = FUNCTIONS[name].warmups;
    // The baked process: its readiness probe and warm-up requests served, no restore signal seen.
    t.like(baked.status, { ok: true, function: name, restored: false });
    t.true(baked.status.served > warmups, `served ${baked.status.served} after ${warmups} warm-up requests`);
    t.true(baked.status.initialised_at < wallBefore, 'initialised before the bake, not now');
    for (const r of [a, b]) {
      // Restored, not started cold: the baked process's count and initialisation time ...
      t.true(r.status.served >= baked.status.served, `served ${r.status.served}`);
      t.is(r.status.initialised_at, baked.status.initialised_at);
      // ... with an identity and a time of its own, from the restore signal.
      t.true(r.status.restored, `restored ${r.status.restored}`);
      t.not(r.status.replica, baked.status.replica, 'a restored replica does not keep the baked identity');
      t.true((r.status.restored_at as number) >= wallBefore, `restored_at ${r.status.restored_at} is after the restore began (${wallBefore})`);
      const w = FUNCTIONS[name].warmup;
      const res = await r.client.request({ port: FUNCTION_PORT, method: w.method, path: w.path, body64: w.body.toString('base64') });
      t.is(res.status, 200, res.body);
      t.is(served(res), r.status.served + 1);
      if (name === 'java') t.is((JSON.parse(res.body) as { hits: unknown[] }).hits.length, 10);
      else t.true(res.body.includes('<title>Prebaking</title>'), res.body);
    }
    t.not(a.status.replica, b.status.replica, 'two replicas of one checkpoint have identities of their own');
    if (name === 'java' && javaIndex) t.is(a.status.index_sha256, javaIndex, 'the restored index is the one a cold start builds');
  });
}
