// The runtime as engines use it: terminals through --console-socket, the restored process's exit
// status reaching the reaper, extra descriptors, and commands passed through exactly as runc.

import test from 'ava';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NetnsClient } from '../src/lib/netns.ts';
import { spawnPiped } from '../src/lib/pipe.ts';
import { bakeNoop, type BakedFunction, PORT, WARMUP } from '../lab/baked.ts';
import { PREBAKE, REPO } from '../lab/bundle.ts';
import { run, testReplica } from './helpers/bundle.ts';
import { startConsole } from '../lab/console.ts';

let baked: BakedFunction;
let bakedTty: BakedFunction;
test.before(async () => {
  [baked, bakedTty] = await Promise.all([bakeNoop(), bakeNoop({ terminal: true })]);
});
test.after.always(() => {
  baked?.cleanup();
  bakedTty?.cleanup();
});

function replica(t: import('ava').ExecutionContext, layers: string[]) {
  const r = testReplica(t, layers, 'life');
  return { ...r, g: ['--root', r.rt.root, '--log', r.rt.log, '--log-format', 'json'] };
}

test('a terminal container baked with a terminal is restored and talks through the console socket', async (t) => {
  const { b, rt, id, g } = replica(t, bakedTty.layers);
  b.writeSpec(bakedTty.spec(b.netnsPath));
  const cons = await startConsole(join(b.dir, 'console.sock'));
  t.teardown(() => cons.close());
  const client = await NetnsClient.start(b.netns);
  t.teardown(() => client.close());
  const create = await run(PREBAKE, [...g, 'create', '--bundle', b.dir, '--console-socket', cons.socket, '--pid-file', join(b.dir, 'pid'), id]);
  t.is(create.code, 0, create.output);
  t.is((await run(PREBAKE, ['--root', rt.root, 'start', id])).code, 0);
  const r = await client.request({ port: PORT, path: '/' });
  t.is(JSON.parse(r.body).served, WARMUP + 2);
  // The function prints each request on its stdout, which is now the new terminal.
  await cons.waitFor(new RegExp(`request ${WARMUP + 2} GET /`));
  t.true(rt.logLines().some((l) => /^restored /.test(l.msg)));
});

test('a terminal asked of an image baked without one starts cold, with the reason logged', async (t) => {
  const { b, rt, id, g } = replica(t, baked.layers);
  b.writeSpec(baked.spec(b.netnsPath, (s) => (s.process!.terminal = true)));
  const cons = await startConsole(join(b.dir, 'console.sock'));
  t.teardown(() => cons.close());
  const client = await NetnsClient.start(b.netns);
  t.teardown(() => client.close());
  const create = await run(PREBAKE, [...g, 'create', '--bundle', b.dir, '--console-socket', cons.socket, id]);
  t.is(create.code, 0, create.output);
  t.is((await run(PREBAKE, ['--root', rt.root, 'start', id])).code, 0);
  const r = await client.waitHttp({ port: PORT, path: '/', timeoutMs: 20000 });
  t.is(JSON.parse(r.body).served, 1);
  await cons.waitFor(/noop listening on/);
  t.true(rt.logLines().some((l) => l.level === 'warning' && /terminal/.test(l.msg)), JSON.stringify(rt.logLines()));
});

test("the restored process's exit status reaches the engine's reaper", async (t) => {
  const { b, rt, id, g } = replica(t, baked.layers);
  b.writeSpec(baked.spec(b.netnsPath));
  const pidFile = join(b.dir, 'init.pid');
  const steps = [
    [PREBAKE, ...g, 'create', '--bundle', b.dir, '--pid-file', pidFile, id],
    [PREBAKE, '--root', rt.root, 'start', id],
  ];
  const reaper = spawnPiped('python3', [join(REPO, 'test/helpers/subreaper.py'), pidFile, JSON.stringify(steps)]);
  t.teardown(() => reaper.close());
  let out = '';
  const lines = new Promise<void>((resolve) =>
    reaper.output.on('data', (d: Buffer) => {
      out += d.toString();
      if (/"exitCode"/.test(out)) resolve();
    }),
  );
  while (!/"ready"|"failed"/.test(out)) await new Promise((r) => setTimeout(r, 20));
  t.notRegex(out, /"failed"/);
  t.true(rt.logLines().some((l) => /^restored /.test(l.msg)), 'was restored');
  // SIGTERM: the function's handler exits 0; the reaper must see that exit, not lose the child.
  t.is((await run(PREBAKE, ['--root', rt.root, 'kill', id, 'TERM'])).code, 0);
  await lines;
  const status = JSON.parse(out.trim().split('\n').findLast((l) => l.includes('exitCode'))!);
  t.deepEqual(status, { exitCode: 0, signal: null });
});

