// The verified store: root-owned copies of the checkpoints this host has authenticated, one
// directory per manifest (named by the sha256 of its bytes). CRIU restores only from here: the
// copy is hashed while it is written, so what CRIU reads is what the signed manifest lists,
// whatever happens to the image's files afterwards. An entry is whole once its `ok` file exists.
// Its directory's mtime is when a create last used it (markUsed): what `prebake store prune` goes by.

import { createHash, randomBytes } from 'node:crypto';
import { closeSync, constants, existsSync, fstatSync, lstatSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, renameSync, rmSync, utimesSync, writeFileSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { CHECKPOINT_DIR, type CheckpointManifest, MANIFEST_FILE } from './manifest.ts';
import { SIGNATURE_FILE } from './trust.ts';
import { openRegular } from './files.ts';
import { STORE_FILES } from '../contract.ts';

export const DEFAULT_STORE = '/var/lib/prebake/store';
/** Written last into an entry (its presence means every file was copied and matched): the signing key's id and the time. */
const STORE_OK = STORE_FILES.ok;
/** Bounds on what an image may ask this host to copy and hash. */
const MAX_FILES = 4096;
const MAX_TOTAL_BYTES = 16 * 2 ** 30;

const manifestDigest = (manifest: Buffer) => createHash('sha256').update(manifest).digest('hex');

export const storeEntry = (store: string, manifest: Buffer) => join(store, manifestDigest(manifest));

interface StoreRecord {
  /** The key that signed the manifest, or "none" when the host trusts any checkpoint. */
  keyId: string;
  imported: string;
}

/** The entry's record, or null when the entry is missing or not whole. */
export function readEntry(entry: string): StoreRecord | null {
  try {
    const [keyId, imported] = readFileSync(join(entry, STORE_OK), 'utf8').split('\n');
    return keyId ? { keyId, imported: imported ?? '' } : null;
  } catch {
    return null;
  }
}

let chunk: Buffer | undefined;

/** Copies one regular file (never a symlink) of exactly `size` bytes to `to`; returns its sha256. */
function copyHashed(from: string, to: string, size: number): string {
  const src = openRegular(from);
  let dst: number | undefined;
  try {
    const st = fstatSync(src);
    if (!st.isFile()) throw new Error(`is not a regular file`);
    if (st.size !== size) throw new Error(`is ${st.size} bytes, the manifest says ${size}`);
    mkdirSync(dirname(to), { recursive: true, mode: 0o700 });
    dst = openSync(to, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
    chunk ??= Buffer.allocUnsafe(1 << 20);
    const hash = createHash('sha256');
    let off = 0;
    for (let n; off < size && (n = readSync(src, chunk, 0, Math.min(chunk.length, size - off), off)) > 0; off += n) {
      hash.update(chunk.subarray(0, n));
      writeSync(dst, chunk, 0, n);
    }
    if (off !== size) throw new Error(`ended after ${off} of ${size} bytes`);
    return hash.digest('hex');
  } finally {
    closeSync(src);
    if (dst !== undefined) closeSync(dst);
  }
}

/** Every file below `base`, relative; anything but directories and regular files is an error. */
function listFiles(base: string): string[] {
  const out: string[] = [];
  const walk = (rel: string) => {
    for (const e of readdirSync(join(base, rel), { withFileTypes: true })) {
      const name = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) walk(name);
      else if (e.isFile()) out.push(name);
      else throw new Error(`checkpoint file ${name} is not a regular file`);
      if (out.length > MAX_FILES) throw new Error(`the checkpoint holds more than ${MAX_FILES} files`);
    }
  };
  walk('');
  return out;
}

/**
 * Imports the checkpoint in `dir` (manifest.json's bytes `manifest`, already authenticated, and
 * parsed as `m`) into the store, unless it is there already; returns the entry, marked for a lazy
 * restore when the manifest asks for one and the host can (`lazyPages`). Every file is
 * copied and hashed in one pass; a file the manifest does not list, a missing or changed one, or
 * a checkpoint over the bounds is refused and nothing is kept.
 */
export function importCheckpoint(store: string, dir: string, manifest: Buffer, signature: string | null, m: CheckpointManifest, keyId: string, lazyPages = false): string {
  const entry = storeEntry(store, manifest);
  if (readEntry(entry)) {
    markUsed(entry);
    return entry;
  }
  const names = Object.keys(m.files);
  if (names.length > MAX_FILES) throw new Error(`the checkpoint lists ${names.length} files, more than the ${MAX_FILES} allowed`);
  const total = names.reduce((n, f) => n + m.files[f]!.size, 0);
  if (total > MAX_TOTAL_BYTES) throw new Error(`the checkpoint is ${total} bytes, more than the ${MAX_TOTAL_BYTES} allowed`);
  const src = join(dir, CHECKPOINT_DIR);
  const st = lstatSync(src, { throwIfNoEntry: false });
  if (!st?.isDirectory()) throw new Error(`${src} ${!st ? 'does not exist' : st.isSymbolicLink() ? 'is a symlink, refused' : 'is not a directory'}`);
  const unlisted = listFiles(src).filter((f) => !(f in m.files));
  if (unlisted.length) throw new Error(`checkpoint file ${unlisted[0]} is not in the manifest`);
  mkdirSync(store, { recursive: true, mode: 0o700 });
  const tmp = join(store, `.import-${process.pid}-${randomBytes(4).toString('hex')}`);
  try {
    mkdirSync(join(tmp, CHECKPOINT_DIR), { recursive: true, mode: 0o700 });
    writeFileSync(join(tmp, MANIFEST_FILE), manifest, { mode: 0o600 });
    if (signature !== null) writeFileSync(join(tmp, SIGNATURE_FILE), signature, { mode: 0o600 });
    for (const name of names.sort()) {
      let got: string;
      try {
        got = copyHashed(join(src, name), join(tmp, CHECKPOINT_DIR, name), m.files[name]!.size);
      } catch (e) {
        const err = e as NodeJS.ErrnoException;
        throw new Error(`checkpoint file ${name} ${err.code === 'ENOENT' ? 'is missing' : err.code === 'ELOOP' ? 'is a symlink, refused' : err.message}`);
      }
      if (got !== m.files[name]!.sha256) throw new Error(`checkpoint file ${name} does not match its sha256 in the manifest`);
    }
    // (Restored lazily only where CRIU can: `lazyPages`, this host's userfaultfd; eager otherwise.)
    if (m.memory?.restore === 'lazy' && lazyPages) writeFileSync(join(tmp, STORE_FILES.lazyPages), '', { mode: 0o600 });
    writeFileSync(join(tmp, STORE_OK), `${keyId}\n${new Date().toISOString()}\n`, { mode: 0o600 });
    try {
      renameSync(tmp, entry);
    } catch (e) {
      // Another create imported the same checkpoint first: theirs is as good. A directory there
      // without `ok` is never whole (an entry arrives whole, by this rename): one whose removal
      // was cut short goes, once.
      if (readEntry(entry)) return entry;
      if (!lstatSync(entry, { throwIfNoEntry: false })?.isDirectory()) throw e;
      retire(store, basename(entry));
      renameSync(tmp, entry);
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  return entry;
}

/** Notes that a create uses the entry now (its directory's mtime; a store that cannot be written costs nothing). */
function markUsed(entry: string): void {
  try {
    const now = new Date();
    utimesSync(entry, now, now);
  } catch {
    /* read-only: prune then goes by the import */
  }
}

/** An entry as `prebake store list` shows it. */
export interface StoreListing {
  digest: string;
  keyId: string;
  imported: string;
  /** When a create last used it (ms since the epoch). */
  usedMs: number;
  /** The bytes of its checkpoint files. */
  bytes: number;
  lazy: boolean;
}

/** How long an entry may go unused before `prebake store prune` (by default) and doctor count it stale. */
export const UNUSED_DAYS = 30;

/** A size as the store's listings give it. */
export const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;

const ENTRY_NAME = /^[0-9a-f]{64}$/;

function bytesUnder(dir: string): number {
  let n = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) n += bytesUnder(p);
    else if (e.isFile()) n += lstatSync(p).size;
  }
  return n;
}

/** The whole entries of the store, least recently used first. */
export function listEntries(store: string): StoreListing[] {
  let names: string[] = [];
  try {
    names = readdirSync(store).filter((n) => ENTRY_NAME.test(n));
  } catch (e) {
    // (No store yet is an empty one; one this user cannot read is an error, not empty.)
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
  const out: StoreListing[] = [];
  for (const digest of names) {
    const entry = join(store, digest);
    const rec = readEntry(entry);
    const st = lstatSync(entry, { throwIfNoEntry: false });
    if (!rec || !st?.isDirectory()) continue;
    let bytes = 0;
    try {
      bytes = bytesUnder(join(entry, CHECKPOINT_DIR));
    } catch {
      /* removed meanwhile */
    }
    out.push({ digest, keyId: rec.keyId, imported: rec.imported, usedMs: st.mtimeMs, bytes, lazy: lstatSync(join(entry, STORE_FILES.lazyPages), { throwIfNoEntry: false }) !== undefined });
  }
  return out.sort((a, b) => a.usedMs - b.usedMs);
}

const TRASH = '.trash-';
/** How long a removed entry stays, renamed, before it is deleted: a restore started from it reads on. */
const TRASH_MS = 3600_000;

/**
 * Takes an entry out of the store at once (renamed: no create finds it any more), deleting it only
 * later (sweep): CRIU opens an image file it cannot find as an empty one, so a restore under way
 * from the entry must find every file until it is done.
 */
function retire(store: string, name: string): void {
  try {
    renameSync(join(store, name), join(store, `${TRASH}${Date.now()}-${name}-${randomBytes(4).toString('hex')}`));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
}

/** Deletes removed entries older than TRASH_MS, and imports cut short (their program gone) as old. */
function sweep(store: string, now: number): void {
  let names: string[] = [];
  try {
    names = readdirSync(store);
  } catch {
    return;
  }
  for (const name of names) {
    const trashed = name.startsWith(TRASH) ? Number(name.slice(TRASH.length).split('-')[0]) : NaN;
    if (Number.isFinite(trashed) && now - trashed >= TRASH_MS) rmSync(join(store, name), { recursive: true, force: true });
    // A whole-looking name without `ok`: a removal cut short (entries arrive whole, renamed).
    else if (ENTRY_NAME.test(name) && !readEntry(join(store, name))) retire(store, name);
    else if (name.startsWith('.import-')) {
      const pid = Number(name.split('-')[1]);
      const st = lstatSync(join(store, name), { throwIfNoEntry: false });
      if (st && now - st.mtimeMs >= TRASH_MS && !(Number.isInteger(pid) && existsSync(`/proc/${pid}`))) rmSync(join(store, name), { recursive: true, force: true });
    }
  }
}

/**
 * Removes the entries no create has used for `unusedMs` (a later create of their image verifies
 * and imports it again); returns them. Each is renamed out of the store at once and deleted an
 * hour later, by a later prune or removal.
 */
export function pruneEntries(store: string, unusedMs: number, now = Date.now()): StoreListing[] {
  const gone: StoreListing[] = [];
  for (const e of listEntries(store)) {
    if (now - e.usedMs < unusedMs) continue;
    // (Used since it was listed: it stays.)
    const st = lstatSync(join(store, e.digest), { throwIfNoEntry: false });
    if (!st || st.mtimeMs !== e.usedMs) continue;
    retire(store, e.digest);
    gone.push(e);
  }
  sweep(store, now);
  return gone;
}

/** Removes the store entries imported under any of the given key ids; returns how many. */
export function dropEntries(store: string, keyIds: readonly string[]): number {
  let n = 0;
  let names: string[] = [];
  try {
    names = readdirSync(store);
  } catch {
    return 0;
  }
  for (const name of names) {
    const rec = readEntry(join(store, name));
    if (rec && keyIds.includes(rec.keyId)) {
      retire(store, name);
      n++;
    }
  }
  sweep(store, Date.now());
  return n;
}
