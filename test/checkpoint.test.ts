// Units of the checkpoint checks: the privilege rule, manifest parsing, path resolution.

import test, { type ExecutionContext } from 'ava';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Spec } from '../oci/runtime-spec.ts';
import { checkpointRequest, resolveInRootfs } from '../src/checkpoint/locate.ts';
import { MANIFEST_FORMAT, parseManifest } from '../src/checkpoint/manifest.ts';
import { bakedSpecOf, securityMismatch } from '../src/checkpoint/security.ts';
import { compareVersions } from '../src/lib/host.ts';

const CAPS = ['CAP_CHOWN', 'CAP_KILL', 'CAP_NET_BIND_SERVICE'];
function spec(change: (s: Spec) => void = () => {}): Spec {
  const s: Spec = {
    ociVersion: '1.0.2',
    process: {
      user: { uid: 0, gid: 0 },
      cwd: '/',
      capabilities: { bounding: CAPS, effective: CAPS, permitted: CAPS },
      noNewPrivileges: true,
    },
    root: { path: 'rootfs' },
    linux: { seccomp: { defaultAction: 'SCMP_ACT_ERRNO', syscalls: [] }, maskedPaths: ['/proc/kcore'] },
  };
  change(s);
  return s;
}
/** Takes any checkpoint (no signature needed), into a store of the test's own. */
function anyPolicy(t: ExecutionContext) {
  const store = mkdtempSync(join(tmpdir(), 'prebake-store-'));
  t.teardown(() => rmSync(store, { recursive: true, force: true }));
  return { trustDir: '/nonexistent', any: true, store };
}
const mismatch = (baked: Spec, wanted: Spec) => securityMismatch(bakedSpecOf(baked).security, bakedSpecOf(wanted).security);

test('the same security context restores', (t) => {
  t.is(mismatch(spec(), spec()), null);
});

test('a baked context with fewer capabilities than asked for restores; more does not', (t) => {
  t.is(mismatch(spec((s) => (s.process!.capabilities!.effective = ['CAP_KILL'])), spec()), null);
  t.regex(mismatch(spec(), spec((s) => (s.process!.capabilities = {})))!, /bounding capabilities CAP_CHOWN,CAP_KILL,CAP_NET_BIND_SERVICE/);
  t.regex(mismatch(spec(), spec((s) => (s.process!.capabilities!.permitted = ['CAP_KILL'])))!, /permitted capabilities CAP_CHOWN,CAP_NET_BIND_SERVICE/);
});

test('user, groups, noNewPrivileges, seccomp, LSM labels and readonly rootfs are checked', (t) => {
  t.regex(mismatch(spec(), spec((s) => (s.process!.user = { uid: 1000, gid: 1000 })))!, /user 0:0 was baked/);
  t.regex(mismatch(spec((s) => (s.process!.user.additionalGids = [10])), spec())!, /additional groups/);
  t.is(mismatch(spec(), spec((s) => (s.process!.user.additionalGids = [10]))), null);
  t.regex(mismatch(spec((s) => (s.process!.noNewPrivileges = false)), spec())!, /noNewPrivileges/);
  t.is(mismatch(spec(), spec((s) => (s.process!.noNewPrivileges = false))), null);
  t.regex(mismatch(spec((s) => delete s.linux!.seccomp), spec())!, /baked without one/);
  t.regex(mismatch(spec(), spec((s) => (s.linux!.seccomp = { defaultAction: 'SCMP_ACT_KILL' })))!, /seccomp profile differs/);
  // A container that asks for no filter gets the baked (stricter) one.
  t.is(mismatch(spec(), spec((s) => delete s.linux!.seccomp)), null);
  t.regex(mismatch(spec(), spec((s) => (s.process!.apparmorProfile = 'docker-default')))!, /AppArmor/);
  t.regex(mismatch(spec(), spec((s) => (s.process!.selinuxLabel = 'system_u:system_r:container_t:s0')))!, /SELinux/);
  t.regex(mismatch(spec(), spec((s) => (s.root!.readonly = true)))!, /readonly rootfs/);
  // Masks and readonly paths: the baked ones stay after a restore; asking for fewer is fine.
  t.is(mismatch(spec(), spec((s) => (s.linux!.maskedPaths = []))), null);
  t.regex(mismatch(spec((s) => (s.linux!.maskedPaths = [])), spec())!, /masked paths \/proc\/kcore asked for were not masked/);
  t.regex(mismatch(spec(), spec((s) => (s.linux!.readonlyPaths = ['/proc/sys'])))!, /readonly paths \/proc\/sys asked for/);
  t.is(mismatch(spec((s) => (s.linux!.readonlyPaths = ['/proc/sys'])), spec((s) => (s.linux!.readonlyPaths = ['/proc/sys']))), null);
  t.is(mismatch(spec(), spec((s) => (s.linux!.readonlyPaths = ['/proc/kcore']))), null);
});

