// Benchmark of the prebake runtime against raw runc, measured side by side in one run
// (interleaved rounds, never one variant's block after another's):
//  (a) the calls prebake only passes through (`state` of a running container, `list`, `delete`
//      of a missing id): prebake vs runc, median ms each; target prebake <= runc + 3 ms;
//  (b) create -> first HTTP 200 of the baked noop function: `prebake create` restoring the
//      checkpoint (a restored container serves once create returns; its `start`, a no-op, is
//      timed after the first 200), the same with the checkpoint's verified-store entry removed before the create
//      (the first restore of a checkpoint on a host: every checkpoint file hashed), raw `runc
//      restore` of the same checkpoint, and a cold `prebake create`+`start`; target prebake
//      restore <= raw restore + 10 ms. Plus where a restore's time goes (prebake's Node side,
//      runc, CRIU's restore.log);
//  (c) what the checks cost, on a checkpoint already in the verified store and at first sight
//      (signature, every file copied into the store and hashed), against the cold start; target:
//      the digest check never makes a restore slower than a cold start.
//
//   npm run -s bench:runtime -- [--runs N (10)] [--calls N (30)] [--warmup N (1)] [--json]
//
// Needs root, runc and CRIU (scripts/setup.sh). Builds nothing itself: `npm run bench:runtime`
// runs setup and the build first. Progress goes to stderr; the tables (or, with --json, one JSON
// object) to stdout (`-s` keeps npm's banner out of it). It bakes its own checkpoint and leaves
// nothing behind (containers, mounts, netns, state dirs, its checkpoint's entry in the digest
// cache; no other entry is touched), also on Ctrl-C. Timings on a busy host
// are noisy: the header prints the load average, before and after.

import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmdirSync, rmSync, statSync } from 'node:fs';
import { cpus, loadavg, release, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type { Spec } from '../oci/runtime-spec.ts';
import { resolveInRootfs } from '../src/checkpoint/locate.ts';
import { storeEntry } from '../src/checkpoint/store.ts';
import { chooseCheckpoint } from '../src/checkpoint/verify.ts';
import { type CriuLog, type CriuPhases, criuGaps, criuPhases, parseCriuLog } from '../src/lib/criu-log.ts';
import { criuVersion, hostFacts, runcVersion } from '../src/lib/host.ts';
import { NetnsClient } from '../src/lib/netns.ts';
import { type PipedCommand, spawnPiped } from '../src/lib/pipe.ts';
import { containerStateDir, loadRuntimeConfig } from '../src/runtime/config.ts';
import { RESIDENT_FILES } from '../src/contract.ts';
import { cleanupAll, cleanupOnSignal, onCleanup } from '../lab/cleanup.ts';
import { textTable } from '../lab/study/report.ts';
import { median, quantile, summary, type Summary as StudySummary } from '../lab/study/stats.ts';
import { bakeNoop, type BakedFunction, PORT } from '../lab/baked.ts';
import { overlayBundle, PREBAKE, prebakeLogLines, rawRestoreEnv, REPO, restoreMs, runtimeDirs, type OverlayBundle, uniqueName } from '../lab/bundle.ts';

const PASS_TARGET_MS = 3;
const START_TARGET_MS = 10;
const HTTP_INTERVAL_MS = 1;
/** Untimed rounds (each variant once) that measure the CPU time of a create. */
const CPU_ROUNDS = 5;
const KDAT = '/run/criu.kdat';

// ---------------------------------------------------------------------------------------------
// Options

interface Options {
  runs: number;
  calls: number;
  warmup: number;
  json: boolean;
  /** Only (b): what `npm run demo` shows. */
  startOnly: boolean;
  /** (d): replicas restored at once (0: none). */
  burst: number;
}

function usage(msg?: string): never {
  if (msg) process.stderr.write(`bench-runtime: ${msg}\n`);
  process.stderr.write('usage: bench-runtime [--runs N (default 10)] [--calls N (default 30)] [--warmup N (default 1)] [--burst N (default 10, 0: none)] [--start-only] [--json]\n');
  process.exit(msg ? 2 : 0);
}

/** The options that take a count: the field and its least value. */
const COUNTS: Partial<Record<string, ['runs' | 'calls' | 'warmup' | 'burst', number]>> = { '--runs': ['runs', 1], '--calls': ['calls', 1], '--warmup': ['warmup', 0], '--burst': ['burst', 0] };
const FLAGS: Partial<Record<string, 'json' | 'startOnly'>> = { '--json': 'json', '--start-only': 'startOnly' };

function parseOptions(argv: string[]): Options {
  const o: Options = { runs: 10, calls: 30, warmup: 1, json: false, startOnly: false, burst: 10 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const [name, inline] = a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined];
    const num = (min: number) => {
      const v = inline ?? argv[++i];
      const n = Number(v);
      if (v === undefined || !Number.isInteger(n) || n < min) usage(`${name} needs an integer >= ${min}`);
      return n;
    };
    const count = COUNTS[name];
    const flag = FLAGS[name];
    if (count) o[count[0]] = num(count[1]);
    else if (flag) o[flag] = true;
    else if (name === '--help' || name === '-h') usage();
    else usage(`unknown argument ${a}`);
  }
  return o;
}

// ---------------------------------------------------------------------------------------------
// Statistics and formatting

type Summary = Pick<StudySummary, 'n' | 'median' | 'p10' | 'p90' | 'min' | 'max'>;
/** The order statistics the tables and the JSON report carry (lab/study/stats.ts's summary). */
function summarize(xs: readonly number[]): Summary {
  const s = summary(xs);
  return { n: s.n, median: s.median, p10: s.p10, p90: s.p90, min: s.min, max: s.max };
}

const f1 = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : '-');
const f2 = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : '-');
const signed = (x: number, f = f1) => (x >= 0 ? `+${f(x)}` : f(x));
const pct = (x: number) => (Number.isFinite(x) ? `${(100 * x).toFixed(1)}%` : '-');

const progress = (s: string) => process.stderr.write(`${s}\n`);

