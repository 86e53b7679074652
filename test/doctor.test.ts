// `prebake doctor` reports this host's CRIU, runc, kernel, userfaultfd, probe cache, host mounts,
// verified store, resident verdict program and cgroup layout.

import test from 'ava';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PREBAKE } from '../lab/bundle.ts';

test('doctor --json reports each check, with the versions found on this host', (t) => {
  const checks = JSON.parse(execFileSync(PREBAKE, ['doctor', '--json'], { encoding: 'utf8' })) as { name: string; ok: boolean; detail: string }[];
  const by = Object.fromEntries(checks.map((c) => [c.name, c]));
  t.deepEqual(Object.keys(by), ['kernel', 'runc', 'criu', 'criu check', 'lazy restore', 'criu kernel probe cache', 'host mounts', 'verified store', 'resident program', 'cgroups']);
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

test('doctor reports the verified store and the resident program, and warns of the error the resident program went on', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'prebake-doctor-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const env = { ...process.env, PREBAKE_STATE_DIR: join(dir, 'state'), PREBAKE_STORE_DIR: join(dir, 'store') };
  const doctor = () => Object.fromEntries((JSON.parse(execFileSync(PREBAKE, ['doctor', '--json'], { encoding: 'utf8', env })) as { name: string; ok: boolean; detail: string }[]).map((c) => [c.name, c]));
  let by = doctor();
  t.is(by['verified store']!.detail, `0 checkpoint(s), 0.0 MiB in ${join(dir, 'store')}`);
  t.true(by['resident program']!.ok);
  t.is(by['resident program']!.detail, 'none running: the next prebaked create starts one');
  spawnSync('mkdir', ['-p', join(dir, 'state')]);
  writeFileSync(join(dir, 'state', 'resident.pid'), `${process.pid} 0 /somewhere/dist\n`);
  const hoursAgo = (h: number) => new Date(Date.now() - h * 3600_000);
  writeFileSync(join(dir, 'state', 'resident.err'), `${hoursAgo(2).toISOString()} resident program 1: Error: older\n    at x\n${hoursAgo(1).toISOString()} resident program 2: Error: the last\n    at y\n`);
  by = doctor();
  t.false(by['resident program']!.ok, 'a warning');
  t.regex(by['resident program']!.detail, /^none running: .*; it went on an error, the last in .*resident\.err: \S+Z resident program 2: Error: the last$/, 'a pid file whose start time is not the process\'s names none');
  const start = readFileSync('/proc/self/stat', 'utf8').split(') ')[1]!.split(' ')[19];
  writeFileSync(join(dir, 'state', 'resident.pid'), `${process.pid} ${start} /somewhere/dist\n`);
  // A program started after the last error: that error is history, no warning.
  by = doctor();
  t.regex(by['resident program']!.detail, new RegExp(`^pid ${process.pid} answers the creates \\(of /somewhere/dist\\); one before it went on an error`));
  t.true(by['resident program']!.ok);
  utimesSync(join(dir, 'state', 'resident.pid'), hoursAgo(1.5), hoursAgo(1.5));
  t.regex(doctor()['resident program']!.detail, new RegExp(`^pid ${process.pid} answers the creates \\(of /somewhere/dist\\); it went on an error`));
  t.is(spawnSync(PREBAKE, ['doctor'], { env }).status, 0, 'warnings only: the host is fit');
});
