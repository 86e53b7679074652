// The sample functions of the cold-start study (images/<name>) as OCI images, built offline: a
// Debian rootfs with the function's packages (debianRootfs) as the base layer, the function and
// images/common/serve.py under /app as the app layer. Each image is cached under
// /var/cache/prebake/images/<name>-<key>, keyed by its sources, its config and its rootfs.

import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ImageConfig } from '../oci/image-spec.ts';
import type { Probe, WarmupRequest } from '../src/bake/probe.ts';
import { packLayer } from '../src/image/pack.ts';
import { readImage } from '../src/image/read.ts';
import { CACHE, debianRootfs, withLock } from './rootfs.ts';
import { scratchImage, writeImage } from '../src/image/write.ts';

/** The images/ directory of the repository: the functions' sources. */
export const IMAGES_DIR = fileURLToPath(new URL('../images/', import.meta.url));

export const FUNCTION_PORT = 8080;
export const FUNCTION_CMD: readonly string[] = ['python3', '/app/function.py'];
const PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

interface FunctionRecipe {
  /** Debian bookworm packages the rootfs holds (debootstrap --variant=minbase --include=…). */
  packages: readonly string[];
  /** Files under images/, each copied to /app/<its base name>; one of them is function.py. */
  files: readonly string[];
  /** The readiness probe: the function answers it once initialised. */
  ready: Probe;
  /** The request that exercises the function's real work, to warm it before a checkpoint. */
  warmup: WarmupRequest;
}

const statusProbe: Probe = { kind: 'http', port: FUNCTION_PORT, path: '/' };

const SAMPLE_MARKDOWN = `# Prebaking

Functions start from a **snapshot** taken after their initialisation:

- no interpreter start,
- no imports,
- no model to train.

| start | from |
|-------|------|
| cold | scratch |
| prebaked | checkpoint |
`;

/** One handwritten "8" of scikit-learn's digits data set (its last sample), 8x8 pixels 0-16. */
export const DIGIT_EIGHT: readonly number[] = [
  0, 0, 10, 14, 8, 1, 0, 0, 0, 2, 16, 14, 6, 1, 0, 0, 0, 0, 15, 15, 8, 15, 0, 0, 0, 0, 5, 16, 16, 10, 0, 0,
  0, 0, 12, 15, 15, 12, 0, 0, 0, 4, 16, 6, 4, 16, 6, 0, 0, 8, 16, 10, 8, 16, 8, 0, 0, 1, 8, 12, 14, 12, 1, 0,
];

export const FUNCTIONS = {
  /** Answers every request with its JSON status: the smallest function. */
  noop: {
    // The packages of pythonRootfs(), so noop shares its rootfs with the runtime tests' bakes.
    packages: ['python3-minimal', 'libpython3.11-stdlib'],
    files: ['noop/function.py', 'common/serve.py'],
    ready: statusProbe,
    warmup: { method: 'GET', path: '/' },
  },
  /** POST Markdown, get an HTML page. */
  markdown: {
    packages: ['python3', 'python3-markdown'],
    files: ['markdown/function.py', 'common/serve.py'],
    ready: statusProbe,
    warmup: { method: 'POST', path: '/render', body: Buffer.from(SAMPLE_MARKDOWN) },
  },
  /** GET /resize: a 1 MB JPEG held in memory, shrunk to 10%. */
  resize: {
    packages: ['python3', 'python3-pil'],
    files: ['resize/function.py', 'common/serve.py'],
    ready: statusProbe,
    warmup: { method: 'GET', path: '/resize' },
  },
  /** Trains a classifier at initialisation (over a second); POST /predict classifies digits. */
  ml: {
    packages: ['python3', 'python3-numpy', 'python3-scipy', 'python3-sklearn'],
    files: ['ml/function.py', 'common/serve.py'],
    ready: statusProbe,
    warmup: { method: 'POST', path: '/predict', body: Buffer.from(JSON.stringify({ features: [DIGIT_EIGHT] })) },
  },
} as const satisfies Record<string, FunctionRecipe>;