// Replicas hold mounts, network namespaces and containers: their clean-up also runs on Ctrl-C.
cleanupOnSignal(progress);

// ---------------------------------------------------------------------------------------------
// Runtime context

const cfg = loadRuntimeConfig();
type RuntimeDirs = ReturnType<typeof runtimeDirs>;
const RUNC = cfg.runc;

/** Milliseconds a call takes, with stdout/stderr on pipes (as an engine runs it). */
function timedCall(cmd: string, args: string[]): { ms: number; code: number; stdout: string } {
  const t0 = performance.now();
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
  const ms = performance.now() - t0;
  if (r.error) throw r.error;
  return { ms, code: r.status ?? 128, stdout: r.stdout };
}

/**
 * CPU time (user + sys) of every process a create runs: it is started in a cpuacct cgroup of its
 * own (cgroup v1), read once they have all exited. Only in rounds of their own, not timed: a
 * restore started in such a cgroup measured ~8 ms slower against the raw restore (+21 to +29 ms
 * in three runs, against +13.5 to +15 without it, 2026-12-07). The container's cgroup (the spec names none, so
 * runc makes it below runc's own) is counted up to then: the restored tasks' own restore work
 * (CRIU's restorer runs as them), a cold container's runc init; not what the function does once
 * it runs. null where there is no cpuacct hierarchy to make one in.
 */
const CPUACCT = '/sys/fs/cgroup/cpuacct';
let cpuSeq = 0;

/**
 * The CPU time (ns) the resident verdict program (src/runtime/resident.ts) has used so far, every
 * thread of it, and its pid: it answers a create outside the create's process tree, so its part
 * is counted from the difference around the create. Undefined when none runs.
 */
function residentCpu(): { pid: string; ns: number } | undefined {
  try {
    const pid = readFileSync(join(loadRuntimeConfig().stateBase, RESIDENT_FILES.pid), 'utf8').split(' ')[0]!;
    let ns = 0;
    for (const t of readdirSync(`/proc/${pid}/task`)) ns += Number(readFileSync(`/proc/${pid}/task/${t}/schedstat`, 'utf8').split(' ')[0]);
    return { pid, ns };
  } catch {
    return undefined;
  }
}
function cpuGroup(): { wrap(cmd: string, args: string[]): [string, string[]]; ms(): Promise<number>; remove(): void } | null {
  if (!existsSync(join(CPUACCT, 'cpuacct.usage'))) return null;
  const dir = join(CPUACCT, `prebake-bench-${process.pid}-${++cpuSeq}`);
  try {
    mkdirSync(dir);
  } catch {
    return null;
  }
  const procs = () => readFileSync(join(dir, 'cgroup.procs'), 'utf8').trim();
  let resident: ReturnType<typeof residentCpu>;
  return {
    wrap: (cmd, args) => {
      resident = residentCpu();
      return ['sh', ['-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', dir, cmd, ...args]];
    },
    async ms() {
      // The Node program may still be exiting when create has returned.
      for (let i = 0; i < 400 && procs(); i++) await new Promise((r) => setTimeout(r, 1));
      // The resident program's part (not its start, when this create started it).
      const after = residentCpu();
      const residentMs = resident && after && after.pid === resident.pid ? (after.ns - resident.ns) / 1e6 : 0;
      return Number(readFileSync(join(dir, 'cpuacct.usage'), 'utf8')) / 1e6 + residentMs;
    },
    remove() {
      try {
        rmdirSync(dir);
      } catch {
        /* the container's cgroup still below it (runc delete removes it): left */
      }
    },
  };
}

function runcForce(root: string, args: string[]): void {
  spawnSync(RUNC, ['--root', root, ...args], { stdio: 'ignore' });
}

/** Collects a piped command's output (the container keeps the pipe after the command exits). */
function collect(p: PipedCommand): () => string {
  let text = '';
  p.output.on('data', (d: Buffer) => {
    text += d.toString();
    if (text.length > 65536) text = text.slice(-32768);
  });
  p.output.on('error', () => {});
  return () => text;
}

async function runPiped(cmd: string, args: string[]): Promise<{ code: number; output: () => string; close: () => void }> {
  const p = spawnPiped(cmd, args);
  const output = collect(p);
  const code = await p.exit;
  return { code, output, close: p.close };
}

// ---------------------------------------------------------------------------------------------
// (a) pass-through calls

interface PassResult {
  call: string;
  prebake: Summary;
  runc: Summary;
  diffMs: number;
  /** null for a reference row without a target. */
  pass: boolean | null;
}

interface CreateCosts {
  /** `prebake --version` minus `runc --version`: what starting the Node side costs a call. */
  nodeStartMs: number;
  /** chooseCheckpoint() (manifest, compatibility, sha256 of every checkpoint file), in this process. */
  verifyMs: number;
  /** chooseCheckpoint() with the checkpoint in the store (signature, manifest, compatibility), in this process. */
  verifyCachedMs: number;
  checkpointBytes: number;
}

