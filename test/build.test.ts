// prebake-build end to end on real runc and CRIU: the noop function image baked into oci: and
// docker-archive: images that skopeo and umoci accept and that the runtime restores; bad input
// and hostile layers stop it with one line naming the problem, leaving nothing behind.

import test, { type ExecutionContext } from 'ava';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Spec } from '../oci/runtime-spec.ts';
import { sha256 } from '../src/image/blob.ts';
import { packLayer } from '../src/image/pack.ts';
import { readImage } from '../src/image/read.ts';
import { scratchImage, writeImage } from '../src/image/write.ts';
import { parseProbe, probeText } from '../src/bake/probe.ts';
import { REPO } from '../lab/bundle.ts';
import { NOOP_PORT, noopImage } from './helpers/images.ts';
import { restoreUmociBundle } from './helpers/umoci.ts';
import { mountPoints } from '../src/lib/mountinfo.ts';
import { tarLayer, tempDir } from './helpers/tmp.ts';

const PREBAKE_BUILD = join(REPO, 'bin/prebake-build');

let image: string;
let source: string;
test.before(async () => {
  image = await noopImage();
  source = `oci:${image}:latest`;
});


/**
 * A TMPDIR of the test's own for prebake-build runs: their temp dirs, mounts and the runtime state
 * of the verify run (under /run/prebake/<TMPDIR>/…) are told apart from those of other bakes on
 * the host (another test file, another user), and removed afterwards.
 */
function ownTmp(t: ExecutionContext, dir: string): NodeJS.ProcessEnv {
  const tmp = join(dir, 'tmp');
  mkdirSync(tmp);
  t.teardown(() => rmSync(join('/run/prebake', dir), { recursive: true, force: true }));
  return { ...process.env, TMPDIR: tmp };
}

const sh = (cmd: string, args: string[]) => execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

interface BuildRun {
  /** prebake-build's pid (bin/prebake-build execs node), which its netns and container names carry. */
  pid: number;
  tmp: string;
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs prebake-build with stdout and stderr apart (the containers it runs get pipes of their own),
 * for the runc target unless `args` name one (these tests need no engine) or `defaultTarget`;
 * `as` is a command prefix to run it under (e.g. setpriv).
 */
function prebakeBuild(args: string[], env: NodeJS.ProcessEnv, o: { defaultTarget?: boolean; as?: string[] } = {}): Promise<BuildRun> {
  const argv = [PREBAKE_BUILD, ...(args.includes('--target') || o.defaultTarget ? args : ['--target', 'runc', ...args])];
  return new Promise((resolve, reject) => {
    const child = spawn(o.as?.[0] ?? argv[0]!, [...(o.as?.slice(1) ?? []), ...(o.as ? argv : argv.slice(1))], { stdio: ['ignore', 'pipe', 'pipe'], env });
    let [stdout, stderr] = ['', ''];
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ pid: child.pid!, tmp: env.TMPDIR ?? tmpdir(), code: code ?? -1, stdout, stderr }));
  });
}

/**
 * What the run left on the host: network namespaces, runc containers (under runc's default root,
 * as prebake-build runs them), mounts and dirs under its TMPDIR, prebake runtime state.
 */
function leftovers({ pid, tmp }: BuildRun): string[] {
  const ours = (name: string) => new RegExp(`^prebake-(build|verify)-${pid}-`).test(name);
  const netns = sh('ip', ['netns', 'list'])
    .split('\n')
    .map((l) => l.split(' ')[0]!)
    .filter(ours)
    .map((n) => `netns ${n}`);
  const mounts = mountPoints()
    .filter((m) => m.startsWith(join(tmp, 'prebake-build-')))
    .map((m) => `mount ${m}`);
  const dirs = readdirSync(tmp)
    .filter((d) => d.startsWith('prebake-build-'))
    .map((d) => `dir ${join(tmp, d)}`);
  const containers = sh('runc', ['list', '-q'])
    .split('\n')
    .filter(ours)
    .map((c) => `runc container ${c}`);
  const stateDir = join('/run/prebake', tmp);
  const state = existsSync(stateDir)
    ? sh('find', [stateDir, '-mindepth', '1'])
        .split('\n')
        .filter(Boolean)
        .map((f) => `runtime state ${f}`)
    : [];
  return [...netns, ...mounts, ...dirs, ...containers, ...state];
}

