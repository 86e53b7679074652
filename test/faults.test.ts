// Faults around a restore: CRIU missing, prebake killed in the middle of a restore, a full disk.
// Each ends in a running container or a clean slate after the engine's delete --force.

import test, { type ExecutionContext } from 'ava';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, statfsSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import type { Spec } from '../oci/runtime-spec.ts';
import { hostFacts } from '../src/lib/host.ts';
import { NetnsClient } from '../src/lib/netns.ts';
import { containerStateDir } from '../src/runtime/config.ts';
import { bakeNoop, type BakedFunction, PORT, WARMUP } from '../lab/baked.ts';
import { PREBAKE, prebakeLogLines, runtimeDirs, type OverlayBundle } from '../lab/bundle.ts';
import { functionPids, run, testReplica } from './helpers/bundle.ts';

let baked: BakedFunction;
test.before(async () => {
  baked = await bakeNoop();
});
test.after.always(() => baked?.cleanup());

/**
 * runc and CRIU processes whose command line names the container. (Not the prebake Node program,
 * whose command line names it too: after handing over an accepted restore it may still be
 * exiting, ~3 ms of the kernel's teardown, when the create has returned.)
 */
function runcOrCriu(id: string): string[] {
  return spawnSync('pgrep', ['-af', `(criu|runc).*${id}( |$)`], { encoding: 'utf8' })
    .stdout.split('\n')
    .filter(Boolean)
    .filter((l) => {
      try {
        // runc, its children (runc:[2:INIT]) and CRIU; not a shell or Node program that names them.
        return /^(runc|criu)/.test(readFileSync(`/proc/${l.split(' ')[0]}/comm`, 'utf8'));
      } catch {
        return false; // gone
      }
    });
}

function replica(t: ExecutionContext) {
  const r = testReplica(t, baked.layers, 'fault');
  r.b.writeSpec(baked.spec(r.b.netnsPath));
  return r;
}

test('CRIU missing (runc --criu pointing nowhere): cold start that serves, reason logged', async (t) => {
  const { b, rt, id } = replica(t);
  const c = await run(PREBAKE, ['--root', rt.root, '--criu', '/nonexistent/criu', '--log', rt.log, '--log-format', 'json', 'create', '--bundle', b.dir, id]);
  t.is(c.code, 0, c.output);
  t.is((await run(PREBAKE, ['--root', rt.root, 'start', id])).code, 0);
  const client = await NetnsClient.start(b.netns);
  t.teardown(() => client.close());
  t.is(JSON.parse((await client.waitHttp({ port: PORT, path: '/', timeoutMs: 20000 })).body).served, 1);
  t.regex(rt.logLines().find((l) => l.level === 'warning')?.msg ?? '', /cold start: .*\/nonexistent\/criu/);
});

test('prebake killed with SIGKILL during a restore, then the engine\'s delete --force: nothing is left', async (t) => {
  for (const delayMs of [5, 40, 80]) {
    const { b, rt, id } = replica(t);
    const child = spawn(PREBAKE, ['--root', rt.root, '--log', rt.log, '--log-format', 'json', 'create', '--bundle', b.dir, id], { stdio: 'ignore' });
    // Listening from the spawn on: on a busy host the create may be over before the kill.
    const exited = new Promise((r) => child.on('exit', r));
    await new Promise((r) => setTimeout(r, delayMs));
    child.kill('SIGKILL');
    await exited;
    // runc restore may still be finishing on its own; the engine gives up and force-deletes.
    await new Promise((r) => setTimeout(r, 500));
    const del = await run(PREBAKE, ['--root', rt.root, 'delete', '--force', id]);
    t.is(del.code, 0, `after ${delayMs} ms: ${del.output}`);
    t.false(existsSync(join(rt.root, id)), `runc state gone (killed after ${delayMs} ms)`);
    t.false(existsSync(join(rt.state, id)), `prebake state gone (killed after ${delayMs} ms)`);
    // bin/prebake's subshell, its parent killed, clears away what it started: give it the time it takes.
    let ps = runcOrCriu(id);
    for (let i = 0; i < 100 && ps.length; i++) {
      await new Promise((r) => setTimeout(r, 50));
      ps = runcOrCriu(id);
    }
    t.deepEqual(ps, [], `no runc or CRIU process left for ${id}`);
    // The restored tasks (stopped) go with the subshell's runc delete, which may come after runc is gone.
    const inNetns = () => spawnSync('ip', ['netns', 'pids', b.netns], { encoding: 'utf8' }).stdout.trim();
    for (let i = 0; i < 100 && inNetns(); i++) await new Promise((r) => setTimeout(r, 50));
    t.is(inNetns(), '', `no process left in the container's network namespace`);
  }
});