async function benchPassThrough(baked: BakedFunction, opts: Options): Promise<{ pass: PassResult[]; costs: CreateCosts }> {
  const rt = runtimeDirs();
  onCleanup(() => {
    rt.cleanup();
    rmSync(dirname(rt.state), { recursive: true, force: true });
  });
  const b = overlayBundle(baked.layers);
  const id = uniqueName('bench-pass');
  const pipes: (() => void)[] = [];
  const done = onCleanup(() => {
    runcForce(rt.root, ['delete', '--force', id]);
    for (const c of pipes) c();
    b.cleanup();
  });
  const spec = baked.spec(b.netnsPath);
  b.writeSpec(spec);
  const create = await runPiped(PREBAKE, ['--root', rt.root, 'create', '--bundle', b.dir, '--pid-file', join(b.dir, 'pid'), id]);
  pipes.push(create.close);
  if (create.code !== 0) throw new Error(`prebake create for the pass-through bench failed: ${create.output()}`);
  const start = await runPiped(PREBAKE, ['--root', rt.root, 'start', id]);
  pipes.push(start.close);
  if (start.code !== 0) throw new Error(`prebake start failed: ${start.output()}`);

  const missing = uniqueName('bench-missing');
  type Call = { name: string; args: string[]; target: boolean; check: (r: ReturnType<typeof timedCall>) => string | null };
  const calls: Call[] = [
    {
      name: 'state ID (running)',
      args: ['--root', rt.root, 'state', id],
      target: true,
      check: (r) => (r.code === 0 && (JSON.parse(r.stdout) as { status: string }).status === 'running' ? null : `state: code ${r.code} ${r.stdout}`),
    },
    {
      name: 'list',
      args: ['--root', rt.root, 'list'],
      target: true,
      check: (r) => (r.code === 0 && r.stdout.includes(id) ? null : `list: code ${r.code}`),
    },
    {
      name: 'delete (missing id)',
      args: ['--root', rt.root, 'delete', missing],
      target: true,
      check: (r) => (r.code !== 0 ? null : 'delete of a missing id succeeded'),
    },
    // Not a pass-through: the Node path (as create takes it), for reference.
    { name: '--version (Node path, reference)', args: ['--version'], target: false, check: (r) => (r.code === 0 ? null : `--version: code ${r.code}`) },
  ];
  const ms = new Map(calls.map((c) => [c.name, { prebake: [] as number[], runc: [] as number[] }]));
  const warm = 3;
  for (let i = 0; i < warm + opts.calls; i++) {
    for (const c of calls) {
      // Alternate which side goes first, so that neither always runs on a just-warmed cache.
      const order = i % 2 === 0 ? (['prebake', 'runc'] as const) : (['runc', 'prebake'] as const);
      const codes: number[] = [];
      for (const who of order) {
        const r = timedCall(who === 'prebake' ? PREBAKE : RUNC, c.args);
        const bad = c.check(r);
        if (bad) throw new Error(`${who} ${bad}`);
        codes.push(r.code);
        if (i >= warm) ms.get(c.name)![who].push(r.ms);
      }
      if (codes[0] !== codes[1]) throw new Error(`${c.name}: prebake and runc exit with different codes (${codes.join(' vs ')})`);
    }
  }

  // What create's checks cost, measured here (not inside prebake): the checkpoint verification
  // importing every file into a store, and again with the store entry there.
  const root = resolveInRootfs(b.rootfs, '/.prebake');
  const facts = hostFacts('criu', cfg.stateBase);
  const cacheDir = mkdtempSync(join(tmpdir(), 'prebake-bench-cache-'));
  // A store of this process's own: the first call in each round imports (every file copied and
  // hashed), the second finds the entry. No signature needed here: signing is not what is timed.
  const policy = (store: string) => ({ trustDir: '/nonexistent', any: true, store });
  const verify: number[] = [];
  const verifyCached: number[] = [];
  let checkpointBytes = 0;
  try {
    for (let i = 0; i < 6; i++) {
      let t0 = performance.now();
      const store = join(cacheDir, String(i));
      const chosen = chooseCheckpoint(root, spec, facts, policy(store));
      if (i > 0) verify.push(performance.now() - t0);
      checkpointBytes = Object.values(chosen.manifest.files).reduce((n, f) => n + f.size, 0);
      t0 = performance.now();
      chooseCheckpoint(root, spec, facts, policy(store));
      if (i > 0) verifyCached.push(performance.now() - t0);
    }
  } finally {
    rmSync(cacheDir, { recursive: true, force: true });
  }
  done();

  const pass = calls.map((c) => {
    const m = ms.get(c.name)!;
    const prebake = summarize(m.prebake);
    const runc = summarize(m.runc);
    const diffMs = prebake.median - runc.median;
    return { call: c.name, prebake, runc, diffMs, pass: c.target ? diffMs <= PASS_TARGET_MS : null };
  });
  const version = pass.find((p) => p.pass === null)!;
  return { pass, costs: { nodeStartMs: version.diffMs, verifyMs: median(verify), verifyCachedMs: median(verifyCached), checkpointBytes } };
}

// ---------------------------------------------------------------------------------------------
// (b) create -> first HTTP 200

type Variant = 'prebake-restore' | 'prebake-restore-uncached' | 'raw-restore' | 'cold';
const VARIANTS: readonly Variant[] = ['prebake-restore', 'prebake-restore-uncached', 'raw-restore', 'cold'];
const LABEL: Record<Variant, string> = {
  'prebake-restore': 'prebake create (restore)',
  'prebake-restore-uncached': 'prebake create (restore, first sight: verify + import)',
  'raw-restore': 'runc restore (raw)',
  cold: 'prebake create+start (cold)',
};

interface Replica {
  variant: Variant;
  /** Spawn of create (or restore) to the first HTTP 200. */
  totalMs: number;
  /** Spawn of create to its exit status. */
  createMs: number;
  /** `start`: timed in the total for the cold start; after the first 200 for a restore; 0 for the raw restore, which has none. */
  startMs: number;
  /** From the end of create (the cold start's start) to the first HTTP 200. */
  httpMs: number;
  /** The request after the first 200 (untimed): what one request costs once serving. */
  nextHttpMs: number;
  served: number;
  /** prebake's log `ms` for the restore (its runc restore call). */
  logMs?: number;
  /** CPU time (user + sys) of every process of its create (cpuGroup); undefined without cpuacct. */
  cpuMs?: number;
  /** Duration covered by CRIU's restore.log, and its phases. */
  criuMs?: number;
  phases?: CriuPhases;
  criuLog?: CriuLog;
}

function coldSpec(baked: BakedFunction, netnsPath: string): Spec {
  return baked.spec(netnsPath, (s) => {
    s.process!.env = (s.process!.env ?? []).filter((e) => !e.startsWith('PREBAKE_CHECKPOINT='));
  });
}

const prebakeLog = (logFile: string, id: string) => prebakeLogLines(logFile).filter((o) => o.id === id);

