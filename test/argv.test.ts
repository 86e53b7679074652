// runc's argv grammar: the TypeScript table, its parser, and bin/prebake's copy of the global flags.

import test from 'ava';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CREATE_FLAGS, GLOBAL_FLAGS, flagIsSet, flagValue, parseFlags, parseRuntimeCall } from '../src/runtime/argv.ts';
import { CAPTURE_ENV, CHECKPOINT_ANNOTATION, CHECKPOINT_ENV } from '../src/checkpoint/locate.ts';
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

test("bin/prebake's sh dispatcher knows exactly the global flags of the table", (t) => {
  const file = readFileSync(join(REPO, 'bin/prebake'), 'utf8');
  // The global-flag loop: from the first `for a in "$@"` to its `done`.
  const from = file.indexOf('for a in "$@"; do');
  const sh = file.slice(from, file.indexOf('\ndone\n', from));
  t.true(from > 0 && sh.length > 0, 'bin/prebake has a global-flag loop');
  const casePatterns = [...sh.matchAll(/^\s+((?:-[-\w]+(?:=\*)?\|?)+)\)/gm)].map((m) => m[1]!.split('|'));
  const valueFlags = new Set<string>();
  const boolFlags = new Set<string>();
  for (const alts of casePatterns) {
    for (const a of alts) {
      const name = a.replace(/^--?/, '').replace(/=\*$/, '');
      // A bare pattern that is followed by `want=` in the same arm takes a value.
      if (a.endsWith('=*')) continue;
      const arm = sh.slice(sh.indexOf(alts.join('|')));
      const line = arm.slice(0, arm.indexOf('\n'));
      (line.includes('want=') ? valueFlags : boolFlags).add(name);
    }
  }
  for (const f of GLOBAL_FLAGS) {
    if (f.name === 'help') continue; // passed to runc like any unknown argument
    for (const n of [f.name, ...(f.aliases ?? [])]) {
      t.true(f.takesValue ? valueFlags.has(n) : boolFlags.has(n), `${n} (${f.takesValue ? 'takes a value' : 'boolean'}) in bin/prebake`);
      if (f.takesValue) t.regex(sh, new RegExp(`--${n}=\\*\\|-${n}=\\*`), `${n}=value spelling in bin/prebake`);
    }
  }
  const known = new Set(GLOBAL_FLAGS.flatMap((f) => [f.name, ...(f.aliases ?? [])]));
  for (const n of [...valueFlags, ...boolFlags]) t.true(known.has(n), `bin/prebake flag ${n} is in GLOBAL_FLAGS`);
});

