// `prebake doctor` reports this host's CRIU, runc, kernel, userfaultfd, probe cache, host mounts and cgroup layout.

import test from 'ava';
import { execFileSync, spawnSync } from 'node:child_process';
import { PREBAKE } from '../lab/bundle.ts';

test('doctor --json reports each check, with the versions found on this host', (t) => {
  const checks = JSON.parse(execFileSync(PREBAKE, ['doctor', '--json'], { encoding: 'utf8' })) as { name: string; ok: boolean; detail: string }[];
  const by = Object.fromEntries(checks.map((c) => [c.name, c]));
  t.deepEqual(Object.keys(by), ['kernel', 'runc', 'criu', 'criu check', 'lazy restore', 'criu kernel probe cache', 'host mounts', 'cgroups']);
  t.true(by['lazy restore']!.ok, 'this kernel has userfaultfd: the lazy restore tests run on it');
  t.true(by.criu!.ok);
  t.is(by.criu!.detail, /Version:\s*(\S+)/.exec(execFileSync('criu', ['--version'], { encoding: 'utf8' }))![1]!);
  t.regex(by.runc!.detail, /1\.\d+\.\d+/);
  t.true(by['criu check']!.ok);
  t.is(by.kernel!.detail, execFileSync('uname', ['-r'], { encoding: 'utf8' }).trim());
});

test('doctor fails and names the problem when runc cannot be run', (t) => {
  const r = spawnSync(PREBAKE, ['doctor'], { encoding: 'utf8', env: { ...process.env, PREBAKE_RUNC: '/nonexistent/runc' } });
  t.is(r.status, 1);
  t.regex(r.stdout, /FAIL\s+runc\s+.*nonexistent\/runc/);
});

test('doctor checks the CRIU that --criu names, as create hands it to runc', (t) => {
  const r = spawnSync(PREBAKE, ['--criu', '/nonexistent/criu', 'doctor'], { encoding: 'utf8' });
  t.is(r.status, 1, r.stdout);
  t.regex(r.stdout, /FAIL\s+criu\s+\/nonexistent\/criu not found \(PATH=.*\); scripts\/setup\.sh builds CRIU >= 4\.2 into \/usr\/local\/sbin/);
  t.regex(r.stdout, /FAIL\s+criu check\s+.*\/nonexistent\/criu/);
});
