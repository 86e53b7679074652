// Function images for prebake-build tests: the noop function as an OCI layout (a Python layer,
// an app layer with /app/function.py), built once and cached under /var/cache/prebake/images,
// keyed by the function's source and the rootfs it is built on.

import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { packLayer } from '../../src/image/pack.ts';
import { readImage } from '../../src/image/read.ts';
import { CACHE, pythonRootfs, withLock } from '../../src/image/rootfs.ts';
import { scratchImage, writeImage } from '../../src/image/write.ts';
import { REPO } from './bundle.ts';

export const NOOP_PORT = 8080;
export const NOOP_CMD = ['python3', '/app/function.py'];
const PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** Writes the noop image as `oci:<layout>:latest`; `layout` must not exist. */
async function buildNoop(python: string, layout: string): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'prebake-fixture-'));
  try {
    const pythonLayer = await packLayer(python, '/', { preserve: true });
    try {
      await writeImage(`oci:${work}/base:latest`, { source: scratchImage({ Env: [PATH] }), addLayer: pythonLayer, createdBy: `debian rootfs ${basename(python)}` });
    } finally {
      await pythonLayer.cleanup();
    }
    const base = await readImage(`oci:${work}/base:latest`);
    const app = join(work, 'app');
    mkdirSync(join(app, 'app'), { recursive: true });
    copyFileSync(join(REPO, 'images/noop/function.py'), join(app, 'app/function.py'));
    const appLayer = await packLayer(app, '/');
    try {
      const config = { ...base.config.config, Cmd: NOOP_CMD, ExposedPorts: { [`${NOOP_PORT}/tcp`]: {} } };
      await writeImage(`oci:${layout}:latest`, { source: { ...base, config: { ...base.config, config } }, addLayer: appLayer, createdBy: 'COPY images/noop/function.py /app/function.py' });
    } finally {
      await appLayer.cleanup();
      await base.cleanup();
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/**
 * An OCI layout holding `latest`: the noop function (images/noop) on the Python rootfs, Cmd
 * python3 /app/function.py, port 8080 exposed. Shared by every test: never write into it.
 */
export async function noopImage(): Promise<string> {
  const python = await pythonRootfs();
  const key = createHash('sha256')
    .update(readFileSync(join(REPO, 'images/noop/function.py')))
    .update(`\n${basename(python)}`)
    .digest('hex')
    .slice(0, 12);
  const dir = join(CACHE, 'images', `noop-${key}`);
  // The layout is renamed into place once complete: its index.json means it is whole.
  if (existsSync(join(dir, 'index.json'))) return dir;
  mkdirSync(join(CACHE, 'images'), { recursive: true });
  return withLock(`${dir}.lock`, async () => {
    if (existsSync(join(dir, 'index.json'))) return dir;
    const temp = `${dir}.tmp`;
    rmSync(temp, { recursive: true, force: true });
    try {
      await buildNoop(python, temp);
      renameSync(temp, dir);
    } catch (e) {
      rmSync(temp, { recursive: true, force: true });
      throw new Error(`building the noop test image: ${(e as Error).message}`, { cause: e });
    }
    return dir;
  });
}
