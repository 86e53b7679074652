// runc's argv grammar: the tables of src/contract.ts, the parser, the shell's flag loops made from
// the tables, and bin/prebake's create executing the Node program's verdict (with stand-ins).

import test from 'ava';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GENERATED_SCRIPTS, generateShell } from '../scripts/shell.ts';
import { CAPTURE_ENV, CHECKPOINT_ANNOTATION, CHECKPOINT_ENV, CREATE_FLAGS, GLOBAL_FLAGS, HINT_PREFIX, IMAGE_CHECKPOINT_PATH } from '../src/contract.ts';
import { flagIsSet, flagValue, parseFlags, parseRuntimeCall } from '../src/runtime/argv.ts';
import { REPO } from '../lab/bundle.ts';

test('parses every spelling Go flag parsing accepts, and stops at the command', (t) => {
  const call = parseRuntimeCall(['-root', '/a', '--log=/l', '--log-format', 'json', '-debug', '--systemd-cgroup=false', 'create', '--bundle', 'b', 'id']);
  t.is(flagValue(call.global, 'root'), '/a');
  t.is(flagValue(call.global, 'log'), '/l');
  t.is(flagValue(call.global, 'log-format'), 'json');
  t.true(flagIsSet(call.global, 'debug'));
  t.false(flagIsSet(call.global, 'systemd-cgroup'));
  t.is(call.command, 'create');
  t.deepEqual(call.args, ['--bundle', 'b', 'id']);
  t.deepEqual(call.global.flags[0]!.raw, ['-root', '/a']);
});

test('a value-taking flag takes the next argument even when it looks like a command', (t) => {
  const call = parseRuntimeCall(['--root', 'create', 'state', 'x']);
  t.is(flagValue(call.global, 'root'), 'create');
  t.is(call.command, 'state');
});

test('create flags: short -b, --console-socket, --preserve-fds and the container id', (t) => {
  const p = parseFlags(CREATE_FLAGS, ['-b', '/bundle', '--console-socket=/s.sock', '--preserve-fds', '2', '--no-pivot', 'ctr'], 'create');
  t.is(flagValue(p, 'bundle'), '/bundle');
  t.is(flagValue(p, 'console-socket'), '/s.sock');
  t.is(flagValue(p, 'preserve-fds'), '2');
  t.true(flagIsSet(p, 'no-pivot'));
  t.deepEqual(p.rest, ['ctr']);
});

test('unknown flags and missing values are errors that name the flag', (t) => {
  t.throws(() => parseRuntimeCall(['--bogus', 'state']), { message: /flag provided but not defined: -bogus/ });
  t.throws(() => parseRuntimeCall(['--root']), { message: /flag needs an argument: -root/ });
});