// Disk full. prebake writes per-container state (the `restored` marker, CRIU's work dir, runc's
// restore log) under PREBAKE_STATE_DIR and remembers verified checkpoints there; the engine names
// the log file (--log) and the pid file. Each of these is put on a small tmpfs of the test's own,
// filled up (no space left for data, or no inode left for another file), and `prebake create`
// must end in a container whose `start` is right and that serves, or, where `runc create` itself
// fails with the same flags, in runc's error and a non-zero exit; and leave nothing once the
// engine has deleted it.

/** A tmpfs of `size` with room for `inodes` inodes (its root takes one), unmounted when the test ends. */
function smallTmpfs(t: ExecutionContext, size: string, inodes: number): string {
  const dir = mkdtempSync(join(tmpdir(), 'prebake-full-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size},nr_inodes=${inodes},mode=0755`, 'prebake-full', dir]);
  t.teardown(() => {
    try {
      execFileSync('umount', [dir], { stdio: 'ignore' });
    } catch {
      execFileSync('umount', ['--lazy', dir], { stdio: 'ignore' });
    }
    rmSync(dir, { recursive: true, force: true });
  });
  return dir;
}

/** Writes `dir`/fill until no block is left. */
function fillBlocks(t: ExecutionContext, dir: string): void {
  const fd = openSync(join(dir, 'fill'), 'w');
  const chunk = Buffer.alloc(64 * 1024, 1);
  try {
    for (;;) writeSync(fd, chunk);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOSPC') throw e;
  } finally {
    closeSync(fd);
  }
  t.is(statfsSync(dir).bavail, 0, 'no block left');
}

/** Creates empty files in `dir` until no inode is left, then frees `leave` of them. */
function fillInodes(t: ExecutionContext, dir: string, leave = 0): void {
  let n = 0;
  try {
    for (;;) writeFileSync(join(dir, `inode-${n++}`), '');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOSPC') throw e;
  }
  for (let i = 0; i < leave; i++) rmSync(join(dir, `inode-${i}`));
  t.is(statfsSync(dir).ffree, leave, `${leave} inode(s) left`);
}

/** Every regular file under `dir`, relative to it. */
function filesUnder(dir: string): string[] {
  return (readdirSync(dir, { recursive: true, withFileTypes: true }) as import('node:fs').Dirent[])
    .filter((e) => !e.isDirectory())
    .map((e) => relative(dir, join(e.parentPath, e.name)))
    .sort();
}

/** prebake's state dir on a tmpfs of its own, holding the host facts a host's first create caches there. */
function stateDisk(t: ExecutionContext, inodes = 256): { dir: string; env: NodeJS.ProcessEnv } {
  const dir = smallTmpfs(t, '1m', inodes);
  hostFacts('criu', dir);
  // (One-shot verdicts: a resident program would keep its FIFO and pid file on the disk, and the disk busy.)
  return { dir, env: { ...process.env, PREBAKE_STATE_DIR: dir, PREBAKE_RESIDENT: 'off' } };
}

/** A state disk filled by `fill`, and the files it holds then (what may stay after a create). */
function filledStateDisk(t: ExecutionContext, fill: (dir: string) => void, inodes?: number): { dir: string; env: NodeJS.ProcessEnv; files: string[] } {
  const disk = stateDisk(t, inodes);
  fill(disk.dir);
  return { ...disk, files: filesUnder(disk.dir) };
}

interface FullDiskReplica {
  b: OverlayBundle;
  rt: ReturnType<typeof runtimeDirs>;
  id: string;
  env: NodeJS.ProcessEnv;
  /** prebake's state base for this replica. */
  stateBase: string;
  /** This container's prebake state dir. */
  stateDir: string;
  log: string;
  pidFile: string;
  client: NetnsClient;
}

/** A bundle of the baked function, not yet created; torn down (with the engine's delete --force) when the test ends. */
async function fullDiskReplica(t: ExecutionContext, opts: { env?: NodeJS.ProcessEnv; log?: string; pidFile?: string; spec?: (s: Spec) => void } = {}): Promise<FullDiskReplica> {
  const env = opts.env ?? process.env;
  const stateBase = env.PREBAKE_STATE_DIR ?? '/run/prebake';
  const { b, rt, id } = testReplica(t, baked.layers, 'full', env);
  b.writeSpec(baked.spec(b.netnsPath, opts.spec));
  const client = await NetnsClient.start(b.netns);
  t.teardown(() => client.close());
  return {
    b,
    rt,
    id,
    env,
    stateBase,
    stateDir: containerStateDir({ stateBase }, rt.root, id),
    log: opts.log ?? rt.log,
    pidFile: opts.pidFile ?? join(b.dir, 'init.pid'),
    client,
  };
}

function createFull(t: ExecutionContext, r: FullDiskReplica) {
  return run(PREBAKE, ['--root', r.rt.root, '--log', r.log, '--log-format', 'json', 'create', '--bundle', r.b.dir, '--pid-file', r.pidFile, r.id], r.env).then((c) => {
    t.teardown(() => c.close());
    return c;
  });
}

/** What the create left: a restored (running) container, a cold (created) one, or none. */
async function outcomeOf(r: FullDiskReplica): Promise<'restored' | 'cold' | 'none'> {
  const st = await run('runc', ['--root', r.rt.root, 'state', r.id]);
  if (st.code !== 0) return 'none';
  return (JSON.parse(st.output) as { status: string }).status === 'running' ? 'restored' : 'cold';
}

/**
 * Checks that `start` is right for what create left (a no-op for a restored container, runc's
 * start for a cold one) and that the function serves; then ends the container as an engine does.
 */
async function checkStartAndServe(t: ExecutionContext, r: FullDiskReplica, outcome: 'restored' | 'cold', what: string): Promise<void> {
  if (outcome === 'restored') t.true(existsSync(join(r.stateDir, 'restored')), `${what}: a restored container has its marker`);
  else t.false(existsSync(r.stateDir), `${what}: a cold container has no prebake state`);
  const start = await run(PREBAKE, ['--root', r.rt.root, 'start', r.id], r.env);
  t.is(start.code, 0, `${what}: start: ${start.output}`);
  const first = await r.client.waitHttp({ port: PORT, path: '/', timeoutMs: 20_000 });
  // A restore goes on from the bake's count (probe + warm-up requests), a cold start from 1.
  t.is((JSON.parse(first.body) as { served: number }).served, outcome === 'restored' ? WARMUP + 2 : 1, `${what}: ${first.body}`);
  t.false(existsSync(join(r.stateDir, 'restored')), `${what}: start consumed the marker`);
  await run(PREBAKE, ['--root', r.rt.root, 'kill', r.id, 'KILL'], r.env);
  for (let i = 0; i < 100 && JSON.parse((await run('runc', ['--root', r.rt.root, 'state', r.id])).output || '{}').status === 'running'; i++)
    await new Promise((res) => setTimeout(res, 20));
  const del = await run(PREBAKE, ['--root', r.rt.root, 'delete', r.id], r.env);
  t.is(del.code, 0, `${what}: delete: ${del.output}`);
}

/** Nothing of the container is left: runc state, prebake state, files, mounts, processes. */
function checkNothingLeft(t: ExecutionContext, r: FullDiskReplica, what: string, stateDisk?: { dir: string; files: string[] }): void {
  t.false(existsSync(join(r.rt.root, r.id)), `${what}: runc state gone`);
  t.false(existsSync(r.stateDir), `${what}: prebake state (marker, CRIU work dir, runc log) gone`);
  if (stateDisk) {
    // What was there before, and at most a complete entry of the verification cache.
    const extra = filesUnder(stateDisk.dir).filter((f) => !stateDisk.files.includes(f) && !/^verified\/[0-9a-f]{64}$/.test(f));
    t.deepEqual(extra, [], `${what}: files left in prebake's state dir`);
    const mounts = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.includes(stateDisk.dir));
    t.is(mounts.length, 1, `${what}: mounts under the state dir: ${mounts.join('\n')}`);
  }
  t.deepEqual(readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.includes(r.id)), [], `${what}: no mount of the container's`);
  t.deepEqual(runcOrCriu(r.id), [], `${what}: no runc or CRIU process left`);
  t.deepEqual(functionPids(r.b.netns), [], `${what}: no process of the function's left in its network namespace`);
}


