// The cold-start study: for each function image, bake it, then start N replicas cold and N
// restored through the prebake runtime (interleaved, each in its own bundle and network
// namespace), timing spawn of create -> first HTTP 200 and then M requests of the function's work.

import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { runcDefaultSpec } from '../build/spec.ts';
import { targetSpec } from '../build/target.ts';
import { FUNCTION_PORT, FUNCTIONS, type FunctionName, functionImage } from '../image/functions.ts';
import { readImage } from '../image/read.ts';
import { CACHE, withLock } from '../image/rootfs.ts';
import { unpackLayers } from '../image/unpack.ts';
import { criuVersion, runcVersion } from '../lib/host.ts';
import { createNetns, deleteNetns, NetnsClient } from '../lib/netns.ts';
import { mountOverlay } from '../lib/overlay.ts';
import { PREBAKE_BIN, packageRoot } from '../lib/paths.ts';
import { spawnPiped } from '../lib/pipe.ts';
import type { FunctionResults, StudyResults } from './report.ts';

export interface StudyOptions {
  functions: FunctionName[];
  runs: number;
  /** Requests per replica after its startup, for the latency ECDF. */
  requests: number;
  command: string;
  progress: (line: string) => void;
}

/** The baked image of a function, cached beside its image (keyed by the image's directory name). */
async function bakedImage(name: FunctionName, progress: (l: string) => void): Promise<string> {
  const image = await functionImage(name);
  const dir = join(CACHE, 'baked', `${image.split('/').pop()}`);
  if (existsSync(join(dir, 'index.json'))) return dir;
  mkdirSync(join(CACHE, 'baked'), { recursive: true });
  return withLock(`${dir}.lock`, () => {
    if (existsSync(join(dir, 'index.json'))) return dir;
    const r = FUNCTIONS[name];
    const tmp = mkdtempSync(join(tmpdir(), 'prebake-study-'));
    try {
      const args = ['--quiet', '--target', 'runc', '--ready', `http:${FUNCTION_PORT}/`, '--warmup', '1', '--warmup-request', `${r.warmup.method} ${r.warmup.path}`];
      if ('body' in r.warmup) {
        writeFileSync(join(tmp, 'body'), r.warmup.body);
        args.push('--warmup-body', join(tmp, 'body'));
      }
      progress(`  baking ${name} (prebake-build) ...`);
      const b = spawnSync(join(packageRoot(), 'bin/prebake-build'), [...args, `oci:${image}:latest`, `oci:${dir}.tmp:latest`], { encoding: 'utf8' });
      if (b.status !== 0) throw new Error(`baking ${name}: ${b.stderr.trim()}`);
      renameSync(`${dir}.tmp`, dir);
      return dir;
    } finally {
      rmSync(join(tmp), { recursive: true, force: true });
      rmSync(`${dir}.tmp`, { recursive: true, force: true });
    }
  });
}

interface Replica {
  startupMs: number;
  latencyMs: number[];
  served: number;
  /** The replica id the function reports after startup (functions on images/common/serve.py). */
  replica?: string;
  restored?: boolean;
}

