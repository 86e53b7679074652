// The cold-start study: for each function image, bake it, then start N replicas cold and N
// restored (interleaved), timing each start to its first HTTP 200 and then M requests of the
// function's work. Replicas run either under the prebake runtime on plain OCI bundles (engine
// "runc": each in its own bundle and network namespace, no engine daemon), or under an engine
// started privately for the study (docker, containerd, podman: lab/engines/engine.ts).

import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { cpus, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { runcDefaultSpec } from '../../src/bake/spec.ts';
import { targetSpec } from '../../src/bake/target.ts';
import { type Engine as InstallEngine, ENGINES } from '../../src/install/engines.ts';
import { MANIFEST_FORMAT } from '../../src/checkpoint/manifest.ts';
import { DEFAULT_KEY, keyIdOf, loadSigningKey } from '../../src/checkpoint/trust.ts';
import { bakeFunction } from '../engines/bake.ts';
import { type Engine, type Started, startEngine } from '../engines/engine.ts';
import { overlayBundle, restoreMs } from '../bundle.ts';
import { FUNCTION_PORT, FUNCTIONS, type FunctionName, functionImage } from '../functions.ts';
import { readImage } from '../../src/image/read.ts';
import { CACHE, withLock } from '../rootfs.ts';
import { unpackLayers } from '../../src/image/unpack.ts';
import { parseCriuLog, criuPhases } from '../../src/lib/criu-log.ts';
import { criuVersion, runcVersion } from '../../src/lib/host.ts';
import { containerStateDir, loadRuntimeConfig } from '../../src/runtime/config.ts';
import { NetnsClient } from '../../src/lib/netns.ts';
import { prebakeBinPath } from '../../src/lib/paths.ts';
import { tasksUnder } from '../../src/lib/proc.ts';
import { spawnPiped } from '../../src/lib/pipe.ts';
import type { FunctionResults, ReplicaRecord, StartupParts, StudyResults } from './report.ts';

/** With two CPUs or more, the bundle study keeps client and replica on CPUs of their own. */
const PIN = cpus().length >= 2;

/** Where replicas run: the prebake runtime on OCI bundles, or an engine prebake registers with. */
export type StudyEngine = 'runc' | InstallEngine;
export const STUDY_ENGINES: readonly StudyEngine[] = ['runc', ...ENGINES];

interface StudyOptions {
  functions: FunctionName[];
  runs: number;
  /** Requests per replica after its startup, for the latency ECDF. */
  requests: number;
  /** Default 'runc': no engine daemon. */
  engine?: StudyEngine;
  command: string;
  progress: (line: string) => void;
}

type Mode = 'cold' | 'prebaked';

/** Starts one replica of a function in a mode; resolves once it has answered its first request. */
type StartReplica = (mode: Mode) => Promise<Started & { parts?: StartupParts }>;

/**
 * The baked image of a function for runc, cached beside its image, keyed by the image's directory
 * name, the manifest format and the key it is signed with (a bake this host does not trust, or
 * of an older format, would only start cold).
 */
async function bakedImage(name: FunctionName, progress: (l: string) => void): Promise<string> {
  const image = await functionImage(name);
  const key = keyIdOf(loadSigningKey(DEFAULT_KEY)).slice(0, 12);
  // (h: with the manifest.json.sha256-<hex> hint the runtime's early restore looks for; m: with
  // the manifest's memory, lazy for a big checkpoint.)
  const dir = join(CACHE, 'baked', `${image.split('/').pop()}-f${MANIFEST_FORMAT}hm-${key}`);
  if (existsSync(join(dir, 'index.json'))) return dir;
  mkdirSync(join(CACHE, 'baked'), { recursive: true });
  return withLock(`${dir}.lock`, async () => {
    if (existsSync(join(dir, 'index.json'))) return dir;
    try {
      progress(`  baking ${name} (prebake-build) ...`);
      await bakeFunction(name, { target: 'runc', dest: `oci:${dir}.tmp:latest` });
      renameSync(`${dir}.tmp`, dir);
      return dir;
    } finally {
      rmSync(`${dir}.tmp`, { recursive: true, force: true });
    }
  });
}

/**
 * Replicas of a baked image under the prebake runtime on OCI bundles: an overlay over the unpacked
 * image, a network namespace and a client inside it; startup is the spawn of `prebake create` to
 * the first HTTP 200 from inside the namespace (polled every 1 ms), `prebake start` included.
 */
function bundleReplicas(lower: string, config: object, work: string): StartReplica {
  let seq = 0;
  return async (mode) => {
    const id = `study-${process.pid}-${seq++}`;
    const b = overlayBundle([lower]);
    const root = join(work, 'runc');
    const prebake = prebakeBinPath();
    let client: NetnsClient | undefined;
    let created: ReturnType<typeof spawnPiped> | undefined;
    const remove = async () => {
      client?.close();
      spawnSync(prebake, ['--root', root, 'delete', '--force', id], { stdio: 'ignore' });
      created?.close();
      b.cleanup();
    };
    try {
      const spec = targetSpec('runc', runcDefaultSpec(), config, { rootfs: 'rootfs', hostRootfs: lower, nsPaths: { network: b.netnsPath }, scratch: join(b.dir, 'files') });
      // A cold replica is the conventional start of the same image: its config without the
      // checkpoint marker, which prebake hands to runc untouched (runc + ~2 ms). Turning the
      // checkpoint off instead would add prebake's own Node start, which no unbaked image pays.
      if (mode === 'cold') spec.process!.env = spec.process!.env!.filter((e) => !e.startsWith('PREBAKE_CHECKPOINT='));
      b.writeSpec(spec);
      const c = await NetnsClient.start(b.netns);
      client = c;
      // A cold replica refuses the readiness polls until it listens, a restored one answers the
      // first: warm the client's own code the same way in both modes before timing anything.
      await c.warm(50);
      const log = join(b.dir, 'prebake.log');
      const t0 = performance.now();
      created = spawnPiped(prebake, ['--root', root, '--log', log, '--log-format', 'json', 'create', '--bundle', b.dir, id]);
      if ((await created.exit) !== 0) throw new Error(`prebake create (${mode}) failed`);
      const t1 = performance.now();
      execFileSync(prebake, ['--root', root, 'start', id]);
      const t2 = performance.now();
      const first = await c.waitHttp({ port: FUNCTION_PORT, path: '/', intervalMs: 1, timeoutMs: 60000 });
      const startupMs = performance.now() - t0;
      const parts = startupParts(log, containerStateDir(loadRuntimeConfig(), root, id), { create: t1 - t0, start: t2 - t1, firstResponse: t0 + startupMs - t2 });
      // For the latency, the replica on CPUs of its own (the client is on CPU 0), in both modes
      // alike: left to itself the scheduler stacks a just-restored server on its client's CPU far
      // more often than a cold one, which costs each request ~0.15 ms on this kind of machine and
      // is not the replica's doing. Startup is timed as a deployment would run it, unpinned.
      const settle = async () => {
        if (!PIN) return;
        execFileSync('taskset', ['-a', '-pc', '0', String(c.pid)], { stdio: 'ignore' });
        execFileSync(prebake, ['--root', root, 'update', '--cpuset-cpus', `1-${cpus().length - 1}`, id]);
      };
      const residentKB = () => {
        const { pid } = JSON.parse(execFileSync(prebake, ['--root', root, 'state', id], { encoding: 'utf8' })) as { pid: number };
        return treeResidentKB(pid);
      };
      return { name: id, startupMs, first, request: (r) => c.request({ ...r, port: FUNCTION_PORT }), remove, settle, parts, residentKB };
    } catch (e) {
      await remove().catch(() => {});
      throw e;
    }
  };
}

/** The VmRSS (kB) of process `pid` and every process under it. */
function treeResidentKB(pid: number): number {
  let kb = 0;
  for (const p of new Set(tasksUnder(pid).map((t) => t.pid))) {
    try {
      kb += Number(/^VmRSS:\s+(\d+)/m.exec(readFileSync(`/proc/${p}/status`, 'utf8'))?.[1] ?? 0);
    } catch {
      /* gone */
    }
  }
  return kb;
}

/** Untimed, after the first 200: the runc restore prebake logged and CRIU's restore.log, if it restored. */
function startupParts(log: string, state: string, timed: StartupParts): StartupParts {
  const parts: StartupParts = { ...timed };
  const runcRestore = restoreMs(log);
  if (runcRestore !== undefined) parts.runcRestore = runcRestore;
  const criu = parseCriuLog(join(state, 'criu', 'restore.log'));
  const phases = criu && criuPhases(criu);
  if (criu) parts.criu = criu.totalMs;
  if (phases) Object.assign(parts, { criuStartup: phases.startup, criuRestore: phases.restore, criuResume: phases.unlock + phases.tail });
  return parts;
}

/** After its start: the replica's status, then `requests` requests of the function's own work; removes it. */
async function measure(name: FunctionName, c: Started & { parts?: StartupParts }, mode: Mode, requests: number): Promise<{ record: ReplicaRecord; latencyMs: number[] }> {
  try {
    const r = FUNCTIONS[name];
    let status = JSON.parse(c.first.body) as { served: number; replica?: string; restored?: boolean };
    // A restored replica is signalled to renew its seed and id (PREBAKE_RESTORE_SIGNAL); its
    // handler runs as soon as the process is scheduled, so give it a moment, untimed.
    for (let i = 0; mode === 'prebaked' && status.restored === false && i < 50; i++) {
      await new Promise((res) => setTimeout(res, 10));
      status = JSON.parse((await c.request({ path: '/' })).body);
    }
    await c.settle();
    const latencyMs: number[] = [];
    let residentKB: number | undefined;
    for (let i = 0; i < requests; i++) {
      const res = await c.request({ method: r.warmup.method, path: r.warmup.path, ...('body' in r.warmup ? { body64: r.warmup.body.toString('base64') } : {}) });
      if (res.status !== 200) throw new Error(`${name} answered ${res.status} to ${r.warmup.method} ${r.warmup.path}`);
      latencyMs.push(res.ms);
      if (i === 0) residentKB = c.residentKB?.();
    }
    const record: ReplicaRecord = {
      mode,
      startupMs: c.startupMs,
      served: Number(status.served),
      ...(status.replica ? { replica: status.replica } : {}),
      ...(status.restored !== undefined ? { restored: status.restored } : {}),
      ...(c.parts ? { parts: c.parts } : {}),
      ...(residentKB !== undefined ? { residentKB } : {}),
    };
    return { record, latencyMs };
  } finally {
    await c.remove();
  }
}

/**
 * N replicas per mode, alternating which mode goes first; a prebaked one must be restored, a cold
 * one not. With `warmup`, one replica of each mode runs first, checked but not kept.
 */
async function runFunction(name: FunctionName, start: StartReplica, o: StudyOptions, warmup = false): Promise<FunctionResults> {
  const f: FunctionResults = { name, startupMs: { cold: [], prebaked: [] }, latencyMs: { cold: [], prebaked: [] }, replicas: [] };
  const replicaIds = new Set<string>();
  for (let i = warmup ? -1 : 0; i < o.runs; i++) {
    for (const mode of i % 2 ? (['prebaked', 'cold'] as const) : (['cold', 'prebaked'] as const)) {
      const { record: r, latencyMs } = await measure(name, await start(mode), mode, o.requests);
      if (mode === 'prebaked' && r.served <= 1) throw new Error(`${name}: a prebaked replica was not restored (served ${r.served})`);
      if (mode === 'cold' && r.served !== 1) throw new Error(`${name}: a cold replica answered served ${r.served}`);
      if (mode === 'prebaked' && r.replica !== undefined) {
        // Replicas of one checkpoint must not share identity: the restore signal renews it.
        if (!r.restored || replicaIds.has(r.replica)) throw new Error(`${name}: a restored replica kept the baked identity (${r.replica})`);
        replicaIds.add(r.replica);
      }
      if (i < 0) continue;
      f.startupMs[mode].push(r.startupMs);
      f.latencyMs[mode].push(...latencyMs);
      f.replicas!.push(r);
    }
    if (i < 0) o.progress(`  ${name} warm-up: one replica of each mode, not kept`);
    else o.progress(`  ${name} run ${i + 1}/${o.runs}: cold ${f.startupMs.cold.at(-1)!.toFixed(0)} ms, prebaked ${f.startupMs.prebaked.at(-1)!.toFixed(0)} ms`);
  }
  return f;
}

async function runOnBundles(o: StudyOptions): Promise<FunctionResults[]> {
  const functions: FunctionResults[] = [];
  const work = mkdtempSync(join(tmpdir(), 'prebake-study-'));
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
      functions.push(await runFunction(name, bundleReplicas(lower, image.config.config ?? {}, work), o));
      rmSync(lower, { recursive: true, force: true });
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
    rmSync(join('/run/prebake', work), { recursive: true, force: true });
  }
  return functions;
}

