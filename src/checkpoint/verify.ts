// Chooses the checkpoint under a /.prebake directory that fits a container, and checks it
// before CRIU sees it: manifest shape, host compatibility, spec, and every file's digest.

import { createHash } from 'node:crypto';
import { closeSync, constants, fstatSync, lstatSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Spec } from '../../oci/runtime-spec.ts';
import type { HostFacts } from '../lib/host.ts';
import { CHECKPOINT_DIR, type CheckpointManifest, MANIFEST_FILE, MANIFEST_MAX_BYTES, parseManifest } from './manifest.ts';
import { type BakedSpec, bakedSpecOf, networkMismatch, processMismatch, securityMismatch } from './security.ts';

/** Opens a regular file that must not be a symlink, refusing it past `max` bytes, for `use`. */
function withContained<T>(path: string, max: number, use: (fd: number, size: number) => T): T {
  const fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new Error(`${path} is not a regular file`);
    if (st.size > max) throw new Error(`${path} is ${st.size} bytes, more than the ${max} allowed`);
    return use(fd, st.size);
  } finally {
    closeSync(fd);
  }
}

/** Reads a regular file that must not be a symlink, refusing it past `max` bytes. */
export function readContained(path: string, max: number): Buffer {
  return withContained(path, max, (fd, size) => {
    const buf = Buffer.alloc(size);
    let off = 0;
    while (off < size) {
      const n = readSync(fd, buf, off, size - off, off);
      if (n === 0) break;
      off += n;
    }
    return buf.subarray(0, off);
  });
}

let chunk: Buffer | undefined;

/**
 * The sha256 of a regular file as readContained takes it: read in 1 MB pieces into one buffer,
 * not whole (a 12 MB pages image hashes ~40% faster that way).
 */
function sha256Contained(path: string, max: number): string {
  return withContained(path, max, (fd) => {
    chunk ??= Buffer.allocUnsafe(1 << 20);
    const hash = createHash('sha256');
    for (let off = 0, n; off < max && (n = readSync(fd, chunk, 0, Math.min(chunk.length, max - off), off)) > 0; off += n) hash.update(chunk.subarray(0, n));
    return hash.digest('hex');
  });
}

export function loadManifest(dir: string): CheckpointManifest {
  return parseManifest(readContained(join(dir, MANIFEST_FILE), MANIFEST_MAX_BYTES).toString('utf8'));
}

/** Why this checkpoint cannot be restored into `spec` on this host, or null when it can. */
export function incompatibility(m: CheckpointManifest, spec: Spec, host: HostFacts, wanted: BakedSpec = bakedSpecOf(spec)): string | null {
  if (m.arch !== host.arch) return `checkpoint was baked on ${m.arch}, this host is ${host.arch}`;
  const [bakedMajor] = m.versions.criu.split('.');
  const [hostMajor] = host.criu.split('.');
  if (bakedMajor !== hostMajor) return `checkpoint was written by CRIU ${m.versions.criu}, this host has CRIU ${host.criu}`;
  const missing = m.cpuFlags.filter((f) => !host.cpuFlags.includes(f));
  if (missing.length) return `this host's CPU lacks ${missing.slice(0, 8).join(' ')}${missing.length > 8 ? ' …' : ''}, which the baking host had`;
  const extra = wanted.mounts.filter((d) => !m.spec.mounts.includes(d));
  const gone = m.spec.mounts.filter((d) => !wanted.mounts.includes(d));
  if (extra.length || gone.length)
    return `mount destinations differ from the baked ones (${[...extra.map((d) => `+${d}`), ...gone.map((d) => `-${d}`)].join(' ')})`;
  const net = networkMismatch(m.spec.network, wanted.network ?? 'new');
  if (net) return net;
  if (m.spec.terminal !== wanted.terminal)
    return `the checkpoint was baked ${m.spec.terminal ? 'with' : 'without'} a terminal, the container asks ${wanted.terminal ? 'for one' : 'for none'}`;
  const proc = processMismatch(m.spec.process, wanted.process);
  if (proc) return proc;
  const why = securityMismatch(m.spec.security, wanted.security);
  return why && `security: ${why}`;
}

/**
 * Identity of every checkpoint file as the filesystem reports it. A file cannot change content
 * without changing its ctime, so equal identities mean the hashes checked before still hold.
 */
function fileIdentities(base: string, m: CheckpointManifest): string {
  // No st_dev: each container's overlay mount has its own, while the files below it (and their
  // inode numbers and times) are the image layer's, shared by every replica.
  const id = (name: string) => {
    const st = lstatSync(join(base, name), { bigint: true, throwIfNoEntry: false });
    return st ? `${name} ${st.ino} ${st.size} ${st.mtimeNs} ${st.ctimeNs}` : `${name} missing`;
  };
  const dirs = new Set(Object.keys(m.files).map((f) => f.split('/').slice(0, -1).join('/')));
  return [...[...dirs].sort().map((d) => id(d || '.')), ...Object.keys(m.files).sort().map(id)].join('\n');
}

