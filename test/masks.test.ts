// The container's own tmpfs mounts as external mounts of the checkpoint: a bake leaves each masked
// directory (and, under cgroup v1, /sys/fs/cgroup) out of the checkpoint, and a restore binds the
// host's read-only tmpfs there (dist/criu.conf), which the runtime mounts when it is missing. A
// checkpoint baked without them still restores; one baked with them where the host mount cannot
// be made starts cold, with the reason logged.

import test, { type ExecutionContext } from 'ava';
import { execFileSync } from 'node:child_process';
import { chmodSync, cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Spec } from '../oci/runtime-spec.ts';
import { externalMountLines } from '../src/bake/bake.ts';
import { HOST_MOUNTS, RESTORE_CRIU_CONF } from '../src/contract.ts';
import { type MountInfo, mountInfo } from '../src/lib/mountinfo.ts';
import { NetnsClient } from '../src/lib/netns.ts';
import { PREBAKE, REPO } from '../lab/bundle.ts';
import { run, testReplica } from './helpers/bundle.ts';
import { bakeNoop, type BakedFunction, WARMUP } from '../lab/baked.ts';
import { served, tempDir } from './helpers/tmp.ts';

const CGROUP_V1 = existsSync('/sys/fs/cgroup') && !existsSync('/sys/fs/cgroup/cgroup.controllers');

let baked: BakedFunction;
let plain: BakedFunction;
let work: string;
test.before(async () => {
  // The same function baked by a runc that drops the external mounts from the bake's CRIU config
  // at the checkpoint: a checkpoint as baked before them.
  work = mkdtempSync('/tmp/prebake-masks-');
  const runc = join(work, 'runc-without-external');
  writeFileSync(
    runc,
    `#!/bin/sh
if [ "$1" = checkpoint ]; then
  eval "id=\\\${$#}"
  b=$(runc state "$id" | jq -r .bundle)
  sed -i '/^external /d' "$(jq -r '.annotations["org.criu.config"]' "$b/config.json")"
fi
exec runc "$@"
`,
  );
  chmodSync(runc, 0o755);
  [baked, plain] = await Promise.all([bakeNoop(), bakeNoop({ runc })]);
});
test.after.always(() => {
  baked?.cleanup();
  plain?.cleanup();
  if (work) rmSync(work, { recursive: true, force: true });
});

/** The mount in effect at `path` in `table` (the last one mounted there). */
const mountAt = (table: readonly MountInfo[], path: string) => table.filter((m) => m.mountPoint === path).at(-1);

/** The tmpfs contents a checkpoint holds (one tar.gz per tmpfs CRIU restores). */
const tarsOf = (b0: BakedFunction) => readdirSync(join(b0.layers[0]!, '.prebake/checkpoint')).filter((f) => /^tmpfs-dev-\d+\.tar\.gz\.img$/.test(f));

/** Creates a replica of `b` with `prebake` (bin/prebake, or a copy's), with its pid file and the client of its netns. */
async function create(t: ExecutionContext, b0: BakedFunction, prefix: string, prebake = PREBAKE) {
  const { b, rt, id } = testReplica(t, b0.layers, prefix);
  b.writeSpec(b0.spec(b.netnsPath));
  const client = await NetnsClient.start(b.netns);
  t.teardown(() => client.close());
  const pidFile = join(b.dir, 'init.pid');
  const c = await run(prebake, ['--root', rt.root, '--log', rt.log, '--log-format', 'json', 'create', '--bundle', b.dir, '--pid-file', pidFile, id]);
  t.teardown(() => c.close());
  t.is(c.code, 0, c.output);
  return { b, rt, id, client, pid: Number(readFileSync(pidFile, 'utf8')), spec: b0.spec(b.netnsPath) };
}

/** The masked paths of `spec` that are directories in the container of `pid` (runc mounts a tmpfs on those). */
const maskedDirs = (spec: Spec, pid: number) => (spec.linux?.maskedPaths ?? []).filter((p) => mountAt(mountInfo(pid), p)?.root === '/');

