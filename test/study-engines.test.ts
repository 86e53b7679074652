// The study runner under an engine: a tiny study of markdown through a private docker (dockerd and
// containerd started and stopped by runStudy), replicas started by `docker run -d --runtime=prebake`
// from an image baked with --target docker; every prebaked replica restored, every cold one not.

import test from 'ava';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeReport } from '../lab/study/report.ts';
import { runStudy } from '../lab/study/run.ts';

test('a tiny study of markdown under docker: every prebaked replica restored, the report written', async (t) => {
  const lines: string[] = [];
  const results = await runStudy({ functions: ['markdown'], runs: 2, requests: 2, engine: 'docker', command: 'npm run demo -- --engine docker', progress: (l) => lines.push(l) });
  t.log(lines.join('\n'));
  const f = results.functions[0]!;
  t.is(f.name, 'markdown');
  t.is(f.startupMs.cold.length, 2);
  t.is(f.startupMs.prebaked.length, 2);
  t.is(f.latencyMs.prebaked.length, 4);
  for (const ms of [...f.startupMs.cold, ...f.startupMs.prebaked]) t.true(ms > 0 && ms < 60000, `startup ${ms} ms`);
  const prebaked = f.replicas!.filter((r) => r.mode === 'prebaked');
  const cold = f.replicas!.filter((r) => r.mode === 'cold');
  t.is(prebaked.length, 2);
  for (const r of prebaked) {
    t.true(r.restored, `a prebaked replica says restored ${r.restored} (served ${r.served})`);
    t.true(r.served > 1, `a prebaked replica answered served ${r.served}: a cold start says 1`);
  }
  for (const r of cold) t.deepEqual([r.served, r.restored], [1, false]);
  t.is(new Set(prebaked.map((r) => r.replica)).size, 2, 'each restored replica has an identity of its own');
  t.regex(results.meta.versions.docker ?? '', /^\d+\.\d+/);

  const dir = mkdtempSync(join(tmpdir(), 'prebake-report-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeReport(dir, results);
  const report = readFileSync(join(dir, 'report.md'), 'utf8');
  t.regex(report, /### markdown/);
  t.regex(report, /docker run -d --runtime=prebake/);
  t.regex(report, /npm run demo -- --engine docker/);
  t.true(existsSync(join(dir, 'startup.svg')) && existsSync(join(dir, 'latency-markdown.svg')));
});
