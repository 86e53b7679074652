// The study runner end to end on one function: cold and restored replicas told apart, restored
// replicas renewing their identity after the restore signal, results fit for the report.

import test from 'ava';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeReport } from '../lab/study/report.ts';
import { runStudy } from '../lab/study/run.ts';

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
  // Where each startup went: the calls, and for a restore what prebake and CRIU logged of it.
  for (const r of f.replicas!) {
    const p = r.parts!;
    t.true(p.create > 0 && p.start > 0 && p.firstResponse >= 0, JSON.stringify(p));
    t.true(Math.abs(p.create + p.start + p.firstResponse - r.startupMs) < 0.5, `${JSON.stringify(p)} add up to ${r.startupMs}`);
    if (r.mode === 'prebaked') {
      t.true(p.runcRestore! > 0 && p.runcRestore! <= p.create, JSON.stringify(p));
      t.true(p.criu! > 0 && p.criu! < p.runcRestore! && p.criuRestore! > 0 && p.criuRestore! < p.criu!, JSON.stringify(p));
    } else t.is(p.runcRestore, undefined);
  }
  writeReport(dir, results);
  const report = readFileSync(join(dir, 'report.md'), 'utf8');
  t.regex(report, /### markdown/);
  t.regex(report, /\| where the startup goes \(median ms\) \| cold \| prebaked \|/);
  t.regex(report, /of it, the runc restore \(prebake's log\) \| +\| \d/);
  t.log(lines.join('\n'));
});