test('a restore binds the masked directories (and cgroup v1 /sys/fs/cgroup) from the host read-only tmpfs; the bake left them out of the checkpoint', async (t) => {
  const c = await create(t, baked, 'masks');
  t.is(await served(c.client), WARMUP + 2, 'restored: the count goes on from the bake');
  t.true(c.rt.logLines().some((l) => /^restored /.test(l.msg)));
  const host = mountInfo();
  const maskDev = mountAt(host, HOST_MOUNTS.mask.path)?.dev;
  t.truthy(maskDev, `${HOST_MOUNTS.mask.path} is mounted`);
  t.true(mountAt(host, HOST_MOUNTS.mask.path)?.superOpts.includes('ro'), 'read-only');
  const table = mountInfo(c.pid);
  const dirs = maskedDirs(c.spec, c.pid);
  t.true(dirs.length > 0, 'the spec masks directories that exist in the container');
  for (const d of dirs) {
    const m = mountAt(table, d)!;
    t.is(m.fsType, 'tmpfs', d);
    t.is<string | undefined, string | undefined>(m.dev, maskDev, `${d} is the host's mask`);
    t.is(m.root, '/', d);
    t.true(m.opts.includes('ro') || m.superOpts.includes('ro'), `${d} is read-only`);
    t.deepEqual(readdirSync(`/proc/${c.pid}/root${d}`), [], `${d} is empty`);
  }
  if (CGROUP_V1) {
    const cg = mountAt(table, '/sys/fs/cgroup')!;
    t.is<string | undefined, string | undefined>(cg.dev, mountAt(host, HOST_MOUNTS.cgroupV1.path)?.dev, "/sys/fs/cgroup is the host's cgroup v1 skeleton");
    t.true(cg.superOpts.includes('ro'), '/sys/fs/cgroup is read-only');
    t.true(table.some((m) => m.mountPoint.startsWith('/sys/fs/cgroup/') && m.fsType === 'cgroup'), 'the controllers are mounted on it');
  }
  // CRIU restored none of them from a tar.gz of the checkpoint: only /dev's and /dev/shm's are there.
  t.true(tarsOf(baked).length <= 2, tarsOf(baked).join(' '));
  const conf = readFileSync(join(c.rt.state, c.id, 'criu', 'restore.log'), 'utf8');
  t.regex(conf, /Parsing config file \S+\/dist\/criu\.conf$/m);
});

test('a checkpoint baked without external mounts still restores, with its own tmpfs masks', async (t) => {
  const c = await create(t, plain, 'masks-old');
  t.is(await served(c.client), WARMUP + 2);
  const table = mountInfo(c.pid);
  const dirs = maskedDirs(c.spec, c.pid);
  t.true(dirs.length > 0);
  for (const d of dirs) t.not(mountAt(table, d)?.dev, mountAt(mountInfo(), HOST_MOUNTS.mask.path)?.dev, d);
  t.true(tarsOf(plain).length >= tarsOf(baked).length + dirs.length, 'each mask is a tar.gz of the checkpoint');
});

/** A copy of the runtime (bin/ and dist/) whose dist/criu.conf is `conf`. */
function runtimeCopy(t: ExecutionContext, conf: string): string {
  const dir = tempDir(t, 'prebake-copy-');
  for (const d of ['bin', 'dist']) cpSync(join(REPO, d), join(dir, d), { recursive: true });
  writeFileSync(join(dir, 'dist/criu.conf'), conf);
  return dir;
}

test('where the host mount cannot be made, a checkpoint baked with it starts cold, with the reason logged, and nothing is left', async (t) => {
  const copy = runtimeCopy(t, '');
  // The mask's directory cannot be made: its parent is a file.
  writeFileSync(join(copy, 'blocked'), '');
  writeFileSync(join(copy, 'dist/criu.conf'), RESTORE_CRIU_CONF.replace(HOST_MOUNTS.mask.path, join(copy, 'blocked/mask')));
  const c = await create(t, baked, 'masks-missing', join(copy, 'bin/prebake'));
  const log = c.rt.logLines();
  t.true(
    log.some((l) => l.level === 'warning' && l.msg.startsWith(`the host mounts ${join(copy, 'blocked/mask')}`) && /could not be made: .+; a checkpoint baked with them starts cold$/.test(l.msg)),
    JSON.stringify(log),
  );
  t.true(log.some((l) => l.level === 'warning' && /^cold start: restore of .* failed: .*No mapping for/.test(l.msg)), JSON.stringify(log));
  t.false(log.some((l) => /^restored /.test(l.msg)));
  const state = JSON.parse((await run('runc', ['--root', c.rt.root, 'state', c.id])).output) as { status: string };
  t.is(state.status, 'created', 'created cold');
  t.false(existsSync(join(c.rt.state, c.id)), 'no prebake state');
  t.deepEqual(
    mountInfo().filter((m) => m.mountPoint.startsWith(c.rt.state) || m.mountPoint.startsWith(copy)),
    [],
    'nothing mounted is left',
  );
  t.is((await run(join(copy, 'bin/prebake'), ['--root', c.rt.root, 'start', c.id])).code, 0);
  const first = await c.client.waitHttp({ port: 8080, path: '/', timeoutMs: 20_000 });
  t.is((JSON.parse(first.body) as { served: number }).served, 1, 'a cold start serves its first request');
});

