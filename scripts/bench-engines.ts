// Benchmark under real engines, each started privately and stopped before the next (docker: its own
// dockerd and containerd; containerd: its own containerd, driven by ctr; containerd-cni: the same
// with each task in a CNI bridge network's namespace, joined by path; cri: pods through its own
// containerd's CRI plugin; podman: its own config and storage). Per engine and function,
// interleaved rounds of `run -d` -> first HTTP 200 (on the published port, the CNI address or the
// pod IP; a plain ctr task from inside its network namespace) of the image baked for the engine's
// target: prebake restoring it, prebake starting it cold (checkpoint turned off) and plain runc;
// then `run --rm IMAGE /bin/true` of an image that is not prebaked, runc vs prebake (what the
// wrapper costs a container it only passes to runc).
//
//   npm run bench:engines -- [--runs N] [--engines docker,containerd,containerd-cni,cri,podman] [--functions noop,markdown]

import { parseArgs } from 'node:util';
import { SPEC_PROBE_IMAGE } from '../src/bake/target.ts';
import { ENGINE_NAMES, type Engine, type EngineName, isEngineName, startEngine, type StartOptions, stopEnginesOnSignal, stoppingOnSignal } from '../lab/engines/engine.ts';
import { FUNCTION_PORT, FUNCTIONS, type FunctionName, isFunctionName } from '../lab/functions.ts';
import { median, quantile } from '../lab/study/stats.ts';

const VARIANTS = ['prebake, restored', 'prebake, cold', 'runc, cold'] as const;
type Variant = (typeof VARIANTS)[number];

const variantOptions: Record<Variant, Pick<StartOptions, 'runtime' | 'checkpointOff'>> = {
  'prebake, restored': { runtime: 'prebake' },
  'prebake, cold': { runtime: 'prebake', checkpointOff: true },
  'runc, cold': { runtime: 'runc' },
};

interface Measured {
  startup: Record<FunctionName, Record<Variant, number[]>>;
  served: Record<FunctionName, Record<Variant, number[]>>;
  runRm: { runc: number[]; prebake: number[] };
}

const log = (l: string) => process.stderr.write(`${l}\n`);

async function benchEngine(engine: Engine, functions: FunctionName[], runs: number): Promise<Measured> {
  const images = {} as Record<FunctionName, string>;
  for (const fn of functions) {
    log(`${engine.name}: baking ${fn} ...`);
    images[fn] = await engine.bake(fn);
  }
  const empty = () => Object.fromEntries(functions.map((f) => [f, Object.fromEntries(VARIANTS.map((v) => [v, [] as number[]]))])) as Measured['startup'];
  const m: Measured = { startup: empty(), served: empty(), runRm: { runc: [], prebake: [] } };
  // Round 0 warms the engine up (image layers in the page cache, first-use set-up) and is not kept.
  for (let i = 0; i <= runs; i++) {
    const line: string[] = [];
    for (const [j, fn] of functions.entries()) {
      // Rotate the order each round, so that no variant always follows the same one.
      for (const v of VARIANTS.map((_, k) => VARIANTS[(k + i + j) % VARIANTS.length]!)) {
        const c = await engine.start({ image: images[fn], port: FUNCTION_PORT, ...variantOptions[v] });
        await c.remove();
        const served = Number((JSON.parse(c.first.body) as { served: number }).served);
        // A benchmark of restores that fell back to cold starts (or the reverse) would measure the wrong thing.
        if (v === 'prebake, restored' ? served <= 1 : served !== 1) throw new Error(`${engine.name}, ${fn}, ${v}: the first answer says served ${served}`);
        if (i === 0) continue;
        m.startup[fn][v].push(c.startupMs);
        m.served[fn][v].push(served);
        line.push(`${fn} ${v} ${c.startupMs.toFixed(0)}`);
      }
    }
    for (const rt of i % 2 ? (['prebake', 'runc'] as const) : (['runc', 'prebake'] as const)) {
      const ms = await engine.runRm(SPEC_PROBE_IMAGE, rt, ['/bin/true']);
      if (i > 0) m.runRm[rt].push(ms);
    }
    log(`  ${engine.name} round ${i}/${runs}${i === 0 ? ' (warm-up)' : `: ${line.join(', ')} ms`}`);
  }
  return m;
}

