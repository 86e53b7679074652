// Benchmark under a real docker (dockerd + containerd started here, as the tests do): for the noop
// function, `docker run -d` -> first HTTP 200 on the published port, interleaved: prebake restoring
// the baked image, prebake starting it cold (PREBAKE_CHECKPOINT=off), and plain runc; and
// `docker run --rm IMAGE true` with runc vs with prebake (the wrapper's cost under an engine).
//
//   npm run bench:engines -- [--runs N]

import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { REPO } from '../test/helpers/bundle.ts';
import { startContainerd, startDockerd } from '../test/helpers/engines.ts';
import { median, quantile } from '../src/study/stats.ts';
import { noopImage } from '../test/helpers/images.ts';

const IMAGE = 'prebake/noop:baked';

async function main() {
  const runsArg = process.argv.indexOf('--runs');
  const runs = runsArg > 0 ? Number(process.argv[runsArg + 1]) : 10;
  const ctd = await startContainerd();
  const dk = await startDockerd(ctd);
  const docker = (args: string[]) => spawnSync('docker', args, { env: dk.env, encoding: 'utf8' });
  try {
    process.stderr.write('baking the noop image for docker ...\n');
    const b = spawnSync(join(REPO, 'bin/prebake-build'), ['--quiet', '--target', 'docker', `oci:${await noopImage()}:latest`, `docker-daemon:${IMAGE}`], { env: dk.env, encoding: 'utf8' });
    if (b.status !== 0) throw new Error(`prebake-build: ${b.stderr}`);
    const variants = {
      'prebake, restored': ['--runtime=prebake'],
      'prebake, cold (PREBAKE_CHECKPOINT=off)': ['--runtime=prebake', '-e', 'PREBAKE_CHECKPOINT=off'],
      'runc, cold': ['--runtime=runc'],
    } as const;
    type V = keyof typeof variants;
    const times: Record<V, number[]> = { 'prebake, restored': [], 'prebake, cold (PREBAKE_CHECKPOINT=off)': [], 'runc, cold': [] };
    const served: Record<V, number[]> = { 'prebake, restored': [], 'prebake, cold (PREBAKE_CHECKPOINT=off)': [], 'runc, cold': [] };
    const names = Object.keys(variants) as V[];
    let port = 18600;
    for (let i = 0; i < runs + 1; i++) {
      for (const [k, v] of names.map((_, j) => names[(j + i) % names.length]!).entries()) {
        void k;
        const p = port++;
        const t0 = performance.now();
        const run = docker(['run', '-d', ...variants[v], '-p', `127.0.0.1:${p}:8080`, IMAGE]);
        if (run.status !== 0) throw new Error(`docker run (${v}): ${run.stderr}`);
        let body = '';
        for (let n = 0; n < 2000 && !body; n++) body = spawnSync('curl', ['-s', '-m', '1', `http://127.0.0.1:${p}/`], { encoding: 'utf8' }).stdout;
        const ms = performance.now() - t0;
        docker(['rm', '-f', run.stdout.trim()]);
        if (i === 0) continue; // warm-up round
        times[v].push(ms);
        served[v].push((JSON.parse(body) as { served: number }).served);
      }
      process.stderr.write(`  round ${i}/${runs}${i === 0 ? ' (warm-up)' : ''}\n`);
    }
    const rmTimes = { runc: [] as number[], prebake: [] as number[] };
    for (let i = 0; i < runs; i++)
      for (const rt of ['runc', 'prebake'] as const) {
        const t0 = performance.now();
        const r = docker(['run', '--rm', `--runtime=${rt}`, 'prebake/spec-probe:1', '/bin/true']);
        if (r.status !== 0) throw new Error(`docker run --rm (${rt}): ${r.stderr}`);
        rmTimes[rt].push(performance.now() - t0);
      }
    const row = (name: string, xs: number[]) => `${name.padEnd(42)} ${quantile(xs, 0.5).toFixed(0).padStart(6)} ${quantile(xs, 0.1).toFixed(0).padStart(6)} ${quantile(xs, 0.9).toFixed(0).padStart(6)}`;
    const out = [
      `docker ${docker(['version', '--format', '{{.Server.Version}}']).stdout.trim()}, ${runs} interleaved runs each; ms: median p10 p90`,
      '',
      'docker run -d -> first HTTP 200 (noop function)',
      ...names.map((v) => `${row(v, times[v])}   served on first request: ${[...new Set(served[v])].join(',')}`),
      `  restored / runc cold: ${(median(times['prebake, restored']) / median(times['runc, cold'])).toFixed(2)}x   restored / prebake cold: ${(median(times['prebake, restored']) / median(times['prebake, cold (PREBAKE_CHECKPOINT=off)'])).toFixed(2)}x`,
      '',
      'docker run --rm spec-probe /bin/true',
      row('runc', rmTimes.runc),
      row('prebake', rmTimes.prebake),
      `  prebake - runc: ${(median(rmTimes.prebake) - median(rmTimes.runc)).toFixed(0)} ms`,
    ];
    process.stdout.write(`\n${out.join('\n')}\n`);
  } finally {
    await dk.stop();
    await ctd.stop();
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`bench-engines: ${(e as Error).stack ?? String(e)}\n`);
  process.exitCode = 1;
});