test("disk full: no space left for data in prebake's state dir: the restore needs only its empty marker and goes on; nothing is left", async (t) => {
  const disk = filledStateDisk(t, (dir) => fillBlocks(t, dir));
  const r = await fullDiskReplica(t, { env: disk.env });
  const c = await createFull(t, r);
  t.is(c.code, 0, c.output);
  t.is(await outcomeOf(r), 'restored', JSON.stringify(prebakeLogLines(r.log)));
  t.true(prebakeLogLines(r.log).some((l) => l.level === 'info' && /^restored /.test(l.msg)));
  await checkStartAndServe(t, r, 'restored', 'no block left');
  checkNothingLeft(t, r, 'no block left', disk);
});

test("disk full: no inode left in prebake's state dir: cold start that serves, reason logged, nothing left", async (t) => {
  const disk = filledStateDisk(t, (dir) => fillInodes(t, dir));
  const r = await fullDiskReplica(t, { env: disk.env });
  const c = await createFull(t, r);
  t.is(c.code, 0, c.output);
  t.is(await outcomeOf(r), 'cold');
  const warnings = prebakeLogLines(r.log).filter((l) => l.level === 'warning');
  t.is(warnings.length, 1, JSON.stringify(prebakeLogLines(r.log)));
  t.regex(warnings[0]?.msg ?? '', /^cold start: .*no space left on device/i);
  t.log(warnings[0]?.msg);
  await checkStartAndServe(t, r, 'cold', 'no inode left');
  checkNothingLeft(t, r, 'no inode left', disk);
});

