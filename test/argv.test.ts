// runc's argv grammar: the TypeScript table, its parser, and bin/prebake's copy of the global flags.

import test from 'ava';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CREATE_FLAGS, GLOBAL_FLAGS, flagIsSet, flagValue, parseFlags, parseRuntimeCall } from '../src/runtime/argv.ts';
import { REPO } from './helpers/bundle.ts';

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
  const sh = readFileSync(join(REPO, 'bin/prebake'), 'utf8');
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
