// prebake install/uninstall: each engine's config merged, never rewritten; removing prebake
// again leaves the file as it was; a malformed file stops with an error and is left alone.

import test from 'ava';
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'smol-toml';
import { PREBAKE } from '../lab/bundle.ts';

function setup(t: import('ava').ExecutionContext, name: string, content: string | null) {
  const dir = mkdtempSync(join(tmpdir(), 'prebake-install-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, name);
  if (content !== null) writeFileSync(file, content);
  // Backups go to the test's own dir, not /var/lib/prebake.
  const env = { ...process.env, PREBAKE_INSTALL_STATE: join(dir, 'state') };
  const run = (cmd: 'install' | 'uninstall', engine: string, path = '/opt/prebake/bin/prebake') => {
    const r = spawnSync(PREBAKE, [cmd, engine, '--config', file, '--path', path], { encoding: 'utf8', env });
    return { code: r.status, out: r.stdout + r.stderr };
  };
  return { file, run, read: () => readFileSync(file, 'utf8') };
}

const DOCKER = '{\n    "log-level": "warn",\n    "runtimes": { "other": { "path": "/usr/bin/other" } }\n}\n';
const CONTAINERD = `# my containerd\nversion = 2\n\n[plugins."io.containerd.grpc.v1.cri"]\n  sandbox_image = "pause:3.9"\n`;
const PODMAN = `[engine]\nevents_logger = "file"   # keep\n\n[engine.runtimes]\ncrun = ["/usr/bin/crun"]\n\n[network]\n`;

test('docker: runtimes.prebake merged beside the runtimes there are; uninstall gives the same bytes back', (t) => {
  const c = setup(t, 'daemon.json', DOCKER);
  t.is(c.run('install', 'docker').code, 0);
  const conf = JSON.parse(c.read());
  t.deepEqual(conf.runtimes, { other: { path: '/usr/bin/other' }, prebake: { path: '/opt/prebake/bin/prebake' } });
  t.is(conf['log-level'], 'warn');
  const once = c.read();
  t.regex(c.run('install', 'docker').out, /unchanged .*already registered/);
  t.is(c.read(), once, 'a second install changes nothing');
  t.is(c.run('uninstall', 'docker').code, 0);
  t.is(c.read(), DOCKER);
});

test('docker: an uninstall after the user edited the file removes prebake only and keeps the edit', (t) => {
  const c = setup(t, 'daemon.json', DOCKER);
  c.run('install', 'docker');
  writeFileSync(c.file, JSON.stringify({ ...JSON.parse(c.read()), debug: true }));
  t.is(c.run('uninstall', 'docker').code, 0);
  t.deepEqual(JSON.parse(c.read()), { 'log-level': 'warn', runtimes: { other: { path: '/usr/bin/other' } }, debug: true });
});

test('a config file that does not exist is created, and removed again', (t) => {
  const c = setup(t, 'daemon.json', null);
  t.is(c.run('install', 'docker').code, 0);
  t.deepEqual(JSON.parse(c.read()), { runtimes: { prebake: { path: '/opt/prebake/bin/prebake' } } });
  t.is(c.run('uninstall', 'docker').code, 0);
  t.false(existsSync(c.file));
});

test('containerd: a CRI runtime handler "prebake" of type runc.v2 with BinaryName; comments kept; uninstall restores', (t) => {
  const c = setup(t, 'config.toml', CONTAINERD);
  t.is(c.run('install', 'containerd').code, 0);
  const text = c.read();
  t.true(text.startsWith(CONTAINERD), 'the existing file is kept as it was, prebake is appended');
  const conf = parse(text) as any;
  const rt = conf.plugins['io.containerd.grpc.v1.cri'].containerd.runtimes.prebake;
  t.deepEqual(rt, { runtime_type: 'io.containerd.runc.v2', options: { BinaryName: '/opt/prebake/bin/prebake' } });
  t.is(conf.plugins['io.containerd.grpc.v1.cri'].sandbox_image, 'pause:3.9');
  t.is(c.run('uninstall', 'containerd').code, 0);
  t.is(c.read(), CONTAINERD);
});

// containerd 2.x's own config shape: CRI runtimes under the io.containerd.cri.v1.runtime plugin.
const CONTAINERD_V3 = `version = 3
root = '/var/lib/containerd'

[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'

[plugins.'io.containerd.cri.v1.runtime'.containerd]
  default_runtime_name = 'runc'

  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
    runtime_type = 'io.containerd.runc.v2'

    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
      SystemdCgroup = true
      CriuPath = '/usr/local/sbin/criu'
      BinaryName = '/usr/bin/runc'
`;

test('containerd 2.x: a version = 3 config gets the handler under io.containerd.cri.v1.runtime, with runc\'s options; uninstall gives the same bytes back', (t) => {
  const c = setup(t, 'config.toml', CONTAINERD_V3);
  t.is(c.run('install', 'containerd').code, 0);
  const text = c.read();
  t.true(text.startsWith(CONTAINERD_V3), 'the existing file is kept as it was, prebake is appended');
  const conf = parse(text) as any;
  t.is(conf.version, 3);
  const runtimes = conf.plugins['io.containerd.cri.v1.runtime'].containerd.runtimes;
  t.deepEqual(runtimes.prebake, {
    runtime_type: 'io.containerd.runc.v2',
    options: { BinaryName: '/opt/prebake/bin/prebake', SystemdCgroup: true, CriuPath: '/usr/local/sbin/criu' },
  });
  t.is(runtimes.runc.options.BinaryName, '/usr/bin/runc', 'runc\'s own handler is left alone');
  t.is(conf.plugins['io.containerd.grpc.v1.cri'], undefined, 'nothing in the CRI plugin containerd 1.x reads');
  t.is(conf.plugins['io.containerd.cri.v1.runtime'].containerd.default_runtime_name, 'runc');
  t.regex(c.run('install', 'containerd').out, /unchanged .*already registered/);
  t.is(c.run('uninstall', 'containerd').code, 0);
  t.is(c.read(), CONTAINERD_V3);
  // A version 3 file without a runc handler: BinaryName only, still in the v3 place.
  const bare = setup(t, 'config.toml', 'version = 3\n');
  t.is(bare.run('install', 'containerd').code, 0);
  t.deepEqual((parse(bare.read()) as any).plugins['io.containerd.cri.v1.runtime'].containerd.runtimes.prebake, {
    runtime_type: 'io.containerd.runc.v2',
    options: { BinaryName: '/opt/prebake/bin/prebake' },
  });
  t.is(bare.run('uninstall', 'containerd').code, 0);
  t.is(bare.read(), 'version = 3\n');
});

test('containerd: a runc handler with SystemdCgroup = true gives prebake\'s handler SystemdCgroup = true (and runc\'s other options), BinaryName prebake\'s', (t) => {
  const v2 = `${CONTAINERD}\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]\n  runtime_type = "io.containerd.runc.v2"\n  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]\n    SystemdCgroup = true\n    NoPivotRoot = false\n    Root = "/run/containerd/runc"\n    ShimCgroup = ""\n`;
  const c = setup(t, 'config.toml', v2);
  t.is(c.run('install', 'containerd').code, 0);
  const conf = parse(c.read()) as any;
  t.deepEqual(conf.plugins['io.containerd.grpc.v1.cri'].containerd.runtimes.prebake, {
    runtime_type: 'io.containerd.runc.v2',
    options: { BinaryName: '/opt/prebake/bin/prebake', SystemdCgroup: true, NoPivotRoot: false, Root: '/run/containerd/runc', ShimCgroup: '' },
  });
  t.is(c.run('uninstall', 'containerd').code, 0);
  t.is(c.read(), v2);
  // A file with no version is read as today's (version 2) shape.
  const none = setup(t, 'config.toml', '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]\n  SystemdCgroup = true\n');
  t.is(none.run('install', 'containerd').code, 0);
  t.deepEqual((parse(none.read()) as any).plugins['io.containerd.grpc.v1.cri'].containerd.runtimes.prebake.options, { BinaryName: '/opt/prebake/bin/prebake', SystemdCgroup: true });
});

test('podman: prebake added to the existing [engine.runtimes] table; uninstall restores', (t) => {
  const c = setup(t, 'containers.conf', PODMAN);
  t.is(c.run('install', 'podman').code, 0);
  const conf = parse(c.read()) as any;
  t.deepEqual(conf.engine.runtimes, { crun: ['/usr/bin/crun'], prebake: ['/opt/prebake/bin/prebake'] });
  t.is(conf.engine.events_logger, 'file');
  t.is(c.run('uninstall', 'podman').code, 0);
  t.is(c.read(), PODMAN);
  const bare = setup(t, 'containers.conf', '[engine]\ncgroup_manager = "cgroupfs"\n');
  t.is(bare.run('install', 'podman').code, 0);
  t.deepEqual((parse(bare.read()) as any).engine.runtimes, { prebake: ['/opt/prebake/bin/prebake'] });
});

test('podman accepts the registered runtime by name', (t) => {
  // (root here lacks CAP_SYS_RESOURCE: podman needs ulimits it may set; crun 1.8 refuses this host's cgroups)
  const c = setup(t, 'containers.conf', '[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n\n[engine]\nruntime = "runc"\n');
  t.is(c.run('install', 'podman', PREBAKE).code, 0);
  // podman resolves --runtime NAME through [engine.runtimes] of the config it reads.
  const r = spawnSync('podman', ['--runtime', 'prebake', 'info', '--format', '{{.Host.OCIRuntime.Path}}'], {
    encoding: 'utf8',
    env: { ...process.env, CONTAINERS_CONF: c.file },
  });
  t.is(r.status, 0, r.stderr);
  t.is(r.stdout.trim(), PREBAKE);
});

test('a malformed config stops install with an error naming the file, and is left as it was', (t) => {
  for (const [engine, name, bad] of [
    ['docker', 'daemon.json', '{ "runtimes": '],
    ['containerd', 'config.toml', '[plugins\nversion = 2'],
    ['podman', 'containers.conf', '[engine]\nruntime = '],
  ] as const) {
    const c = setup(t, name, bad);
    const r = c.run('install', engine);
    t.is(r.code, 1, engine);
    t.regex(r.out, new RegExp(`${name}.* is not valid (JSON|TOML).*left as it was`), engine);
    t.is(c.read(), bad, engine);
  }
});

test('unknown engines and usage errors are named', (t) => {
  const usage = (args: string[]) => spawnSync(PREBAKE, args, { encoding: 'utf8' });
  let r = usage(['install', 'cri-o']);
  t.is(r.status, 2);
  t.regex(r.stderr, /unknown engine cri-o/);
  r = usage(['install', 'docker', 'podman', '--config', '/nonexistent/daemon.json']);
  t.is(r.status, 2);
  t.regex(r.stderr, /--config names one engine's file/);
  r = usage(['uninstall', 'docker', '--no-such-flag']);
  t.is(r.status, 2);
  t.regex(r.stderr, /prebake uninstall: .*--no-such-flag/);
  r = usage(['install']);
  t.is(r.status, 2, 'no engine named');
  t.regex(r.stderr, /^usage: prebake install\|uninstall ENGINE/);
  t.false(existsSync('/nonexistent/daemon.json'));
});

test('install refuses a runtime that is not root\'s or that others can write: whoever can is root in every container', (t) => {
  const c = setup(t, 'daemon.json', DOCKER);
  const dir = mkdtempSync(join(tmpdir(), 'prebake-unsafe-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const bin = join(dir, 'prebake');
  writeFileSync(bin, '#!/bin/sh\n', { mode: 0o775 });
  chmodSync(bin, 0o775);
  const r = c.run('install', 'docker', bin);
  t.is(r.code, 1, r.out);
  t.regex(r.out, new RegExp(`refused: ${bin} is writable by its group \\(mode 775\\)`));
  t.is(c.read(), DOCKER, 'the config is left as it was');
  chmodSync(bin, 0o755);
  chownSync(bin, 65534, 65534);
  t.regex(c.run('install', 'docker', bin).out, /is owned by uid 65534, not root/);
  chownSync(bin, 0, 0);
  chmodSync(dir, 0o777);
  t.regex(c.run('install', 'docker', bin).out, /writable by everyone \(mode 777\)/);
  chmodSync(dir, 0o755);
  t.is(c.run('install', 'docker', bin).code, 0);
});
