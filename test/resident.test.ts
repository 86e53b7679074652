// The resident verdict program (src/runtime/resident.ts) on real restores: the first create
// starts it, the next ones are answered by it (on the early path and at first sight), and every
// create it cannot answer is answered by a one-shot program and still restored: after its code
// changed (it then goes), after it was killed (a new one is started), and for a caller in another
// mount namespace. On a copy of bin/ and dist/ with a state base of its own, so that the
// resident the other tests share is not touched.

import test from 'ava';
import { spawnSync } from 'node:child_process';
import { appendFileSync, cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RESIDENT_FILES } from '../src/contract.ts';
import { ERR_FILE, noteError } from '../src/runtime/resident.ts';
import { bakeNoop, type BakedFunction } from '../lab/baked.ts';
import { REPO } from '../lab/bundle.ts';
import { killAndDelete, run, testReplica } from './helpers/bundle.ts';
import { slowMkfifo } from './helpers/slow.ts';

let baked: BakedFunction;
let dir: string;
let prebake: string;
let stateBase: string;
let env: NodeJS.ProcessEnv;
test.before(async () => {
  baked = await bakeNoop();
  baked.importToStore();
  dir = mkdtempSync(join(tmpdir(), 'prebake-resident-'));
  cpSync(join(REPO, 'bin'), join(dir, 'bin'), { recursive: true });
  cpSync(join(REPO, 'dist'), join(dir, 'dist'), { recursive: true });
  prebake = join(dir, 'bin', 'prebake');
  stateBase = join(dir, 'state');
  env = { ...process.env, PREBAKE_STATE_DIR: stateBase };
  delete env.PREBAKE_NODE;
});
test.after.always(() => {
  const pid = residentPid();
  if (pid) spawnSync('kill', ['-KILL', pid]);
  if (dir) rmSync(dir, { recursive: true, force: true });
  baked?.cleanup();
});

/** The pid the resident program's pid file names ('' if none). */
function residentPid(): string {
  try {
    return readFileSync(join(stateBase, RESIDENT_FILES.pid), 'utf8').split(' ')[0]!;
  } catch {
    return '';
  }
}

/** Per create (its prefix): the debug line saying why the resident program passed it on, if it did. */
const passed = new Map<string, string>();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const isResident = (pid: string) => {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes('--prebake-resident');
  } catch {
    return false;
  }
};

/**
 * Waits (up to 10 s) until a resident program other than `not` runs and reads its FIFO (made
 * after it has won the pid file: a shell finds it only then); its pid.
 */
async function residentStarted(not = ''): Promise<string> {
  const reads = () => statSync(join(stateBase, RESIDENT_FILES.fifo), { throwIfNoEntry: false })?.isFIFO() === true;
  for (let i = 0; i < 200; i++) {
    const pid = residentPid();
    if (pid && pid !== not && isResident(pid) && reads()) return pid;
    await sleep(50);
  }
  return '';
}

/**
 * A create of the baked function through the copy (`wrap`: a command it runs under; `sent`: told
 * once the create has handed its request to a resident program); who gave its verdicts.
 */
async function create(t: import('ava').ExecutionContext, prefix: string, opts: { wrap?: string[]; store?: string; sent?: (state: string) => void | Promise<void> } = {}) {
  const { b, rt, id } = testReplica(t, baked.layers, prefix, env);
  b.writeSpec(baked.spec(b.netnsPath));
  const args = ['--root', rt.root, '--log', rt.log, '--log-format', 'json', '--debug', 'create', '--bundle', b.dir, id];
  const [cmd, argv] = opts.wrap ? [opts.wrap[0]!, [...opts.wrap.slice(1), prebake, ...args]] : [prebake, args];
  const running = run(cmd, argv, opts.store ? { ...env, PREBAKE_STORE_DIR: opts.store } : env);
  if (opts.sent) {
    const request = join(stateBase, rt.root, id, 'request');
    for (let i = 0; i < 400 && !existsSync(request); i++) await sleep(25);
    await opts.sent(join(stateBase, rt.root, id));
  }
  const c = await running;
  t.teardown(() => c.close());
  t.is(c.code, 0, `${c.output}${JSON.stringify(rt.logLines())}`);
  const log = rt.logLines();
  t.true(log.some((l) => l.level === 'info' && /^restored /.test(l.msg)), `${prefix}: ${JSON.stringify(log)}`);
  const by = log.find((l) => /^verdicts by the resident program/.test(l.msg))?.msg.match(/pid (\d+)/)?.[1] ?? '';
  passed.set(prefix, log.find((l) => /^the resident program passed this create on: /.test(l.msg))?.msg ?? '');
  const state = JSON.parse((await run(prebake, ['--root', rt.root, 'state', id], env)).output) as { status: string };
  t.is(state.status, 'running');
  t.is((await killAndDelete({ root: rt.root }, id)).code, 0);
  return by;
}