/** Checks a failed run: exit status, the one line that names the problem, no DEST, nothing left. */
function assertFailed(t: ExecutionContext, r: BuildRun, o: { code: number; message: RegExp; dest: string; usage?: boolean }) {
  t.is(r.code, o.code, r.stderr);
  const parent = join(o.dest, '..');
  const base = o.dest.slice(parent.length + 1);
  t.false(existsSync(o.dest), 'DEST is not created');
  t.deepEqual(readdirSync(parent).filter((f) => f.startsWith(`${base}.tmp-`)), [], 'no temp DEST beside it');
  t.deepEqual(leftovers(r), []);
  t.is(r.stdout, '');
  const [first, ...rest] = r.stderr.trimEnd().split('\n');
  t.regex(first ?? '', /^prebake-build: /);
  t.regex(first ?? '', o.message);
  // A usage error is followed by the usage; any other failure is that one line.
  if (o.usage) t.regex(rest.join('\n'), /^\nusage: prebake-build /);
  else t.deepEqual(rest, [], `the error is one line: ${JSON.stringify(r.stderr)}`);
}



// Bad input. Serial (ava runs these before the concurrent tests): they are short, and the full
// bakes below would only compete with them for the CPU.

test.serial('bad input: an unknown transport is a usage error naming the reference', async (t) => {
  const dir = tempDir(t, 'prebake-btest-');
  const dest = join(dir, 'out');
  const r = await prebakeBuild(['--quiet', 'foo:bar', `oci:${dest}:baked`], ownTmp(t, dir));
  assertFailed(t, r, { code: 2, message: /image reference "foo:bar": unknown transport "foo"/, dest, usage: true });
});

test.serial('bad input: a missing source directory is named', async (t) => {
  const dir = tempDir(t, 'prebake-btest-');
  const dest = join(dir, 'out');
  const missing = join(dir, 'no-such-layout');
  const r = await prebakeBuild(['--quiet', `oci:${missing}:latest`, `oci:${dest}:baked`], ownTmp(t, dir));
  assertFailed(t, r, { code: 1, message: new RegExp(`${missing}.*is not an OCI image layout`), dest });
});

test.serial('bad input: a probe that never succeeds gives up after --ready-timeout with the container\'s last output', async (t) => {
  const dir = tempDir(t, 'prebake-btest-');
  const dest = join(dir, 'out');
  const t0 = Date.now();
  const r = await prebakeBuild(['--quiet', '--ready', 'tcp:9999', '--ready-timeout', '1500', source, `oci:${dest}:baked`], ownTmp(t, dir));
  t.log(`failed after ${Date.now() - t0} ms`);
  assertFailed(t, r, { code: 1, message: /tcp:9999 never became ready: not ready after 1500 ms/, dest });
  t.regex(r.stderr.split('\n')[0]!, /noop listening on 8080/, 'the message carries the container\'s last output line');
});

test.serial('bad input: an image without Entrypoint or Cmd says there is nothing to run', async (t) => {
  const dir = tempDir(t, 'prebake-btest-');
  const src = await readImage(source);
  t.teardown(() => src.cleanup());
  const { Cmd: _cmd, Entrypoint: _entrypoint, ...config } = src.config.config ?? {};
  t.deepEqual(_cmd, ['python3', '/app/function.py']);
  const empty = join(dir, 'empty');
  mkdirSync(empty);
  const layer = await packLayer(empty, '/');
  t.teardown(() => layer.cleanup());
  await writeImage(`oci:${dir}/nocmd:latest`, { source: { ...src, config: { ...src.config, config } }, addLayer: layer });
  const dest = join(dir, 'out');
  const r = await prebakeBuild(['--quiet', `oci:${dir}/nocmd:latest`, `oci:${dest}:baked`], ownTmp(t, dir));
  assertFailed(t, r, { code: 1, message: /neither Entrypoint nor Cmd/, dest });
});

test.serial('bad input: --warmup abc is a usage error naming the option', async (t) => {
  const dir = tempDir(t, 'prebake-btest-');
  const dest = join(dir, 'out');
  const r = await prebakeBuild(['--quiet', '--warmup', 'abc', source, `oci:${dest}:baked`], ownTmp(t, dir));
  assertFailed(t, r, { code: 2, message: /--warmup abc: expected an integer >= 0/, dest, usage: true });
});

