// prebake-build against a real registry: Debian's docker-registry (distribution 2.8), started by the
// test on a loopback port with storage of its own, over plain HTTP. The noop function image is
// pushed to it, baked from it and pushed back (docker:// through skopeo, --tls-verify=false), then
// pulled again and restored: by prebake from an umoci bundle, and by a private dockerd with
// `docker pull` + `docker run --runtime=prebake`.

import test, { type ExecutionContext } from 'ava';
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatImageRef, parseImageRef } from '../src/image/ref.ts';
import { REPO } from '../lab/bundle.ts';
import { freePort } from '../lab/engines/engine.ts';
import { httpGet, startContainerd, startDockerd } from './helpers/engines.ts';
import { NOOP_PORT, noopImage } from './helpers/images.ts';
import { restoreUmociBundle } from './helpers/umoci.ts';

const PREBAKE_BUILD = join(REPO, 'bin/prebake-build');

/** bookworm's docker-registry, which scripts/setup.sh unpacks into its cache (not installed as a service). */
const REGISTRY_BIN = '/var/cache/prebake/docker-registry/usr/bin/docker-registry';
const missing = [...['skopeo', 'umoci'].filter((c) => spawnSync('sh', ['-c', `command -v ${c}`]).status !== 0), ...(existsSync(REGISTRY_BIN) ? [] : [REGISTRY_BIN])];
const skipReason = missing.length ? `${missing.join(', ')} missing (scripts/setup.sh installs skopeo and umoci and unpacks docker-registry)` : '';
if (skipReason) console.log(`registry.test.ts: skipped: ${skipReason}`);
const serial = (title: string, fn: (t: ExecutionContext) => Promise<void> | void) =>
  skipReason ? test.serial.skip(`${title} [skipped: ${skipReason}]`, () => {}) : test.serial(title, fn);
const concurrent = (title: string, fn: (t: ExecutionContext) => Promise<void>) =>
  skipReason ? test.skip(`${title} [skipped: ${skipReason}]`, () => {}) : test(title, fn);

const sh = (cmd: string, args: string[], env?: NodeJS.ProcessEnv) => execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], env: env ?? process.env });

interface Registry {
  /** HOST:PORT. */
  host: string;
  stop(): Promise<void>;
}

/** docker-registry serving plain HTTP on 127.0.0.1 with its storage under `dir`; not the system's service or config. */
async function startRegistry(dir: string): Promise<Registry> {
  for (let attempt = 1; ; attempt++) {
    const host = `127.0.0.1:${await freePort()}`;
    const config = join(dir, 'config.yml');
    const log = join(dir, 'registry.log');
    writeFileSync(
      config,
      `version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: ${join(dir, 'data')}
  delete:
    enabled: true
http:
  addr: ${host}
  secret: prebake-test-${process.pid}
`,
    );
    const fd = openSync(log, 'a');
    const child: ChildProcess = spawn(REGISTRY_BIN, ['serve', config], { stdio: ['ignore', fd, fd] });
    closeSync(fd);
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    const stop = async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await exited;
        clearTimeout(timer);
      }
    };
    const deadline = Date.now() + 15_000;
    while (child.exitCode === null && Date.now() < deadline) {
      const r = spawnSync('curl', ['-sf', '-m', '2', '-o', '/dev/null', `http://${host}/v2/`]);
      if (r.status === 0) return { host, stop };
      await new Promise((r) => setTimeout(r, 100));
    }
    await stop();
    const tail = readFileSync(log, 'utf8').trim().split('\n').slice(-3).join(' | ');
    // Another process may have taken the port between freePort() and the registry's bind.
    if (attempt < 3 && /address already in use/.test(tail)) continue;
    throw new Error(`docker-registry did not answer on ${host}: ${tail}`);
  }
}

let dir: string;
let registry: Registry | undefined;
/** The registry's noop image and its layers, as pushed. */
let source: string;
let sourceLayers: string[];

test.before(async (t) => {
  if (skipReason) return;
  dir = mkdtempSync(join(tmpdir(), 'prebake-registry-test-'));
  const t0 = Date.now();
  mkdirSync(join(dir, 'registry'));
  registry = await startRegistry(join(dir, 'registry'));
  const image = await noopImage();
  source = `docker://${registry.host}/noop:latest`;
  sh('skopeo', ['copy', '-q', '--dest-tls-verify=false', `oci:${image}:latest`, source]);
  sourceLayers = (JSON.parse(sh('skopeo', ['inspect', '--tls-verify=false', source])) as { Layers: string[] }).Layers;
  t.log(`registry on ${registry.host}, noop pushed in ${Date.now() - t0} ms`);
});