test.serial('the first create starts the resident program, the next ones are answered by it, early and at first sight', async (t) => {
  t.is(await create(t, 'res-first'), '', 'no resident program yet: a one-shot one answers');
  const pid = await residentStarted();
  t.truthy(pid, 'the first create started a resident program');
  t.is(await create(t, 'res-second'), pid, 'the resident program answers the next create');
  const store = mkdtempSync(join(tmpdir(), 'prebake-resident-store-'));
  t.teardown(() => rmSync(store, { recursive: true, force: true }));
  t.is(await create(t, 'res-first-sight', { store }), pid, 'and a checkpoint seen for the first time (both verdicts)');
  t.true(existsSync(join(store, readdirNames(store)[0] ?? 'none', 'ok')), 'which it imported into the store');
});

test.serial('runc exits while the shell waits for a child of its own (a slow mkfifo reaps it): the resident program still accepts the restore', async (t) => {
  const pid = await residentStarted();
  t.truthy(pid);
  t.is(await create(t, 'res-slow-mkfifo', { wrap: ['env', `PATH=${slowMkfifo(t)}:${process.env.PATH}`] }), pid);
});

test.serial('runc reaped by the shell before the resident program looks at it (the program held up): the restore is still taken', async (t) => {
  const pid = await residentStarted();
  t.truthy(pid);
  // Stopped, the program takes the request only once runc has written the pid and exited; the
  // shell, in the open of its verdict FIFO meanwhile, reaps runc as soon as that open returns.
  spawnSync('kill', ['-STOP', pid]);
  t.teardown(() => void spawnSync('kill', ['-CONT', pid]));
  const by = await create(t, 'res-reaped', {
    sent: async (state) => {
      for (let i = 0; i < 400 && !existsSync(join(state, 'pid')); i++) await sleep(25);
      await sleep(300);
      spawnSync('kill', ['-CONT', pid]);
    },
  });
  t.is(by, pid, 'the resident program answered');
});