interface PreparedReplica {
  b: OverlayBundle;
  id: string;
  client: NetnsClient;
  /** Closers of the pipes of the commands run for it. */
  pipes: (() => void)[];
  /** Removes the container (runc delete --force), its prebake state, pipes, client and bundle; also on Ctrl-C. */
  teardown: () => void;
}

/**
 * Untimed: an overlay bundle of `layers` with its spec, an id, and a client running in its netns,
 * its HTTP path warmed (nothing listens yet: refused at once), so that the first 200 of a restored
 * replica does not pay for the client loading its HTTP code. `also` runs with the teardown.
 */
async function prepareReplica(rt: RuntimeDirs, layers: string[], spec: (netnsPath: string) => Spec, prefix: string, also?: () => void): Promise<PreparedReplica> {
  const b = overlayBundle(layers);
  const id = uniqueName(prefix);
  const pipes: (() => void)[] = [];
  let client: NetnsClient | undefined;
  const teardown = onCleanup(() => {
    client?.close();
    runcForce(rt.root, ['delete', '--force', id]);
    rmSync(containerStateDir(cfg, rt.root, id), { recursive: true, force: true });
    for (const c of pipes) c();
    b.cleanup();
    also?.();
  });
  try {
    b.writeSpec(spec(b.netnsPath));
    client = await NetnsClient.start(b.netns);
    await client.request({ port: PORT, path: '/', timeoutMs: 2000 }).then(
      () => {
        throw new Error(`port ${PORT} answers in a fresh netns`);
      },
      () => {},
    );
    return { b, id, client, pipes, teardown };
  } catch (e) {
    teardown();
    throw e;
  }
}

/**
 * One replica of `variant`, timed. `cacheEntry` is prebake's digest-cache entry for the baked
 * checkpoint: the uncached variant removes it before its create (and checks the create wrote it
 * again: it hashed every file), the cached one checks the create left it as it was.
 */
async function oneReplica(variant: Variant, baked: BakedFunction, rt: RuntimeDirs, cacheEntry: string, measureCpu = false): Promise<Replica> {
  // Untimed: a fresh overlay bundle, netns and spec, and a client already running in the netns.
  // The cold variant gets the image as it was before baking, without PREBAKE_CHECKPOINT.
  const cpu = measureCpu ? cpuGroup() : null;
  const { b, id, client, pipes, teardown } = await prepareReplica(
    rt,
    variant === 'cold' ? baked.baseLayers : baked.layers,
    (netnsPath) => (variant === 'cold' ? coldSpec(baked, netnsPath) : baked.spec(netnsPath)),
    `bench-${variant}`,
    () => cpu?.remove(),
  );
  try {
    const criuWork = join(b.dir, 'criu-work');
    // The raw restore gets CRIU's config from prebake's without `leave-stopped` (rawRestoreEnv):
    // the host mounts the checkpoint's external mounts are bound from. The prebake variants make
    // those mounts (each round starts with one of them).
    if (variant === 'raw-restore') mkdirSync(criuWork);
    const pidFile = join(b.dir, 'init.pid');
    if (variant === 'prebake-restore-uncached') rmSync(dirname(cacheEntry), { recursive: true, force: true });
    const entryBefore = statSync(cacheEntry, { bigint: true, throwIfNoEntry: false });
    if (variant === 'prebake-restore' && !entryBefore) throw new Error(`${LABEL[variant]}: no store entry ${cacheEntry} to use`);
    const createArgs =
      variant === 'raw-restore'
        ? // What prebake runs for this create (src/runtime/create.ts), without prebake.
          ['--root', rt.root, '--log', join(b.dir, 'runc-restore.log'), '--log-format', 'json', 'restore', '--detach',
           '--image-path', join(b.rootfs, '.prebake', 'checkpoint'), '--work-path', criuWork, '--bundle', b.dir, '--pid-file', pidFile, id]
        : ['--root', rt.root, '--log', rt.log, '--log-format', 'json', 'create', '--bundle', b.dir, '--pid-file', pidFile, id];

    // Timed: spawn of create -> its exit status -> first HTTP 200. A cold container serves only
    // after its start, so its start is timed in between; a restored one serves once create has
    // returned (as after the raw restore), and its start (a no-op that must succeed) follows the
    // first 200, timed on its own.
    const start = async () => {
      const p = spawnPiped(PREBAKE, ['--root', rt.root, 'start', id]);
      pipes.push(p.close);
      const out = collect(p);
      const code = await p.exit;
      if (code !== 0) throw new Error(`${LABEL[variant]}: start exit ${code}: ${out().trim()}`);
    };
    const t0 = performance.now();
    // (The cgroup's sh, ~1 ms, is the same for every variant.)
    const createCmd = variant === 'raw-restore' ? RUNC : PREBAKE;
    const createEnv = variant === 'raw-restore' ? rawRestoreEnv(b.dir) : undefined;
    const create = spawnPiped(...(cpu ? cpu.wrap(createCmd, createArgs) : [createCmd, createArgs] as [string, string[]]), createEnv);
    pipes.push(create.close);
    const createOut = collect(create);
    const createCode = await create.exit;
    const t1 = performance.now();
    if (createCode !== 0) throw new Error(`${LABEL[variant]}: exit ${createCode}: ${createOut().trim()}`);
    // Untimed: the create's CPU, once its processes are gone (a cold container waits for start).
    const cpuMs = await cpu?.ms();
    const t1b = performance.now();
    if (variant === 'cold') await start();
    const t2 = performance.now();
    const res = await client.waitHttp({ port: PORT, path: '/', intervalMs: HTTP_INTERVAL_MS, timeoutMs: 30_000 });
    const t3 = performance.now();
    let startMs = t2 - t1b;
    if (variant === 'prebake-restore' || variant === 'prebake-restore-uncached') {
      const s0 = performance.now();
      await start();
      startMs = performance.now() - s0;
    }
    const entryAfter = statSync(cacheEntry, { bigint: true, throwIfNoEntry: false });
    if (variant === 'prebake-restore-uncached' && !entryAfter) throw new Error(`${LABEL[variant]}: the create did not verify and import the checkpoint (${cacheEntry})`);
    if (variant === 'prebake-restore' && (entryAfter?.ino !== entryBefore?.ino || entryAfter?.mtimeNs !== entryBefore?.mtimeNs))
      throw new Error(`${LABEL[variant]}: the create imported the checkpoint again instead of using ${cacheEntry}`);

    // Untimed: check it was what it claims to be; read the logs while the container exists.
    if (res.status !== 200) throw new Error(`${LABEL[variant]}: HTTP ${res.status}`);
    const served = (JSON.parse(res.body) as { served: number }).served;
    const restored = variant !== 'cold';
    if (restored ? !(served > 1) : served !== 1) {
      const why = prebakeLog(rt.log, id).map((o) => o.msg).join('; ');
      throw new Error(`${LABEL[variant]}: served ${served}, expected ${restored ? '> 1 (a restore)' : '1 (a cold start)'}${why ? `; prebake: ${why}` : ''}`);
    }
    const t4 = performance.now();
    await client.request({ port: PORT, path: '/' });
    const r: Replica = { variant, totalMs: t1 - t0 + (t3 - t1b), createMs: t1 - t0, startMs, httpMs: t3 - t2, nextHttpMs: performance.now() - t4, served, ...(cpuMs !== undefined ? { cpuMs } : {}) };
    if (restored) {
      const logPath = variant === 'raw-restore' ? join(criuWork, 'restore.log') : join(containerStateDir(cfg, rt.root, id), 'criu', 'restore.log');
      const log = parseCriuLog(logPath);
      if (log) {
        r.criuMs = log.totalMs;
        r.phases = criuPhases(log) ?? undefined;
        r.criuLog = log;
      }
      if (variant !== 'raw-restore') r.logMs = restoreMs(rt.log, id);
    }
    return r;
  } finally {
    teardown();
  }
}