test.after.always(async () => {
  await registry?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

interface BuildRun {
  code: number;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Runs prebake-build with a TMPDIR of its own (checked empty afterwards by the callers that care). */
function prebakeBuild(args: string[], tmp: string, env: NodeJS.ProcessEnv = process.env): Promise<BuildRun> {
  mkdirSync(tmp, { recursive: true });
  const t0 = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(PREBAKE_BUILD, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...env, TMPDIR: tmp } });
    let [stdout, stderr] = ['', ''];
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      // The verify run's runtime state is keyed by TMPDIR (under /run/prebake/<TMPDIR>/…).
      rmSync(join('/run/prebake', tmp), { recursive: true, force: true });
      resolve({ code: code ?? -1, stdout, stderr, ms: Date.now() - t0 });
    });
  });
}

interface Inspect {
  Digest: string;
  Layers: string[];
  Env: string[];
  Labels: Record<string, string> | null;
}
const inspect = (ref: string) => JSON.parse(sh('skopeo', ['inspect', '--tls-verify=false', ref])) as Inspect;

// References and options: no bake.

test('docker:// references parse as skopeo names them and print back; malformed ones name the problem', (t) => {
  t.deepEqual(parseImageRef('docker://127.0.0.1:5000/noop:baked'), { transport: 'docker', name: '127.0.0.1:5000/noop:baked' });
  t.deepEqual(parseImageRef('docker://localhost:5000/fn/noop'), { transport: 'docker', name: 'localhost:5000/fn/noop:latest' });
  t.deepEqual(parseImageRef('docker://ghcr.io/fn/noop:1.0'), { transport: 'docker', name: 'ghcr.io/fn/noop:1.0' });
  t.deepEqual(parseImageRef('docker://busybox'), { transport: 'docker', name: 'busybox:latest' });
  for (const text of ['docker://127.0.0.1:5000/noop:baked', 'docker://busybox:latest']) t.is(formatImageRef(parseImageRef(text)), text);
  t.throws(() => parseImageRef('docker:busybox:1'), { message: /"docker:busybox:1": docker: is followed by \/\// });
  t.throws(() => parseImageRef('docker://'), { message: /"" is not \[HOST\[:PORT\]\/\]NAME\[:TAG\]/ });
  t.throws(() => parseImageRef('docker://Busybox:1'), { message: /"Busybox:1" is not \[HOST\[:PORT\]\/\]NAME\[:TAG\]/ });
  t.throws(() => parseImageRef('docker://busybox@sha256:0123'), { message: /is not \[HOST\[:PORT\]\/\]NAME\[:TAG\]/ });
});

test('--tls-verify: a bad value, a separate value, or no docker:// reference is a usage error', (t) => {
  const cases: [string[], RegExp][] = [
    [['--tls-verify=no', 'docker://127.0.0.1:5000/a:1', 'oci:/nonexistent/x:1'], /^prebake-build: --tls-verify=no: expected true or false$/m],
    [['--tls-verify=', 'docker://127.0.0.1:5000/a:1', 'oci:/nonexistent/x:1'], /^prebake-build: --tls-verify=: expected true or false$/m],
    [['--tls-verify', 'false', 'docker://127.0.0.1:5000/a:1', 'oci:/nonexistent/x:1'], /^prebake-build: --tls-verify false: write --tls-verify=false$/m],
    [['--tls-verify=false', 'oci:/nonexistent/a:1', 'oci:/nonexistent/x:1'], /^prebake-build: --tls-verify applies to docker:\/\/ references; neither SOURCE nor DEST is one$/m],
  ];
  for (const [args, message] of cases) {
    const r = spawnSync(PREBAKE_BUILD, ['--target', 'runc', ...args], { encoding: 'utf8' });
    t.is(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    t.regex(r.stderr, message, args.join(' '));
    t.regex(r.stderr, /\nusage: prebake-build /, 'the usage follows');
    t.is(r.stdout, '');
  }
  t.regex(spawnSync(PREBAKE_BUILD, ['--help'], { encoding: 'utf8' }).stdout, /--tls-verify\[=BOOL\]/);
});

serial('a registry on plain HTTP without --tls-verify=false: one line naming skopeo\'s error and the option; nothing left', async (t) => {
  const tmp = join(dir, 'tmp-nottls');
  const r = await prebakeBuild(['--target', 'runc', '--quiet', source, `docker://${registry!.host}/noop:never`], tmp);
  t.is(r.code, 1, r.stderr);
  t.regex(r.stderr, /^prebake-build: reading image docker:\/\/127\.0\.0\.1:\d+\/noop:latest: `skopeo copy docker:.*` failed: .*server gave HTTP response to HTTPS client \(a registry on plain HTTP needs --tls-verify=false\)\n$/);
  t.deepEqual(readdirSync(tmp), [], 'no temp dir left');
  const tags = JSON.parse(sh('curl', ['-sf', `http://${registry!.host}/v2/noop/tags/list`])) as { tags: string[] };
  t.false(tags.tags.includes('never'), 'nothing pushed');
});


concurrent('docker:// → docker:// for runc: baked from the registry, pushed back with the checkpoint layer, pulled and restored from an umoci bundle', async (t) => {
  const dest = `docker://${registry!.host}/noop:baked`;
  const tmp = join(dir, 'tmp-runc');
  const r = await prebakeBuild(['--target', 'runc', '--tls-verify=false', '--json', source, dest], tmp);
  t.is(r.code, 0, r.stderr);
  const summary = JSON.parse(r.stdout) as { source: string; dest: string; manifestDigest: string; layer: { digest: string }; steps: { step: string; ms: number }[] };
  t.is(summary.source, source);
  t.is(summary.dest, dest);
  t.log(`prebake-build ${r.ms} ms: ${summary.steps.map((s) => `${s.step} ${s.ms}`).join(', ')}`);
  t.deepEqual(readdirSync(tmp), [], 'no temp dir left');

  const pushed = inspect(dest);
  t.is(pushed.Digest, summary.manifestDigest, 'the registry serves the manifest prebake-build wrote');
  t.is(pushed.Labels?.['io.prebake.checkpoint'], '/.prebake');
  t.true(pushed.Env.includes('PREBAKE_CHECKPOINT=/.prebake'), JSON.stringify(pushed.Env));
  t.is(pushed.Layers.length, sourceLayers.length + 1);
  t.deepEqual(pushed.Layers.slice(0, -1), sourceLayers, "the source's layers byte for byte");
  t.is(pushed.Layers.at(-1), summary.layer.digest);

  const layout = join(dir, 'pulled');
  sh('skopeo', ['copy', '-q', '--src-tls-verify=false', dest, `oci:${layout}:baked`]);
  const bundle = join(dir, 'bundle');
  sh('umoci', ['unpack', '--image', `${layout}:baked`, bundle]);
  t.true(existsSync(join(bundle, 'rootfs/.prebake/manifest.json')));
  const t0 = Date.now();
  const served = await restoreUmociBundle(t, bundle);
  t.log(`restored from the pulled image in ${Date.now() - t0} ms, served ${served}`);
});

concurrent('docker:// → docker:// for docker: docker pull of the pushed image and docker run --runtime=prebake restore it', async (t) => {
  const t0 = Date.now();
  const ctd = await startContainerd();
  t.teardown(() => ctd.stop());
  const dk = await startDockerd(ctd);
  t.teardown(() => dk.stop());
  // dockerd talks plain HTTP to registries in 127.0.0.0/8 unless told otherwise.
  t.deepEqual(JSON.parse(await dk.docker(['info', '--format', '{{json .RegistryConfig.InsecureRegistryCIDRs}}'])), ['127.0.0.0/8']);
  t.log(`containerd and dockerd up in ${Date.now() - t0} ms`);

  const image = `${registry!.host}/noop:docker`;
  const tmp = join(dir, 'tmp-docker');
  const r = await prebakeBuild(['--target', 'docker', '--tls-verify=false', '--json', source, `docker://${image}`], tmp, dk.env);
  t.is(r.code, 0, r.stderr);
  const summary = JSON.parse(r.stdout) as { manifestDigest: string; steps: { step: string; ms: number }[] };
  t.log(`prebake-build ${r.ms} ms: ${summary.steps.map((s) => `${s.step} ${s.ms}`).join(', ')}`);
  t.deepEqual(readdirSync(tmp), [], 'no temp dir left');
  t.is(inspect(`docker://${image}`).Labels?.['io.prebake.targets'], 'docker');

  await dk.docker(['pull', '-q', image]);
  t.is(JSON.parse(await dk.docker(['image', 'inspect', '--format', '{{json .RepoDigests}}', image]))[0], `${registry!.host}/noop@${summary.manifestDigest}`);
  const port = await freePort();
  const id = (await dk.docker(['run', '-d', '--runtime=prebake', '-p', `127.0.0.1:${port}:${NOOP_PORT}`, image])).trim();
  t.teardown(() => dk.docker(['rm', '-f', id]).catch(() => ''));
  const first = await httpGet(port);
  t.true(first.served > 1, `served ${first.served}: a cold start would say 1`);
  const log = readFileSync(join(ctd.state, 'io.containerd.runtime.v2.task/moby', id, 'log.json'), 'utf8');
  t.regex(log, /"msg":"restored /, 'prebake logged the restore');
  t.log(`docker part ${Date.now() - t0} ms in all`);
});