test("bin/prebake's create finds the bundle in every spelling and skips the values of create's flags", async (t) => {
  const { mkdtempSync, writeFileSync, rmSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { execFileSync } = await import('node:child_process');
  const dir = mkdtempSync(join(tmpdir(), 'prebake-argv-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  // A stand-in runc that says it was called; the Node path would say "node".
  const fake = join(dir, 'runc');
  writeFileSync(fake, '#!/bin/sh\necho runc\n', { mode: 0o755 });
  const marked = join(dir, 'marked');
  const plain = join(dir, 'plain');
  for (const [d, env] of [[marked, 'PREBAKE_CHECKPOINT=/.prebake'], [plain, 'A=1']] as const) {
    execFileSync('mkdir', [d]);
    writeFileSync(join(d, 'config.json'), JSON.stringify({ process: { env: [env] } }));
  }
  const env = { ...process.env, PREBAKE_RUNC: fake, PREBAKE_NODE: join(dir, 'node') };
  writeFileSync(join(dir, 'node'), '#!/bin/sh\necho node\n', { mode: 0o755 });
  const who = (args: string[]) => execFileSync(join(REPO, 'bin/prebake'), args, { env, cwd: dir, encoding: 'utf8' }).trim();
  t.is(who(['--root', '/r', 'create', '--bundle', plain, 'id']), 'runc');
  t.is(who(['--root', '/r', 'create', '--bundle', marked, 'id']), 'node');
  t.is(who(['create', `--bundle=${marked}`, 'id']), 'node');
  t.is(who(['create', '-b', marked, 'id']), 'node');
  t.is(who(['create', '--pid-file', 'marked', '--bundle', plain, 'id']), 'runc');
  t.is(who(['create', '--console-socket', plain, 'marked']), 'runc', 'the bundle defaults to the current directory');
  t.is(who(['--log', 'create', 'create', '-b', marked, 'id']), 'node');
});

/** bin/prebake with stand-ins for runc and node that record how they were called. */
async function standIns(t: import('ava').ExecutionContext) {
  const { mkdtempSync, writeFileSync, rmSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { execFileSync } = await import('node:child_process');
  const dir = mkdtempSync(join(tmpdir(), 'prebake-argv-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  // runc's delete is recorded apart; node keeps a copy of the argv an early restore recorded.
  const record = (name: string) => `#!/bin/sh
f=${name}; case " $* " in *" delete "*) f=${name}-delete ;; esac
printf '%s\\n' "$PREBAKE_EARLY" "$@" > "${dir}/$f.args"
[ -n "$PREBAKE_EARLY" ] && cp "$PREBAKE_EARLY/argv" "${dir}/early-argv"
echo ${name}
`;
  writeFileSync(join(dir, 'runc'), record('runc'), { mode: 0o755 });
  writeFileSync(join(dir, 'node'), record('node'), { mode: 0o755 });
  // A config naming a trust store of the test's own (the early restore checks the store entry's key is in it).
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ trust: join(dir, 'trust') }, null, 2));
  const env = { ...process.env, PREBAKE_RUNC: join(dir, 'runc'), PREBAKE_NODE: join(dir, 'node'), PREBAKE_STATE_DIR: join(dir, 'state'), PREBAKE_STORE_DIR: join(dir, 'store'), PREBAKE_CONFIG: join(dir, 'config.json') };
  const bundle = (name: string, config: string) => {
    execFileSync('mkdir', ['-p', join(dir, name)]);
    writeFileSync(join(dir, name, 'config.json'), config);
    return join(dir, name);
  };
  const who = (args: string[]) => execFileSync(join(REPO, 'bin/prebake'), args, { env, cwd: dir, encoding: 'utf8' }).trim();
  const args = (name: string) => readFileSync(join(dir, `${name}.args`), 'utf8').split('\n').slice(0, -1);
  return { dir, bundle, who, args };
}

test("bin/prebake's create hands to Node exactly the configs that name a checkpoint or a spec capture", async (t) => {
  const { bundle, who } = await standIns(t);
  const spec = (env: string[], annotations?: Record<string, string>) => ({ root: { path: 'rootfs' }, process: { env }, ...(annotations ? { annotations } : {}) });
  const cases: [string, object, string][] = [
    ['env', spec([`${CHECKPOINT_ENV}=/.prebake`]), 'node'],
    ['annotation', spec(['A=1'], { [CHECKPOINT_ANNOTATION]: '/.prebake' }), 'node'],
    ['capture', spec([`${CAPTURE_ENV}=tok`]), 'node'],
    ['off', spec([`${CHECKPOINT_ENV}=off`]), 'node'], // Node logs why it starts cold
    ['plain', spec(['A=1']), 'runc'],
    ['lookalike', spec([`${CHECKPOINT_ENV}S=/.prebake`, `X${CAPTURE_ENV}S=1`], { [`${CHECKPOINT_ANNOTATION}s`]: '/x' }), 'runc'],
  ];
  for (const [name, config, expected] of cases) {
    t.is(who(['create', '--bundle', bundle(`${name}-compact`, JSON.stringify(config)), 'id']), expected, `${name}, compact JSON`);
    t.is(who(['create', '--bundle', bundle(`${name}-pretty`, JSON.stringify(config, null, 2)), 'id']), expected, `${name}, indented JSON`);
  }
});

test("bin/prebake's create starts runc restoring beside Node only in the shape it can check, with the argv Node compares", async (t) => {
  const { dir, bundle, who, args } = await standIns(t);
  const { mkdirSync, writeFileSync, rmSync } = await import('node:fs');
  const config = { root: { path: 'rootfs' }, process: { env: [`${CHECKPOINT_ENV}=/.prebake`] } };
  const b = bundle('early', JSON.stringify(config, null, 2));
  mkdirSync(join(b, 'rootfs/.prebake/checkpoint'), { recursive: true });
  writeFileSync(join(b, 'rootfs/.prebake/manifest.json'), '{}');
  writeFileSync(join(b, 'rootfs/.prebake/checkpoint/pages-1.img'), '');
  // The verified store's entry for that manifest (named by its sha256): the early restore reads
  // it, never the rootfs's images.
  const { createHash } = await import('node:crypto');
  const digest = createHash('sha256').update('{}').digest('hex');
  const entry = join(dir, 'store', digest);
  // The hint prebake-build leaves beside the manifest: the shell finds the entry by it.
  writeFileSync(join(b, `rootfs/.prebake/manifest.json.sha256-${digest}`), '');
  mkdirSync(join(entry, 'checkpoint'), { recursive: true });
  const kid = 'ab'.repeat(32);
  writeFileSync(join(entry, 'ok'), `${kid}\n2026-01-01T00:00:00Z\n`);
  mkdirSync(join(dir, 'trust'));
  writeFileSync(join(dir, 'trust', `${kid}.pub`), '');
  const early = (argv: string[]) => {
    rmSync(join(dir, 'runc.args'), { force: true });
    t.true(who(argv).split('\n').includes('node'));
    const node = args('node');
    return { earlyDir: node[0], runc: existsSync(join(dir, 'runc.args')) ? args('runc').slice(1) : undefined };
  };
  const state = join(dir, 'state', '/r', 'ctr');
  const e = early(['--root', '/r', '--log', '/l.json', '--log-format', 'json', '--systemd-cgroup', 'create', '--bundle', b, '--pid-file', 'p.pid', 'ctr']);
  t.is(e.earlyDir, state);
  t.deepEqual(e.runc, ['--root', '/r', '--systemd-cgroup', '--log', `${state}/runc-restore.log`, '--log-format', 'json', 'restore', '--detach',
    '--image-path', `${entry}/checkpoint`, '--work-path', `${state}/criu`, '--bundle', b, '--pid-file', 'p.pid', 'ctr']);
  t.deepEqual(readFileSync(join(dir, 'early-argv'), 'utf8').split('\0').slice(0, -1), [join(dir, 'runc'), ...e.runc!], 'the argv recorded for Node is the one run');
  // This node did not settle the restore (it left argv in place): bin/prebake deleted the
  // container runc restored, with the same global flags, and prebake's state.
  t.deepEqual(args('runc-delete').slice(1), ['--root', '/r', '--systemd-cgroup', 'delete', '--force', 'ctr']);
  t.false(existsSync(state));
  // Without a pid file of the caller's, runc writes the restored init's pid in prebake's state.
  t.deepEqual(early(['--root', '/r', 'create', '--bundle', b, 'ctr']).runc, ['--root', '/r', '--log', `${state}/runc-restore.log`, '--log-format', 'json', 'restore', '--detach',
    '--image-path', `${entry}/checkpoint`, '--work-path', `${state}/criu`, '--bundle', b, '--pid-file', `${state}/pid`, 'ctr']);
  // Shapes left to Node alone: a terminal, descriptors to hand on, an unknown flag, a second
  // argument, an odd id, a checkpoint not in the store, a config naming the checkpoint twice or
  // carrying an org.criu.* annotation, a path leaving the rootfs.
  for (const argv of [
    ['create', '--bundle', b, '--console-socket', '/s.sock', 'ctr'],
    ['create', '--bundle', b, '--preserve-fds', '1', 'ctr'],
    ['create', '--bundle', b, '--new-flag', 'ctr'],
    ['create', '--bundle', b, 'ctr', 'extra'],
    ['create', '--bundle', b, 'a/b'],
  ])
    t.deepEqual(early(argv), { earlyDir: '', runc: undefined }, argv.join(' '));
  rmSync(join(b, `rootfs/.prebake/manifest.json.sha256-${digest}`));
  t.deepEqual(early(['create', '--bundle', b, 'ctr']), { earlyDir: '', runc: undefined }, 'no hint');
  writeFileSync(join(b, `rootfs/.prebake/manifest.json.sha256-${digest}`), '');
  rmSync(join(entry, 'ok'));
  t.deepEqual(early(['create', '--bundle', b, 'ctr']), { earlyDir: '', runc: undefined }, 'a checkpoint the host has not verified');
  writeFileSync(join(entry, 'ok'), `${kid}\n`);
  t.not(early(['create', '--bundle', b, 'ctr']).runc, undefined, 'verified again');
  rmSync(join(dir, 'trust', `${kid}.pub`));
  t.deepEqual(early(['create', '--bundle', b, 'ctr']), { earlyDir: '', runc: undefined }, 'verified under a key the host no longer trusts');
  writeFileSync(join(entry, 'ok'), 'none\n');
  t.deepEqual(early(['create', '--bundle', b, 'ctr']), { earlyDir: '', runc: undefined }, 'imported unsigned (trustAnyCheckpoint)');
  writeFileSync(join(dir, 'trust', `${kid}.pub`), '');
  writeFileSync(join(entry, 'ok'), `${kid}\n`);
  for (const [what, other] of [
    ['the variable twice', { ...config, annotations: { x: `${CHECKPOINT_ENV}=/elsewhere` } }],
    ['the annotation twice', { ...config, annotations: { [CHECKPOINT_ANNOTATION]: '/.prebake' }, hooks: { note: CHECKPOINT_ANNOTATION } }],
    ['an org.criu.config annotation', { ...config, annotations: { 'org.criu.config': '/tmp/evil.conf' } }],
  ] as const) {
    writeFileSync(join(b, 'config.json'), JSON.stringify(other));
    t.deepEqual(early(['create', '--bundle', b, 'ctr']), { earlyDir: '', runc: undefined }, what);
  }
  writeFileSync(join(b, 'config.json'), JSON.stringify({ ...config, process: { env: [`${CHECKPOINT_ENV}=/../rootfs/.prebake`] } }));
  t.deepEqual(early(['create', '--bundle', b, 'ctr']), { earlyDir: '', runc: undefined }, 'a path with ..');
});
