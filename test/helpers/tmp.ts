// Small pieces tests share: a temp dir removed with the test, a layer built member by member, the
// request count a function answers with.

import type { ExecutionContext } from 'ava';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { type Compression, layerMediaType, sha256 } from '../../src/image/blob.ts';
import type { ImageLayer } from '../../src/image/read.ts';
import type { NetnsClient } from '../../src/lib/netns.ts';
import { PORT } from '../../lab/baked.ts';
import { type Member, tarOf } from './tar.ts';

/** A host directory of the test's own (named `prefix`XXXXXX in the temp dir), removed when the test ends. */
export function tempDir(t: ExecutionContext, prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A layer made member by member with tar-stream (hostile ones included), written into `dir`. */
export async function tarLayer(dir: string, members: Member[], compression: Compression = 'gzip'): Promise<ImageLayer> {
  const tarBytes = await tarOf(members);
  const blob = compression === 'gzip' ? gzipSync(tarBytes) : compression === 'zstd' ? execFileSync('zstd', ['-q', '-c'], { input: tarBytes }) : tarBytes;
  const path = join(dir, `layer-${sha256(blob).slice(7, 19)}`);
  writeFileSync(path, blob);
  return { digest: sha256(blob), diffId: sha256(tarBytes), mediaType: layerMediaType(compression), size: blob.length, path };
}

/** One GET / of the sample function: how many requests it has served, this one included. */
export async function served(client: NetnsClient): Promise<number> {
  const r = await client.request({ port: PORT, path: '/', timeoutMs: 10_000 });
  return (JSON.parse(r.body) as { served: number }).served;
}