test('create --preserve-fds hands the extra descriptors to the (cold) container', async (t) => {
  const { b, id, g } = replica(t, baked.baseLayers);
  b.writeSpec(baked.spec(b.netnsPath, (s) => (s.process!.args = ['python3', '-c', 'import os; os.write(3, b"fd3 works")'])));
  const child = spawn(PREBAKE, [...g, 'create', '--preserve-fds', '1', '--bundle', b.dir, id], { stdio: ['ignore', 'ignore', 'inherit', 'pipe'] });
  let got = '';
  (child.stdio[3] as NodeJS.ReadableStream).on('data', (d: Buffer) => (got += d.toString()));
  const code = await new Promise((r) => child.on('exit', r));
  t.is(code, 0);
  t.is((await run(PREBAKE, ['--root', g[1]!, 'start', id])).code, 0);
  for (let i = 0; i < 200 && !got; i++) await new Promise((r) => setTimeout(r, 20));
  t.is(got, 'fd3 works');
});

test('pass-through commands print what runc prints and exit as runc exits', async (t) => {
  const { b, rt, id, g } = replica(t, baked.baseLayers);
  b.writeSpec(baked.spec(b.netnsPath));
  t.is((await run(PREBAKE, [...g, 'create', '--bundle', b.dir, id])).code, 0);
  const both = async (args: string[]) => {
    const [p, r] = [await run(PREBAKE, args), await run('runc', args)];
    return { p, r };
  };
  for (const args of [['--root', rt.root, 'list'], ['--root', rt.root, 'state', id], ['--root', rt.root, 'list', '--format', 'json'], ['features']]) {
    const { p, r } = await both(args);
    t.is(p.code, r.code, args.join(' '));
    t.is(p.output, r.output, args.join(' '));
  }
  const missing = await both(['--root', rt.root, 'state', 'no-such-container']);
  t.is(missing.p.code, missing.r.code);
  t.not(missing.p.code, 0);
  t.is(missing.p.output.replace(/time="[^"]*"/, ''), missing.r.output.replace(/time="[^"]*"/, ''));

  const specDir = mkdtempSync(join(tmpdir(), 'prebake-spec-'));
  t.teardown(() => rmSync(specDir, { recursive: true, force: true }));
  execFileSync('mkdir', [join(specDir, 'p'), join(specDir, 'r')]);
  execFileSync(PREBAKE, ['spec', '--bundle', join(specDir, 'p')]);
  execFileSync('runc', ['spec', '--bundle', join(specDir, 'r')]);
  t.is(readFileSync(join(specDir, 'p/config.json'), 'utf8'), readFileSync(join(specDir, 'r/config.json'), 'utf8'));

  // runc's own contract (its integration suite's `runc version` check; docker info, podman info):
  // line 1 "runc version X.Y.Z", line 2 "commit: …", line 3 "spec: X.Y.Z"; prebake's line after.
  const version = execFileSync(PREBAKE, ['--version'], { encoding: 'utf8' });
  const lines = version.split('\n');
  t.regex(lines[0]!, /^runc version [0-9]+\.[0-9]+\.[0-9]+/);
  t.regex(lines[1]!, /^commit: /);
  t.regex(lines[2]!, /^spec: [0-9]+\.[0-9]+\.[0-9]+/);
  t.true(version.startsWith(execFileSync('runc', ['--version'], { encoding: 'utf8' })));
  t.regex(version, /\nprebake version \S+\n$/);
  // --help: runc's help unchanged, then prebake's own commands.
  const help = execFileSync(PREBAKE, ['--help'], { encoding: 'utf8' });
  t.true(help.startsWith(execFileSync('runc', ['--help'], { encoding: 'utf8' })));
  for (const c of ['doctor', 'install', 'key', 'trust', 'store']) t.regex(help, new RegExp(`\\n   ${c} +\\S`), c);
  t.is(execFileSync(PREBAKE, ['-v'], { encoding: 'utf8' }), version);
});