type Parts = Record<string, number>;

/** The checks' cost seen from outside: restores with the digests cached and uncached vs the cold start. */
interface ChecksResult {
  /** Median create -> first 200, digests uncached minus cached; and the median of per-round differences. */
  uncachedMinusCachedMs: number;
  pairedUncachedMinusCachedMs: number;
  /** prebake's part of a create: the create call minus the runc restore it logs (Node start, checks, bookkeeping). */
  aroundRuncCachedMs: number;
  aroundRuncUncachedMs: number;
  /** Median create -> first 200 minus the cold start's (negative: faster than cold); per-round medians too. */
  cachedVsColdMs: number;
  uncachedVsColdMs: number;
  pairedCachedVsColdMs: number;
  pairedUncachedVsColdMs: number;
  ratioCachedCold: number;
  ratioUncachedCold: number;
  /** The digest check must not make a restore slower than a cold start: uncached restore median < cold median. */
  pass: boolean;
}

interface StartResult {
  variants: Record<Variant, Summary & { parts: Parts }>;
  ratioRaw: number;
  ratioCold: number;
  diffRawMs: number;
  pairedDiffRawMs: number;
  pass: boolean;
  checks: ChecksResult;
  /** The prebake restore with the median total: its restore.log, broken down. */
  typicalRestore?: {
    totalMs: number;
    createMs: number;
    startMs: number;
    httpMs: number;
    prebakeLogMs?: number;
    criuMs: number;
    criuLines: number;
    phases?: CriuPhases;
    gaps: ReturnType<typeof criuGaps>;
  };
}

function partsOf(rs: Replica[]): Parts {
  const med = (f: (r: Replica) => number | undefined) => {
    const xs = rs.map(f).filter((x): x is number => typeof x === 'number' && Number.isFinite(x));
    return xs.length ? median(xs) : NaN;
  };
  const parts: Parts = {
    create: med((r) => r.createMs),
    start: med((r) => r.startMs),
    http: med((r) => r.httpMs),
    nextHttp: med((r) => r.nextHttpMs),
    prebakeLogMs: med((r) => r.logMs),
    criu: med((r) => r.criuMs),
    criuStartup: med((r) => r.phases?.startup),
    criuRestore: med((r) => r.phases?.restore),
    criuUnlock: med((r) => r.phases?.unlock),
    criuTail: med((r) => r.phases?.tail),
  };
  for (const k of Object.keys(parts)) if (!Number.isFinite(parts[k])) delete parts[k];
  return parts;
}

