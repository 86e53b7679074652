// npm run demo: the cold-start study on this machine. Builds (cached) and bakes the function
// images, starts each cold and prebaked side by side, prints the table and writes report/.
// --engine runc (the default) runs the prebake runtime on OCI bundles, no engine daemon; docker,
// containerd or podman start that engine privately, bake each image for it and start the
// replicas through it (`docker run -d`, `ctr run -d`, `podman run -d`).
//
// --full is the seed study's size: 200 starts per function and mode, 200 requests after each.
// An estimate of the run's duration is printed before it starts.
//
//   npm run demo -- [--full] [--engine runc|docker|containerd|podman] [--runs N] [--requests M] [--functions noop,markdown,resize,ml,java,node] [--out DIR]

import { parseArgs } from 'node:util';
import { stopEnginesOnSignal, stoppingOnSignal } from '../lab/engines/engine.ts';
import { FUNCTIONS, type FunctionName, isFunctionName } from '../lab/functions.ts';
import { consoleTable, writeReport } from '../lab/study/report.ts';
import { runStudy, STUDY_ENGINES, type StudyEngine } from '../lab/study/run.ts';

/**
 * What one replica of each function typically costs here (docs/study.md, 2026-12-07, 2 cores):
 * cold and prebaked startup and one request's latency, ms; and what every replica costs besides
 * (its bundle, overlay, network namespace, client and teardown), from the ~3 min of the default run.
 */
const TYPICAL: Record<FunctionName, { cold: number; prebaked: number; request: number }> = {
  noop: { cold: 94, prebaked: 91, request: 0.6 },
  markdown: { cold: 125, prebaked: 85, request: 1.7 },
  resize: { cold: 206, prebaked: 93, request: 15 },
  ml: { cold: 2764, prebaked: 150, request: 45 },
  java: { cold: 1596, prebaked: 169, request: 4.3 },
  node: { cold: 410, prebaked: 126, request: 2 },
};
const PER_REPLICA_MS = 1500;

/** The run's expected duration in ms, images cached (a first build takes minutes more). */
function estimateMs(functions: FunctionName[], runs: number, requests: number): number {
  return functions.reduce((sum, f) => {
    const t = TYPICAL[f];
    return sum + runs * (t.cold + t.prebaked + 2 * (requests * t.request + PER_REPLICA_MS));
  }, 0);
}

const duration = (ms: number) => (ms < 90_000 ? `${Math.round(ms / 1000)} s` : ms < 5_400_000 ? `${Math.round(ms / 60_000)} min` : `${(ms / 3_600_000).toFixed(1)} h`);

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    options: { full: { type: 'boolean', default: false }, engine: { type: 'string', default: 'runc' }, runs: { type: 'string' }, requests: { type: 'string' }, functions: { type: 'string', default: Object.keys(FUNCTIONS).join(',') }, out: { type: 'string', default: 'report' } },
  });
  if (values.full && (values.runs !== undefined || values.requests !== undefined)) throw new Error('--full sets --runs 200 --requests 200: give either');
  const functions = values.functions.split(',').filter(Boolean);
  const unknown = functions.filter((f) => !isFunctionName(f));
  if (unknown.length) throw new Error(`--functions: no function ${unknown.join(', ')} (there are ${Object.keys(FUNCTIONS).join(', ')})`);
  const engine = values.engine as StudyEngine;
  if (!STUDY_ENGINES.includes(engine)) throw new Error(`--engine ${values.engine}: expected one of ${STUDY_ENGINES.join(', ')}`);
  const runs = Number(values.runs ?? (values.full ? 200 : 10));
  const requests = Number(values.requests ?? (values.full ? 200 : 20));
  if (!Number.isInteger(runs) || runs < 2) throw new Error(`--runs ${values.runs}: expected an integer >= 2`);
  if (!Number.isInteger(requests) || requests < 1) throw new Error(`--requests ${values.requests}: expected an integer >= 1`);
  const estimate = estimateMs(functions as FunctionName[], runs, requests);
  process.stderr.write(
    `demo: ${runs} run(s) per function and mode, ${requests} request(s) after each start, ${functions.join(', ')}${engine === 'runc' ? '' : ` through ${engine}`}: about ${duration(estimate)} once the images are built and baked (estimated from this machine's earlier runs)\n`,
  );
  stopEnginesOnSignal();
  const results = await runStudy({
    functions: functions as FunctionName[],
    runs,
    requests,
    engine,
    command: `npm run demo -- ${engine === 'runc' ? '' : `--engine ${engine} `}--runs ${runs} --requests ${requests} --functions ${functions.join(',')}`,
    progress: (l) => process.stderr.write(`${l}\n`),
  });
  const files = writeReport(values.out, results);
  const runtime = results.meta.notes?.find((n) => n.startsWith('runtime: ')) ?? '';
  process.stdout.write(`\n${runtime}\n${consoleTable(results)}\nreport: ${files.join(', ')}\n`);
  return 0;
}

main().then(
  (c) => (process.exitCode = c),
  (e: unknown) => {
    if (stoppingOnSignal()) return;
    process.stderr.write(`demo: ${(e as Error).message}\n`);
    process.exitCode = 1;
  },
);