/** Where `cacheDir` remembers a verification of this manifest's files: verified/<sha256 of the file list>. */
export function verifiedEntry(cacheDir: string, m: CheckpointManifest): string {
  return join(cacheDir, 'verified', createHash('sha256').update(JSON.stringify(m.files)).digest('hex'));
}

/**
 * Like verifyFiles, but remembers a successful verification in `cacheDir` (root's, under /run):
 * the next create of the same unchanged files pays a few lstat calls instead of hashing them all.
 */
export function verifyFilesCached(dir: string, m: CheckpointManifest, cacheDir: string): 'cached' | 'hashed' {
  const base = checkpointDirOf(dir);
  const stamp = verifiedEntry(cacheDir, m);
  const ids = fileIdentities(base, m);
  try {
    if (readFileSync(stamp, 'utf8') === ids) return 'cached';
  } catch {
    /* not verified on this host yet */
  }
  verifyFiles(dir, m);
  try {
    mkdirSync(join(cacheDir, 'verified'), { recursive: true, mode: 0o700 });
    writeFileSync(`${stamp}.${process.pid}`, ids);
    renameSync(`${stamp}.${process.pid}`, stamp);
  } catch {
    // An unwritable cache (no space left) costs time, nothing else; a half-written entry goes.
    rmSync(`${stamp}.${process.pid}`, { force: true });
  }
  return 'hashed';
}

/** checkpoint/ must be a real directory inside the image: a symlink could point at host files. */
function checkpointDirOf(dir: string): string {
  const base = join(dir, CHECKPOINT_DIR);
  const st = lstatSync(base, { throwIfNoEntry: false });
  if (!st) throw new Error(`${base} does not exist`);
  if (st.isSymbolicLink()) throw new Error(`${base} is a symlink, refused`);
  if (!st.isDirectory()) throw new Error(`${base} is not a directory`);
  return base;
}

/** Checks that checkpoint/ holds exactly the manifest's files, each with its size and sha256. */
export function verifyFiles(dir: string, m: CheckpointManifest): void {
  const base = checkpointDirOf(dir);
  const listed = new Set(Object.keys(m.files));
  const walk = (rel: string) => {
    for (const e of readdirSync(join(base, rel), { withFileTypes: true })) {
      const name = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) walk(name);
      else if (!e.isFile()) throw new Error(`checkpoint file ${name} is not a regular file`);
      else if (!listed.has(name)) throw new Error(`checkpoint file ${name} is not in the manifest`);
    }
  };
  walk('');
  for (const [name, want] of Object.entries(m.files)) {
    const path = join(base, name);
    const st = lstatSync(path, { throwIfNoEntry: false });
    if (!st?.isFile()) throw new Error(`checkpoint file ${name} is missing`);
    if (st.size !== want.size) throw new Error(`checkpoint file ${name} is ${st.size} bytes, the manifest says ${want.size}`);
    const got = sha256Contained(path, want.size);
    if (got !== want.sha256) throw new Error(`checkpoint file ${name} does not match its sha256 in the manifest`);
  }
}

export interface ChosenCheckpoint {
  dir: string;
  manifest: CheckpointManifest;
}

/**
 * `root` holds either one checkpoint (manifest.json) or several (<name>/manifest.json).
 * Returns the first that fits; throws with every candidate's reason otherwise.
 */
export function chooseCheckpoint(root: string, spec: Spec, host: HostFacts, cacheDir?: string): ChosenCheckpoint {
  const single = lstatSync(join(root, MANIFEST_FILE), { throwIfNoEntry: false });
  const dirs = single
    ? [root]
    : readdirSync(root, { withFileTypes: true })
        .filter((e) => e.isDirectory() && lstatSync(join(root, e.name, MANIFEST_FILE), { throwIfNoEntry: false }))
        .map((e) => join(root, e.name))
        .sort();
  if (dirs.length === 0) throw new Error(`no ${MANIFEST_FILE} in ${root}`);
  const reasons: string[] = [];
  // What the container asks for, worked out once for every candidate (it hashes the seccomp profile).
  const wanted = bakedSpecOf(spec);
  for (const dir of dirs) {
    try {
      const manifest = loadManifest(dir);
      const why = incompatibility(manifest, spec, host, wanted);
      if (why) {
        reasons.push(dirs.length > 1 ? `${dir}: ${why}` : why);
        continue;
      }
      if (cacheDir) verifyFilesCached(dir, manifest, cacheDir);
      else verifyFiles(dir, manifest);
      return { dir, manifest };
    } catch (e) {
      reasons.push(dirs.length > 1 ? `${dir}: ${(e as Error).message}` : (e as Error).message);
    }
  }
  throw new Error(reasons.join('; '));
}