test('rlimits: the baked limit may be lower than asked for, not higher', (t) => {
  const lim = (soft: number, hard: number) => (s: Spec) => (s.process!.rlimits = [{ type: 'RLIMIT_NOFILE', soft, hard }]);
  t.is(mismatch(spec(lim(1024, 1024)), spec(lim(4096, 4096))), null);
  t.regex(mismatch(spec(lim(4096, 4096)), spec(lim(1024, 1024)))!, /rlimit RLIMIT_NOFILE 1024\/1024 asked for, 4096\/4096 was baked/);
});

test('seccomp profiles compare by content, not key order', (t) => {
  const a = spec((s) => (s.linux!.seccomp = { defaultAction: 'SCMP_ACT_ERRNO', architectures: ['SCMP_ARCH_X86_64'] }));
  const b = spec((s) => (s.linux!.seccomp = { architectures: ['SCMP_ARCH_X86_64'], defaultAction: 'SCMP_ACT_ERRNO' }));
  t.is(mismatch(a, b), null);
});

const goodManifest = () => ({
  format: MANIFEST_FORMAT,
  created: '2026-01-01T00:00:00Z',
  versions: { prebake: '0', runc: '1.1.5', criu: '4.2.1', kernel: '6.18' },
  arch: 'x86_64',
  cpuFlags: ['fpu'],
  spec: bakedSpecOf(spec()),
  files: { 'pages-1.img': { size: 1, sha256: 'a'.repeat(64) } },
});

test('manifest parsing accepts a good manifest and names what is wrong in a bad one', (t) => {
  t.is(parseManifest(JSON.stringify(goodManifest())).arch, 'x86_64');
  t.throws(() => parseManifest('{'), { message: /not valid JSON/ });
  t.throws(() => parseManifest(JSON.stringify({ ...goodManifest(), format: 99 })), { message: /format 99 is not supported/ });
  t.throws(() => parseManifest(JSON.stringify({ ...goodManifest(), versions: {} })), { message: /versions\.criu/ });
  for (const name of ['../etc/passwd', '/etc/passwd', 'a/../../b', 'a//b'])
    t.throws(() => parseManifest(JSON.stringify({ ...goodManifest(), files: { [name]: { size: 1, sha256: 'a'.repeat(64) } } })), { message: /outside the checkpoint directory/ }, name);
  t.throws(() => parseManifest(JSON.stringify({ ...goodManifest(), files: { x: { size: 1, sha256: 'nothex' } } })), { message: /sha256/ });
});

test('the annotation wins over the environment for the path; off or empty in either means cold', (t) => {
  const s = spec((x) => (x.process!.env = ['PREBAKE_CHECKPOINT=/.prebake']));
  t.deepEqual(checkpointRequest(s), { kind: 'path', path: '/.prebake', source: 'env PREBAKE_CHECKPOINT' });
  s.annotations = { 'io.prebake.checkpoint': '/other' };
  t.deepEqual(checkpointRequest(s), { kind: 'path', path: '/other', source: 'annotation io.prebake.checkpoint' });
  s.annotations = { 'io.prebake.checkpoint': 'off' };
  t.is(checkpointRequest(s).kind, 'off');
  t.is(checkpointRequest(spec()).kind, 'none');
  // What a user sets for one run turns off what the image's annotation asks (podman copies it).
  const run = spec((x) => (x.process!.env = ['PREBAKE_CHECKPOINT=/.prebake', 'PREBAKE_CHECKPOINT=off']));
  run.annotations = { 'io.prebake.checkpoint': '/.prebake' };
  t.deepEqual(checkpointRequest(run), { kind: 'off', source: 'env PREBAKE_CHECKPOINT' });
  run.process!.env = ['PREBAKE_CHECKPOINT='];
  t.is(checkpointRequest(run).kind, 'off');
});

