// The .deb that `npm run package` makes (scripts/package.sh), installed as users install runc:
//
// 1. Into a fresh Debian 12 root (debootstrap --variant=minbase bookworm under /var/tmp, used by
//    chroot): apt resolves the package's Depends from bookworm itself (runc, iproute2,
//    util-linux) except `nodejs (>= 20)`: bookworm has Node 18 and no other source is used, so
//    the test first installs a stand-in `nodejs` package holding this machine's own node binary
//    (the one that built dist/prebake.blob) as /usr/bin/node, versioned as that Node. Then:
//    the installed commands work from /usr/bin (--version, --help, doctor, prebake-build),
//    every file is root's and not group/world writable (`prebake install` accepts it), nothing
//    was registered or created by installing (no maintainer scripts), no CRIU was pulled in,
//    and `dpkg -r` takes away every file it installed.
// 2. On this host (set up by scripts/setup.sh: runc, CRIU >= 4.2 in /usr/local/sbin, the trust
//    store): `dpkg -i` of the same .deb, a baked noop function restored twice through
//    /usr/bin/prebake (the first create verifies and imports the checkpoint, the second takes
//    the early restore), then `dpkg --purge` leaves none of its files. Skipped, with the reason,
//    when a prebake package is installed here already (the test would replace and purge it).
//
// The package is built with `npm run package` in a private copy of the repo (src, bin, scripts,
// oci, package.json; node_modules linked): rebuilding the repo's own dist/ would race with the
// test files ava runs beside this one, which run bin/prebake from it.

import test from 'ava';
import { spawnSync } from 'node:child_process';
import { chmodSync, cpSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { NetnsClient } from '../src/lib/netns.ts';
import { storeEntry } from '../src/checkpoint/store.ts';
import { loadRuntimeConfig } from '../src/runtime/config.ts';
import { bakeNoop, type BakedFunction, PORT, WARMUP } from '../lab/baked.ts';
import { overlayBundle, runtimeDirs, uniqueName } from '../lab/bundle.ts';
import { run as runPipe } from './helpers/bundle.ts';
import { inRoot as chrootIn, must, removeRoot, run } from './helpers/chroot.ts';

const REPO = resolve(import.meta.dirname, '..');
const MIRROR = 'http://deb.debian.org/debian';
const VERSION = (JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string }).version;
const has = (cmd: string) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
/** The dpkg status of a package on this host ("install ok installed", …), '' if dpkg knows none. */
const hostStatus = (pkg: string) => spawnSync('dpkg-query', ['-W', '-f', '${Status}', pkg], { encoding: 'utf8' }).stdout.trim();

const whySkip =
  process.getuid?.() !== 0 ? 'not root: dpkg -i, debootstrap and chroot need root'
  : !has('dpkg-deb') ? 'dpkg-deb is not installed'
  : null;
// Decided before anything runs: only a prebake this test installed is ever removed.
const prebakeBefore = whySkip ? '' : hostStatus('prebake');
const whySkipHost = prebakeBefore !== '' && !/ not-installed$/.test(prebakeBefore)
  ? `a prebake package is on this host already (${prebakeBefore}); this test would replace and purge it`
  : null;

const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

// ---- the package, built once ----

let work: string | null = null; // private copy of the repo and the package's output dir
let deb = '';
let buildMs = 0;

test.before('npm run package (in a copy of the repo)', async () => {
  if (whySkip) return;
  work = mkdtempSync('/var/tmp/prebake-package-test-');
  const copy = join(work, 'repo');
  mkdirSync(copy);
  for (const d of ['src', 'bin', 'scripts', 'oci']) cpSync(join(REPO, d), join(copy, d), { recursive: true });
  cpSync(join(REPO, 'package.json'), join(copy, 'package.json'));
  symlinkSync(join(REPO, 'node_modules'), join(copy, 'node_modules'));
  const out = join(work, 'deb');
  const r = await must(['npm', 'run', '-s', 'package', '--', out], { cwd: copy });
  buildMs = r.ms;
  deb = r.stdout.trim().split('\n').at(-1)!;
  if (!existsSync(deb)) throw new Error(`npm run package printed ${r.stdout.trim()}, no such file`);
});

// ---- a chroot of its own (the helpers are this file's; setup.test.ts has its own) ----

