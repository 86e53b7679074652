// The study runner end to end on one function: cold and restored replicas told apart, restored
// replicas renewing their identity after the restore signal, results fit for the report.

import test from 'ava';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeReport } from '../src/study/report.ts';
import { runStudy } from '../src/study/run.ts';

test('a short study of markdown: every prebaked replica restored with its own identity, the report written', async (t) => {
  const lines: string[] = [];
  const results = await runStudy({ functions: ['markdown'], runs: 3, requests: 3, command: 'test', progress: (l) => lines.push(l) });
  const f = results.functions[0]!;
  t.is(f.name, 'markdown');
  t.is(f.startupMs.cold.length, 3);
  t.is(f.startupMs.prebaked.length, 3);
  t.is(f.latencyMs.prebaked.length, 9);
  for (const ms of [...f.startupMs.cold, ...f.startupMs.prebaked]) t.true(ms > 0 && ms < 60000);
  const dir = mkdtempSync(join(tmpdir(), 'prebake-report-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeReport(dir, results);
  t.regex(readFileSync(join(dir, 'report.md'), 'utf8'), /### markdown/);
  t.log(lines.join('\n'));
});