test('the committed scripts have the flag loops and names src/contract.ts makes, and a hand-edited loop is made anew', (t) => {
  for (const f of GENERATED_SCRIPTS) {
    const text = readFileSync(join(REPO, f), 'utf8');
    t.is(generateShell(text), text, `${f} is as scripts/shell.ts makes it from src/contract.ts (npm run build)`);
    t.regex(text, /# >>> .* \(generated/, `${f} has a generated block`);
  }
  const file = readFileSync(join(REPO, 'bin/prebake'), 'utf8');
  const edited = file.replace('--pid-file|-pid-file) want=pidfile ;;', '--pid-file|-pid-file) ;;');
  t.not(edited, file);
  t.is(generateShell(edited), file);
  // Every flag of the tables has its arms, every spelling Go's flag package takes.
  for (const f of [...GLOBAL_FLAGS.filter((g) => g.name !== 'help'), ...CREATE_FLAGS])
    for (const n of [f.name, ...(f.aliases ?? [])]) t.true(file.includes(`--${n}|-${n}`), n);
  t.throws(() => generateShell('# >>> something else (generated\n# <<<\n'), { message: /no generator/ });
});

/**
 * bin/prebake with stand-ins for runc and node. runc records each call by subcommand
 * (<dir>/runc-<command>.args: its argv, after the binary); node records its argv and early env
 * (<dir>/node-<n>.args: PREBAKE_EARLY, PREBAKE_EARLY_IMAGE, then the argv) and answers with the
 * verdicts <dir>/verdict-<k> in order (k counts verdicts from 1, whichever call gives them), or
 * `cold`; on its channel it reads runc's pid (<dir>/go-<n>.args) and gives the next. The restore
 * runc ran beside verdict k is kept as <dir>/restore-<k>.args; <dir>/hook-<k> is sourced first.
 */
async function standIns(t: import('ava').ExecutionContext) {
  const dir = mkdtempSync(join(tmpdir(), 'prebake-argv-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'runc'), `#!/bin/sh
for a; do case $a in create|restore|delete|start|state) c=$a; break ;; esac; done
printf '%s\\n' "$@" > "${dir}/runc-$c.tmp" && mv "${dir}/runc-$c.tmp" "${dir}/runc-$c.args"
[ $c = create ] && echo runc
exit 0
`, { mode: 0o755 });
  writeFileSync(join(dir, 'node'), `#!/bin/sh
n=1; while [ -e "${dir}/node-$n.args" ]; do n=$((n + 1)); done
printf '%s\\n' "$PREBAKE_EARLY" "$PREBAKE_EARLY_IMAGE" "$@" > "${dir}/node-$n.args"
# The next verdict, whichever call gives it. With $1, it waits for the restore beside it to have
# recorded its call (the shell kills a restore it clears away) and keeps that as restore-<k>.
take() {
  k=1; while [ -e "${dir}/used-$k" ]; do k=$((k + 1)); done
  : > "${dir}/used-$k"
  i=0; while [ -n "$1" ] && [ ! -s "${dir}/runc-restore.args" ] && [ $i -lt 200 ]; do sleep 0.01; i=$((i + 1)); done
  [ -n "$1" ] && mv "${dir}/runc-restore.args" "${dir}/restore-$k.args"
  [ -e "${dir}/hook-$k" ] && . "${dir}/hook-$k"
  [ -e "${dir}/verdict-$k" ] || printf 'cold\\n\\n' > "${dir}/verdict-$k"
  cat "${dir}/verdict-$k"
  read -r word < "${dir}/verdict-$k"
}
take "$PREBAKE_EARLY"
# On the channel, after a restore verdict: runc's pid and start stamp, then the second verdict.
if [ "$PREBAKE_GO" = 1 ] && [ "$word" = restore ]; then
  IFS= read -r go
  printf '%s\\n' "$go" > "${dir}/go-$n.args"
  [ -n "$go" ] && take 1
fi
`, { mode: 0o755 });
  // A config naming a trust store of the test's own (the early restore checks the store entry's key is in it).
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ trust: join(dir, 'trust') }, null, 2));
  const env = { ...process.env, PREBAKE_RUNC: join(dir, 'runc'), PREBAKE_NODE: join(dir, 'node'), PREBAKE_STATE_DIR: join(dir, 'state'), PREBAKE_STORE_DIR: join(dir, 'store'), PREBAKE_CONFIG: join(dir, 'config.json') };
  const bundle = (name: string, config: string) => {
    mkdirSync(join(dir, name), { recursive: true });
    writeFileSync(join(dir, name, 'config.json'), config);
    return join(dir, name);
  };
  const read = (f: string) => (existsSync(join(dir, f)) ? readFileSync(join(dir, f), 'utf8').split('\n').slice(0, -1) : undefined);
  /** Runs bin/prebake; what runc and node were called with, and what was printed. */
  const call = (args: string[], verdicts: string[] = [], hooks: string[] = []) => {
    for (const f of readdirSync(dir)) if (/^(runc-|node-|verdict-|restore-|hook-|used-|go-)/.test(f)) rmSync(join(dir, f));
    verdicts.forEach((v, i) => writeFileSync(join(dir, `verdict-${i + 1}`), v));
    hooks.forEach((h, i) => h && writeFileSync(join(dir, `hook-${i + 1}`), h));
    const ran = spawnSync(join(REPO, 'bin/prebake'), args, { env, cwd: dir, encoding: 'utf8' });
    const out = ran.stdout.trim();
    const nodes = readdirSync(dir).filter((f) => /^node-\d+\.args$/.test(f)).length;
    return { code: ran.status, out, nodes, node: (n = 1) => read(`node-${n}.args`), restore: ((r) => (r ? read(r) : undefined))(readdirSync(dir).filter((f) => /^restore-\d+\.args$/.test(f)).sort((a, b) => parseInt(a.slice(8)) - parseInt(b.slice(8))).at(-1)), go: read('go-1.args'), del: read('runc-delete.args'), create: read('runc-create.args') };
  };
  return { dir, bundle, call };
}

test("bin/prebake's create finds the bundle in every spelling and skips the values of create's flags", async (t) => {
  const { bundle, call } = await standIns(t);
  const marked = bundle('marked', JSON.stringify({ process: { env: [`${CHECKPOINT_ENV}=/.prebake`] } }));
  const plain = bundle('plain', JSON.stringify({ process: { env: ['A=1'] } }));
  const asked = (args: string[]) => call(args).nodes > 0;
  t.false(asked(['--root', '/r', 'create', '--bundle', plain, 'id']));
  t.true(asked(['--root', '/r', 'create', '--bundle', marked, 'id']));
  t.true(asked(['create', `--bundle=${marked}`, 'id']));
  t.true(asked(['create', '-b', marked, 'id']));
  t.false(asked(['create', '--pid-file', 'marked', '--bundle', plain, 'id']));
  t.false(asked(['create', '--console-socket', plain, 'marked']), 'the bundle defaults to the current directory');
  t.true(asked(['--log', 'create', 'create', '-b', marked, 'id']));
  // A cold verdict: runc create, with the caller's argv unchanged.
  t.deepEqual(call(['--root', '/r', 'create', '-b', marked, 'id']).create, ['--root', '/r', 'create', '-b', marked, 'id']);
});

test("bin/prebake's create asks Node exactly for the configs that name a checkpoint or a spec capture", async (t) => {
  const { bundle, call } = await standIns(t);
  const spec = (env: string[], annotations?: Record<string, string>) => ({ root: { path: 'rootfs' }, process: { env }, ...(annotations ? { annotations } : {}) });
  const cases: [string, object, boolean][] = [
    ['env', spec([`${CHECKPOINT_ENV}=/.prebake`]), true],
    ['annotation', spec(['A=1'], { [CHECKPOINT_ANNOTATION]: '/.prebake' }), true],
    ['capture', spec([`${CAPTURE_ENV}=tok`]), true],
    ['off', spec([`${CHECKPOINT_ENV}=off`]), true], // Node logs why it starts cold
    ['plain', spec(['A=1']), false],
    ['lookalike', spec([`${CHECKPOINT_ENV}S=/.prebake`, `X${CAPTURE_ENV}S=1`], { [`${CHECKPOINT_ANNOTATION}s`]: '/x' }), false],
  ];
  for (const [name, config, asked] of cases) {
    for (const [how, text] of [['compact', JSON.stringify(config)], ['indented', JSON.stringify(config, null, 2)]] as const) {
      const r = call(['create', '--bundle', bundle(`${name}-${how}`, text), 'id']);
      t.is(r.nodes > 0, asked, `${name}, ${how} JSON`);
      t.is(r.out, 'runc', `${name}, ${how} JSON: a cold create`);
    }
  }
});

/**
 * A bundle (`name`, its config `config`) whose checkpoint the host has verified: the image's
 * manifest, the hint beside it, and the store entry it names, imported under a trusted key.
 */
function verifiedBundle(dir: string, bundle: (name: string, config: string) => string, name: string, config: object) {
  const b = bundle(name, JSON.stringify(config, null, 2));
  mkdirSync(join(b, 'rootfs/.prebake/checkpoint'), { recursive: true });
  writeFileSync(join(b, 'rootfs/.prebake/manifest.json'), '{}');
  // The verified store's entry for that manifest (named by its sha256): the early restore reads
  // it, never the rootfs's images.
  const digest = createHash('sha256').update('{}').digest('hex');
  const entry = join(dir, 'store', digest);
  // The hint prebake-build leaves beside the manifest: the shell finds the entry by it.
  writeFileSync(join(b, `rootfs/${IMAGE_CHECKPOINT_PATH}/${HINT_PREFIX}${digest}`), '');
  mkdirSync(join(entry, 'checkpoint'), { recursive: true });
  writeFileSync(join(entry, 'manifest.json'), '{}');
  const kid = 'ab'.repeat(32);
  writeFileSync(join(entry, 'ok'), `${kid}\n2026-01-01T00:00:00Z\n`);
  mkdirSync(join(dir, 'trust'), { recursive: true });
  writeFileSync(join(dir, 'trust', `${kid}.pub`), '');
  return { b, digest, entry, kid };
}

test("bin/prebake's create starts runc restoring beside Node only in the shape it can check, and executes Node's verdict", async (t) => {
  const { dir, bundle, call } = await standIns(t);
  const config = { root: { path: 'rootfs' }, process: { env: [`${CHECKPOINT_ENV}=/.prebake`] } };
  const { b, digest, entry, kid } = verifiedBundle(dir, bundle, 'early', config);
  const state = join(dir, 'state', '/r', 'ctr');
  const restoreArgv = (pid: string, image = `${entry}/checkpoint`) => ['--root', '/r', '--systemd-cgroup', '--log', `${state}/runc-restore.log`, '--log-format', 'json', 'restore', '--detach',
    '--image-path', image, '--work-path', `${state}/criu`, '--bundle', b, '--pid-file', pid, 'ctr'];
  const argv = ['--root', '/r', '--log', join(dir, 'l.json'), '--log-format', 'json', '--systemd-cgroup', 'create', '--bundle', b, '--pid-file', 'p.pid', 'ctr'];
  const e = call(argv);
  t.deepEqual(e.node()?.slice(0, 2), [state, `${entry}/checkpoint`], 'Node is told the state and the image runc restores');
  t.deepEqual(e.restore, restoreArgv('p.pid'));
  // Node said cold: runc's delete of what it restored, with the same global flags, no state left,
  // then runc create with the caller's argv.
  t.deepEqual(e.del, ['--root', '/r', '--systemd-cgroup', 'delete', '--force', 'ctr']);
  t.false(existsSync(state));
  t.deepEqual(e.create, argv);
  // Without a pid file of the caller's, runc writes the restored init's pid in prebake's state.
  t.deepEqual(call(['--root', '/r', '--systemd-cgroup', 'create', '--bundle', b, 'ctr']).restore, restoreArgv(`${state}/pid`));
  // Node said restore from another image dir: the first restore goes, runc restores from that one
  // and Node is asked again; accepted, nothing is created cold.
  const other = join(dir, 'store', 'other', 'checkpoint');
  const r = call(argv, [`restore\n${other}\n`, 'abandon\n\n']);
  t.is(r.nodes, 2);
  t.is(r.code, 1, 'abandoned: the create fails');
  const said = readFileSync(join(dir, 'l.json'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { level: string; id: string; msg: string });
  t.like(said, [{ level: 'warning', id: 'ctr', msg: 'create abandoned: bin/prebake, which ran it, is gone; the restore it started was cleared away' }], 'one line in --log, in its format');
  t.is(said.length, 1);
  t.false(existsSync(state), 'cleared away');
  t.deepEqual(r.node(2)?.slice(0, 2), [state, other]);
  t.deepEqual(r.restore, restoreArgv('p.pid', other));
  t.is(r.create, undefined, 'abandoned: nothing created');
  // A second restore verdict for the image just restored is not followed: cold.
  t.deepEqual(call(argv, [`restore\n${entry}/checkpoint\n`]).create, argv);
  // Abandoned after the engine deleted the container and created the id anew (its own state dir
  // and runc dir): nothing of that container is touched, no runc delete runs.
  const anew = `rm -rf '${state}'; mkdir -p '${state}' '${dir}/r/ctr'; echo new > '${state}/mine'\n`;
  const rootArgv = ['--root', join(dir, 'r'), ...argv.slice(2)];
  const stateR = join(dir, 'state', dir, 'r', 'ctr');
  const g = call(rootArgv, ['abandon\n\n'], [anew.replaceAll(state, stateR)]);
  t.is(g.code, 1);
  t.not(g.restore, undefined, 'a restore ran');
  t.is(g.del, undefined, 'no runc delete of the id');
  t.is(readFileSync(join(stateR, 'mine'), 'utf8'), 'new\n', "the new container's state is left");
  t.true(existsSync(join(dir, 'r', 'ctr')), "the new container's runc dir is left");
  rmSync(join(dir, 'r'), { recursive: true });
  rmSync(join(dir, 'state', dir), { recursive: true });
  // The same verdict with the state as this create made it: all of it goes.
  const h = call(rootArgv, ['abandon\n\n']);
  t.deepEqual(h.del?.slice(-3), ['delete', '--force', 'ctr']);
  t.false(existsSync(stateR));
  // Shapes where Node decides first (it says restore, or cold): a terminal, descriptors to hand
  // on, an unknown flag, a second argument, an odd id, a checkpoint not in the store, a config
  // naming the checkpoint twice or carrying an org.criu.* annotation, a path leaving the rootfs.
  const first = (args: string[], what: string) => {
    const c = call(args);
    t.is(c.nodes, 1, what);
    t.deepEqual(c.node()?.slice(0, 2), ['', ''], `${what}: Node first`);
    t.is(c.restore, undefined, `${what}: no restore`);
  };
  for (const args of [
    ['create', '--bundle', b, '--console-socket', '/s.sock', 'ctr'],
    ['create', '--bundle', b, '--preserve-fds', '1', 'ctr'],
    ['create', '--bundle', b, '--new-flag', 'ctr'],
    ['create', '--bundle', b, 'ctr', 'extra'],
    ['create', '--bundle', b, 'a/b'],
  ])
    first(args, args.join(' '));
  // A terminal: Node first, then the restore maps the console socket; the same Node program,
  // told runc's pid on its channel, checks it (one Node start) and says cold here.
  const tty = call(['--root', '/r', 'create', '--bundle', b, '--console-socket', '/s.sock', 'ctr'], [`restore\n${entry}/checkpoint\n`]);
  t.deepEqual(tty.restore?.slice(-3), ['--console-socket', '/s.sock', 'ctr']);
  t.is(tty.nodes, 1, 'one Node program for both verdicts');
  t.regex(tty.go?.[0] ?? '', /^\d+ \d*$/, "runc's pid and start stamp on the channel");
  t.deepEqual(tty.del?.slice(-3), ['delete', '--force', 'ctr'], 'cold: the restore is cleared away');
  t.deepEqual(tty.create, ['--root', '/r', 'create', '--bundle', b, '--console-socket', '/s.sock', 'ctr']);
  rmSync(join(b, `rootfs/.prebake/${HINT_PREFIX}${digest}`));
  first(['create', '--bundle', b, 'ctr'], 'no hint');
  writeFileSync(join(b, `rootfs/.prebake/${HINT_PREFIX}${digest}`), '');
  // A hint naming an entry that holds another manifest (another image's checkpoint).
  writeFileSync(join(entry, 'manifest.json'), '{"other":1}');
  first(['create', '--bundle', b, 'ctr'], "a store entry whose manifest is not the image's");
  writeFileSync(join(entry, 'manifest.json'), '{}');
  rmSync(join(entry, 'ok'));
  first(['create', '--bundle', b, 'ctr'], 'a checkpoint the host has not verified');
  writeFileSync(join(entry, 'ok'), `${kid}\n`);
  t.not(call(['create', '--bundle', b, 'ctr']).restore, undefined, 'verified again');
  rmSync(join(dir, 'trust', `${kid}.pub`));
  first(['create', '--bundle', b, 'ctr'], 'verified under a key the host no longer trusts');
  writeFileSync(join(entry, 'ok'), 'none\n');
  first(['create', '--bundle', b, 'ctr'], 'imported unsigned (trustAnyCheckpoint)');
  writeFileSync(join(dir, 'trust', `${kid}.pub`), '');
  writeFileSync(join(entry, 'ok'), `${kid}\n`);
  for (const [what, other] of [
    ['the variable twice', { ...config, annotations: { x: `${CHECKPOINT_ENV}=/elsewhere` } }],
    ['the annotation twice', { ...config, annotations: { [CHECKPOINT_ANNOTATION]: '/.prebake' }, hooks: { note: CHECKPOINT_ANNOTATION } }],
    ['an org.criu.config annotation', { ...config, annotations: { 'org.criu.config': '/tmp/evil.conf' } }],
  ] as const) {
    writeFileSync(join(b, 'config.json'), JSON.stringify(other));
    first(['create', '--bundle', b, 'ctr'], what);
  }
  writeFileSync(join(b, 'config.json'), JSON.stringify({ ...config, process: { env: [`${CHECKPOINT_ENV}=/../rootfs/.prebake`] } }));
  first(['create', '--bundle', b, 'ctr'], 'a path with ..');
});

test("bin/prebake's create starts CRIU's lazy-pages daemon for an entry marked lazy, unless the spec may keep the OOM killer away", async (t) => {
  const { dir, bundle, call } = await standIns(t);
  // The CRIU runc is told to use (--criu): its lazy-pages mode records its call and leaves a
  // process of its own named in the pid file (the daemon, for the shell), killed at the end.
  const criu = join(dir, 'criu');
  writeFileSync(criu, `#!/bin/sh
[ "$1" = lazy-pages ] || exit 1
printf '%s\\n' "$@" > "${dir}/lazy.args"
while [ $# -gt 0 ]; do [ "$1" = --pidfile ] && f=$2; shift; done
sleep 30 </dev/null >/dev/null 2>&1 &
echo $! > "$f"
`, { mode: 0o755 });
  const daemons: string[] = [];
  t.teardown(() => daemons.forEach((p) => spawnSync('kill', [p])));
  const config = { root: { path: 'rootfs' }, process: { env: [`${CHECKPOINT_ENV}=/.prebake`] } };
  /** Whether a create of this spec gave runc --lazy-pages (and the daemon ran exactly then). */
  const lazyStarted = (name: string, spec: object, compact = false) => {
    const { b, entry } = verifiedBundle(dir, bundle, name, spec);
    if (compact) writeFileSync(join(b, 'config.json'), JSON.stringify(spec));
    writeFileSync(join(entry, 'lazy-pages'), '');
    rmSync(join(dir, 'lazy.args'), { force: true });
    const c = call(['--criu', criu, '--root', '/r', 'create', '--bundle', b, 'ctr']);
    t.truthy(c.restore, `${name}: an early restore`);
    const ran = existsSync(join(dir, 'lazy.args'));
    const pidFile = join(dir, 'state', '/r', 'ctr', 'lazy-pages.pid');
    if (ran && existsSync(pidFile)) daemons.push(readFileSync(pidFile, 'utf8').trim());
    const lazy = c.restore?.includes('--lazy-pages') ?? false;
    t.is(ran, lazy, `${name}: the daemon ran exactly when runc was given --lazy-pages`);
    return lazy;
  };
  const memory = (m: object) => ({ ...config, linux: { resources: { memory: m } } });
  const oom = (adj: number) => ({ ...config, process: { ...config.process, oomScoreAdj: adj } });
  t.true(lazyStarted('lazy', config), 'a lazy entry: the daemon, and --lazy-pages');
  t.false(lazyStarted('no-oom-killer', memory({ disableOOMKiller: true })), 'disableOOMKiller true');
  t.false(lazyStarted('no-oom-killer-compact', memory({ disableOOMKiller: true }), true), 'disableOOMKiller true, compact JSON');
  t.true(lazyStarted('oom-killer-kept', memory({ disableOOMKiller: false })), 'disableOOMKiller false');
  t.false(lazyStarted('oom-score-min', oom(-1000)), 'oomScoreAdj -1000');
  t.false(lazyStarted('oom-score-min-compact', oom(-1000), true), 'oomScoreAdj -1000 last in its object, compact JSON');
  t.true(lazyStarted('oom-score-other', oom(-10000)), 'oomScoreAdj -10000 is another number');
});