test.serial('a hostile source layer stops prebake-build naming the entry; nothing is written outside', async (t) => {
  const dir = tempDir(t, 'prebake-btest-');
  // prebake-build's temp dir (and the rootfs in it) goes under a TMPDIR of the test's own.
  const env = ownTmp(t, dir);
  const tmp = env.TMPDIR!;
  for (const name of ['../escape', '../../escape']) {
    const layer = await tarLayer(dir, [{ name: 'ok/file', content: 'fine\n' }, { name, content: 'pwned\n' }]);
    const src = `oci:${dir}/hostile:latest`;
    await writeImage(src, { source: scratchImage({ Cmd: ['/bin/true'] }), addLayer: layer });
    const dest = join(dir, 'out');
    const r = await prebakeBuild(['--quiet', src, `oci:${dest}:baked`], env);
    const quoted = JSON.stringify(name).replace(/[.]/g, '\\.');
    assertFailed(t, r, { code: 1, message: new RegExp(`layer 0 \\(sha256:[0-9a-f]{64}\\): entry ${quoted} has a "\\.\\." path component, refused`), dest });
    t.deepEqual(readdirSync(tmp), [], `${name}: prebake-build's temp dir is gone and nothing was written beside it`);
    t.false(existsSync(join(dir, 'escape')), `${name}: nothing written outside`);
  }
  t.deepEqual(readdirSync(dir).filter((f) => !f.startsWith('layer-')).sort(), ['hostile', 'tmp']);
});