async function benchStart(baked: BakedFunction, opts: Options, cacheEntry: string): Promise<StartResult> {
  const rt = runtimeDirs();
  onCleanup(() => {
    rt.cleanup();
    rmSync(dirname(rt.state), { recursive: true, force: true });
  });
  // The cached variant needs the entry from the start; an untimed uncached create makes it.
  if (!existsSync(cacheEntry)) await oneReplica('prebake-restore-uncached', baked, rt, cacheEntry);
  const replicas: Replica[] = [];
  const rounds = opts.warmup + opts.runs;
  for (let i = 0; i < rounds; i++) {
    // Rotate the order each round: no variant always runs first (or right after another).
    const order = VARIANTS.map((_, k) => VARIANTS[(k + i) % VARIANTS.length]!);
    const line: string[] = [];
    for (const v of order) {
      const r = await oneReplica(v, baked, rt, cacheEntry);
      line.push(`${v} ${f1(r.totalMs)}`);
      if (i >= opts.warmup) replicas.push(r);
    }
    progress(`  ${i < opts.warmup ? 'warm-up' : `round ${i - opts.warmup + 1}/${opts.runs}`}: ${line.join(', ')} ms`);
  }
  // CPU time in rounds of their own, after the timed ones (see cpuGroup).
  const cpuMs = new Map<Variant, number[]>(VARIANTS.map((v) => [v, []]));
  for (let i = 0; i < CPU_ROUNDS; i++)
    for (const v of VARIANTS.map((_, k) => VARIANTS[(k + i) % VARIANTS.length]!)) {
      const r = await oneReplica(v, baked, rt, cacheEntry, true);
      if (r.cpuMs !== undefined) cpuMs.get(v)!.push(r.cpuMs);
    }
  if (CPU_ROUNDS) progress(`  CPU rounds: ${VARIANTS.map((v) => `${v} ${f1(median(cpuMs.get(v)!))}`).join(', ')} ms of CPU`);
  const of = (v: Variant) => replicas.filter((r) => r.variant === v);
  const variants = Object.fromEntries(
    VARIANTS.map((v) => [v, { ...summarize(of(v).map((r) => r.totalMs)), parts: { ...partsOf(of(v)), ...(cpuMs.get(v)!.length ? { cpu: median(cpuMs.get(v)!) } : {}) } }]),
  ) as StartResult['variants'];
  const pre = of('prebake-restore');
  const raw = of('raw-restore');
  // Replicas of one round ran next to each other: their difference is less exposed to drift.
  const paired = pre.map((r, i) => r.totalMs - (raw[i]?.totalMs ?? NaN)).filter(Number.isFinite);
  const diffRawMs = variants['prebake-restore'].median - variants['raw-restore'].median;
  const unc = of('prebake-restore-uncached');
  const cold = of('cold');
  const pairedMedian = (a: Replica[], b: Replica[]) => median(a.map((r, i) => r.totalMs - (b[i]?.totalMs ?? NaN)).filter(Number.isFinite));
  const around = (v: Variant) => variants[v].parts.create! - variants[v].parts.prebakeLogMs!;
  const checks: ChecksResult = {
    uncachedMinusCachedMs: variants['prebake-restore-uncached'].median - variants['prebake-restore'].median,
    pairedUncachedMinusCachedMs: pairedMedian(unc, pre),
    aroundRuncCachedMs: around('prebake-restore'),
    aroundRuncUncachedMs: around('prebake-restore-uncached'),
    cachedVsColdMs: variants['prebake-restore'].median - variants.cold.median,
    uncachedVsColdMs: variants['prebake-restore-uncached'].median - variants.cold.median,
    pairedCachedVsColdMs: pairedMedian(pre, cold),
    pairedUncachedVsColdMs: pairedMedian(unc, cold),
    ratioCachedCold: variants['prebake-restore'].median / variants.cold.median,
    ratioUncachedCold: variants['prebake-restore-uncached'].median / variants.cold.median,
    pass: variants['prebake-restore-uncached'].median < variants.cold.median,
  };
  const typical = [...pre].sort((a, b) => a.totalMs - b.totalMs)[Math.floor((pre.length - 1) / 2)];
  return {
    variants,
    ratioRaw: variants['prebake-restore'].median / variants['raw-restore'].median,
    ratioCold: variants['prebake-restore'].median / variants.cold.median,
    diffRawMs,
    pairedDiffRawMs: median(paired),
    pass: diffRawMs <= START_TARGET_MS,
    checks,
    typicalRestore: typical?.criuLog && {
      totalMs: typical.totalMs,
      createMs: typical.createMs,
      startMs: typical.startMs,
      httpMs: typical.httpMs,
      prebakeLogMs: typical.logMs,
      criuMs: typical.criuLog.totalMs,
      criuLines: typical.criuLog.lines.length,
      phases: typical.phases,
      gaps: criuGaps(typical.criuLog),
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Report

function environment() {
  const fsType = (p: string) => spawnSync('stat', ['-f', '-c', '%T', p], { encoding: 'utf8' }).stdout?.trim() || '?';
  return {
    kernel: release(),
    cpus: cpus().length,
    loadavg: loadavg().map((x) => Number(x.toFixed(2))),
    runc: `${RUNC} ${runcVersion(RUNC)}`,
    criu: criuVersion(),
    node: process.version,
    prebake: PREBAKE,
    snapshotBlob: existsSync(join(REPO, 'dist/prebake.blob')),
    kdatCache: existsSync(KDAT),
    runFs: fsType('/run'),
    criuRuncConf: existsSync('/etc/criu/runc.conf'),
  };
}

function report(env: ReturnType<typeof environment>, opts: Options, pass: PassResult[], costs: CreateCosts, start: StartResult): string {
  const out: string[] = [];
  out.push(`prebake runtime benchmark — kernel ${env.kernel}, ${env.cpus} CPUs, load ${env.loadavg.join(' ')}; ${env.runc}; CRIU ${env.criu}; node ${env.node}`);
  out.push(
    `/run is ${env.runFs}; ${KDAT} ${env.kdatCache ? 'present' : 'absent'}; /etc/criu/runc.conf ${env.criuRuncConf ? 'present' : 'absent'}; V8 snapshot blob ${env.snapshotBlob ? 'present' : 'absent'}`,
  );
  if (pass.length) {
    out.push('');
    out.push(`(a) pass-through calls, ${opts.calls} interleaved runs each (median ms, spawn to exit, stdout/stderr on pipes)`);
    out.push(
      textTable(
        ['call', 'runc', 'prebake', 'prebake - runc', `target <= +${PASS_TARGET_MS} ms`],
        pass.map((p) => [p.call, f2(p.runc.median), f2(p.prebake.median), signed(p.diffMs, f2), p.pass === null ? '-' : p.pass ? 'PASS' : 'MISS']),
      ),
    );
  }
  out.push('');
  out.push(`(b) spawn of create -> first HTTP 200, noop function, ${opts.runs} interleaved runs each (${opts.warmup} warm-up round(s) discarded), ms`);
  out.push(
    textTable(
      ['variant', 'median', 'p10', 'p90', 'min', 'max'],
      VARIANTS.map((v) => {
        const s = start.variants[v];
        return [LABEL[v], f1(s.median), f1(s.p10), f1(s.p90), f1(s.min), f1(s.max)];
      }),
    ),
  );
  out.push(`  prebake / raw restore: ${f2(start.ratioRaw)}x    prebake / cold: ${f2(start.ratioCold)}x`);
  out.push(
    `  prebake - raw restore: ${signed(start.diffRawMs)} ms (difference of medians; median of per-round differences ${signed(start.pairedDiffRawMs)} ms)   target <= +${START_TARGET_MS} ms: ${start.pass ? 'PASS' : 'MISS'}`,
  );
  const p = start.variants['prebake-restore'].parts;
  const u = start.variants['prebake-restore-uncached'].parts;
  const r = start.variants['raw-restore'].parts;
  const c = start.variants.cold.parts;
  const n = (x: number | undefined) => f1(x ?? NaN);
  out.push('');
  out.push('Where the time goes (medians over the replicas, ms)');
  out.push(
    textTable(
      ['', 'prebake restore', 'first sight', 'raw restore', 'prebake cold'],
      [
        ['create (or restore) call, spawn to exit', n(p.create), n(u.create), n(r.create), n(c.create)],
        ['  prebake around its runc call (create - log ms)', n(p.create! - p.prebakeLogMs!), n(u.create! - u.prebakeLogMs!), '-', '-'],
        [`    Node start (prebake --version - runc --version)`, n(costs.nodeStartMs), n(costs.nodeStartMs), '-', n(costs.nodeStartMs)],
        [`    checkpoint check, ${(costs.checkpointBytes / 1e6).toFixed(1)} MB (in-process)`, n(costs.verifyCachedMs), n(costs.verifyMs), '-', '-'],
        ['  runc restore (prebake log ms)', n(p.prebakeLogMs), n(u.prebakeLogMs), n(r.create), '-'],
        ['    runc outside CRIU (restore - restore.log)', n(p.prebakeLogMs! - p.criu!), n(u.prebakeLogMs! - u.criu!), n(r.create! - r.criu!), '-'],
        ['    CRIU restore.log, first to last line', n(p.criu), n(u.criu), n(r.criu), '-'],
        ['      start-up + kernel probing (to "Reading image tree")', n(p.criuStartup), n(u.criuStartup), n(r.criuStartup), '-'],
        ['      namespaces, mounts, files, memory, tasks', n(p.criuRestore), n(u.criuRestore), n(r.criuRestore), '-'],
        ['      network unlock (iptables) to tasks resumed', n(p.criuUnlock), n(u.criuUnlock), n(r.criuUnlock), '-'],
        ['      after resume (notifications, stats)', n(p.criuTail), n(u.criuTail), n(r.criuTail), '-'],
        ['first HTTP 200 after create (cold: after start; 1 ms polling)', n(p.http), n(u.http), n(r.http), n(c.http)],
        ['start (cold: before the 200; restore: a no-op, after it)', n(p.start), n(u.start), '-', n(c.start)],
        ['(the next request, untimed, for reference)', n(p.nextHttp), n(u.nextHttp), n(r.nextHttp), n(c.nextHttp)],
        [`CPU time, user + sys, of every process of the create (${CPU_ROUNDS} untimed rounds)`, n(p.cpu), n(u.cpu), n(r.cpu), n(c.cpu)],
      ],
    ),
  );
  if (p.cpu === undefined) out.push(`  CPU time not measured: no cpuacct cgroup hierarchy at ${CPUACCT} to count it in.`);
  else out.push(`  CPU: a restore takes ${f1(p.cpu)} ms of CPU (raw runc restore ${f1(r.cpu ?? NaN)}, prebake ${signed(p.cpu - (r.cpu ?? NaN))} ms), a cold create ${f1(c.cpu ?? NaN)} ms (its function's start after it not counted); on 2 CPUs a burst of restores is CPU-bound at ~${f1(2000 / p.cpu)} per second.`);
  out.push('  raw restore columns include the spawn of runc itself (sh + cat pipe, as for the others).');
  const k = start.checks;
  const coldMs = start.variants.cold.median;
  out.push('');
  out.push(`(c) the checks' cost: in the verified store vs first sight (its store entry removed before each create: signature, copy and hash of every file), against the cold start (${f1(coldMs)} ms), medians, ms`);
  out.push(
    textTable(
      ['', 'in the store', 'first sight'],
      [
        [`checks in-process (manifest, spec, ${(costs.checkpointBytes / 1e6).toFixed(1)} MB of checkpoint files)`, n(costs.verifyCachedMs), n(costs.verifyMs)],
        ['  as a share of the cold start', pct(costs.verifyCachedMs / coldMs), pct(costs.verifyMs / coldMs)],
        ["prebake's part of create (create - its runc restore)", n(k.aroundRuncCachedMs), n(k.aroundRuncUncachedMs)],
        ['create -> first HTTP 200', n(start.variants['prebake-restore'].median), n(start.variants['prebake-restore-uncached'].median)],
        ['  minus cold start (difference of medians)', signed(k.cachedVsColdMs), signed(k.uncachedVsColdMs)],
        ['  minus cold start (median of per-round differences)', signed(k.pairedCachedVsColdMs), signed(k.pairedUncachedVsColdMs)],
        ['  / cold start', `${f2(k.ratioCachedCold)}x`, `${f2(k.ratioUncachedCold)}x`],
      ],
    ),
  );
  out.push(`  first sight - in the store: ${signed(k.uncachedMinusCachedMs)} ms (difference of medians; median of per-round differences ${signed(k.pairedUncachedMinusCachedMs)} ms)`);
  out.push(
    `  first sight (signature, copy and hash of every file, then the restore, in series) vs cold start: ${f1(start.variants['prebake-restore-uncached'].median)} vs ${f1(coldMs)} ms (${k.pass ? 'faster' : 'slower'}; once per checkpoint and host)`,
  );
  const t = start.typicalRestore;
  if (t) {
    out.push('');
    out.push(
      `One restored replica (prebake, the median one): total ${f1(t.totalMs)} ms = create ${f1(t.createMs)} + HTTP ${f1(t.httpMs)} (start after: ${f1(t.startMs)}); ` +
        `prebake log ms=${t.prebakeLogMs ?? '?'}; CRIU restore.log ${f1(t.criuMs)} ms over ${t.criuLines} lines` +
        (t.phases ? ` (kdat cache ${t.phases.kdatCached ? 'used' : 'not used'})` : ''),
    );
    if (t.phases)
      out.push(
        `  phases: start-up ${f1(t.phases.startup)}, restore ${f1(t.phases.restore)}, network unlock -> resumed ${f1(t.phases.unlock)}, after resume ${f1(t.phases.tail)}`,
      );
    out.push('  largest steps between consecutive restore.log lines (ms, at ms):');
    for (const g of t.gaps) out.push(`    ${f1(g.ms).padStart(6)} at ${f1(g.at).padStart(6)}: "${g.before.slice(0, 60)}" -> "${g.after.slice(0, 60)}"`);
  }
  return out.join('\n');
}

// ---------------------------------------------------------------------------------------------
// (d) a burst: replicas of one image restored at once, as a scale-out creates them

interface BurstResult {
  n: number;
  /** Per replica: spawn of its create -> its first HTTP 200, all spawned at once. */
  readyMs: number[];
  /** The whole burst: first spawn -> last replica's first 200. */
  wallMs: number;
}

async function benchBurst(baked: BakedFunction, n: number): Promise<BurstResult> {
  const rt = runtimeDirs();
  onCleanup(() => rt.cleanup());
  // Untimed: every replica's bundle, netns, spec and client, ready before the first create.
  const replicas: PreparedReplica[] = [];
  try {
    for (let i = 0; i < n; i++) replicas.push(await prepareReplica(rt, baked.layers, (netnsPath) => baked.spec(netnsPath), 'bench-burst'));
    const t0 = performance.now();
    const readyMs = await Promise.all(
      replicas.map(async (r) => {
        const t = performance.now();
        const p = spawnPiped(PREBAKE, ['--root', rt.root, '--log', rt.log, '--log-format', 'json', 'create', '--bundle', r.b.dir, '--pid-file', join(r.b.dir, 'init.pid'), r.id]);
        r.pipes.push(p.close);
        const out = collect(p);
        const code = await p.exit;
        if (code !== 0) throw new Error(`burst: create of ${r.id} exited ${code}: ${out().trim()}`);
        const res = await r.client.waitHttp({ port: PORT, path: '/', intervalMs: HTTP_INTERVAL_MS, timeoutMs: 60_000 });
        const ms = performance.now() - t;
        const served = (JSON.parse(res.body) as { served: number }).served;
        if (!(served > 1)) throw new Error(`burst: ${r.id} served ${served}, not a restore: ${prebakeLog(rt.log, r.id).map((o) => o.msg).join('; ')}`);
        return ms;
      }),
    );
    return { n, readyMs, wallMs: performance.now() - t0 };
  } finally {
    for (const r of replicas) r.teardown();
  }
}

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2));
  if (process.getuid?.() !== 0) usage('must run as root (runc, CRIU, mounts, network namespaces)');
  if (!existsSync(join(REPO, 'dist/prebake.cjs'))) usage('dist/ is missing: run `npm run -s build` first (npm run bench:runtime does)');
  const env = environment();
  progress('baking the noop function (runc + CRIU) ...');
  const t0 = performance.now();
  const baked = await bakeNoop();
  onCleanup(() => baked.cleanup());
  // The verified store's entry for this bake's checkpoint: the first-sight ("uncached") variant
  // removes it (the create verifies and imports it again), and it goes at the end.
  const entryDir = storeEntry(cfg.store, readFileSync(join(baked.layers[0]!, '.prebake/manifest.json')));
  const cacheEntry = join(entryDir, 'ok');
  onCleanup(() => rmSync(entryDir, { recursive: true, force: true }));
  progress(`  baked in ${f1((performance.now() - t0) / 1000)} s`);
  try {
    let pass: PassResult[] = [];
    let costs: CreateCosts = { nodeStartMs: NaN, verifyMs: NaN, verifyCachedMs: NaN, checkpointBytes: 0 };
    if (!opts.startOnly) {
      progress(`(a) pass-through calls, ${opts.calls} runs each ...`);
      ({ pass, costs } = await benchPassThrough(baked, opts));
    }
    progress(`(b) create -> first HTTP 200, ${opts.runs} runs each (+${opts.warmup} warm-up) ...`);
    const start = await benchStart(baked, opts, cacheEntry);
    let burst: BurstResult | undefined;
    if (opts.burst > 0) {
      progress(`(d) a burst of ${opts.burst} restores at once ...`);
      burst = await benchBurst(baked, opts.burst);
    }
    const loadAfter = loadavg().map((x) => Number(x.toFixed(2)));
    if (opts.json) {
      const summary = {
        environment: { ...env, loadavgAfter: loadAfter },
        options: opts,
        targets: { passThroughMs: PASS_TARGET_MS, restoreOverRawMs: START_TARGET_MS, uncachedRestore: 'median below the cold start' },
        passThrough: pass,
        createCosts: costs,
        start: { ...start, labels: LABEL },
        ...(burst ? { burst: { ...burst, summary: summarize(burst.readyMs), overSingle: median(burst.readyMs) / start.variants['prebake-restore'].median } } : {}),
      };
      process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
    } else {
      const single = start.variants['prebake-restore'].median;
      const burstText = burst
        ? `\n(d) a burst: ${burst.n} replicas of the image restored at once (one prebake create each, spawned together), spawn -> first HTTP 200, ms\n` +
          `${textTable(['', 'median', 'p10', 'p90', 'max'], [[`each of ${burst.n}`, f1(median(burst.readyMs)), f1(quantile(burst.readyMs, 0.1)), f1(quantile(burst.readyMs, 0.9)), f1(Math.max(...burst.readyMs))]])}\n` +
          `  the median replica / one restore alone (${f1(single)} ms, (b)): ${f2(median(burst.readyMs) / single)}x   target <= 3x: ${median(burst.readyMs) / single <= 3 ? 'PASS' : 'MISS'}; the whole burst ${f1(burst.wallMs)} ms\n`
        : '';
      process.stdout.write(`\n${report(env, opts, pass, costs, start)}\n${burstText}(load average after: ${loadAfter.join(' ')})\n`);
    }
  } finally {
    cleanupAll();
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`bench-runtime: ${(e as Error).stack ?? String(e)}\n`);
  cleanupAll();
  process.exitCode = 1;
});
