// scripts/setup.sh on a fresh Debian 12 root: it installs what prebake needs (CRIU >= 4.2 built
// from its upstream tarball against bookworm's libraries, the CRI api.proto unpacked into
// /var/cache/prebake) without moving any package to another Debian release, and a second run is
// quick. Debootstraps bookworm under /var/tmp and runs `setup.sh --system` in it by chroot, with a
// policy-rc.d that lets no package start a service. Slow: minutes, most of it apt and CRIU's build.

import test from 'ava';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { inRoot as chrootIn, must, processesIn, removeRoot, run } from './helpers/chroot.ts';

const REPO = resolve(import.meta.dirname, '..');
const MIRROR = 'http://deb.debian.org/debian';
const SECURITY = 'http://deb.debian.org/debian-security';
// Where the repo's scripts/ appears in the root (read-only): setup.sh finds criu-kdat.sh beside it.
const SCRIPTS_IN_ROOT = '/opt/prebake/scripts';

const whySkip =
  process.getuid?.() !== 0 ? 'not root: debootstrap, chroot and setup.sh need root'
  : spawnSync('sh', ['-c', 'command -v debootstrap'], { encoding: 'utf8' }).status !== 0 ? 'debootstrap is not installed'
  : null;

let root: string | null = null; // the debootstrapped root, set once created

const inRoot = (argv: string[]) => chrootIn(root!, argv);

function packages(list: string): Map<string, string> {
  return new Map(list.split('\n').filter(Boolean).map((l) => l.split(' ') as [string, string]));
}

/** apt-cache policy PKG in the root: installed and candidate versions, and the sources of the installed one. */
async function policy(pkg: string) {
  const out = (await must(inRoot(['apt-cache', 'policy', pkg]))).stdout;
  const installed = /^\s*Installed:\s*(\S+)/m.exec(out)?.[1];
  const candidate = /^\s*Candidate:\s*(\S+)/m.exec(out)?.[1];
  // The lines under the `***` (installed) entry of the version table, up to the next version.
  const lines = out.split('\n');
  const at = lines.findIndex((l) => l.startsWith(' *** '));
  const sources: string[] = [];
  for (let i = at + 1; at >= 0 && i < lines.length && /^ {8}/.test(lines[i]!); i++) sources.push(lines[i]!.trim());
  return { installed, candidate, sources, out };
}

const criuVersion = (out: string) => /Version:\s*(\d+)\.(\d+)/.exec(out)?.slice(1).map(Number) ?? [];

test.after.always('unmount everything under the root and remove it', async (t) => {
  if (!root) return;
  const dir = root;
  // Anything still running in the root (nothing should: policy-rc.d forbids services) holds its mounts.
  if (!(await removeRoot(t, dir))) return;
  t.false(existsSync(dir), `${dir} is removed`);
});