const fmt = (v: number) => v.toFixed(0).padStart(6);
const row = (name: string, xs: number[]) => `${name.padEnd(56)} ${fmt(quantile(xs, 0.5))} ${fmt(quantile(xs, 0.1))} ${fmt(quantile(xs, 0.9))}`;

function table(engine: Engine, m: Measured, functions: FunctionName[], runs: number): string {
  const [cmd, rm] = [engine.describe.run, engine.describe.runRm];
  const out = [`${engine.version}, ${runs} interleaved runs of each; ms`, ''];
  for (const fn of functions) {
    const s = m.startup[fn];
    out.push(`${`${cmd} -> first HTTP 200, ${fn}`.padEnd(56)} median    p10    p90`);
    const label: Record<Variant, string> = { 'prebake, restored': 'prebake, restored', 'prebake, cold': `prebake, cold (${engine.describe.off})`, 'runc, cold': 'runc, cold' };
    for (const v of VARIANTS) out.push(`${row(label[v], s[v])}   served first: ${[...new Set(m.served[fn][v])].join(',')}`);
    const r = median(s['prebake, restored']);
    out.push(`  restored / runc cold ${(r / median(s['runc, cold'])).toFixed(2)}x, restored / prebake cold ${(r / median(s['prebake, cold'])).toFixed(2)}x, prebake cold / runc cold ${(median(s['prebake, cold']) / median(s['runc, cold'])).toFixed(2)}x`, '');
  }
  out.push(`${`${rm} ${SPEC_PROBE_IMAGE} /bin/true`.padEnd(56)} median    p10    p90   (an image that is not prebaked)`);
  out.push(row('runc', m.runRm.runc), row('prebake', m.runRm.prebake));
  out.push(`  prebake - runc: ${(median(m.runRm.prebake) - median(m.runRm.runc)).toFixed(0)} ms`);
  return out.join('\n');
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    options: { runs: { type: 'string', default: '10' }, engines: { type: 'string', default: ENGINE_NAMES.join(',') }, functions: { type: 'string', default: 'noop,markdown' } },
  });
  const runs = Number(values.runs);
  if (!Number.isInteger(runs) || runs < 1) throw new Error(`--runs ${values.runs}: expected an integer >= 1`);
  const engines = values.engines.split(',').filter(Boolean);
  const badEngine = engines.filter((e) => !isEngineName(e));
  if (badEngine.length || !engines.length) throw new Error(`--engines: no engine ${badEngine.join(', ')} (there are ${ENGINE_NAMES.join(', ')})`);
  const functions = values.functions.split(',').filter(Boolean);
  const badFn = functions.filter((f) => !isFunctionName(f));
  if (badFn.length || !functions.length) throw new Error(`--functions: no function ${badFn.join(', ')} (there are ${Object.keys(FUNCTIONS).join(', ')})`);
  stopEnginesOnSignal(log);
  process.stdout.write(`npm run bench:engines -- --runs ${runs} --engines ${engines.join(',')} --functions ${functions.join(',')}   (${new Date().toISOString()})\n`);
  for (const name of engines as EngineName[]) {
    log(`starting a private ${name} ...`);
    const engine = await startEngine(name);
    try {
      const m = await benchEngine(engine, functions as FunctionName[], runs);
      process.stdout.write(`\n${table(engine, m, functions as FunctionName[], runs)}\n`);
    } finally {
      log(`stopping ${name} ...`);
      await engine.stop();
    }
  }
}

main().catch((e: unknown) => {
  if (stoppingOnSignal()) return;
  process.stderr.write(`bench-engines: ${(e as Error).stack ?? String(e)}\n`);
  process.exitCode = 1;
});
