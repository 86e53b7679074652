// Units of provenance: signatures over the manifest, the trust store, the verified store's
// import (hashed as copied, bounded, nothing unlisted) and its pruning, and the parts of the spec CRIU restores
// from the images (user namespace, mount options, devices, sysctls; oomScoreAdj is set instead).

import test, { type ExecutionContext } from 'ava';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Spec } from '../oci/runtime-spec.ts';
import { bakedSpecOf, criuAnnotations, restoredMismatch } from '../src/checkpoint/security.ts';
import { dropEntries, importCheckpoint, pruneEntries, readEntry, storeEntry } from '../src/checkpoint/store.ts';
import { generateKey, keyIdOf, loadSigningKey, loadTrustStore, publicFileOf, signCheckpoint, trustAdd, trustRemove, verifyManifestSignature } from '../src/checkpoint/trust.ts';
import { chooseCheckpoint } from '../src/checkpoint/verify.ts';
import { writeManifest } from '../src/checkpoint/write.ts';
import { hostFacts } from '../src/lib/host.ts';
import { PREBAKE } from '../lab/bundle.ts';

function tmp(t: ExecutionContext, name: string): string {
  const d = mkdtempSync(join(tmpdir(), `prebake-${name}-`));
  t.teardown(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

const spec = (change: (s: Spec) => void = () => {}): Spec => {
  const s: Spec = { ociVersion: '1.0.2', process: { user: { uid: 0, gid: 0 }, cwd: '/', args: ['/bin/true'] }, root: { path: 'rootfs' }, linux: {} };
  change(s);
  return s;
};

/** A checkpoint dir with two files and a manifest; signed with `key` if given. */
function checkpoint(t: ExecutionContext, key?: ReturnType<typeof loadSigningKey>): string {
  const dir = tmp(t, 'ckpt');
  mkdirSync(join(dir, 'checkpoint/sub'), { recursive: true });
  writeFileSync(join(dir, 'checkpoint/core-1.img'), 'core');
  writeFileSync(join(dir, 'checkpoint/sub/pages-1.img'), 'pages'.repeat(1000));
  writeManifest(dir, { spec: spec(), runc: 'runc', prebakeVersion: 'test' });
  if (key) signCheckpoint(dir, key);
  return dir;
}

function keyPair(t: ExecutionContext) {
  const file = join(tmp(t, 'key'), 'bake.key');
  const { keyId, publicFile } = generateKey(file);
  return { key: loadSigningKey(file), keyId, publicFile };
}

test('a signature by a trusted key verifies; none, an unknown key or a changed manifest is "not signed by a trusted key"', (t) => {
  const { key, keyId, publicFile } = keyPair(t);
  const trust = tmp(t, 'trust');
  t.is(trustAdd(trust, publicFile), keyId);
  t.is(keyIdOf(key), keyId);
  const trusted = loadTrustStore(trust);
  const dir = checkpoint(t, key);
  const manifest = readFileSync(join(dir, 'manifest.json'));
  const sig = readFileSync(join(dir, 'manifest.sig'), 'utf8');
  t.is(verifyManifestSignature(manifest, sig, trusted), keyId);
  t.throws(() => verifyManifestSignature(manifest, null, trusted), { message: 'checkpoint not signed by a trusted key (no signature)' });
  const other = keyPair(t);
  const otherSig = readFileSync(join(checkpoint(t, other.key), 'manifest.sig'), 'utf8');
  t.throws(() => verifyManifestSignature(manifest, otherSig, trusted), { message: `checkpoint not signed by a trusted key (key id ${other.keyId.slice(0, 16)} is not in the trust store)` });
  const forged = Buffer.from(manifest.toString().replace('"prebake": "test"', '"prebake": "tesT"'));
  t.notDeepEqual(forged, manifest);
  t.throws(() => verifyManifestSignature(forged, sig, trusted), { message: /signature by key id .* does not match manifest\.json/ });
  // Removing the key withdraws the trust, and with it what was imported under it.
  const store = tmp(t, 'store');
  importCheckpoint(store, dir, manifest, sig, JSON.parse(manifest.toString()), keyId);
  t.deepEqual(trustRemove(trust, keyId.slice(0, 12)), [keyId]);
  t.is(loadTrustStore(trust).size, 0);
  t.is(dropEntries(store, [keyId]), 1);
  // Renamed out of the store at once (no create finds it), deleted an hour later.
  t.deepEqual(readdirSync(store).filter((n) => !n.startsWith('.trash-')), []);
  t.is(readdirSync(store).filter((n) => n.startsWith('.trash-')).length, 1);
});

test('prebake key generate, trust add|list|remove: the commands a host is set up with', (t) => {
  const dir = tmp(t, 'cli');
  const conf = join(dir, 'config.json');
  writeFileSync(conf, JSON.stringify({ trust: join(dir, 'trust'), store: join(dir, 'store') }));
  const env = { ...process.env, PREBAKE_CONFIG: conf };
  const sh = (...args: string[]) => execFileSync(PREBAKE, args, { env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  const out = sh('key', 'generate', '--out', join(dir, 'k.key'));
  const id = /^key ([0-9a-f]{64})$/m.exec(out)![1]!;
  t.true(existsSync(join(dir, 'k.pub')));
  t.is(execFileSync('stat', ['-c', '%a', join(dir, 'k.key')], { encoding: 'utf8' }).trim(), '600');
  t.throws(() => sh('key', 'generate', '--out', join(dir, 'k.key')), undefined, 'an existing key is never overwritten');
  t.regex(sh('trust', 'add', publicFileOf(join(dir, 'k.key'))), new RegExp(`^trusted ${id}`));
  t.is(sh('trust', 'list'), `${id}\n`);
  t.regex(sh('trust', 'remove', id.slice(0, 10)), new RegExp(`removed ${id}`));
  t.is(sh('trust', 'list'), '');
  const bad = (() => {
    try {
      sh('trust', 'frobnicate');
      return '';
    } catch (e) {
      return String((e as { stderr: string }).stderr);
    }
  })();
  t.regex(bad, /usage: prebake key generate/);
});

test('each create that uses a store entry notes it; prebake store list shows the entries, least recently used first; prune removes those unused for N days', (t) => {
  const { key, keyId } = keyPair(t);
  const dir = tmp(t, 'store-cli');
  const conf = join(dir, 'config.json');
  const store = join(dir, 'store');
  writeFileSync(conf, JSON.stringify({ trust: join(dir, 'trust'), store }));
  // (The config's store: PREBAKE_STORE_DIR, which the test run sets, would name another.)
  const env = { ...process.env, PREBAKE_CONFIG: conf, PREBAKE_STORE_DIR: '' };
  const sh = (...args: string[]) => execFileSync(PREBAKE, ['store', ...args], { env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  const status = (...args: string[]) => {
    try {
      sh(...args);
      return 0;
    } catch (e) {
      return (e as { status: number }).status;
    }
  };
  // Two checkpoints (the second's pages changed, its manifest written anew: another entry).
  const a = checkpoint(t, key);
  const b = checkpoint(t, key);
  writeFileSync(join(b, 'checkpoint/core-1.img'), 'core, another');
  writeManifest(b, { spec: spec(), runc: 'runc', prebakeVersion: 'test' });
  signCheckpoint(b, key);
  const imp = (d: string) => {
    const bytes = readFileSync(join(d, 'manifest.json'));
    return importCheckpoint(store, d, bytes, readFileSync(join(d, 'manifest.sig'), 'utf8'), JSON.parse(bytes.toString()), keyId);
  };
  const ea = imp(a);
  const eb = imp(b);
  t.not(ea, eb);
  const daysAgo = (entry: string, days: number) => utimesSync(entry, new Date(Date.now() - days * 86_400_000), new Date(Date.now() - days * 86_400_000));
  daysAgo(ea, 40);
  daysAgo(eb, 10);
  // What a create does with an entry it finds (src/checkpoint/verify.ts, admit): it is used now.
  t.is(imp(a), ea);
  t.true(Date.now() - statSync(ea).mtimeMs < 60_000, 'the entry a create used is marked used');
  daysAgo(ea, 40);

  const list = sh('list').trim().split('\n');
  t.is(list.length, 3, list.join('\n'));
  t.true(list[0]!.startsWith(ea.slice(-64, -48)) && list[1]!.startsWith(eb.slice(-64, -48)), 'least recently used first');
  t.regex(list[0]!, new RegExp(`key ${keyId.slice(0, 16)} .* eager  imported \\d{4}-\\d\\d-\\d\\d .*  used \\d{4}`));
  t.regex(list[2]!, /^2 verified checkpoint\(s\), 0\.0 MiB, in /);

  const pruned = sh('prune');
  t.regex(pruned, new RegExp(`^removed ${ea.slice(-64, -48)} `));
  t.regex(pruned, /\n1 verified checkpoint\(s\) unused for 30 day\(s\) removed, /);
  t.false(existsSync(ea));
  t.true(existsSync(join(eb, 'ok')), 'one used 10 days ago stays');
  t.regex(sh('prune', '--unused-days', '5'), /^removed /);
  const trash = readdirSync(store);
  t.is(trash.length, 2, 'both renamed out of the store, kept an hour for the restores reading them');
  t.true(trash.every((n) => n.startsWith('.trash-')));
  // An hour on: a later prune deletes them.
  pruneEntries(store, 30 * 86_400_000, Date.now() + 3600_000);
  t.deepEqual(readdirSync(store), []);
  // A removal cut short (the entry's directory left without `ok`) does not block its image:
  // the next import replaces it.
  const half = imp(a);
  rmSync(join(half, 'ok'));
  t.is(sh('list').trim(), `0 verified checkpoint(s), 0.0 MiB, in ${store}`, 'not listed: not whole');
  t.is(imp(a), half);
  t.truthy(readEntry(half), 'imported again, whole');
  // And an import cut short whose program is gone goes after an hour; a live one's stays.
  mkdirSync(join(store, '.import-999999999-dead'));
  mkdirSync(join(store, `.import-${process.pid}-live`));
  pruneEntries(store, 30 * 86_400_000, Date.now() + 3600_000);
  t.deepEqual(readdirSync(store).filter((n) => n.startsWith('.import-')), [`.import-${process.pid}-live`]);
  for (const bad of [['prune', '--unused-days', '-1'], ['prune', '--unused-days', 'soon'], ['list', '--unused-days', '3'], ['frob'], []]) t.is(status(...bad), 2, bad.join(' '));
});

test('the store imports a checkpoint by copying and hashing each file; a changed, unlisted or linked file is refused and nothing is kept', (t) => {
  const { key, keyId } = keyPair(t);
  const dir = checkpoint(t, key);
  const manifest = readFileSync(join(dir, 'manifest.json'));
  const m = JSON.parse(manifest.toString());
  const store = tmp(t, 'store');
  const entry = importCheckpoint(store, dir, manifest, null, m, keyId);
  t.is(entry, storeEntry(store, manifest));
  t.is(readEntry(entry)!.keyId, keyId);
  t.is(readFileSync(join(entry, 'checkpoint/sub/pages-1.img'), 'utf8'), 'pages'.repeat(1000));
  t.is(execFileSync('stat', ['-c', '%a', store], { encoding: 'utf8' }).trim(), '700');
  // Once imported, the image's own files no longer matter to a restore.
  writeFileSync(join(dir, 'checkpoint/core-1.img'), 'evil');
  t.is(importCheckpoint(store, dir, manifest, null, m, keyId), entry);
  t.is(readFileSync(join(entry, 'checkpoint/core-1.img'), 'utf8'), 'core');

  const fresh = tmp(t, 'store2');
  const refused = (why: RegExp, change: () => void, undo: () => void) => {
    change();
    t.throws(() => importCheckpoint(fresh, dir, manifest, null, m, keyId), { message: why });
    undo();
    t.deepEqual(readdirSync(fresh), [], 'nothing kept');
  };
  refused(/core-1\.img does not match its sha256/, () => writeFileSync(join(dir, 'checkpoint/core-1.img'), 'cor3'), () => writeFileSync(join(dir, 'checkpoint/core-1.img'), 'core'));
  refused(/core-1\.img is 5 bytes, the manifest says 4/, () => writeFileSync(join(dir, 'checkpoint/core-1.img'), 'core!'), () => writeFileSync(join(dir, 'checkpoint/core-1.img'), 'core'));
  refused(/extra\.img is not in the manifest/, () => writeFileSync(join(dir, 'checkpoint/extra.img'), 'x'), () => rmSync(join(dir, 'checkpoint/extra.img')));
  refused(
    /core-1\.img is not a regular file/,
    () => {
      rmSync(join(dir, 'checkpoint/core-1.img'));
      symlinkSync('/etc/hostname', join(dir, 'checkpoint/core-1.img'));
    },
    () => {
      rmSync(join(dir, 'checkpoint/core-1.img'));
      writeFileSync(join(dir, 'checkpoint/core-1.img'), 'core');
    },
  );
  const many = { ...m, files: Object.fromEntries(Array.from({ length: 5000 }, (_, i) => [`f${i}`, { size: 1, sha256: 'a'.repeat(64) }])) };
  t.throws(() => importCheckpoint(fresh, dir, manifest, null, many, keyId), { message: /lists 5000 files, more than the 4096 allowed/ });
  const huge = { ...m, files: { 'core-1.img': { size: 2 ** 40, sha256: 'a'.repeat(64) } } };
  t.throws(() => importCheckpoint(fresh, dir, manifest, null, huge, keyId), { message: /more than the \d+ allowed/ });
  t.is(importCheckpoint(fresh, dir, manifest, null, m, keyId), storeEntry(fresh, manifest));
});

test('chooseCheckpoint restores only what a trusted key signed, unless the host trusts any checkpoint', (t) => {
  const { key, publicFile } = keyPair(t);
  const trust = tmp(t, 'trust');
  trustAdd(trust, publicFile);
  const store = tmp(t, 'store');
  const facts = hostFacts('criu', store);
  const signed = checkpoint(t, key);
  const policy = { trustDir: trust, any: false, store };
  t.is(chooseCheckpoint(signed, spec(), facts, policy).keyId, keyIdOf(key));
  const unsigned = checkpoint(t);
  t.throws(() => chooseCheckpoint(unsigned, spec(), facts, policy), { message: 'checkpoint not signed by a trusted key (no signature)' });
  t.is(chooseCheckpoint(unsigned, spec(), facts, { ...policy, any: true }).keyId, 'none');
});

test('the spec is compared whole: user namespace and mappings, mount options, devices, sysctls; org.criu.* annotations are found', (t) => {
  const why = (baked: Spec, wanted: Spec) => restoredMismatch(bakedSpecOf(baked).restored, bakedSpecOf(wanted).restored);
  const userns = (m: number) => (s: Spec) => {
    s.linux!.namespaces = [{ type: 'user' }];
    s.linux!.uidMappings = [{ containerID: 0, hostID: m, size: 65536 }];
    s.linux!.gidMappings = [{ containerID: 0, hostID: m, size: 65536 }];
  };
  t.is(why(spec(), spec()), null);
  t.regex(why(spec(), spec(userns(100000)))!, /asks for a user namespace, the checkpoint was baked without one/);
  t.regex(why(spec(userns(100000)), spec(userns(200000)))!, /ID mappings differ/);
  t.is(why(spec(userns(100000)), spec(userns(100000))), null);
  const mount = (opts: string[]) => (s: Spec) => (s.mounts = [{ destination: '/data', type: 'bind', source: '/srv', options: ['rbind', ...opts] }]);
  t.is(why(spec(mount(['rprivate'])), spec(mount(['rprivate', 'rw']))), null);
  t.regex(why(spec(mount([])), spec(mount(['ro'])))!, /mount \/data is "bind ro", it was baked as "bind"/);
  t.regex(why(spec(mount(['nosuid'])), spec(mount([])))!, /baked as "bind nosuid"/);
  t.regex(why(spec(), spec((s) => (s.linux!.devices = [{ path: '/dev/sda', type: 'b', major: 8, minor: 0 }])))!, /linux\.devices differ/);
  t.regex(why(spec(), spec((s) => (s.linux!.sysctl = { 'net.ipv4.ip_forward': '1' })))!, /linux\.sysctl differs/);
  t.is(why(spec(), spec((s) => (s.process!.oomScoreAdj = -999))), null, 'oomScoreAdj is set on the restored processes, not compared');
  t.deepEqual(criuAnnotations(spec((s) => (s.annotations = { 'org.criu.config': '/x', 'io.prebake.checkpoint': '/.prebake' }))), ['org.criu.config']);
});