let root: string | null = null; // the debootstrapped root, set once created

const inRoot = (argv: string[]) => chrootIn(root!, argv);

/** The host's node as a `nodejs` package (bookworm's own is 18): /usr/bin/node, versioned as it. */
async function nodeStandIn(dir: string): Promise<string> {
  const stage = join(dir, 'nodejs-stand-in');
  mkdirSync(join(stage, 'DEBIAN'), { recursive: true });
  mkdirSync(join(stage, 'usr/bin'), { recursive: true });
  cpSync(realpathSync(process.execPath), join(stage, 'usr/bin/node'));
  chmodSync(join(stage, 'usr/bin/node'), 0o755);
  const arch = (await must(['dpkg', '--print-architecture'])).stdout.trim();
  writeFileSync(join(stage, 'DEBIAN/control'), [
    'Package: nodejs', `Version: ${process.versions.node}`, `Architecture: ${arch}`, 'Maintainer: prebake tests <prebake@localhost>',
    'Depends: libc6, libstdc++6, libgcc-s1',
    `Description: stand-in for Node.js ${process.versions.node}: the test machine's node binary`, '',
  ].join('\n'));
  const out = join(dir, 'nodejs-stand-in.deb');
  await must(['dpkg-deb', '--root-owner-group', '-Znone', '--build', stage, out]); // xz would take a minute on node
  return out;
}

/** The files of package `pkg` that are not directories, from `dpkg -L` output. */
const filesOf = (list: string[], rootDir: string) => list.filter((p) => p !== '/.' && !lstatSync(join(rootDir, p)).isDirectory());

/** Every path dpkg lists for the package: root's, and (symlinks aside) not group/world writable. */
function unsafePaths(list: string[], rootDir: string): string[] {
  const bad: string[] = [];
  for (const p of list) {
    if (p === '/.') continue;
    const st = lstatSync(join(rootDir, p));
    if (st.uid !== 0 || st.gid !== 0) bad.push(`${p}: owned by ${st.uid}:${st.gid}`);
    if (!st.isSymbolicLink() && st.mode & 0o022) bad.push(`${p}: mode ${(st.mode & 0o777).toString(8)}`);
  }
  return bad;
}

let hostInstalled = false; // set while this test's prebake may be installed on the host
let baked: BakedFunction | undefined;
const cleanups: (() => Promise<void>)[] = []; // the replicas', run before the package goes

test.after.always('clean up: the replicas, the bake, the installed package, the chroot, the build', async (t) => {
  for (const c of cleanups.reverse()) await c().catch((e: unknown) => t.log(`cleanup: ${(e as Error).message}`));
  baked?.cleanup();
  if (hostInstalled) {
    const r = await run(['dpkg', '--purge', 'prebake']);
    t.is(r.code, 0, `dpkg --purge prebake: ${r.stdout}${r.stderr}`);
    t.false(existsSync('/usr/lib/prebake'), '/usr/lib/prebake is gone');
  }
  if (root) {
    const dir = root;
    if (await removeRoot(t, dir)) t.false(existsSync(dir), `${dir} is removed`);
  }
  if (work) rmSync(work, { recursive: true, force: true });
});

