// The CRIU image helper on a real checkpoint: every image written back byte for byte, forged creds read back.

import test from 'ava';
import { spawnSync } from 'node:child_process';
import { copyFileSync, cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describeCredentials, encodeImage, forgeCredentials, kernelCapMask, readImage, writeImage } from './helpers/criu-image.ts';

const has = (cmd: string) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
const missing = ['runc', 'criu'].filter((c) => !has(c));
const skipped = missing.length ? `skipped: ${missing.join(' and ')} not on PATH, no checkpoint to read` : undefined;

let dir: string | undefined;
let ckpt = '';
const id = `criuimg-${process.pid}`;
// Output to runc's log, not to a pipe: the container would inherit the pipe and hold spawnSync.
const runc = (...args: string[]) => spawnSync('runc', ['--root', join(dir!, 'runc'), '--log', join(dir!, 'runc.log'), ...args], { stdio: 'ignore' });
const runcLog = () => readFileSync(join(dir!, 'runc.log'), 'utf8');

// A busybox `sleep` in a runc container, checkpointed (runc's defaults: it is gone afterwards).
test.before(() => {
  if (skipped) return;
  dir = mkdtempSync(join(tmpdir(), 'criuimg-'));
  const bundle = join(dir, 'bundle');
  mkdirSync(join(bundle, 'rootfs/bin'), { recursive: true });
  copyFileSync('/bin/busybox', join(bundle, 'rootfs/bin/busybox'));
  symlinkSync('busybox', join(bundle, 'rootfs/bin/sleep'));
  spawnSync('runc', ['spec', '--bundle', bundle]);
  const spec = JSON.parse(readFileSync(join(bundle, 'config.json'), 'utf8'));
  spec.process.args = ['/bin/sleep', '1000'];
  spec.process.terminal = false;
  writeFileSync(join(bundle, 'config.json'), JSON.stringify(spec));
  const started = runc('run', '-d', '--bundle', bundle, id);
  if (started.status !== 0) throw new Error(`runc run: ${runcLog()}`);
  ckpt = join(dir, 'checkpoint');
  const dumped = runc('checkpoint', '--image-path', ckpt, '--work-path', join(dir, 'work'), id);
  if (dumped.status !== 0) throw new Error(`runc checkpoint: ${runcLog()}\n${readFileSync(join(dir, 'work/dump.log'), 'utf8')}`);
});
test.after.always(() => {
  if (!dir) return;
  runc('delete', '--force', id);
  rmSync(dir, { recursive: true, force: true });
});

const images = (d: string) => readdirSync(d).filter((f) => f.endsWith('.img')).sort();

test('every image of a real checkpoint reads and writes back byte for byte', (t) => {
  if (skipped) return void t.log(skipped), t.pass();
  const types: Record<string, string | null> = {};
  const out = join(dir!, 'rewritten');
  mkdirSync(out);
  for (const f of images(ckpt)) {
    const img = readImage(join(ckpt, f));
    types[f] = img.type;
    writeImage(join(out, f), img);
    t.true(readFileSync(join(out, f)).equals(readFileSync(join(ckpt, f))), f);
  }
  t.log(Object.entries(types).map(([f, ty]) => `${f}: ${ty ?? 'raw'}`).join(', '));
  t.is(types['inventory.img'], 'inventory_entry');
  t.is(types['pstree.img'], 'pstree_entry');
  t.is(types['files.img'], 'file_entry');
  t.is(types['pages-1.img'], null);
  for (const [prefix, type] of [['core-', 'core_entry'], ['ids-', 'task_kobj_ids_entry'], ['mountpoints-', 'mnt_entry'], ['fdinfo-', 'fdinfo_entry'], ['pagemap-', 'pagemap_entry']]) {
    t.true(Object.entries(types).some(([f, ty]) => f.startsWith(prefix!) && ty === type), prefix);
  }
  // inventory.img has its own magic alone; the others IMG_COMMON_MAGIC before theirs.
  t.deepEqual(readImage(join(ckpt, 'inventory.img')).magics, [0x58313116]);
  t.deepEqual(readImage(join(ckpt, 'pstree.img')).magics, [0x54564319, 0x50273030]);
  const inventory = readImage(join(ckpt, 'inventory.img')).entries[0]!;
  t.is(inventory.img_version, 2);
  const core = readImage(join(ckpt, 'core-1.img')).entries[0]!;
  t.is(core.tc.comm, 'sleep');
  t.is(typeof core.thread_info.gpregs.ip, 'string', '64-bit fields come as strings');
  const mounts = readImage(join(ckpt, images(ckpt).find((f) => f.startsWith('mountpoints-'))!)).entries;
  t.true(mounts.some((m) => m.mountpoint === '/'), JSON.stringify(mounts.map((m) => m.mountpoint)));
});