test("disk full: space runs out at each file a create writes in prebake's state dir (0 to all the inodes it needs): always a start that is right, nothing left", async (t) => {
  // How many inodes a restore takes in a state dir that holds only the host facts: the
  // verification cache, the container's state dir and its parents, the marker, the logs.
  const probeDisk = stateDisk(t);
  const used0 = statfsSync(probeDisk.dir);
  const probe = await fullDiskReplica(t, { env: probeDisk.env });
  const pc = await createFull(t, probe);
  t.is(pc.code, 0, pc.output);
  t.is(await outcomeOf(probe), 'restored', 'with room to spare the create restores');
  const used1 = statfsSync(probeDisk.dir);
  const need = Number(used0.ffree - used1.ffree);
  t.log(`a restore takes ${need} inodes in the state dir: ${filesUnder(probeDisk.dir).join(' ')}`);
  t.true(need >= 5, `${need}`);
  await checkStartAndServe(t, probe, 'restored', 'probe');
  checkNothingLeft(t, probe, 'probe');

  const outcomes: string[] = [];
  for (let free = 0; free <= need; free++) {
    const disk = filledStateDisk(t, (dir) => fillInodes(t, dir, free), 64);
    const r = await fullDiskReplica(t, { env: disk.env });
    const c = await createFull(t, r);
    const what = `${free} inode(s) free`;
    t.is(c.code, 0, `${what}: ${c.output}`);
    const outcome = await outcomeOf(r);
    outcomes.push(`${free}: ${outcome}`);
    if (outcome === 'none') continue;
    if (outcome === 'cold') {
      // The reason names the cause, whichever file (prebake's, runc's or CRIU's) found no room.
      const warning = prebakeLogLines(r.log).find((l) => l.level === 'warning')?.msg ?? '';
      t.regex(warning, /^cold start: .*no space left on device/i, what);
      t.log(`${what}: ${warning.replace(/^.* failed: /, '')}`);
    }
    await checkStartAndServe(t, r, outcome, what);
    checkNothingLeft(t, r, what, disk);
  }
  t.log(outcomes.join(', '));
  // Short of room, a cold start; with room for all the files, a restore. In between either, as
  // the restore beside Node's start-up needs a few files more than the restore Node runs alone
  // (which a create falls back to when those files find no room), and CRIU's own files come last.
  t.is(outcomes[0], '0: cold');
  t.is(outcomes[need], `${need}: restored`);
  t.deepEqual(outcomes.filter((o) => !/: (cold|restored)$/.test(o)), []);
});