export type FunctionName = keyof typeof FUNCTIONS;

export const isFunctionName = (name: string): name is FunctionName => Object.hasOwn(FUNCTIONS, name);

function recipeOf(name: string): FunctionRecipe {
  if (!isFunctionName(name)) throw new Error(`no function image named ${JSON.stringify(name)} (there are ${Object.keys(FUNCTIONS).join(', ')})`);
  return FUNCTIONS[name];
}

/** The image config the function runs with, as a Dockerfile's ENV, CMD and EXPOSE give it. */
function containerConfig(): NonNullable<ImageConfig['config']> {
  // The runtime signals a restored replica so that it renews its seed and id (images/common/serve.py).
  return { Env: [PATH, 'PREBAKE_RESTORE_SIGNAL=SIGUSR2'], Cmd: [...FUNCTION_CMD], ExposedPorts: { [`${FUNCTION_PORT}/tcp`]: {} } };
}

/** Writes the function's image as `oci:<layout>:latest`; `layout` must not exist. */
async function buildImage(name: string, recipe: FunctionRecipe, rootfs: string, layout: string): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'prebake-function-'));
  try {
    const { Env, ...rest } = containerConfig();
    const baseLayer = await packLayer(rootfs, '/', { preserve: true });
    try {
      const createdBy = `debootstrap --variant=minbase --include=${recipe.packages.join(',')} bookworm (${basename(rootfs)})`;
      await writeImage(`oci:${work}/base:latest`, { source: scratchImage({ Env: Env ?? [] }), addLayer: baseLayer, createdBy });
    } finally {
      await baseLayer.cleanup();
    }
    const base = await readImage(`oci:${work}/base:latest`);
    const app = join(work, 'app');
    mkdirSync(join(app, 'app'), { recursive: true });
    for (const f of recipe.files) copyFileSync(join(IMAGES_DIR, f), join(app, 'app', basename(f)));
    const appLayer = await packLayer(app, '/');
    try {
      const config = { ...base.config, config: { ...base.config.config, ...rest } };
      const createdBy = `COPY ${recipe.files.map((f) => `images/${f}`).join(' ')} /app/`;
      await writeImage(`oci:${layout}:latest`, { source: { ...base, config }, addLayer: appLayer, createdBy });
    } finally {
      await appLayer.cleanup();
      await base.cleanup();
    }
  } catch (e) {
    throw new Error(`building the ${name} function image: ${(e as Error).message}`, { cause: e });
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/**
 * An OCI layout holding `latest`: the function images/<name> on a Debian rootfs with its packages,
 * Cmd python3 /app/function.py, port 8080 exposed. Built on first use (the rootfs by debootstrap,
 * minutes for ml), then cached; shared by every caller: never write into it.
 */
export async function functionImage(name: string): Promise<string> {
  const recipe = recipeOf(name);
  const rootfs = await debianRootfs(recipe.packages);
  const hash = createHash('sha256').update(`${name}\n${basename(rootfs)}\n${JSON.stringify(containerConfig())}\n`);
  for (const f of recipe.files) hash.update(`${f}\n`).update(readFileSync(join(IMAGES_DIR, f))).update('\n');
  const dir = join(CACHE, 'images', `${name}-${hash.digest('hex').slice(0, 12)}`);
  // The layout is renamed into place once complete: its index.json means it is whole.
  if (existsSync(join(dir, 'index.json'))) return dir;
  mkdirSync(join(CACHE, 'images'), { recursive: true });
  return withLock(`${dir}.lock`, async () => {
    if (existsSync(join(dir, 'index.json'))) return dir;
    const temp = `${dir}.tmp`;
    rmSync(temp, { recursive: true, force: true });
    try {
      await buildImage(name, recipe, rootfs, temp);
      renameSync(temp, dir);
    } catch (e) {
      rmSync(temp, { recursive: true, force: true });
      throw e;
    }
    return dir;
  });
}