test('a host mount that is missing is made by the create that needs it: read-only, private, empty; the restore binds it', async (t) => {
  const copy = runtimeCopy(t, '');
  const mask = join(copy, 'host/mask');
  writeFileSync(join(copy, 'dist/criu.conf'), RESTORE_CRIU_CONF.replace(HOST_MOUNTS.mask.path, mask));
  try {
    const c = await create(t, baked, 'masks-made', join(copy, 'bin/prebake'));
    t.is(await served(c.client), WARMUP + 2, 'restored');
    const made = mountAt(mountInfo(), mask);
    t.is(made?.fsType, 'tmpfs');
    t.true(made?.superOpts.includes('ro') && made.opts.includes('ro') && made.opts.includes('nosuid') && made.opts.includes('nodev') && made.opts.includes('noexec'), JSON.stringify(made));
    t.deepEqual(readdirSync(mask), []);
    const propagation = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').find((l) => l.split(' ')[4] === mask) ?? '';
    t.false(/ (shared|master):/.test(propagation.split(' - ')[0]!), `private: ${propagation}`);
    for (const d of maskedDirs(c.spec, c.pid)) t.is<string | undefined, string | undefined>(mountAt(mountInfo(c.pid), d)?.dev, made?.dev, d);
    t.false(c.rt.logLines().some((l) => /host mounts/.test(l.msg)), 'nothing to warn about');
    // The next create finds it there and mounts nothing more.
    const again = await create(t, baked, 'masks-made', join(copy, 'bin/prebake'));
    t.is(await served(again.client), WARMUP + 2);
    t.is(mountInfo().filter((m) => m.mountPoint === mask).length, 1, 'mounted once');
  } finally {
    while (mountInfo().some((m) => m.mountPoint === mask)) execFileSync('umount', ['-l', mask]);
  }
});

test('a dist/criu.conf not as it must be: the copy in the state names the same host mounts, and the restore binds them', async (t) => {
  const copy = runtimeCopy(t, 'verbosity=1\n');
  const c = await create(t, baked, 'masks-conf', join(copy, 'bin/prebake'));
  t.is(await served(c.client), WARMUP + 2);
  // (Without cgroup v1, no cgroup skeleton is mounted, and its line is left out.)
  const expected = CGROUP_V1 ? RESTORE_CRIU_CONF : RESTORE_CRIU_CONF.replace(/^external mnt\[prebake-cgroup-v1\].*\n/m, '');
  t.is(readFileSync(join(c.rt.state, c.id, 'criu.conf'), 'utf8'), expected);
  const maskDev = mountAt(mountInfo(), HOST_MOUNTS.mask.path)?.dev;
  for (const d of maskedDirs(c.spec, c.pid)) t.is<string | undefined, string | undefined>(mountAt(mountInfo(c.pid), d)?.dev, maskDev, d);
});

test('externalMountLines: masked directories (a tmpfs of their own, mounted once, plainly named) and cgroup v1 /sys/fs/cgroup', (t) => {
  const m = (mountPoint: string, fsType: string, root = '/'): MountInfo => ({ dev: '0:1', root, mountPoint, opts: ['ro'], superOpts: ['ro'], fsType, source: fsType });
  const spec = {
    ociVersion: '1.0.2',
    mounts: [{ destination: '/sys/fs/cgroup', type: 'cgroup', source: 'cgroup' }],
    linux: { maskedPaths: ['/proc/acpi', '/proc/kcore', '/sys/firmware/', '/proc/twice', '/proc/odd name', '/proc/absent'] },
  } as Spec;
  const table = [m('/', 'overlay'), m('/proc/acpi', 'tmpfs'), m('/proc/kcore', 'tmpfs', '/null'), m('/sys/firmware', 'tmpfs'), m('/proc/twice', 'tmpfs'), m('/proc/twice', 'tmpfs'), m('/proc/odd name', 'tmpfs'), m('/sys/fs/cgroup', 'tmpfs'), m('/tmp', 'tmpfs')];
  t.deepEqual(externalMountLines(spec, table), [
    'external mnt[/proc/acpi]:prebake-mask',
    'external mnt[/sys/firmware]:prebake-mask',
    'external mnt[/sys/fs/cgroup]:prebake-cgroup-v1',
  ]);
  // cgroup v2: /sys/fs/cgroup is a cgroup2 mount, nothing to bind.
  t.deepEqual(externalMountLines(spec, [m('/sys/fs/cgroup', 'cgroup2')]), []);
});