test('the runc binary comes from PREBAKE_RUNC, else from the config file', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'prebake-conf-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const fake = join(dir, 'fake-runc');
  execFileSync('sh', ['-c', `printf '#!/bin/sh\\necho fake-runc "$@"\\n' > ${fake} && chmod +x ${fake}`]);
  const conf = join(dir, 'config.json');
  execFileSync('sh', ['-c', `printf '{\\n  "runc": "${fake}"\\n}\\n' > ${conf}`]);
  const env = { ...process.env, PREBAKE_CONFIG: conf };
  t.is(execFileSync(PREBAKE, ['list'], { env, encoding: 'utf8' }), 'fake-runc list\n');
  const other = join(dir, 'other-runc');
  execFileSync('sh', ['-c', `printf '#!/bin/sh\\necho other-runc "$@"\\n' > ${other} && chmod +x ${other}`]);
  t.is(execFileSync(PREBAKE, ['--root', '/x', 'state', 'a'], { env: { ...env, PREBAKE_RUNC: other }, encoding: 'utf8' }), 'other-runc --root /x state a\n');
  t.is(execFileSync(PREBAKE, ['--version'], { env, encoding: 'utf8' }), `fake-runc --version\nprebake version ${JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')).version}\n`);
});

test('a V8 snapshot another Node version built (a Node upgrade) still creates: the bundle runs in its place', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'prebake-blob-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  execFileSync('cp', ['-r', join(REPO, 'bin'), join(REPO, 'dist'), dir]);
  // The blob names the Node that built it near its start: make it another patch release.
  const blob = readFileSync(join(dir, 'dist/prebake.blob'));
  const at = blob.indexOf(Buffer.from(process.versions.node));
  t.true(at >= 0 && at < 64, 'the Node version is in the blob header');
  blob.write(process.versions.node.replace(/\d+$/, (p) => String(Number(p) + 1)).slice(0, process.versions.node.length), at);
  writeFileSync(join(dir, 'dist/prebake.blob'), blob);
  const refused = spawnSync(process.execPath, ['--snapshot-blob', join(dir, 'dist/prebake.blob'), '--', '--version'], { encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: '' } });
  t.is(refused.status, 14, 'this Node refuses the blob');
  const prebake = join(dir, 'bin/prebake');
  t.regex(execFileSync(prebake, ['--version'], { encoding: 'utf8' }), /^runc version [\s\S]*\nprebake version \S+\n$/);
  // A create that needs the Node program (its config names a checkpoint): it starts cold, logged.
  const bundle = join(dir, 'bundle');
  execFileSync('mkdir', ['-p', join(bundle, 'rootfs/bin')]);
  execFileSync('cp', ['/bin/busybox', join(bundle, 'rootfs/bin/busybox')]);
  writeFileSync(join(bundle, 'config.json'), JSON.stringify({
    ociVersion: '1.0.2',
    process: { user: { uid: 0, gid: 0 }, args: ['/bin/busybox', 'true'], cwd: '/', env: ['PREBAKE_CHECKPOINT=/.prebake'] },
    root: { path: 'rootfs' },
    mounts: [{ destination: '/proc', type: 'proc', source: 'proc' }],
    linux: { namespaces: [{ type: 'pid' }, { type: 'mount' }] },
  }));
  const root = join(dir, 'runc');
  const log = join(dir, 'log.json');
  const id = `blob-${process.pid}`;
  t.teardown(() => void spawnSync('runc', ['--root', root, 'delete', '--force', id]));
  // (stdio not on pipes: the created container's init holds what it is given until it starts)
  const c = spawnSync(prebake, ['--root', root, '--log', log, '--log-format', 'json', 'create', '--bundle', bundle, id], { stdio: 'ignore' });
  t.is(c.status, 0, readFileSync(log, 'utf8'));
  t.regex(readFileSync(log, 'utf8'), /"cold start: checkpoint path \\"\/\.prebake\\": .* does not exist"/);
  t.is(JSON.parse(execFileSync('runc', ['--root', root, 'state', id], { encoding: 'utf8' })).status, 'created');
});