test.serial('runc reaped by the shell unseen and its status not 0: the tasks the program accepted are never resumed, a cold start', async (t) => {
  const pid = await residentStarted();
  t.truthy(pid);
  // A runc that restores, then exits 1 (as one killed after CRIU is done would not exit 0).
  const dir = mkdtempSync(join(tmpdir(), 'prebake-runc-fails-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const runc = spawnSync('sh', ['-c', 'command -v runc'], { encoding: 'utf8' }).stdout.trim();
  writeFileSync(join(dir, 'runc'), `#!/bin/sh\n'${runc}' "$@"; rc=$?\ncase " $* " in *" restore "*) : > '${dir}/restored'; exit 1 ;; esac\nexit $rc\n`, { mode: 0o755 });
  const e = { ...env, PREBAKE_RUNC: join(dir, 'runc') };
  const { b, rt, id } = testReplica(t, baked.layers, 'res-runc-fails', e);
  b.writeSpec(baked.spec(b.netnsPath));
  spawnSync('kill', ['-STOP', pid]);
  t.teardown(() => void spawnSync('kill', ['-CONT', pid]));
  const running = run(prebake, ['--root', rt.root, '--log', rt.log, '--log-format', 'json', 'create', '--bundle', b.dir, id], e);
  // (Continued once the wrapper has exited: a zombie the shell reaps as it comes out of the open.)
  for (let i = 0; i < 400 && !existsSync(join(dir, 'restored')); i++) await sleep(25);
  await sleep(100);
  spawnSync('kill', ['-CONT', pid]);
  const c = await running;
  t.teardown(() => c.close());
  t.is(c.code, 0, c.output);
  const log = rt.logLines();
  t.true(log.some((l) => l.level === 'info' && /^restored /.test(l.msg)), `the program checked the stopped tasks: ${JSON.stringify(log)}`);
  t.true(log.some((l) => l.level === 'warning' && l.msg === `cold start: restore of ${id} failed: runc restore exited 1 after the restored tasks were checked`), JSON.stringify(log));
  t.is((JSON.parse((await run(prebake, ['--root', rt.root, 'state', id], e)).output) as { status: string }).status, 'created', 'the cold container, not the restored one');
});

test.serial('a create in another mount namespace is answered by a one-shot program', async (t) => {
  const pid = await residentStarted();
  t.truthy(pid);
  t.is(await create(t, 'res-mntns', { wrap: ['unshare', '--mount', '--propagation', 'unchanged'] }), '');
  t.is(await create(t, 'res-same-ns'), pid, 'the same resident program answers a caller of its own namespaces');
});

test.serial('once its code has changed, the resident program leaves the create to a one-shot program and goes; the next create starts a new one', async (t) => {
  const pid = await residentStarted();
  t.truthy(pid);
  appendFileSync(join(dir, 'dist', 'prebake.cjs'), '\n');
  t.is(await create(t, 'res-stale'), '', 'a one-shot program of the new code answers');
  for (let i = 0; i < 100 && isResident(pid); i++) await sleep(100);
  t.false(isResident(pid), 'the old resident program is gone');
  t.is(await create(t, 'res-after-stale'), '');
  const next = await residentStarted(pid);
  t.truthy(next, 'a new one was started');
  t.is(await create(t, 'res-new'), next);
});

test.serial('a resident program killed with its pid file left: the create is answered by a one-shot program, which starts a new one', async (t) => {
  const pid = await residentStarted();
  t.truthy(pid);
  spawnSync('kill', ['-KILL', pid]);
  for (let i = 0; i < 100 && isResident(pid); i++) await sleep(20);
  t.is(residentPid(), pid, 'its pid file is left');
  t.is(await create(t, 'res-killed'), '');
  const next = await residentStarted(pid);
  t.truthy(next);
  t.is(await create(t, 'res-restarted'), next);
});

test.serial('a create whose resident program is killed before it answers is passed on by the next resident program, and restored', async (t) => {
  const pid = await residentStarted();
  t.truthy(pid);
  // Stopped, it takes no request; killed once this create has sent its own, it never answers it.
  spawnSync('kill', ['-STOP', pid]);
  let second: Promise<string> | undefined;
  const first = create(t, 'res-orphan', {
    sent: () => {
      spawnSync('kill', ['-KILL', pid]);
      // The next create finds no resident program, is answered one-shot, and starts a new one,
      // which tells the waiting create to ask a one-shot program too.
      second = create(t, 'res-orphan-next');
    },
  });
  t.is(await first, '');
  t.is(await second, '');
  t.regex(passed.get('res-orphan') ?? '', /went before it answered/);
  t.truthy(await residentStarted(pid));
});

test.serial("another install's resident program, on the same state base, is not used: a one-shot program answers, and none is started beside it", async (t) => {
  const pid = await residentStarted();
  t.truthy(pid);
  spawnSync('kill', ['-TERM', pid]);
  for (let i = 0; i < 100 && isResident(pid); i++) await sleep(50);
  // The repository's own dist, for the copy's state base.
  spawnSync(process.execPath, [join(REPO, 'dist', 'prebake.cjs'), '--prebake-resident', stateBase, join(REPO, 'dist')], { stdio: 'ignore', env: { ...process.env, NODE_OPTIONS: '', NODE_EXTRA_CA_CERTS: '' } });
  const otherPid = await residentStarted(pid);
  t.teardown(() => void spawnSync('kill', ['-KILL', otherPid]));
  t.is(readFileSync(join(stateBase, RESIDENT_FILES.pid), 'utf8').trim().split(' ').slice(2).join(' '), join(REPO, 'dist'), "the repository's program runs");
  t.is(await create(t, 'res-other-install'), '', 'answered by a one-shot program');
  await sleep(1000);
  t.is(residentPid(), otherPid, 'no resident program of the copy was started beside it');
});

test('an error no create caught is written to <base>/resident.err before the program goes, the file kept under 64 KiB', (t) => {
  const base = mkdtempSync(join(tmpdir(), 'prebake-resident-err-'));
  t.teardown(() => rmSync(base, { recursive: true, force: true }));
  const file = join(base, ERR_FILE);
  noteError(base, new Error('first'));
  noteError(base, 'second, not an Error');
  const lines = readFileSync(file, 'utf8');
  t.regex(lines, new RegExp(`^\\d{4}-\\d\\d-\\d\\dT[0-9:.]+Z resident program ${process.pid}: Error: first\\n    at `));
  t.regex(lines, /: second, not an Error\n$/);
  t.is(statSync(file).mode & 0o777, 0o600);
  writeFileSync(file, 'x'.repeat(64 * 1024 - 10));
  noteError(base, new Error('third'));
  t.regex(readFileSync(file, 'utf8'), /^\S+ resident program \d+: Error: third\n/, 'begun anew rather than grown past 64 KiB');
  // Control characters escaped, and no line of the stack taken for an entry of its own.
  noteError(base, new Error('evil\u001b[2J\n2099-01-01T00:00:00.000Z resident program 1: forged'));
  const last = readFileSync(file, 'utf8').split('\n').filter((l) => /^\d{4}-/.test(l)).at(-1)!;
  t.regex(last, /: Error: evil\\x1b\[2J$/);
  t.false(readFileSync(file, 'utf8').includes('\n2099-'));
  // Never through a symlink.
  rmSync(file);
  const target = join(base, 'target');
  writeFileSync(target, 'kept\n');
  symlinkSync(target, file);
  noteError(base, new Error('not followed'));
  t.is(readFileSync(target, 'utf8'), 'kept\n');
  noteError(join(base, 'missing'), new Error('nowhere'));
  t.false(existsSync(join(base, 'missing')), 'a state base that is gone: the error is lost, nothing is made');
});

const readdirNames = (d: string) => readdirSync(d).filter((n) => /^[0-9a-f]{64}$/.test(n));
