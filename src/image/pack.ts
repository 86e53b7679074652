// Packs a directory tree into a gzip'd tar layer with tar-stream, deterministically (sorted names,
// mtime 0, owner 0:0), and reports its digest (of the gzip) and diffID (of the tar).

import { createHash, type Hash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { lstat, mkdtemp, readdir, readlink, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import tar from 'tar-stream';
import { MEDIA_TYPE } from '../../oci/image-spec.ts';
import { isContainedRelativePath } from '../checkpoint/manifest.ts';
import type { ImageLayer } from './read.ts';

interface PackedLayer extends ImageLayer {
  /** Removes the temp directory that holds the layer file. */
  cleanup(): Promise<void>;
}

const FIXED = { uid: 0, gid: 0, uname: '', gname: '', mtime: new Date(0) } as const;

/** A pass-through stream that hashes and counts what flows through it. */
function tap(hash: Hash, count = { bytes: 0 }): Transform {
  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      hash.update(chunk);
      count.bytes += chunk.length;
      callback(null, chunk);
    },
  });
}

/**
 * Adds `host` (a directory) and everything under it to `pack` as `name`, names in sorted order.
 * With `whiteouts` (an overlay upper dir), overlay's whiteouts (0/0 character devices) become
 * the OCI whiteout files `.wh.NAME`.
 */
async function addTree(pack: tar.Pack, host: string, name: string, preserve: boolean, whiteouts = false): Promise<void> {
  for (const child of (await readdir(host)).sort()) {
    const path = join(host, child);
    const member = name ? `${name}/${child}` : child;
    const st = await lstat(path);
    const mode = st.mode & 0o7777;
    const FIXED_OR_OWN = preserve ? { uid: st.uid, gid: st.gid, uname: '', gname: '', mtime: st.mtime } : FIXED;
    const add = (header: Partial<tar.Header> & { name: string }) =>
      new Promise<void>((resolve, reject) => pack.entry({ ...FIXED_OR_OWN, ...header }, '', (e) => (e ? reject(e) : resolve())));
    if (whiteouts && st.isCharacterDevice() && st.rdev === 0) {
      await add({ name: name ? `${name}/.wh.${child}` : `.wh.${child}`, type: 'file', mode: 0, size: 0 });
    } else if (st.isDirectory()) {
      await add({ name: member, type: 'directory', mode });
      await addTree(pack, path, member, preserve, whiteouts);
    } else if (st.isFile()) {
      await pipeline(createReadStream(path), pack.entry({ ...FIXED_OR_OWN, name: member, type: 'file', mode, size: st.size }));
    } else if (st.isSymbolicLink()) {
      await add({ name: member, type: 'symlink', mode, linkname: await readlink(path) });
    } else if (preserve && (st.isCharacterDevice() || st.isBlockDevice())) {
      const devmajor = Number((BigInt(st.rdev) >> 8n) & 0xfffn);
      const devminor = Number((BigInt(st.rdev) & 0xffn) | ((BigInt(st.rdev) >> 12n) & 0xfff00n));
      await add({ name: member, type: st.isCharacterDevice() ? 'character-device' : 'block-device', mode, devmajor, devminor });
    } else if (preserve && st.isFIFO()) {
      await add({ name: member, type: 'fifo', mode });
    } else {
      throw new Error(`${path} is not a file, directory or symlink`);
    }
  }
}

/**
 * Writes the tree under `dir` as a layer whose members sit under `prefixInsideLayer` (e.g.
 * `/.prebake`; '' or '/' for the root), with the prefix's directories as members too.
 * `preserve` keeps owners, mtimes, device nodes and fifos (a whole rootfs); by default the
 * layer is reproducible: owner 0:0, mtime 0, regular files, directories and symlinks only.
 * `upper`, an overlay upper dir, is added at the layer's root after `dir`, as it is (owners,
 * mtimes, devices) with overlay's whiteouts made OCI whiteouts; it must not hold `dir`'s names.
 */
export async function packLayer(dir: string, prefixInsideLayer: string, options: { preserve?: boolean; upper?: string } = {}): Promise<PackedLayer> {
  const prefix = prefixInsideLayer.replace(/^\/+|\/+$/g, '');
  if (prefix !== '' && !isContainedRelativePath(prefix)) throw new Error(`packing ${dir}: prefix ${JSON.stringify(prefixInsideLayer)} is not a plain path`);
  const temp = await mkdtemp(join(tmpdir(), 'prebake-layer-'));
  const path = join(temp, 'layer.tar.gz');
  const [diff, blob] = [createHash('sha256'), createHash('sha256')];
  const gzipBytes = { bytes: 0 };
  const pack = tar.pack();
  const writing = pipeline(pack, tap(diff), createGzip(), tap(blob, gzipBytes), createWriteStream(path));
  try {
    const root = await lstat(dir);
    if (!root.isDirectory()) throw new Error('not a directory');
    const parts = prefix ? prefix.split('/') : [];
    for (let i = 0; i < parts.length; i++) {
      const mode = i === parts.length - 1 ? root.mode & 0o7777 : 0o755;
      await new Promise<void>((resolve, reject) =>
        pack.entry({ ...FIXED, name: parts.slice(0, i + 1).join('/'), type: 'directory', mode }, (e) => (e ? reject(e) : resolve())),
      );
    }
    await addTree(pack, dir, prefix, options.preserve ?? false);
    if (options.upper) await addTree(pack, options.upper, '', true, true);
    pack.finalize();
    await writing;
  } catch (e) {
    pack.destroy();
    await writing.catch(() => {});
    await rm(temp, { recursive: true, force: true });
    throw new Error(`packing ${dir} as a layer: ${(e as Error).message}`, { cause: e });
  }
  return {
    path,
    digest: `sha256:${blob.digest('hex')}`,
    diffId: `sha256:${diff.digest('hex')}`,
    mediaType: MEDIA_TYPE.layerGzip,
    size: gzipBytes.bytes,
    cleanup: () => rm(temp, { recursive: true, force: true }),
  };
}