test('forgeCredentials gives every core image all capabilities, no_new_privs and a uid, nothing else', (t) => {
  if (skipped) return void t.log(skipped), t.pass();
  const forged = join(dir!, 'forged');
  cpSync(ckpt, forged, { recursive: true });
  const before = describeCredentials(forged);
  t.is(before['core-1.img']?.noNewPrivs, 1, "runc spec's default noNewPrivileges");
  t.not(before['core-1.img']?.prm, kernelCapMask());

  const changed = forgeCredentials(forged, { allCaps: true, inheritable: true, noNewPrivs: 0, uid: 4242 });
  t.deepEqual(changed, images(forged).filter((f) => f.startsWith('core-')).map((f) => join(forged, f)));
  const all = kernelCapMask();
  for (const [f, c] of Object.entries(describeCredentials(forged))) {
    t.deepEqual([c.prm, c.eff, c.bnd, c.inh], [all, all, all, all], f);
    t.is(c.amb, before[f]!.amb);
    t.is(c.noNewPrivs, 0);
    t.deepEqual([c.uid, c.euid, c.suid, c.fsuid, c.gid], [4242, 4242, 4242, 4242, before[f]!.gid]);
  }
  for (const f of images(forged)) {
    const img = readImage(join(forged, f));
    // Still a well-formed image: it parses and encodes to the same bytes again.
    t.true(encodeImage(img).equals(readFileSync(join(forged, f))), f);
    if (!f.startsWith('core-')) {
      t.true(readFileSync(join(forged, f)).equals(readFileSync(join(ckpt, f))), `${f} untouched`);
      continue;
    }
    // Only the thread's creds differ from the original entry.
    const orig = readImage(join(ckpt, f)).entries[0]!;
    const entry = img.entries[0]!;
    delete orig.thread_core.creds;
    delete entry.thread_core.creds;
    t.deepEqual(entry, orig);
  }
  t.deepEqual(forgeCredentials(forged, { allCaps: true, inheritable: true, noNewPrivs: 0, uid: 4242 }), [], 'nothing left to change');
  // A mask of one's own instead.
  forgeCredentials(forged, { allCaps: true, caps: 1n << 21n });
  t.deepEqual(Object.values(describeCredentials(forged)).map((c) => [c.prm, c.eff, c.bnd, c.inh]), [[1n << 21n, 1n << 21n, 1n << 21n, all]]);
});

test('edited entries are written back; a truncated image is an error', (t) => {
  if (skipped) return void t.log(skipped), t.pass();
  const f = images(ckpt).find((n) => n.startsWith('mountpoints-'))!;
  const img = readImage(join(ckpt, f));
  img.entries[0]!.mountpoint = '/../../hostile';
  img.entries.push({ ...img.entries[0]!, mnt_id: 9999 });
  const out = join(dir!, f);
  writeImage(out, img);
  const back = readImage(out);
  t.is(back.entries.length, img.entries.length);
  t.is(back.entries[0]!.mountpoint, '/../../hostile');
  t.is(back.entries.at(-1)!.mnt_id, 9999);
  writeFileSync(out, readFileSync(join(ckpt, f)).subarray(0, -3));
  t.throws(() => readImage(out), { message: /runs past the end/ });
});