test('checkpoint paths resolve inside the rootfs only: no .., no symlink anywhere on the way', (t) => {
  const root = mkdtempSync(join(tmpdir(), 'prebake-rootfs-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  mkdirSync(join(root, '.prebake/x'), { recursive: true });
  symlinkSync('/', join(root, 'link'));
  symlinkSync('/etc', join(root, '.prebake/out'));
  t.is(resolveInRootfs(root, '/.prebake'), join(root, '.prebake'));
  t.is(resolveInRootfs(root, '.prebake/x/'), join(root, '.prebake/x'));
  t.throws(() => resolveInRootfs(root, '../../etc'), { message: /leaves the rootfs/ });
  t.throws(() => resolveInRootfs(root, '/.prebake/../../etc'), { message: /leaves the rootfs/ });
  t.throws(() => resolveInRootfs(root, '/link/etc'), { message: /symlink, refused/ });
  t.throws(() => resolveInRootfs(root, '/.prebake/out'), { message: /symlink, refused/ });
  t.throws(() => resolveInRootfs(root, '/'), { message: /names the rootfs itself/ });
  t.throws(() => resolveInRootfs(root, '/missing'), { message: /does not exist/ });
});

test('versions compare numerically', (t) => {
  t.true(compareVersions('4.2.1', '4.2') > 0);
  t.true(compareVersions('4.10', '4.2') > 0);
  t.true(compareVersions('3.17', '4.2') < 0);
  t.is(compareVersions('4.2', '4.2.0'), 0);
});

test('of several named checkpoints, the first one whose baked spec fits the container is chosen', async (t) => {
  const { writeManifest } = await import('../src/checkpoint/write.ts');
  const { chooseCheckpoint } = await import('../src/checkpoint/verify.ts');
  const { hostFacts } = await import('../src/lib/host.ts');
  const { writeFileSync } = await import('node:fs');
  const root = mkdtempSync(join(tmpdir(), 'prebake-multi-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const withMount = spec((s) => (s.mounts = [{ destination: '/extra', type: 'tmpfs', source: 'tmpfs' }]));
  for (const [name, s] of [['a-docker', withMount], ['b-runc', spec()]] as const) {
    mkdirSync(join(root, name, 'checkpoint'), { recursive: true });
    writeFileSync(join(root, name, 'checkpoint', 'inventory.img'), name);
    writeManifest(join(root, name), { spec: s, runc: 'runc', prebakeVersion: 'test' });
  }
  const facts = hostFacts('criu', root);
  const policy = anyPolicy(t);
  t.is(chooseCheckpoint(root, spec(), facts, policy).dir, join(root, 'b-runc'));
  t.is(chooseCheckpoint(root, withMount, facts, policy).dir, join(root, 'a-docker'));
  const error = t.throws(() => chooseCheckpoint(root, spec((s) => (s.mounts = [{ destination: '/other' }])), facts, policy));
  t.regex(error!.message, /a-docker: mount destinations differ .*\+\/other.*-\/extra/);
  t.regex(error!.message, /b-runc: mount destinations differ .*\+\/other/);
});

test('a container running another command, directory or environment than the baked one is not restored', async (t) => {
  const { bakedProcessOf, processMismatch } = await import('../src/checkpoint/security.ts');
  const proc = (change: (s: Spec) => void = () => {}) =>
    bakedProcessOf(
      spec((s) => {
        s.process!.args = ['python3', '/app/function.py'];
        s.process!.env = ['PATH=/bin', 'PORT=8080', 'HOSTNAME=abc', 'PREBAKE_CHECKPOINT=/.prebake'];
        change(s);
      }),
    );
  t.is(processMismatch(proc(), proc()), null);
  // Engines set HOSTNAME per container; PREBAKE_* are prebake's own.
  t.is(processMismatch(proc(), proc((s) => (s.process!.env = ['PORT=8080', 'PATH=/bin', 'HOSTNAME=other']))), null);
  t.regex(processMismatch(proc(), proc((s) => (s.process!.args = ['python3', '-c', 'print(1)'])))!, /the container runs \["python3","-c","print\(1\)"\]/);
  t.regex(processMismatch(proc(), proc((s) => (s.process!.cwd = '/tmp')))!, /working directory is \/tmp/);
  t.regex(processMismatch(proc(), proc((s) => s.process!.env!.push('DEBUG=1')))!, /environment differs .*\+DEBUG/);
  t.regex(processMismatch(proc(), proc((s) => (s.process!.env = ['PATH=/bin'])))!, /environment differs .*-PORT/);
  // kubelet's service variables count only outside a pod; long entries are never taken for them.
  const kube = proc((s) => s.process!.env!.push('KUBERNETES_SERVICE_HOST=10.96.0.1', 'REDIS_PORT=tcp://10.96.7.9:6379', 'REDIS_PORT_6379_TCP_ADDR=10.96.7.9'));
  t.is(processMismatch(proc(), kube, true), null, 'a pod: ignored');
  t.regex(processMismatch(proc(), kube)!, /environment differs .*\+KUBERNETES_SERVICE_HOST/, 'docker -e: counted');
  t.regex(processMismatch(proc(), proc((s) => s.process!.env!.push('APP_PORT=8080')), true)!, /\+APP_PORT/, 'a number is not a service link');
  const long = `A${'_SERVICE_PORT'.repeat(20_000)}=1`;
  const t0 = performance.now();
  t.regex(processMismatch(proc(), proc((s) => s.process!.env!.push(long)), true)!, /environment differs/);
  t.true(performance.now() - t0 < 50, `a 260 kB variable is compared in ${(performance.now() - t0).toFixed(1)} ms`);
});

test('a checkpoint is restored only into the kind of network namespace it was baked in: its own, one joined by path, or the host\'s', async (t) => {
  const { writeManifest } = await import('../src/checkpoint/write.ts');
  const { chooseCheckpoint } = await import('../src/checkpoint/verify.ts');
  const { hostFacts } = await import('../src/lib/host.ts');
  const { writeFileSync } = await import('node:fs');
  const withNet = (path?: string) => spec((s) => (s.linux!.namespaces = [{ type: 'pid' }, { type: 'network', ...(path ? { path } : {}) }]));
  const [own, joined, host] = [withNet(), withNet('/var/run/netns/x'), spec()];
  t.deepEqual([own, joined, host].map((s) => bakedSpecOf(s).network), ['new', 'path', 'host']);
  const root = mkdtempSync(join(tmpdir(), 'prebake-net-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const facts = hostFacts('criu', root);
  const policy = anyPolicy(t);
  const expected: [string, Spec, Spec, RegExp | null][] = [
    ['own-own', own, own, null],
    ['own-joined', own, joined, /baked in a network namespace of its own, the container asks for a network namespace joined by path/],
    ['own-host', own, host, /the container asks for the host's network/],
    ['joined-joined', joined, joined, null],
    ['joined-own', joined, own, /baked in a network namespace joined by path, the container asks for a network namespace of its own/],
    ['joined-host', joined, host, /joined by path, the container asks for the host's network/],
    ['host-own', host, own, /baked in the host's network/],
    ['host-host', host, host, null],
  ];
  for (const [name, baked, wanted, why] of expected) {
    const dir = join(root, name);
    mkdirSync(join(dir, 'checkpoint'), { recursive: true });
    writeFileSync(join(dir, 'checkpoint', 'inventory.img'), name);
    writeManifest(dir, { spec: baked, runc: 'runc', prebakeVersion: 'test' });
    if (why) t.throws(() => chooseCheckpoint(dir, wanted, facts, policy), { message: why }, name);
    else t.is(chooseCheckpoint(dir, wanted, facts, policy).dir, dir, name);
  }
  // A manifest from before the mode was recorded is not held to it.
  const { network: _network, ...older } = goodManifest().spec;
  t.is(parseManifest(JSON.stringify({ ...goodManifest(), spec: older })).spec.network, undefined);
  t.throws(() => parseManifest(JSON.stringify({ ...goodManifest(), spec: { ...goodManifest().spec, network: 'bridge' } })), { message: /spec\.network "bridge"/ });
});

test('a checkpoint carrying UTS or IPC namespace images is not restored where the container joins those namespaces by path (CRIU would write them into the pod\'s), and one without them not where new ones are asked for', async (t) => {
  const { namespaceImagesMismatch } = await import('../src/checkpoint/verify.ts');
  const withNs = (how: 'new' | 'path' | 'host') =>
    spec((s) => {
      s.linux!.namespaces = [{ type: 'pid' }, ...(['uts', 'ipc'] as const).flatMap((type) => (how === 'host' ? [] : [{ type, ...(how === 'path' ? { path: `/proc/1/ns/${type}` } : {}) }]))];
    });
  const own = ['core-1.img', 'utsns-12.img', 'ipcns-var-11.img'];
  const none = ['core-1.img'];
  t.is(namespaceImagesMismatch(own, withNs('new')), null);
  t.is(namespaceImagesMismatch(none, withNs('path')), null, 'a cri bake joins the pod\'s namespaces');
  t.is(namespaceImagesMismatch(none, withNs('host')), null);
  t.regex(namespaceImagesMismatch(own, withNs('path'))!, /carries UTS namespace of its own, the container asks for one joined by path/);
  t.regex(namespaceImagesMismatch(['core-1.img', 'utsns-12.img'], withNs('path'))!, /UTS/);
  t.regex(namespaceImagesMismatch(['core-1.img', 'ipcns-var-11.img'], withNs('path'))!, /carries IPC namespace of its own, the container asks for one joined by path/);
  t.regex(namespaceImagesMismatch(none, withNs('new'))!, /carries no UTS namespace of its own, the container asks for a new one/);
  t.regex(namespaceImagesMismatch(own, withNs('host'))!, /carries UTS namespace of its own, the container asks for the host's/);
});