test.serial('bad input: the default target, docker, with no dockerd to ask stops before anything is read', async (t) => {
  const dir = tempDir(t, 'prebake-btest-');
  const dest = join(dir, 'out');
  const env = { ...ownTmp(t, dir), DOCKER_HOST: `unix://${join(dir, 'no-docker.sock')}` };
  const r = await prebakeBuild(['--quiet', source, `oci:${dest}:baked`], env, { defaultTarget: true });
  assertFailed(t, r, { code: 1, message: /--target docker: could not capture the engine's spec: .*(Cannot connect|no-docker\.sock).*\(docker is the default target; --target runc bakes for plain runc, no engine needed\)$/, dest });
  t.deepEqual(readdirSync(r.tmp), [], 'nothing unpacked');
});

test.serial('bad input: not root is one line, before anything is read', async (t) => {
  const dir = tempDir(t, 'prebake-btest-');
  chmodSync(dir, 0o777);
  const dest = join(dir, 'out');
  const r = await prebakeBuild(['--quiet', source, `oci:${dest}:baked`], ownTmp(t, dir), { as: ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'] });
  assertFailed(t, r, { code: 1, message: /must run as root/, dest });
});

test.serial('bad input: --runtime with a name dockerd could not have, or without --target docker or cri, is a usage error; nothing is read', async (t) => {
  const dir = tempDir(t, 'prebake-btest-');
  const dest = join(dir, 'out');
  // A name is checked before any engine is asked: no dockerd is reachable here.
  const env = { ...ownTmp(t, dir), DOCKER_HOST: `unix://${join(dir, 'no-docker.sock')}` };
  for (const name of ['', 'my runtime', '../prebake', '-prebake', 'pre/bake', '.hidden']) {
    const r = await prebakeBuild(['--quiet', '--target', 'docker', `--runtime=${name}`, source, `oci:${dest}:baked`], env);
    assertFailed(t, r, { code: 2, message: new RegExp(`--runtime ${JSON.stringify(name).replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: expected a runtime name`), dest, usage: true });
    t.deepEqual(readdirSync(r.tmp), [], `${JSON.stringify(name)}: nothing unpacked`);
  }
  const runc = await prebakeBuild(['--quiet', '--target', 'runc', '--runtime', 'prebake-alt', source, `oci:${dest}:baked`], env);
  assertFailed(t, runc, { code: 2, message: /--runtime names the runtime for --target docker or cri, neither of which is among the targets \(runc\)/, dest, usage: true });
  // A good name gets as far as asking dockerd (none here) for the probe.
  const ok = await prebakeBuild(['--quiet', '--runtime', 'prebake-alt', source, `oci:${dest}:baked`], env, { defaultTarget: true });
  assertFailed(t, ok, { code: 1, message: /--target docker: could not capture the engine's spec: .*(Cannot connect|no-docker\.sock)/, dest });
});

test.serial('bad input: --pod-config and --container-config without --target cri, unreadable, not a JSON object, with a malformed field, privileged or in the host\'s namespaces, or a command beside --arg, are usage errors; nothing is read', async (t) => {
  const dir = tempDir(t, 'prebake-btest-');
  const dest = join(dir, 'out');
  const file = (name: string, text: string) => {
    writeFileSync(join(dir, name), text);
    return join(dir, name);
  };
  const good = file('c.json', '{"mounts": []}');
  const cases: [string[], RegExp][] = [
    [['--target', 'runc', '--container-config', good], /--container-config is for --target cri, which is not among the targets \(runc\)/],
    [['--target', 'cri', '--pod-config', join(dir, 'absent.json')], /--pod-config .*absent\.json: ENOENT/],
    [['--target', 'cri', '--container-config', file('bad.json', '{"mounts": [')], /--container-config .*bad\.json: /],
    [['--target', 'cri', '--container-config', file('list.json', '[]')], /expected a JSON object \(CRI's ContainerConfig\)/],
    [['--target', 'cri', '--container-config', file('cmd.json', '{"command": "python3"}')], /command must be a list of strings/],
    [['--target', 'cri', '--container-config', file('env.json', '{"envs": [{"key": "A B", "value": "1"}]}')], /envs must be a list of \{"key": NAME, "value": STRING\}/],
    [['--target', 'cri', '--container-config', file('user.json', '{"linux": {"security_context": {"run_as_username": "app"}}}')], /run_as_username is not supported/],
    [['--target', 'cri', '--arg', 'x', '--container-config', file('args.json', '{"args": ["y"]}')], /--arg and the command or args of --container-config both say what to run/],
    [['--target', 'cri', '--container-config', file('priv.json', '{"linux": {"security_context": {"privileged": true}}}')], /a privileged container is not baked/],
    [['--target', 'cri', '--pod-config', file('hostnet.json', '{"linux": {"security_context": {"namespace_options": {"network": "NODE"}}}}')], /namespace_options\.network NODE \(the host's\) is not baked/],
  ];
  const env = ownTmp(t, dir);
  for (const [flags, message] of cases) {
    const r = await prebakeBuild(['--quiet', ...flags, source, `oci:${dest}:baked`], env);
    assertFailed(t, r, { code: 2, message, dest, usage: true });
    t.deepEqual(readdirSync(r.tmp), [], `${flags.join(' ')}: nothing unpacked`);
  }
});

/** A tmpfs of `size` at `dir`, unmounted when the test ends. */
function smallTmpfs(t: ExecutionContext, dir: string, size: string): string {
  mkdirSync(dir, { recursive: true });
  sh('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir]);
  t.teardown(() => void execFileSync('umount', [dir]));
  return dir;
}

test.serial('no space: a full temp filesystem stops the unpack, naming the file; nothing is left', async (t) => {
  const dir = tempDir(t, 'prebake-btest-');
  const env = ownTmp(t, dir);
  smallTmpfs(t, env.TMPDIR!, '4m');
  const dest = join(dir, 'out');
  const r = await prebakeBuild(['--quiet', source, `oci:${dest}:baked`], env);
  assertFailed(t, r, { code: 1, message: /writing \/.*\/rootfs\/.*: ENOSPC: no space left on device/, dest });
  t.log(r.stderr.trim());
  t.deepEqual(readdirSync(r.tmp), [], 'the temp dir is gone');
});

test.serial('no space: a full destination filesystem fails the write; DEST is not created and nothing is left', async (t) => {
  const dir = tempDir(t, 'prebake-btest-');
  const env = ownTmp(t, dir);
  const full = smallTmpfs(t, join(dir, 'full'), '1m');
  const dest = join(full, 'out');
  const r = await prebakeBuild(['--quiet', source, `oci:${dest}:baked`], env);
  assertFailed(t, r, { code: 1, message: new RegExp(`no space left on device.*${full}|${full}.*no space left on device`, 'i'), dest });
  t.log(r.stderr.trim());
  t.deepEqual(readdirSync(full), [], 'no temp DEST on the full filesystem');
});

test('probes: each kind parses and prints back; a bad one names the option and the problem', (t) => {
  for (const text of ['http:8080/', 'http:80/health?x=1', 'tcp:5432', 'log:listening on \\d+', 'delay:250']) t.is(probeText(parseProbe(text)), text);
  t.is(probeText(parseProbe('http:8080')), 'http:8080/');
  t.true(parseProbe('log:ready [0-9]+').kind === 'log' && (parseProbe('log:ready [0-9]+') as { regex: RegExp }).regex.test('ready 42'));
  for (const [text, message] of [
    ['http:0/', /--ready http:0\/: "0" is not a TCP port/],
    ['tcp:70000', /"70000" is not a TCP port/],
    ['log:', /log: needs a regular expression/],
    ['log:(', /--ready log:\(: Invalid regular expression/],
    ['delay:-5', /delay: needs milliseconds/],
    ['grpc:50051', /unknown probe "grpc" \(use http:PORT\[\/PATH\], tcp:PORT, log:REGEX or delay:MS\)/],
  ] as const)
    t.throws(() => parseProbe(text), { message }, text);
});

// Full bakes: each unpacks the image and bakes, checkpoints and verifies it.

test('oci → oci: skopeo inspects it, umoci unpacks it, and the umoci bundle is restored by prebake, also with runc spec\'s config.json (root.readonly and process.terminal false)', async (t) => {
  const dir = tempDir(t, 'prebake-btest-');
  const out = join(dir, 'baked');
  const r = await prebakeBuild([source, `oci:${out}:baked`], ownTmp(t, dir));
  t.is(r.code, 0, r.stderr);
  t.regex(r.stderr, /prebake-build: wrote oci:.*:baked \(checkpoint layer [\d.]+ MB, sha256:[0-9a-f]{64}\)\n$/);

  const inspect = JSON.parse(sh('skopeo', ['inspect', `oci:${out}:baked`])) as { Layers: string[]; Env: string[]; Labels: Record<string, string> };
  t.is(inspect.Layers.length, 3);
  t.true(inspect.Env.includes('PREBAKE_CHECKPOINT=/.prebake'), JSON.stringify(inspect.Env));
  t.is(inspect.Labels['io.prebake.probe'], `http:${NOOP_PORT}/`);

  const bundle = join(dir, 'bundle');
  sh('umoci', ['unpack', '--image', `${out}:baked`, bundle]);
  t.true(existsSync(join(bundle, 'rootfs/.prebake/manifest.json')));
  await restoreUmociBundle(t, bundle);
  // A bundle whose config.json is runc spec's, with the two fields prebake-build names.
  const byHand = join(dir, 'by-hand');
  sh('umoci', ['unpack', '--image', `${out}:baked`, byHand]);
  await restoreUmociBundle(t, byHand, { runcSpec: true });
});

test('--env and --arg are written into DEST\'s Env and Cmd: the umoci bundle of DEST runs the baked process and is restored', async (t) => {
  const dir = tempDir(t, 'prebake-btest-');
  const out = join(dir, 'baked');
  const args = ['python3', '-u', '/app/function.py'];
  const r = await prebakeBuild(['--env', 'PBK_TEST_X=1', '--env', 'PBK_TEST_Y=a=b c', ...args.map((a) => `--arg=${a}`), source, `oci:${out}:baked`], ownTmp(t, dir));
  t.is(r.code, 0, r.stderr);
  const src = await readImage(source);
  t.teardown(() => src.cleanup());
  const written = await readImage(`oci:${out}:baked`);
  t.teardown(() => written.cleanup());
  const cfg = written.config.config ?? {};
  t.deepEqual(cfg.Cmd, args, 'Cmd is the baked --arg list');
  t.deepEqual(cfg.Entrypoint ?? null, src.config.config?.Entrypoint ?? null, 'Entrypoint as it was');
  // The image's own Env first, as it was, then --env and the checkpoint marker.
  t.deepEqual(cfg.Env, [...(src.config.config?.Env ?? []), 'PBK_TEST_X=1', 'PBK_TEST_Y=a=b c', 'PREBAKE_CHECKPOINT=/.prebake']);

  const bundle = join(dir, 'bundle');
  sh('umoci', ['unpack', '--image', `${out}:baked`, bundle]);
  const spec = JSON.parse(readFileSync(join(bundle, 'config.json'), 'utf8')) as Spec;
  t.deepEqual(spec.process?.args, args);
  t.true(spec.process?.env?.includes('PBK_TEST_X=1'), JSON.stringify(spec.process?.env));
  await restoreUmociBundle(t, bundle);
});

test('oci → docker-archive: skopeo inspects the archive; the bake leaves nothing behind', async (t) => {
  const dir = tempDir(t, 'prebake-btest-');
  const file = join(dir, 'noop.tar');
  const r = await prebakeBuild(['--quiet', source, `docker-archive:${file}:prebake-test/noop:baked`], ownTmp(t, dir));
  t.is(r.code, 0, r.stderr);
  t.is(r.stderr, '', '--quiet');
  const inspect = JSON.parse(sh('skopeo', ['inspect', `docker-archive:${file}`])) as { Layers: string[]; Env: string[]; Labels: Record<string, string>; RepoTags?: string[] };
  t.is(inspect.Layers.length, 3);
  t.true(inspect.Env.includes('PREBAKE_CHECKPOINT=/.prebake'), JSON.stringify(inspect.Env));
  t.is(inspect.Labels['io.prebake.checkpoint'], '/.prebake');
  const tagged = JSON.parse(sh('skopeo', ['inspect', `docker-archive:${file}:prebake-test/noop:baked`])) as { Layers: string[] };
  t.deepEqual(tagged.Layers, inspect.Layers);
  t.deepEqual(readdirSync(dir).sort(), ['noop.tar', 'tmp']);
  t.deepEqual(readdirSync(r.tmp), [], 'no temp file left');
  t.deepEqual(leftovers(r), []);
});

test('--json prints one JSON summary on stdout: steps, the checkpoint layer, verified', async (t) => {
  const dir = tempDir(t, 'prebake-btest-');
  const out = join(dir, 'baked');
  const r = await prebakeBuild(['--json', source, `oci:${out}:baked`], ownTmp(t, dir));
  t.is(r.code, 0, r.stderr);
  const summary = JSON.parse(r.stdout) as {
    source: string;
    dest: string;
    steps: { step: string; ms: number }[];
    checkpoint: { files: number; bytes: number };
    layer: { digest: string; size: number };
    verified: boolean;
    manifestDigest: string;
  };
  t.is(summary.source, source);
  t.is(summary.dest, `oci:${out}:baked`);
  t.deepEqual(
    summary.steps.map((s) => s.step),
    ['read image', 'unpack', 'bake (runc)', 'rootfs changes', 'verify (runc)', 'pack layer', 'write image'],
  );
  for (const s of summary.steps) t.true(Number.isInteger(s.ms) && s.ms >= 0, JSON.stringify(s));
  t.regex(summary.layer.digest, /^sha256:[0-9a-f]{64}$/);
  t.true(summary.layer.size > 0);
  t.true(summary.checkpoint.files > 0 && summary.checkpoint.bytes > 0);
  t.true(summary.verified);
  // The summary describes what was written.
  const written = await readImage(`oci:${out}:baked`);
  t.teardown(() => written.cleanup());
  t.is(written.layers.at(-1)!.digest, summary.layer.digest);
  t.is(written.layers.at(-1)!.size, summary.layer.size);
  t.is(sha256(readFileSync(join(out, 'blobs/sha256', summary.manifestDigest.slice(7)))), summary.manifestDigest);
});

// What the function does to its filesystem while it initialises is part of what a restore needs:
// a file it keeps open must be there, with the size it had, or CRIU cannot restore the process.
const KEEPER = `
import os, runpy
log = open("/var/log/keeper.log", "a")       # kept open across the checkpoint
log.write("initialised\\n"); log.flush()
os.makedirs("/var/cache/keeper", exist_ok=True)
with open("/var/cache/keeper/data.bin", "wb") as f:
    f.write(bytes(range(256)) * 16)
os.remove("/etc/motd")                        # a file of the image removed at init
runpy.run_path("/app/function.py", run_name="__main__")
`;

test('files the function wrote or removed while it was baked ship in the checkpoint layer; the restore needs them', async (t) => {
  const dir = tempDir(t, 'prebake-btest-');
  const src = await readImage(source);
  t.teardown(() => src.cleanup());
  const app = await tarLayer(dir, [{ name: 'app/keeper.py', content: KEEPER }]);
  const keeper = `oci:${dir}/keeper:latest`;
  await writeImage(keeper, { source: { ...src, config: { ...src.config, config: { ...src.config.config, Cmd: ['python3', '/app/keeper.py'] } } }, addLayer: app });
  const out = join(dir, 'baked');
  const r = await prebakeBuild([keeper, `oci:${out}:baked`], ownTmp(t, dir));
  t.is(r.code, 0, r.stderr);
  t.regex(r.stderr, /rootfs changes\s+\d+ ms/);
  t.regex(r.stderr, /runc target: a bundle restores with root\.readonly false and process\.terminal false/);
  // Not a terminal: plain progress, a line as each step starts, then one with its time.
  for (const step of ['read image', 'unpack', 'runc: start', 'runc: ready', 'runc: warmup', 'runc: checkpoint', 'bake (runc)', 'verify (runc)', 'pack layer', 'write image'])
    t.regex(r.stderr, new RegExp(`prebake-build: ${step.replace(/[()]/g, '\\$&')} \\.\\.\\.\\n(.*\\n)*prebake-build: ${step.replace(/[()]/g, '\\$&')} +\\d+ ms\\n`), step);

  const bundle = join(dir, 'bundle');
  sh('umoci', ['unpack', '--image', `${out}:baked`, bundle]);
  const rootfs = join(bundle, 'rootfs');
  t.is(readFileSync(join(rootfs, 'var/log/keeper.log'), 'utf8'), 'initialised\n');
  t.is(readFileSync(join(rootfs, 'var/cache/keeper/data.bin')).length, 4096);
  t.false(existsSync(join(rootfs, 'etc/motd')), 'the file removed at init is whited out');
  t.true(existsSync(join(rootfs, 'etc/issue')), 'its neighbours are not');
  // Only what changed: no copy of the unchanged image, no mount points the runtime made.
  const written = await readImage(`oci:${out}:baked`);
  t.teardown(() => written.cleanup());
  const members = sh('tar', ['-tzf', written.layers.at(-1)!.path]).split('\n').filter(Boolean);
  const names = members.map((m) => m.replace(/^\.\//, '').replace(/\/$/, ''));
  t.false(names.some((m) => /^(proc|sys|dev|usr\/bin)(\/|$)/.test(m)), names.join(' '));
  const leaves = names.filter((m) => m !== '.' && !m.includes('.wh.') && !names.some((n) => n.startsWith(`${m}/`)));
  for (const leaf of leaves) t.false(statSync(join(rootfs, leaf)).isDirectory(), `${leaf}: a directory shipped with nothing below it`);
  t.true(members.some((m) => /etc\/\.wh\.motd$/.test(m)), members.join(' '));
  await restoreUmociBundle(t, bundle);
});

test('--ready log:REGEX bakes once the container prints the line; no warm-up without a port', async (t) => {
  const dir = tempDir(t, 'prebake-btest-');
  const out = join(dir, 'baked');
  const r = await prebakeBuild(['--json', '--ready', 'log:noop listening on \\d+', source, `oci:${out}:baked`], ownTmp(t, dir));
  t.is(r.code, 0, r.stderr);
  const summary = JSON.parse(r.stdout) as { steps: { step: string }[]; verified: boolean };
  t.true(summary.verified);
  const written = await readImage(`oci:${out}:baked`);
  t.teardown(() => written.cleanup());
  t.is(written.config.config?.Labels?.['io.prebake.probe'], 'log:noop listening on \\d+');
  t.notRegex(written.config.history?.at(-1)?.created_by ?? '', /warm-up/);
  t.deepEqual(leftovers(r), []);
});

test('--version and --help answer on stdout with exit 0, as the tools around it do; a usage error goes to stderr with 2', async (t) => {
  const call = (args: string[]) => spawnSync(join(REPO, 'bin/prebake-build'), args, { encoding: 'utf8' });
  const v = call(['--version']);
  t.is(v.status, 0);
  t.is(v.stdout, `prebake-build version ${JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')).version}\n`);
  for (const h of ['--help', '-h']) {
    const r = call([h]);
    t.is(r.status, 0, h);
    t.regex(r.stdout, /^usage: prebake-build \[options\] SOURCE DEST\n/, h);
    t.regex(r.stdout, /--runtime NAME +--target docker: the name prebake is registered under/, h);
    t.is(r.stderr, '', h);
  }
  const mode = call(['--progress', 'fancy', 'oci:/x:y', 'oci:/x:z']);
  t.is(mode.status, 2);
  t.regex(mode.stderr, /^prebake-build: --progress fancy: expected auto, plain, tty, quiet/);
  const memory = call(['--memory', 'fast', 'oci:/x:y', 'oci:/x:z']);
  t.is(memory.status, 2);
  t.regex(memory.stderr, /^prebake-build: --memory fast: expected eager, lazy or auto/);
  const bad = call(['--bogus']);
  t.is(bad.status, 2);
  t.is(bad.stdout, '');
  t.regex(bad.stderr, /^prebake-build: .*--bogus/);
});
