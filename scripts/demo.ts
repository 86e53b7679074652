// npm run demo: the cold-start study on this machine. Builds (cached) and bakes the function
// images, starts each cold and prebaked side by side, prints the table and writes report/.
//
//   npm run demo -- [--runs N] [--requests M] [--functions noop,markdown,resize,ml] [--out DIR]

import { parseArgs } from 'node:util';
import { FUNCTIONS, type FunctionName, isFunctionName } from '../src/image/functions.ts';
import { consoleTable, writeReport } from '../src/study/report.ts';
import { runStudy } from '../src/study/run.ts';

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    options: { runs: { type: 'string', default: '10' }, requests: { type: 'string', default: '20' }, functions: { type: 'string', default: Object.keys(FUNCTIONS).join(',') }, out: { type: 'string', default: 'report' } },
  });
  const functions = values.functions.split(',').filter(Boolean);
  const unknown = functions.filter((f) => !isFunctionName(f));
  if (unknown.length) throw new Error(`--functions: no function ${unknown.join(', ')} (there are ${Object.keys(FUNCTIONS).join(', ')})`);
  const runs = Number(values.runs);
  const requests = Number(values.requests);
  if (!Number.isInteger(runs) || runs < 2) throw new Error(`--runs ${values.runs}: expected an integer >= 2`);
  if (!Number.isInteger(requests) || requests < 1) throw new Error(`--requests ${values.requests}: expected an integer >= 1`);
  const results = await runStudy({
    functions: functions as FunctionName[],
    runs,
    requests,
    command: `npm run demo -- --runs ${runs} --requests ${requests} --functions ${functions.join(',')}`,
    progress: (l) => process.stderr.write(`${l}\n`),
  });
  const files = writeReport(values.out, results);
  process.stdout.write(`\n${consoleTable(results)}\nreport: ${files.join(', ')}\n`);
  return 0;
}

main().then(
  (c) => (process.exitCode = c),
  (e: unknown) => {
    process.stderr.write(`demo: ${(e as Error).message}\n`);
    process.exitCode = 1;
  },
);
