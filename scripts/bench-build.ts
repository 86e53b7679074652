// Benchmark of prebake-build on the noop function image, measured in one run: bake time (and its
// steps) against one cold start of the same function, the checkpoint layer's size (compressed and
// raw) against the process's resident memory, and the verify time.
//
//   npm run bench:build -- [--runs N]

import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NetnsClient } from '../src/lib/netns.ts';
import { spawnPiped } from '../src/lib/pipe.ts';
import { bakeNoop, PORT } from '../lab/baked.ts';
import { overlayBundle, REPO, uniqueName } from '../lab/bundle.ts';
import { median } from '../lab/study/stats.ts';
import { functionImage } from '../lab/functions.ts';

interface BuildJson {
  steps: { step: string; ms: number }[];
  checkpoint: { files: number; bytes: number };
  layer: { digest: string; size: number };
}

const mb = (b: number) => `${(b / 1e6).toFixed(1)} MB`;

/** One cold start of the function under runc: spawn to first HTTP 200, and its RSS once serving. */
async function coldStart(layers: string[], spec: (netns: string) => object): Promise<{ ms: number; rssKb: number }> {
  const b = overlayBundle(layers);
  const id = uniqueName('bench-cold');
  const client = await NetnsClient.start(b.netns);
  try {
    b.writeSpec(spec(b.netnsPath) as never);
    const t0 = performance.now();
    const run = spawnPiped('runc', ['run', '--detach', '--bundle', b.dir, id]);
    if ((await run.exit) !== 0) throw new Error('runc run failed');
    await client.waitHttp({ port: PORT, path: '/', intervalMs: 1 });
    const ms = performance.now() - t0;
    const pid = JSON.parse(execFileSync('runc', ['state', id], { encoding: 'utf8' })).pid as number;
    const rssKb = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);
    run.close();
    return { ms, rssKb };
  } finally {
    client.close();
    spawnSync('runc', ['delete', '--force', id], { stdio: 'ignore' });
    b.cleanup();
  }
}

async function main() {
  const runsArg = process.argv.indexOf('--runs');
  const runs = runsArg > 0 ? Number(process.argv[runsArg + 1]) : 3;
  const image = await functionImage('noop');
  const baked = await bakeNoop();
  const builds: BuildJson[] = [];
  const totals: number[] = [];
  const colds: { ms: number; rssKb: number }[] = [];
  try {
    for (let i = 0; i < runs; i++) {
      colds.push(await coldStart(baked.baseLayers, (n) => baked.spec(n, (s) => (s.process!.env = s.process!.env!.filter((e) => !e.startsWith('PREBAKE_'))))));
      const out = mkdtempSync(join(tmpdir(), 'prebake-bench-build-'));
      try {
        const t0 = performance.now();
        const r = spawnSync(join(REPO, 'bin/prebake-build'), ['--json', '--quiet', '--target', 'runc', `oci:${image}:latest`, `oci:${out}/img:baked`], { encoding: 'utf8' });
        if (r.status !== 0) throw new Error(`prebake-build failed: ${r.stderr}`);
        totals.push(performance.now() - t0);
        builds.push(JSON.parse(r.stdout) as BuildJson);
      } finally {
        rmSync(out, { recursive: true, force: true });
      }
      process.stderr.write(`  run ${i + 1}/${runs}: bake ${(totals.at(-1)! / 1000).toFixed(1)} s, cold start ${colds.at(-1)!.ms.toFixed(0)} ms\n`);
    }
  } finally {
    baked.cleanup();
  }
  const step = (name: string) => median(builds.flatMap((b) => b.steps.filter((s) => s.step.startsWith(name)).slice(0, 1).map((s) => s.ms)));
  const cold = median(colds.map((c) => c.ms));
  const total = median(totals);
  const rss = median(colds.map((c) => c.rssKb)) * 1024;
  const layer = median(builds.map((b) => b.layer.size));
  const raw = median(builds.map((b) => b.checkpoint.bytes));
  const rows: [string, string][] = [
    ['prebake-build, whole run (median)', `${(total / 1000).toFixed(2)} s`],
    ...builds[0]!.steps.map((s) => [`  ${s.step}`, `${step(s.step).toFixed(0)} ms`] as [string, string]),
    ['one cold start, spawn -> HTTP 200 (median)', `${cold.toFixed(0)} ms`],
    ['bake / cold start', `${(total / cold).toFixed(1)}x`],
    ['bake without unpack / cold start', `${((total - step('unpack')) / cold).toFixed(1)}x`],
    ['verify (restore + probe) / cold start', `${(step('verify') / cold).toFixed(2)}x`],
    ['checkpoint files, raw', mb(raw)],
    ['checkpoint layer, gzip', `${mb(layer)} (${((100 * layer) / raw).toFixed(0)}% of raw)`],
    ["the function's RSS when serving (cold)", mb(rss)],
    ['raw checkpoint / RSS', `${(raw / rss).toFixed(2)}x`],
  ];
  const w = Math.max(...rows.map((r) => r[0].length));
  process.stdout.write(`\nprebake-build benchmark, noop function, ${runs} run(s)\n${rows.map(([k, v]) => `${k.padEnd(w)}  ${v}`).join('\n')}\n`);
}

main().catch((e: unknown) => {
  process.stderr.write(`bench-build: ${(e as Error).stack ?? String(e)}\n`);
  process.exitCode = 1;
});
