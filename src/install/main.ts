// prebake's own commands, none on an engine's hot path: `prebake install|uninstall ENGINE…`
// registers the runtime with docker, containerd (CRI handler "prebake", what a RuntimeClass and
// nerdctl use) and podman; `prebake key generate` makes a bake key; `prebake trust add|list|remove`
// edits the host's trust store; `prebake store list|prune` shows and prunes its verified store.

import { existsSync, lstatSync, readFileSync, realpathSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { dropEntries, listEntries, mib, pruneEntries, type StoreListing, UNUSED_DAYS } from '../checkpoint/store.ts';
import { DEFAULT_KEY, generateKey, loadTrustStore, publicFileOf, shortId, trustAdd, trustRemove } from '../checkpoint/trust.ts';
import { prebakeBinPath } from '../lib/paths.ts';
import { loadRuntimeConfig } from '../runtime/config.ts';
import { type Engine, ENGINES, install, type InstallResult, reloadDocker, uninstall } from './engines.ts';

const USAGE = `usage: prebake install|uninstall ENGINE... [--config FILE] [--path BIN]
  ENGINE   ${ENGINES.slice(0, -1).join(', ')} or ${ENGINES.at(-1)}
  --config the engine's config file (default /etc/docker/daemon.json,
           /etc/containerd/config.toml, /etc/containers/containers.conf); one engine only
  --path   the runtime path the engine is given (default: this prebake)
`;

const KEY_USAGE = `usage: prebake key generate [--out FILE]
  writes an ed25519 bake key FILE (default ${DEFAULT_KEY}, mode 0600) and FILE.pub
usage: prebake trust add PUBFILE | list | remove KEYID
  the keys whose signed checkpoints this host restores (the "trust" directory of the runtime's
  config, default /etc/prebake/trust)
`;

const STORE_USAGE = `usage: prebake store list | prune [--unused-days N]
  the verified store (the "store" directory of the runtime's config, default
  /var/lib/prebake/store): the checkpoints this host has authenticated and restores from
  list    each entry: its manifest's sha256, signing key, size, import and last use
  prune   removes the entries no create has used for N days (default ${UNUSED_DAYS}); a later create
          of their image verifies and imports its checkpoint again
`;
const day = (ms: number) => new Date(ms).toISOString().slice(0, 19).replace('T', ' ');
const entryLine = (e: StoreListing) => `${e.digest.slice(0, 16)}  key ${e.keyId.slice(0, 16).padEnd(16)}  ${mib(e.bytes).padStart(10)}  ${e.lazy ? 'lazy ' : 'eager'}  imported ${e.imported.slice(0, 19).replace('T', ' ') || '?'}  used ${day(e.usedMs)}`;

function storeCommand(rest: string[]): number {
  const cfg = loadRuntimeConfig();
  const fail = (msg: string) => {
    process.stderr.write(`prebake store: ${msg}\n${STORE_USAGE}`);
    return 2;
  };
  let parsed;
  try {
    parsed = parseArgs({ args: rest, allowPositionals: true, options: { 'unused-days': { type: 'string' }, help: { type: 'boolean', short: 'h' } } });
  } catch (e) {
    return fail((e as Error).message);
  }
  if (parsed.values.help) {
    process.stdout.write(STORE_USAGE);
    return 0;
  }
  const [verb, ...extra] = parsed.positionals;
  if (extra.length) return fail(`unexpected ${extra.join(' ')}`);
  const daysText = parsed.values['unused-days'];
  if (verb === 'list' && daysText === undefined) {
    try {
      const entries = listEntries(cfg.store);
      for (const e of entries) process.stdout.write(`${entryLine(e)}\n`);
      process.stdout.write(`${entries.length} verified checkpoint(s), ${mib(entries.reduce((n, e) => n + e.bytes, 0))}, in ${cfg.store}\n`);
      return 0;
    } catch (e) {
      process.stderr.write(`prebake store list: ${(e as Error).message}\n`);
      return 1;
    }
  }
  if (verb === 'prune') {
    const days = daysText === undefined ? UNUSED_DAYS : Number(daysText);
    if (!/^\d+(\.\d+)?$/.test(daysText ?? '0') || !Number.isFinite(days)) return fail(`--unused-days takes a number of days, not ${JSON.stringify(daysText)}`);
    try {
      const gone = pruneEntries(cfg.store, days * 86_400_000);
      for (const e of gone) process.stdout.write(`removed ${entryLine(e)}\n`);
      process.stdout.write(`${gone.length} verified checkpoint(s) unused for ${days} day(s) removed, ${mib(gone.reduce((n, e) => n + e.bytes, 0))} freed, from ${cfg.store}\n`);
      return 0;
    } catch (e) {
      process.stderr.write(`prebake store prune: ${(e as Error).message}\n`);
      return 1;
    }
  }
  if (verb === 'list') return fail('--unused-days goes with prune');
  return fail(verb ? `unknown: ${verb}` : 'what to do?');
}

/** The host's bake key, made and trusted on first use: local bakes then restore on this host. */
function ensureHostKey(): { keyId: string; created: boolean } {
  const cfg = loadRuntimeConfig();
  let created = false;
  let pub = publicFileOf(DEFAULT_KEY);
  if (!existsSync(DEFAULT_KEY)) {
    pub = generateKey(DEFAULT_KEY).publicFile;
    created = true;
  }
  return { keyId: trustAdd(cfg.trustDir, pub), created };
}

function keyOrTrust(command: string, rest: string[]): number {
  const cfg = loadRuntimeConfig();
  const fail = (msg: string) => {
    process.stderr.write(`prebake ${command}: ${msg}\n${KEY_USAGE}`);
    return 2;
  };
  let parsed;
  try {
    parsed = parseArgs({ args: rest, allowPositionals: true, options: { out: { type: 'string' }, help: { type: 'boolean', short: 'h' } } });
  } catch (e) {
    return fail((e as Error).message);
  }
  const [verb, arg, ...extra] = parsed.positionals;
  if (parsed.values.help) {
    process.stdout.write(KEY_USAGE);
    return 0;
  }
  if (extra.length) return fail(`unexpected ${extra.join(' ')}`);
  try {
    if (command === 'key' && verb === 'generate' && !arg) {
      const { keyId, publicFile } = generateKey(parsed.values.out ?? DEFAULT_KEY);
      process.stdout.write(`key ${keyId}\nprivate ${parsed.values.out ?? DEFAULT_KEY}\npublic ${publicFile}\n`);
      return 0;
    }
    if (command === 'trust' && verb === 'add' && arg) {
      process.stdout.write(`trusted ${trustAdd(cfg.trustDir, arg)} (${cfg.trustDir})\n`);
      return 0;
    }
    if (command === 'trust' && verb === 'list' && !arg) {
      for (const id of loadTrustStore(cfg.trustDir).keys()) process.stdout.write(`${id}\n`);
      return 0;
    }
    if (command === 'trust' && verb === 'remove' && arg) {
      const gone = trustRemove(cfg.trustDir, arg);
      if (gone.length === 0) {
        process.stderr.write(`prebake trust: no trusted key id starts with ${arg}\n`);
        return 1;
      }
      // What the host imported under a key it no longer trusts goes too.
      const dropped = dropEntries(cfg.store, gone);
      process.stdout.write(`${gone.map((id) => `removed ${id}`).join('\n')}\n${dropped} verified checkpoint(s) dropped from ${cfg.store}\n`);
      return 0;
    }
  } catch (e) {
    process.stderr.write(`prebake ${command} ${verb}: ${(e as Error).message}\n`);
    return 1;
  }
  return fail(verb ? `unknown: ${[verb, arg].filter(Boolean).join(' ')}` : 'what to do?');
}

/**
 * Why an engine must not be given this runtime: the binary, or the dist/ beside it, is not
 * root's, or others can write to it (whoever can is root in every container the engine starts).
 */
function unsafeRuntime(path: string): string | null {
  if (!existsSync(path)) return null; // nothing there yet: the engine fails on it, not this check
  const real = realpathSync(path);
  for (const p of [real, dirname(real), join(dirname(real), '..', 'dist'), join(dirname(real), '..', 'dist', 'prebake.cjs'), join(dirname(real), '..', 'dist', 'prebake.blob'), join(dirname(real), '..', 'dist', 'criu.conf')]) {
    const st = lstatSync(p, { throwIfNoEntry: false });
    if (!st) continue;
    if (st.uid !== 0) return `${p} is owned by uid ${st.uid}, not root`;
    if (st.mode & 0o022) return `${p} is writable by ${st.mode & 0o002 ? 'everyone' : 'its group'} (mode ${(st.mode & 0o777).toString(8)})`;
  }
  return null;
}

function main(argv: string[]): number {
  const [command, ...rest] = argv;
  if (command === 'key' || command === 'trust') return keyOrTrust(command, rest);
  if (command === 'store') return storeCommand(rest);
  let parsed;
  try {
    parsed = parseArgs({ args: rest, allowPositionals: true, options: { config: { type: 'string' }, path: { type: 'string' }, help: { type: 'boolean', short: 'h' } } });
  } catch (e) {
    process.stderr.write(`prebake ${command}: ${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  const engines = parsed.positionals;
  const bad = engines.filter((e) => !(ENGINES as readonly string[]).includes(e));
  if (parsed.values.help || engines.length === 0 || bad.length || (parsed.values.config && engines.length > 1)) {
    const why = bad.length ? `unknown engine ${bad.join(', ')}` : parsed.values.config && engines.length > 1 ? '--config names one engine\'s file' : '';
    process.stderr.write(`${why ? `prebake ${command}: ${why}\n` : ''}${USAGE}`);
    return parsed.values.help ? 0 : 2;
  }
  const runtimePath = parsed.values.path ?? realpathSync(prebakeBinPath());
  if (command === 'install') {
    const unsafe = unsafeRuntime(runtimePath);
    if (unsafe) {
      process.stderr.write(`prebake install: refused: ${unsafe}; every container the engine starts would run it as root\n`);
      return 1;
    }
    const { keyId, created } = ensureHostKey();
    if (created) process.stdout.write(`created this host's bake key ${DEFAULT_KEY} (key ${shortId(keyId)}), trusted\n`);
  }
  let status = 0;
  for (const engine of engines as Engine[]) {
    const o = { engine, runtimePath, ...(parsed.values.config ? { config: parsed.values.config } : {}) };
    try {
      const r: InstallResult = command === 'install' ? install(o) : uninstall(o);
      let reload = r.reload;
      // Only the system dockerd reads the default daemon.json.
      if (r.changed && engine === 'docker' && !parsed.values.config && reloadDocker())
        // dockerd 20.10 replaces its runtimes on SIGHUP only while daemon.json has "runtimes".
        reload = existsSync(r.config) && /"runtimes"/.test(readFileSync(r.config, 'utf8')) ? 'dockerd reloaded (SIGHUP)' : 'dockerd signalled (SIGHUP); it drops a runtime no longer in daemon.json only when restarted';
      process.stdout.write(`${engine}: ${r.changed ? (command === 'install' ? 'registered in' : 'removed from') : 'unchanged'} ${r.config}; ${reload}\n`);
    } catch (e) {
      process.stderr.write(`prebake ${command} ${engine}: ${(e as Error).message}\n`);
      status = 1;
    }
  }
  return status;
}

process.exitCode = main(process.argv.slice(2));