if (whySkip) {
  console.error(`setup.test.ts: skipped: ${whySkip}`);
  test.skip(`setup.sh on a fresh Debian 12 root (skipped: ${whySkip})`, () => {});
} else {
  test('setup.sh --system on a fresh Debian 12 root: CRIU >= 4.2 and the CRI API, no package moved to another release; a second run is quick', async (t) => {
    t.timeout(60 * 60_000, 'debootstrap and setup.sh took over an hour');
    const t0 = performance.now();
    const step = (msg: string) => {
      const line = `[${((performance.now() - t0) / 1000).toFixed(0).padStart(4)} s] ${msg}`;
      t.log(line);
      process.stderr.write(`setup.test.ts ${line}\n`);
    };

    // A fresh bookworm root, with its kernel filesystems and a policy-rc.d that starts nothing.
    root = mkdtempSync('/var/tmp/prebake-setup-test-');
    chmodSync(root, 0o755); // mkdtemp's 0700 would keep apt's _apt user out of the root's /
    step(`debootstrap --variant=minbase bookworm ${root} ${MIRROR}`);
    const boot = await must(['debootstrap', '--variant=minbase', 'bookworm', root, MIRROR]);
    step(`debootstrap took ${(boot.ms / 1000).toFixed(1)} s`);

    const mount = (...args: string[]) => must(['mount', ...args]);
    // The root a mount point of its own, as / is on a host: `unshare -m` in criu-kdat.sh makes
    // the mounts of its new namespace private from /, which it cannot do on a plain directory.
    await mount('--bind', root, root);
    await mount('--make-private', root);
    await mount('-t', 'proc', 'proc', join(root, 'proc'));
    await mount('-t', 'sysfs', 'sysfs', join(root, 'sys'));
    await mount('--bind', '/dev', join(root, 'dev'));
    await mount('--bind', '/dev/pts', join(root, 'dev/pts'));
    await mount('-t', 'tmpfs', '-o', 'mode=1777,nosuid,nodev', 'shm', join(root, 'dev/shm'));
    mkdirSync(join(root, SCRIPTS_IN_ROOT), { recursive: true });
    await mount('--bind', join(REPO, 'scripts'), join(root, SCRIPTS_IN_ROOT));
    await mount('-o', 'remount,bind,ro', join(root, SCRIPTS_IN_ROOT));
    // invoke-rc.d and deb-systemd-invoke ask policy-rc.d; 101 is "action forbidden": docker.io,
    // containerd and podman are configured but nothing is started.
    writeFileSync(join(root, 'usr/sbin/policy-rc.d'), '#!/bin/sh\nexit 101\n', { mode: 0o755 });

    // The sources of a Debian 12 installation (the release, its updates, its security
    // updates), brought up to date: the host setup.sh meets.
    writeFileSync(join(root, 'etc/apt/sources.list.d/debian.sources'), [
      `Types: deb\nURIs: ${MIRROR}\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n`,
      `Types: deb\nURIs: ${SECURITY}\nSuites: bookworm-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n`,
    ].join('\n'));
    await must(['rm', '-f', join(root, 'etc/apt/sources.list')]);
    step('apt-get update && apt-get upgrade in the root');
    await must(inRoot(['apt-get', 'update', '-qq']));
    await must(inRoot(['env', 'DEBIAN_FRONTEND=noninteractive', 'apt-get', 'upgrade', '-y', '-qq']));

    const dpkgList = async () => (await must(inRoot(['dpkg-query', '-W', '-f', '${Package} ${Version}\\n']))).stdout;
    const before = packages(await dpkgList());
    const policyBefore = { libc6: await policy('libc6'), libsystemd0: await policy('libsystemd0') };
    step(`${before.size} packages before; libc6 ${before.get('libc6')}, libsystemd0 ${before.get('libsystemd0') ?? '(none)'}`);

    // The first run: everything to install and CRIU to build.
    step(`sh ${SCRIPTS_IN_ROOT}/setup.sh --system (first run)`);
    const first = await run(inRoot(['sh', `${SCRIPTS_IN_ROOT}/setup.sh`, '--system']), { progress: (l) => step(`  ${l}`) });
    step(`first run: exit ${first.code} after ${(first.ms / 1000).toFixed(1)} s`);
    t.is(first.code, 0, `setup.sh --system failed:\n${first.stderr.trim().split('\n').slice(-30).join('\n')}`);
    if (first.code !== 0) {
      const log = join(root, 'var/cache/prebake/criu-build.log');
      if (existsSync(log)) t.log(`criu-build.log, last lines:\n${readFileSync(log, 'utf8').trim().split('\n').slice(-30).join('\n')}`);
      return;
    }
    t.notRegex(first.stderr, /could not seed/, "criu-kdat.sh seeds CRIU's kernel probe cache in the root");
    t.true(existsSync(join(root, 'run/criu.kdat')), "/run/criu.kdat is seeded (the root's /run is not a tmpfs)");
    t.deepEqual(processesIn(root), [], 'no service was started in the root');

    const after = packages(await dpkgList());
    step(`${after.size} packages after (${after.size - before.size} new)`);

    // The host's own tools are still bookworm's.
    t.regex(after.get('python3') ?? '', /^3\.11\./, 'python3 3.11.x');
    t.regex(after.get('dpkg') ?? '', /^1\.21\./, 'dpkg 1.21.x');
    t.regex(after.get('apt') ?? '', /^2\.6\./, 'apt 2.6.x');
    const python = await must(inRoot(['python3', '--version']));
    t.regex(python.stdout, /^Python 3\.11\./);

    // libc6 and libsystemd0, the two a newer release's packages would drag along, are the ones
    // bookworm (its point release or its security/updates suites) gives, as before.
    for (const pkg of ['libc6', 'libsystemd0'] as const) {
      const v = after.get(pkg);
      if (v === undefined) { t.false(before.has(pkg), `${pkg} was removed`); continue; }
      const p = await policy(pkg);
      t.is<string | undefined, string | undefined>(v, before.get(pkg), `${pkg} has the version it had before`);
      t.notRegex(v, /deb1[3-9]|~exp|~bpo/, `${pkg} ${v} is bookworm's`);
      t.is(p.installed, v);
      t.is(p.candidate, policyBefore[pkg].candidate, `${pkg}'s candidate is unchanged`);
      t.is(p.installed, p.candidate, `${pkg}: the installed version is bookworm's candidate\n${p.out}`);
      t.true(p.sources.some((s) => / bookworm(-updates|-security)?\/main /.test(s)), `${pkg} ${v} comes from a bookworm suite:\n${p.out}`);
    }

    // Nothing that was there changed version; nothing new is another release's.
    const changed = [...before].filter(([pkg, v]) => after.get(pkg) !== v).map(([pkg, v]) => `${pkg} ${v} -> ${after.get(pkg) ?? '(removed)'}`);
    t.deepEqual(changed, [], 'every package present before has the same version after');
    const foreign = [...after].filter(([, v]) => /deb1[3-9]/.test(v)).map(([pkg, v]) => `${pkg} ${v}`);
    t.deepEqual(foreign, [], 'no installed package is built for a later Debian release');

    // No apt source names trixie or sid (the keyring files named after releases are keys, not sources).
    const grep = await run(inRoot(['grep', '-rlwE', 'trixie|sid', '/etc/apt', '--exclude-dir=trusted.gpg.d', '--exclude-dir=keyrings']));
    t.is(grep.code, 1, `apt files naming trixie or sid: ${grep.stdout}${grep.stderr}`);
    const sources = (await must(inRoot(['apt-cache', 'policy']))).stdout;
    t.notRegex(sources, /\bn=(trixie|sid|forky)\b|\ba=(testing|unstable)\b/, `apt knows only bookworm suites:\n${sources}`);
    t.false(existsSync(join(root, 'etc/apt/preferences.d/prebake-criu')));

    // CRIU >= 4.2, passing `criu check` in the root; the CRI API definition in the cache.
    const which = await must(inRoot(['sh', '-c', 'command -v criu']));
    t.is(which.stdout.trim(), '/usr/local/sbin/criu');
    const version = await must(inRoot(['criu', '--version']));
    const [major = 0, minor = 0] = criuVersion(version.stdout);
    t.true(major > 4 || (major === 4 && minor >= 2), `criu --version: ${version.stdout.trim()}`);
    const check = await run(inRoot(['criu', 'check']));
    t.is(check.code, 0, `criu check in the root: ${check.stdout}${check.stderr}`);
    step(`criu in the root: ${version.stdout.trim().split('\n')[0]}; criu check: ${(check.stdout + check.stderr).trim()}`);
    const protos = (await must(inRoot(['find', '/var/cache/prebake', '-name', 'api.proto', '-path', '*/cri-api/*']))).stdout.trim().split('\n').filter(Boolean);
    t.is(protos.length, 1, `the CRI api.proto under /var/cache/prebake: ${protos.join(', ')}`);
    if (protos[0]) t.regex(readFileSync(join(root, protos[0]), 'utf8'), /service RuntimeService \{/);
    t.true(existsSync(join(root, 'usr/local/share/prebake/criu-images/core.proto')), "CRIU's image definitions are installed");

    // The second run finds everything in place: quick, and it installs or builds nothing.
    step(`sh ${SCRIPTS_IN_ROOT}/setup.sh --system (second run)`);
    const second = await run(inRoot(['sh', `${SCRIPTS_IN_ROOT}/setup.sh`, '--system']), { progress: (l) => step(`  ${l}`) });
    step(`second run: exit ${second.code} after ${(second.ms / 1000).toFixed(2)} s`);
    t.is(second.code, 0, second.stderr);
    t.true(second.ms < 10_000, `the second run took ${(second.ms / 1000).toFixed(1)} s`);
    t.notRegex(second.stderr, /installing|building|apt-get update|seeding|removing|creating/, 'the second run changes nothing');
    t.deepEqual(packages(await dpkgList()), after, 'the second run installs and upgrades nothing');

    t.log(`durations: debootstrap ${(boot.ms / 1000).toFixed(1)} s, first run ${(first.ms / 1000).toFixed(1)} s, second run ${(second.ms / 1000).toFixed(2)} s`);
  });
}
