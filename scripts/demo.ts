// npm run demo: the cold-start study on this machine. Builds (cached) and bakes the function
// images, starts each cold and prebaked side by side, prints the table and writes report/.
// --engine runc (the default) runs the prebake runtime on OCI bundles, no engine daemon; docker,
// containerd or podman start that engine privately, bake each image for it and start the
// replicas through it (`docker run -d`, `ctr run -d`, `podman run -d`).
//
//   npm run demo -- [--engine runc|docker|containerd|podman] [--runs N] [--requests M] [--functions noop,markdown,resize,ml] [--out DIR]

import { parseArgs } from 'node:util';
import { stopEnginesOnSignal, stoppingOnSignal } from '../src/engines/engine.ts';
import { FUNCTIONS, type FunctionName, isFunctionName } from '../src/image/functions.ts';
import { consoleTable, writeReport } from '../src/study/report.ts';
import { runStudy, STUDY_ENGINES, type StudyEngine } from '../src/study/run.ts';

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    options: { engine: { type: 'string', default: 'runc' }, runs: { type: 'string', default: '10' }, requests: { type: 'string', default: '20' }, functions: { type: 'string', default: Object.keys(FUNCTIONS).join(',') }, out: { type: 'string', default: 'report' } },
  });
  const functions = values.functions.split(',').filter(Boolean);
  const unknown = functions.filter((f) => !isFunctionName(f));
  if (unknown.length) throw new Error(`--functions: no function ${unknown.join(', ')} (there are ${Object.keys(FUNCTIONS).join(', ')})`);
  const engine = values.engine as StudyEngine;
  if (!STUDY_ENGINES.includes(engine)) throw new Error(`--engine ${values.engine}: expected one of ${STUDY_ENGINES.join(', ')}`);
  const runs = Number(values.runs);
  const requests = Number(values.requests);
  if (!Number.isInteger(runs) || runs < 2) throw new Error(`--runs ${values.runs}: expected an integer >= 2`);
  if (!Number.isInteger(requests) || requests < 1) throw new Error(`--requests ${values.requests}: expected an integer >= 1`);
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