async function runOnEngine(engine: Engine, o: StudyOptions): Promise<FunctionResults[]> {
  const functions: FunctionResults[] = [];
  for (const name of o.functions) {
    o.progress(`${name}: image (cached after the first run), bake for ${engine.name} ...`);
    const image = await engine.bake(name);
    // A fresh engine's first containers pay first-use costs (layers read from disk, …): one untimed replica per mode first.
    // Cold: the conventional start, the same image under the engine's runc.
    functions.push(await runFunction(name, (mode) => engine.start({ image, runtime: mode === 'cold' ? 'runc' : 'prebake', port: FUNCTION_PORT }), o, true));
  }
  return functions;
}

export async function runStudy(o: StudyOptions): Promise<StudyResults> {
  const which = o.engine ?? 'runc';
  let functions: FunctionResults[];
  let engineNotes: string[];
  const versions: Record<string, string> = { runc: runcVersion(), criu: criuVersion(), node: process.version, kernel: release() };
  if (which === 'runc') {
    functions = await runOnBundles(o);
    engineNotes = [
      "startup: spawn of `prebake create` to the first HTTP 200 from inside the replica's network namespace (polled every 1 ms), `prebake start` included; cold replicas run the same image without its checkpoint marker (PREBAKE_CHECKPOINT), which prebake hands to runc.",
      `latency: ${o.requests} requests of the function's own work per replica, sent one after another after startup.`,
      'runtime: the prebake runtime on plain OCI bundles (runc, CRIU), no engine daemon.',
      `client: warmed with 50 requests to a server of its own before each replica${PIN ? `; for the latency requests the client is moved to CPU 0 and the replica to CPUs 1-${cpus().length - 1} (runc update --cpuset-cpus), in both modes; startup is timed unpinned` : ''}.`,
    ];
  } else {
    o.progress(`starting a private ${which} ...`);
    const engine = await startEngine(which);
    try {
      const [name, version] = engine.version.split(' ') as [string, string];
      versions[name] = version;
      functions = await runOnEngine(engine, o);
      engineNotes = [
        `startup: spawn of \`${engine.describe.prebake}\` to the first HTTP 200, polled every 1 ms ${engine.describe.reached}; cold replicas are the same command with runc: ${engine.describe.runc}.`,
        `latency: ${o.requests} requests of the function's own work per replica, sent one after another after startup, by the same way${cpus().length >= 2 ? `, with the client on CPU 0 and the container moved to CPUs 1-${cpus().length - 1} (${which} update), in both modes; startup is timed unpinned` : ''}.`,
        'warm-up: before the runs of each function, one replica of each mode, checked, not kept.',
        `runtime: the prebake runtime under ${engine.version}, started privately for the study; images baked with prebake-build --target ${which}.`,
      ];
    } finally {
      await engine.stop();
    }
  }
  return {
    meta: {
      runs: o.runs,
      machine: `${cpus().length} CPUs (${cpus()[0]?.model.trim() ?? '?'}), kernel ${release()}`,
      versions,
      command: o.command,
      date: new Date().toISOString(),
      notes: engineNotes,
    },
    functions,
  };
}
