// The sample functions of the cold-start study (images/<name>) as OCI images, built offline: a
// Debian rootfs with the function's packages (debianRootfs) as the base layer, the function's files
// (and what its compile step makes of them) under /app as the app layer. Each image is cached under
// /var/cache/prebake/images/<name>-<key>, keyed by its sources, its config and its rootfs.

import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
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
const PYTHON_CMD: readonly string[] = ['python3', '/app/function.py'];
const PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export interface FunctionRecipe {
  /** Debian bookworm packages the rootfs holds (debootstrap --variant=minbase --include=…). */
  packages: readonly string[];
  /** Files under images/, each copied to /app/<its base name>. */
  files: readonly string[];
  /** The image's CMD. */
  cmd: readonly string[];
  /**
   * A build step at image build time: `command` runs in /app (the copied files) chrooted into a
   * Debian rootfs with `packages` (cached, never written), and what it writes there is in the image.
   */
  compile?: { packages: readonly string[]; command: readonly string[] };
  /** The readiness probe: the function answers it once initialised. */
  ready: Probe;
  /** The request that exercises the function's real work, to warm it before a checkpoint. */
  warmup: WarmupRequest;
  /** How many warm-up requests the bake sends before the checkpoint (default 1). */
  warmups?: number;
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

/**
 * The JVM's flags, for what the checkpoint holds (the JVM restores without them too): no hsperfdata
 * file (shared-mapped counters under /tmp, which the bake would put in the checkpoint layer), the
 * serial collector (no GC worker threads), a young generation of 16 MB and a heap that gives back
 * what it does not use after the function's System.gc() at the end of its initialisation: ~95 MB
 * of pages in the checkpoint, not a heap sized from the host's memory.
 */
const JAVA_CMD: readonly string[] = ['java', '-XX:-UsePerfData', '-XX:+UseSerialGC', '-Xms32m', '-Xmx128m', '-Xmn16m', '-XX:MinHeapFreeRatio=10', '-XX:MaxHeapFreeRatio=20', '-cp', '/app', 'Function'];

/** A search of common and rare words of the java function's vocabulary: ~38,000 of its 40,000 documents match. */
const SEARCH_QUERY = 'ruquipel borbor zenhum zenmihum';

const SAMPLE_PAGE = `---
title: Prebaking
tags: [cold start, checkpoint]
draft: false
---
${SAMPLE_MARKDOWN}
\`\`\`js
const restored = await restore(checkpoint); // no require() left to run
\`\`\`

<script>alert("removed by sanitize-html")</script>
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
    cmd: PYTHON_CMD,
    ready: statusProbe,
    warmup: { method: 'GET', path: '/' },
  },
  /** POST Markdown, get an HTML page. */
  markdown: {
    packages: ['python3', 'python3-markdown'],
    files: ['markdown/function.py', 'common/serve.py'],
    cmd: PYTHON_CMD,
    ready: statusProbe,
    warmup: { method: 'POST', path: '/render', body: Buffer.from(SAMPLE_MARKDOWN) },
  },
  /** GET /resize: a 1 MB JPEG held in memory, shrunk to 10%. */
  resize: {
    packages: ['python3', 'python3-pil'],
    files: ['resize/function.py', 'common/serve.py'],
    cmd: PYTHON_CMD,
    ready: statusProbe,
    warmup: { method: 'GET', path: '/resize' },
  },
  /** Trains a classifier at initialisation (over a second); POST /predict classifies digits. */
  ml: {
    packages: ['python3', 'python3-numpy', 'python3-scipy', 'python3-sklearn'],
    files: ['ml/function.py', 'common/serve.py'],
    cmd: PYTHON_CMD,
    ready: statusProbe,
    warmup: { method: 'POST', path: '/predict', body: Buffer.from(JSON.stringify({ features: [DIGIT_EIGHT] })) },
  },
  /**
   * A JVM (OpenJDK 17) that builds a search index of 40,000 generated documents at start-up;
   * POST /search ranks them by BM25. Compiled with javac at image build; warmed with 100 searches,
   * so that the checkpoint holds the JIT's compiled scoring code.
   */
  java: {
    packages: ['openjdk-17-jre-headless'],
    files: ['java/Function.java', 'java/Serve.java'],
    compile: { packages: ['openjdk-17-jdk-headless'], command: ['javac', '-J-XX:-UsePerfData', '-XDignore.symbol.file', '-d', '.', 'Serve.java', 'Function.java'] },
    cmd: JAVA_CMD,
    ready: statusProbe,
    warmup: { method: 'POST', path: '/search', body: Buffer.from(SEARCH_QUERY) },
    warmups: 100,
  },
  /**
   * Node.js (18, Debian's) on node:http, loading ~420 modules of Debian's node-* libraries at
   * start-up; POST /render turns Markdown with YAML front matter into a sanitised HTML page.
   */
  node: {
    packages: ['nodejs', 'node-markdown-it', 'node-highlight.js', 'node-sanitize-html', 'node-js-yaml', 'node-ajv', 'node-nunjucks', 'node-lodash'],
    files: ['node/function.js', 'node/serve.js', 'node/package.json'],
    cmd: ['node', '/app/function.js'],
    ready: statusProbe,
    warmup: { method: 'POST', path: '/render', body: Buffer.from(SAMPLE_PAGE) },
    warmups: 20,
  },
} as const satisfies Record<string, FunctionRecipe>;

export type FunctionName = keyof typeof FUNCTIONS;

export const isFunctionName = (name: string): name is FunctionName => Object.hasOwn(FUNCTIONS, name);

function recipeOf(name: string): FunctionRecipe {
  if (!isFunctionName(name)) throw new Error(`no function image named ${JSON.stringify(name)} (there are ${Object.keys(FUNCTIONS).join(', ')})`);
  return FUNCTIONS[name];
}

/** The image config the function runs with, as a Dockerfile's ENV, CMD and EXPOSE give it. */
function containerConfig(recipe: FunctionRecipe): NonNullable<ImageConfig['config']> {
  // The runtime signals a restored replica so that it renews its seed and id (images/common/serve.py).
  return { Env: [PATH, 'PREBAKE_RESTORE_SIGNAL=SIGUSR2'], Cmd: [...recipe.cmd], ExposedPorts: { [`${FUNCTION_PORT}/tcp`]: {} } };
}

/**
 * Runs the recipe's compile command in `app` (mounted at /mnt), chrooted into its build rootfs, in a
 * mount namespace of its own with /proc and a /tmp of its own: nothing is written into the rootfs.
 */
function compileApp(recipe: FunctionRecipe, buildRootfs: string, app: string): void {
  const script = 'set -e; mount --bind "$1" "$2/mnt"; mount -t proc proc "$2/proc"; mount -t tmpfs tmpfs "$2/tmp"; root=$2; shift 2; exec chroot "$root" sh -c \'cd /mnt && exec "$@"\' compile "$@"';
  try {
    execFileSync('unshare', ['--mount', '--fork', 'sh', '-c', script, 'sh', app, buildRootfs, ...recipe.compile!.command], { stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: PATH.slice('PATH='.length) } });
  } catch (e) {
    const err = e as { stderr?: Buffer; message: string };
    throw new Error(`${recipe.compile!.command.join(' ')}: ${(err.stderr?.toString() || err.message).trim()}`);
  }
}

/** Writes the function's image as `oci:<layout>:latest`; `layout` must not exist. */
async function buildImage(name: string, recipe: FunctionRecipe, rootfs: string, buildRootfs: string | undefined, layout: string): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'prebake-function-'));
  try {
    const { Env, ...rest } = containerConfig(recipe);
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
    if (buildRootfs) compileApp(recipe, buildRootfs, join(app, 'app'));
    const appLayer = await packLayer(app, '/');
    try {
      const config = { ...base.config, config: { ...base.config.config, ...rest } };
      const copy = `COPY ${recipe.files.map((f) => `images/${f}`).join(' ')} /app/`;
      const createdBy = recipe.compile ? `${copy} && cd /app && ${recipe.compile.command.join(' ')}` : copy;
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
 * its Cmd, port 8080 exposed. Built on first use (the rootfs by debootstrap, a minute or more each,
 * and a compile step's rootfs too), then cached; shared by every caller: never write into it.
 */
export async function functionImage(name: string): Promise<string> {
  const recipe = recipeOf(name);
  const rootfs = await debianRootfs(recipe.packages);
  const buildRootfs = recipe.compile && (await debianRootfs(recipe.compile.packages));
  const compile = recipe.compile ? `${basename(buildRootfs!)} ${JSON.stringify(recipe.compile.command)}` : '';
  const hash = createHash('sha256').update(`${name}\n${basename(rootfs)}\n${JSON.stringify(containerConfig(recipe))}\n${compile}`);
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
      await buildImage(name, recipe, rootfs, buildRootfs, temp);
      renameSync(temp, dir);
    } catch (e) {
      rmSync(temp, { recursive: true, force: true });
      throw e;
    }
    return dir;
  });
}
