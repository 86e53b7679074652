// Content-addressed blobs: sha256 digests of bytes and files, where a digest lives in an OCI
// layout, and how a layer is compressed (by media type, or by its first bytes).

import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { MEDIA_TYPE } from '../../oci/image-spec.ts';

export type Compression = 'gzip' | 'zstd' | 'none';

const DIGEST = /^sha256:([0-9a-f]{64})$/;

export const sha256 = (bytes: Buffer | string): string => `sha256:${createHash('sha256').update(bytes).digest('hex')}`;

/** The hex part of a `sha256:<hex>` digest; any other algorithm or shape is an error naming `what`. */
export function digestHex(digest: string, what: string): string {
  const m = DIGEST.exec(digest);
  if (!m) throw new Error(`${what}: digest ${JSON.stringify(digest)} is not sha256:<64 hex digits>`);
  return m[1]!;
}

/** `blobs/sha256/<hex>` under an OCI layout; the digest is checked, so the path stays inside `layout`. */
export const blobPath = (layout: string, digest: string, what: string): string => join(layout, 'blobs', 'sha256', digestHex(digest, what));

export async function sha256File(path: string): Promise<{ digest: string; size: number }> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of createReadStream(path) as AsyncIterable<Buffer>) {
    hash.update(chunk);
    size += chunk.length;
  }
  return { digest: `sha256:${hash.digest('hex')}`, size };
}

/** Checks that the file at `path` has `digest` (and `size`, when given); the error names `what`. */
export async function verifyBlob(path: string, digest: string, size: number | undefined, what: string): Promise<number> {
  let actual;
  try {
    actual = await sha256File(path);
  } catch (e) {
    throw new Error(`${what}: cannot read blob ${path} (${(e as Error).message})`);
  }
  if (actual.digest !== digest) throw new Error(`${what}: blob ${path} has ${actual.digest}, expected ${digest}`);
  if (size !== undefined && actual.size !== size) throw new Error(`${what}: blob ${path} is ${actual.size} bytes, the descriptor says ${size}`);
  return actual.size;
}

export function compressionOf(mediaType: string): Compression {
  if (mediaType.endsWith('+gzip') || mediaType.endsWith('.gzip')) return 'gzip';
  if (mediaType.endsWith('+zstd') || mediaType.endsWith('.zstd')) return 'zstd';
  return 'none';
}

/** For docker-archive layers, which carry no media type. */
export async function sniffCompression(path: string): Promise<Compression> {
  const f = await open(path, 'r');
  try {
    const { buffer, bytesRead } = await f.read(Buffer.alloc(4), 0, 4, 0);
    if (bytesRead >= 2 && buffer[0] === 0x1f && buffer[1] === 0x8b) return 'gzip';
    if (bytesRead === 4 && buffer.readUInt32LE(0) === 0xfd2fb528) return 'zstd';
    return 'none';
  } finally {
    await f.close();
  }
}

export const layerMediaType = (c: Compression): string => ({ gzip: MEDIA_TYPE.layerGzip, zstd: MEDIA_TYPE.layerZstd, none: MEDIA_TYPE.layer })[c];

/** Docker's layer media types mapped to their OCI equivalents (the bytes are the same). */
export function ociLayerMediaType(mediaType: string): string {
  if (mediaType === MEDIA_TYPE.dockerLayer || mediaType === MEDIA_TYPE.dockerLayerGzip) return layerMediaType(compressionOf(mediaType));
  return mediaType;
}