test('disk full: the --log file takes no more lines: create restores (or falls back) as it would, the lines go to stderr, nothing left', async (t) => {
  for (const variant of ['restore', 'cold start'] as const) {
    const logDisk = smallTmpfs(t, '64k', 16);
    fillBlocks(t, logDisk);
    const r = await fullDiskReplica(t, {
      log: join(logDisk, 'log.json'),
      ...(variant === 'cold start' ? { spec: (s: Spec) => void (s.annotations = { ...s.annotations, 'io.prebake.checkpoint': 'off' }) } : {}),
    });
    const c = await createFull(t, r);
    t.is(c.code, 0, `${variant}: ${c.output}`);
    const outcome = await outcomeOf(r);
    t.is(outcome, variant === 'restore' ? 'restored' : 'cold', variant);
    // The line the log file could not take goes to stderr, in the format asked for.
    const onStderr = c.output.split('\n').flatMap((l) => {
      try {
        return [JSON.parse(l) as { level: string; msg: string; id?: string }];
      } catch {
        return [];
      }
    });
    t.true(
      onStderr.some((l) => l.id === r.id && (variant === 'restore' ? l.level === 'info' && /^restored /.test(l.msg) : l.level === 'warning' && /^cold start: checkpoint turned off/.test(l.msg))),
      `${variant}: ${c.output}`,
    );
    if (outcome === 'none') continue;
    await checkStartAndServe(t, r, outcome, variant);
    checkNothingLeft(t, r, variant);
  }
});

test('disk full: the --log file cannot be created (no inode left): create fails as runc create does, one line on stderr, nothing left', async (t) => {
  const logDisk = smallTmpfs(t, '64k', 16);
  fillInodes(t, logDisk);
  const log = join(logDisk, 'log.json');
  const r = await fullDiskReplica(t, { log });
  const c = await createFull(t, r);
  t.not(c.code, 0);
  const lines = c.output.trim().split('\n');
  t.is(lines.length, 1, c.output);
  t.regex(lines[0] ?? '', /log\.json: no space left on device/);
  t.is(await outcomeOf(r), 'none');
  checkNothingLeft(t, r, 'log not created');
  // runc create, given the same flags, fails the same way.
  const plain = await run('runc', ['--root', r.rt.root, '--log', log, '--log-format', 'json', 'create', '--bundle', r.b.dir, `${r.id}-runc`]);
  t.not(plain.code, 0, plain.output);
});

test("disk full: the --pid-file cannot be written (no inode left): runc's restore fails after CRIU made the process, create then fails as runc create does; nothing left", async (t) => {
  const pidDisk = smallTmpfs(t, '64k', 16);
  fillInodes(t, pidDisk);
  const pidFile = join(pidDisk, 'init.pid');
  const r = await fullDiskReplica(t, { pidFile });
  const c = await createFull(t, r);
  t.not(c.code, 0);
  // runc writes the pid file once the container exists: the restore is undone, the cold create
  // fails the same way, and its error is the last line on stderr and in the log (what engines show).
  const lastLine = c.output.trim().split('\n').at(-1) ?? '';
  t.regex(lastLine, /^runc create failed: open .*init\.pid: no space left on device$/, c.output);
  const log = prebakeLogLines(r.log);
  t.regex(log.find((l) => l.level === 'warning')?.msg ?? '', /^cold start: restore of .* failed: open .*init\.pid: no space left on device/, JSON.stringify(log));
  t.regex(log.at(-1)?.level === 'error' ? log.at(-1)!.msg : '', /runc create failed: .*no space left on device/, JSON.stringify(log));
  t.is(await outcomeOf(r), 'none');
  checkNothingLeft(t, r, 'pid file not written');
  // runc create, given the same flags, fails the same way.
  const plain = await run('runc', ['--root', r.rt.root, 'create', '--bundle', r.b.dir, '--pid-file', pidFile, `${r.id}-runc`]);
  t.not(plain.code, 0, plain.output);
  t.false(existsSync(join(r.rt.root, `${r.id}-runc`)), 'runc left no container either');
});

test("disk full: the spec capture prebake-build asks for cannot be written in prebake's state dir: no partial capture is left", async (t) => {
  const token = `full-${process.pid}`;
  // prebake-build's request for the capture, made before the disk filled up.
  const disk = filledStateDisk(t, (dir) => {
    mkdirSync(join(dir, 'captures'), { recursive: true });
    writeFileSync(join(dir, 'captures', `${token}.request`), '');
    fillBlocks(t, dir);
  });
  const r = await fullDiskReplica(t, { env: disk.env, spec: (s) => void s.process!.env!.push(`PREBAKE_CAPTURE_SPEC=${token}`) });
  const c = await createFull(t, r);
  t.is(c.code, 0, c.output);
  t.regex(prebakeLogLines(r.log).find((l) => l.level === 'warning')?.msg ?? '', /^cold start: .*no space left on device/i);
  t.deepEqual(
    filesUnder(disk.dir).filter((f) => f.startsWith('captures/') && !f.endsWith('.request')),
    [],
    'no capture, whole or partial',
  );
  await checkStartAndServe(t, r, 'cold', 'capture');
  checkNothingLeft(t, r, 'capture', disk);
});