if (whySkip) {
  console.error(`package.test.ts: skipped: ${whySkip}`);
  test.skip(`the .deb (skipped: ${whySkip})`, () => {});
} else {
  test('the .deb: its contents and control fields, no maintainer scripts', async (t) => {
    const arch = (await must(['dpkg', '--print-architecture'])).stdout.trim();
    t.is(deb.split('/').at(-1), `prebake_${VERSION.replace(/-/g, '~')}_${arch}.deb`);
    const field = async (f: string) => (await must(['dpkg-deb', '-f', deb, f])).stdout.trim();
    t.is(await field('Package'), 'prebake');
    t.is(await field('Version'), VERSION.replace(/-/g, '~'));
    t.is(await field('Architecture'), arch);
    t.is(await field('Depends'), 'nodejs (>= 20), runc, iproute2, util-linux');
    t.notRegex(await field('Depends'), /criu/, 'CRIU is no hard dependency (setup.sh installs it outside dpkg)');
    t.regex(await field('Description'), /CRIU >= 4\.2[\s\S]*prebake doctor/);
    t.truthy(await field('Maintainer'));
    // The control archive holds the control file alone: no preinst, postinst, prerm, postrm.
    const ctrl = await must(['sh', '-c', 'dpkg-deb --ctrl-tarfile "$1" | tar -t', 'sh', deb]);
    t.deepEqual(ctrl.stdout.trim().split('\n').filter((l) => l !== './').sort(), ['./control']);
    const contents = (await must(['dpkg-deb', '-c', deb])).stdout;
    const paths = contents.trim().split('\n').map((l) => l.split(/\s+/).slice(5).join(' '));
    for (const p of ['./usr/lib/prebake/bin/prebake', './usr/lib/prebake/bin/prebake-create.sh', './usr/lib/prebake/bin/prebake-build', './usr/lib/prebake/dist/prebake.cjs',
      './usr/lib/prebake/dist/prebake.blob', './usr/lib/prebake/dist/prebake-build.cjs', './usr/lib/prebake/dist/prebake-admin.cjs',
      './usr/lib/prebake/dist/criu.conf', './usr/bin/prebake -> ../lib/prebake/bin/prebake', './usr/bin/prebake-build -> ../lib/prebake/bin/prebake-build'])
      t.true(paths.includes(p), `${p} in:\n${contents}`);
    t.true(paths.every((p) => p === './' || p.startsWith('./usr/')), 'only files under /usr');
    t.true(contents.trim().split('\n').every((l) => l.split(/\s+/)[1] === 'root/root'), `every entry is root/root:\n${contents}`);
    t.log(`npm run package took ${secs(buildMs)}; ${deb}:\n${contents.trim()}`);
  });

  test('installed into a fresh Debian 12 root: the commands work from /usr/bin, dpkg -r takes every file away', async (t) => {
    t.timeout(20 * 60_000, 'debootstrap and apt took over 20 minutes');
    if (!has('debootstrap')) return t.fail('debootstrap is not installed (scripts/setup.sh installs it)');
    const t0 = performance.now();
    const step = (msg: string) => t.log(`[${secs(performance.now() - t0).padStart(7)}] ${msg}`);

    root = mkdtempSync('/var/tmp/prebake-package-root-');
    chmodSync(root, 0o755); // mkdtemp's 0700 would keep apt's _apt user out
    const boot = await must(['debootstrap', '--variant=minbase', 'bookworm', root, MIRROR]);
    step(`debootstrap --variant=minbase bookworm: ${secs(boot.ms)}`);
    await must(['mount', '-t', 'proc', 'proc', join(root, 'proc')]);
    await must(['mount', '--bind', '/dev', join(root, 'dev')]);
    writeFileSync(join(root, 'usr/sbin/policy-rc.d'), '#!/bin/sh\nexit 101\n', { mode: 0o755 }); // no service starts

    // Node 20: this machine's node, as a package (see the top of this file).
    cpSync(await nodeStandIn(work!), join(root, 'tmp/nodejs.deb'));
    cpSync(deb, join(root, 'tmp/prebake.deb'));
    await must(inRoot(['dpkg', '-i', '/tmp/nodejs.deb']));
    const update = await must(inRoot(['apt-get', 'update', '-qq']));
    step(`node stand-in installed; apt-get update: ${secs(update.ms)}`);
    // apt, as users install a local .deb: it takes runc and iproute2 from bookworm. (Without
    // recommends: bookworm's runc recommends its criu 3.17, which prebake cannot use.)
    const apt = await must(inRoot(['apt-get', 'install', '-y', '-qq', '--no-install-recommends', '/tmp/prebake.deb']));
    step(`apt-get install ./prebake.deb: ${secs(apt.ms)}`);
    const status = async (pkg: string) => (await run(inRoot(['dpkg-query', '-W', '-f', '${Status} ${Version}', pkg]))).stdout.trim();
    t.is(await status('prebake'), `install ok installed ${VERSION.replace(/-/g, '~')}`);
    t.regex(await status('runc'), /^install ok installed /);
    t.regex(await status('iproute2'), /^install ok installed /);
    t.notRegex(await status('criu'), /^install ok installed/, 'installing prebake pulls in no CRIU');
    t.false(existsSync(join(root, 'etc/prebake')), 'installing creates no key, trust store or config');

    const list = (await must(inRoot(['dpkg', '-L', 'prebake']))).stdout.trim().split('\n');
    t.true(list.includes('/usr/bin/prebake') && list.includes('/usr/bin/prebake-build'), list.join('\n'));
    t.is(readlinkSync(join(root, 'usr/bin/prebake')), '../lib/prebake/bin/prebake');
    t.is(readlinkSync(join(root, 'usr/bin/prebake-build')), '../lib/prebake/bin/prebake-build');
    t.deepEqual(unsafePaths(list, root), [], 'every installed path is root:root and not group/world writable');

    // --version: runc's lines, then prebake's.
    const runcVersion = (await must(inRoot(['runc', '--version']))).stdout;
    const version = await must(inRoot(['prebake', '--version']));
    t.is(version.stdout, `${runcVersion}prebake version ${VERSION}\n`);
    t.is((await must(inRoot(['prebake-build', '--version']))).stdout.trim(), `prebake-build version ${VERSION}`);
    const help = await must(inRoot(['prebake', '--help']));
    for (const c of ['doctor', 'install', 'key', 'trust', 'store']) t.regex(help.stdout, new RegExp(`^ +${c} +\\S`, 'm'), help.stdout);
    t.regex((await run(inRoot(['prebake-build', '--help']))).stdout, /usage: prebake-build/);
    // doctor runs from the installed dist/ and reports what the root lacks: no CRIU at all.
    const doctor = await run(inRoot(['prebake', 'doctor']));
    t.true(doctor.code === 0 || doctor.code === 1, `prebake doctor exited ${doctor.code}: ${doctor.stderr}`);
    t.regex(doctor.stdout, /^FAIL +criu +/m, doctor.stdout);
    t.regex(doctor.stdout, /^ok +runc +runc 1\./m, doctor.stdout);
    step(`prebake doctor in the root (exit ${doctor.code}):\n${doctor.stdout.trimEnd()}`);
    // prebake install's safety check accepts the installed files (root's, not writable by others)
    // and registers the real path; it creates and trusts the root's key, as on a host.
    const install = await run(inRoot(['prebake', 'install', 'containerd', '--config', '/tmp/containerd.toml']));
    t.is(install.code, 0, install.stdout + install.stderr);
    t.regex(readFileSync(join(root, 'tmp/containerd.toml'), 'utf8'), /BinaryName = "\/usr\/lib\/prebake\/bin\/prebake"/);
    t.regex((await must(inRoot(['prebake', 'trust', 'list']))).stdout, /^[0-9a-f]{64}$/m);

    // dpkg -r: every file it installed goes; what prebake made at run time (its key) stays.
    const files = filesOf(list, root);
    const remove = await must(inRoot(['dpkg', '-r', 'prebake']));
    step(`dpkg -r prebake: ${secs(remove.ms)}`);
    t.deepEqual(files.filter((f) => lstatSync(join(root!, f), { throwIfNoEntry: false })), [], 'no file of the package is left');
    t.false(existsSync(join(root, 'usr/lib/prebake')), '/usr/lib/prebake is gone');
    t.notRegex(await status('prebake'), /^install ok installed|config-files/, 'dpkg -r leaves no trace of prebake (it has no conffiles)');
    t.true(existsSync(join(root, 'etc/prebake/keys/bake.key')), 'the key prebake install made is not the package\'s');
    t.log(`durations: npm run package ${secs(buildMs)}, debootstrap ${secs(boot.ms)}, apt-get install ${secs(apt.ms)}, whole test ${secs(performance.now() - t0)}`);
  });

  if (whySkipHost) {
    console.error(`package.test.ts: host install skipped: ${whySkipHost}`);
    test.skip(`installed on this host (skipped: ${whySkipHost})`, () => {});
  } else {
    test('installed on this host: a baked function restores through /usr/bin/prebake; dpkg --purge leaves none of its files', async (t) => {
      t.timeout(10 * 60_000);
      const t0 = performance.now();
      baked = await bakeNoop();
      const bakeMs = performance.now() - t0;

      // nodejs (>= 20) is the one Depends a host may have outside dpkg (node from a tarball).
      const node = spawnSync('dpkg-query', ['-W', '-f', '${Status} ${Version}', 'nodejs'], { encoding: 'utf8' }).stdout;
      const nodeOk = /^install ok installed /.test(node) && spawnSync('dpkg', ['--compare-versions', node.split(' ').at(-1)!, 'ge', '20']).status === 0;
      if (!nodeOk) t.log(`nodejs (>= 20) is not a dpkg package here (${node || 'none'}): dpkg -i --force-depends`);
      hostInstalled = true;
      const install = await must(['dpkg', '-i', ...(nodeOk ? [] : ['--force-depends']), deb]);
      const list = (await must(['dpkg', '-L', 'prebake'])).stdout.trim().split('\n');
      t.deepEqual(unsafePaths(list, '/'), []);
      t.is(realpathSync('/usr/bin/prebake'), '/usr/lib/prebake/bin/prebake');
      const PREBAKE = '/usr/bin/prebake';

      const replica = async (name: string) => {
        const b = overlayBundle(baked!.layers);
        const rt = runtimeDirs();
        const id = uniqueName(name);
        cleanups.push(async () => {
          await runPipe(PREBAKE, ['--root', rt.root, 'delete', '--force', id]);
          b.cleanup();
          rt.cleanup();
        });
        b.writeSpec(baked!.spec(b.netnsPath));
        const client = await NetnsClient.start(b.netns);
        cleanups.push(async () => client.close());
        const create = await runPipe(PREBAKE, ['--root', rt.root, '--log', rt.log, '--log-format', 'json', 'create', '--bundle', b.dir, id]);
        t.is(create.code, 0, create.output);
        const start = await runPipe(PREBAKE, ['--root', rt.root, 'start', id]);
        t.is(start.code, 0, start.output);
        const served = (JSON.parse((await client.request({ port: PORT, path: '/' })).body) as { served: number }).served;
        t.is(served, WARMUP + 2, 'the replica goes on counting from the checkpoint: restored, not started cold');
        t.true(rt.logLines().some((l) => l.level === 'info' && /^restored /.test(l.msg)), JSON.stringify(rt.logLines()));
        // CRIU read the installed package's config (bin/prebake found dist/ through its symlink).
        const criuLog = readFileSync(join(rt.state, id, 'criu', 'restore.log'), 'utf8');
        const conf = /^\(\S+\) Parsing config file (\S+\/criu\.conf)$/m.exec(criuLog)?.[1];
        t.is(conf && resolve(conf), '/usr/lib/prebake/dist/criu.conf');
        await runPipe(PREBAKE, ['--root', rt.root, 'kill', id, 'KILL']);
        for (let i = 0; i < 100 && JSON.parse((await runPipe(PREBAKE, ['--root', rt.root, 'state', id])).output).status !== 'stopped'; i++)
          await new Promise((r) => setTimeout(r, 20));
        const del = await runPipe(PREBAKE, ['--root', rt.root, 'delete', id]);
        t.is(del.code, 0, del.output);
        t.false(existsSync(join(rt.state, id)), "prebake's state of the container is removed");
      };
      // The first create verifies the checkpoint and imports it into the verified store; the
      // second, of a checkpoint already there, restores beside the Node program's start-up.
      await replica('pkg-first');
      t.true(existsSync(join(storeEntry(loadRuntimeConfig().store, readFileSync(join(baked.layers[0]!, '.prebake/manifest.json'))), 'ok')),
        'the installed runtime imported the checkpoint into the verified store');
      await replica('pkg-early');
      const restoreMs = performance.now() - t0 - bakeMs;

      // dpkg --purge: every file of the package goes, and /usr/lib/prebake with them.
      const files = filesOf(list, '/');
      const purge = await must(['dpkg', '--purge', 'prebake']);
      hostInstalled = false;
      t.deepEqual(files.filter((f) => lstatSync(f, { throwIfNoEntry: false })), [], 'no file of the package is left');
      t.false(existsSync('/usr/lib/prebake'));
      t.regex(hostStatus('prebake'), /^$| not-installed$/, 'dpkg has no prebake installed any more');
      t.log(`durations: bake ${secs(bakeMs)}, dpkg -i ${secs(install.ms)}, two restores ${secs(restoreMs)}, dpkg --purge ${secs(purge.ms)}`);
    });
  }
}