/** One replica: create (restore or cold) + start, first HTTP 200, then `requests` requests. */
async function replica(name: FunctionName, lower: string, config: object, mode: 'cold' | 'prebaked', requests: number, work: string, seq: number): Promise<Replica> {
  const id = `study-${process.pid}-${seq}`;
  const dir = join(work, id);
  const netns = `pbs-${process.pid}-${seq}`;
  const unmount = mountOverlay([lower], join(dir, 'upper'), join(dir, 'work'), join(dir, 'rootfs'));
  const root = join(work, 'runc');
  const prebake = PREBAKE_BIN();
  let client: NetnsClient | undefined;
  let created: ReturnType<typeof spawnPiped> | undefined;
  try {
    const netnsPath = createNetns(netns);
    const spec = targetSpec('runc', runcDefaultSpec(), config, { rootfs: 'rootfs', hostRootfs: lower, netnsPath, scratch: join(dir, 'files') });
    if (mode === 'cold') spec.annotations = { 'io.prebake.checkpoint': 'off' };
    writeFileSync(join(dir, 'config.json'), JSON.stringify(spec));
    client = await NetnsClient.start(netns);
    const r = FUNCTIONS[name];
    const t0 = performance.now();
    created = spawnPiped(prebake, ['--root', root, 'create', '--bundle', dir, id]);
    if ((await created.exit) !== 0) throw new Error(`prebake create of ${name} (${mode}) failed`);
    execFileSync(prebake, ['--root', root, 'start', id]);
    const first = await client.waitHttp({ port: FUNCTION_PORT, path: '/', intervalMs: 1, timeoutMs: 60000 });
    const startupMs = performance.now() - t0;
    let status = JSON.parse(first.body) as { served: number; replica?: string; restored?: boolean };
    // A restored replica is signalled to renew its seed and id (PREBAKE_RESTORE_SIGNAL); its
    // handler runs as soon as the process is scheduled, so give it a moment, untimed.
    for (let i = 0; mode === 'prebaked' && status.restored === false && i < 50; i++) {
      await new Promise((res) => setTimeout(res, 10));
      status = JSON.parse((await client.request({ port: FUNCTION_PORT, path: '/' })).body);
    }
    const served = Number(status.served);
    const latencyMs: number[] = [];
    for (let i = 0; i < requests; i++) {
      const res = await client.request({ port: FUNCTION_PORT, method: r.warmup.method, path: r.warmup.path, ...('body' in r.warmup ? { body64: r.warmup.body.toString('base64') } : {}) });
      if (res.status !== 200) throw new Error(`${name} answered ${res.status} to ${r.warmup.method} ${r.warmup.path}`);
      latencyMs.push(res.ms);
    }
    return { startupMs, latencyMs, served, ...(status.replica ? { replica: status.replica } : {}), ...(status.restored !== undefined ? { restored: status.restored } : {}) };
  } finally {
    client?.close();
    spawnSync(prebake, ['--root', root, 'delete', '--force', id], { stdio: 'ignore' });
    created?.close();
    unmount();
    deleteNetns(netns);
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function runStudy(o: StudyOptions): Promise<StudyResults> {
  const functions: FunctionResults[] = [];
  const work = mkdtempSync(join(tmpdir(), 'prebake-study-'));
  let seq = 0;
  try {
    for (const name of o.functions) {
      o.progress(`${name}: image and bake (cached after the first run) ...`);
      const baked = await bakedImage(name, o.progress);
      const image = await readImage(`oci:${baked}:latest`);
      const lower = join(work, `${name}-rootfs`);
      try {
        await unpackLayers(image.layers, lower);
      } finally {
        await image.cleanup();
      }
      const config = image.config.config ?? {};
      const f: FunctionResults = { name, startupMs: { cold: [], prebaked: [] }, latencyMs: { cold: [], prebaked: [] } };
      const replicaIds = new Set<string>();
      for (let i = 0; i < o.runs; i++) {
        // Alternate which mode goes first, so that neither always follows the other.
        for (const mode of i % 2 ? (['prebaked', 'cold'] as const) : (['cold', 'prebaked'] as const)) {
          const r = await replica(name, lower, config, mode, o.requests, work, seq++);
          if (mode === 'prebaked' && r.served <= 1) throw new Error(`${name}: a prebaked replica was not restored (served ${r.served})`);
          if (mode === 'cold' && r.served !== 1) throw new Error(`${name}: a cold replica answered served ${r.served}`);
          if (mode === 'prebaked' && r.replica !== undefined) {
            // Replicas of one checkpoint must not share identity: the restore signal renews it.
            if (!r.restored || replicaIds.has(r.replica)) throw new Error(`${name}: a restored replica kept the baked identity (${r.replica})`);
            replicaIds.add(r.replica);
          }
          f.startupMs[mode].push(r.startupMs);
          f.latencyMs[mode].push(...r.latencyMs);
        }
        o.progress(`  ${name} run ${i + 1}/${o.runs}: cold ${f.startupMs.cold.at(-1)!.toFixed(0)} ms, prebaked ${f.startupMs.prebaked.at(-1)!.toFixed(0)} ms`);
      }
      rmSync(lower, { recursive: true, force: true });
      functions.push(f);
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
    rmSync(join('/run/prebake', work), { recursive: true, force: true });
  }
  return {
    meta: {
      runs: o.runs,
      machine: `${cpus().length} CPUs (${cpus()[0]?.model.trim() ?? '?'}), kernel ${release()}`,
      versions: { runc: runcVersion(), criu: criuVersion(), node: process.version, kernel: release() },
      command: o.command,
      date: new Date().toISOString(),
      notes: [
        'startup: spawn of `prebake create` to the first HTTP 200 from inside the replica\'s network namespace (polled every 1 ms), `prebake start` included; cold replicas run the same image with io.prebake.checkpoint=off.',
        `latency: ${o.requests} requests of the function's own work per replica, sent one after another after startup.`,
        'runtime: the prebake runtime on plain OCI bundles (runc, CRIU), no engine daemon.',
      ],
    },
    functions,
  };
}
