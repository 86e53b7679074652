// `prebake install|uninstall ENGINE… [--config FILE] [--path BIN]`: registers the runtime with
// docker, containerd (CRI handler "prebake", what a RuntimeClass and nerdctl use) and podman.

import { realpathSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { PREBAKE_BIN } from '../lib/paths.ts';
import { type Engine, ENGINES, install, type InstallResult, reloadDocker, uninstall } from './engines.ts';

const USAGE = `usage: prebake install|uninstall ENGINE... [--config FILE] [--path BIN]
  ENGINE   docker, containerd or podman
  --config the engine's config file (default /etc/docker/daemon.json,
           /etc/containerd/config.toml, /etc/containers/containers.conf); one engine only
  --path   the runtime path the engine is given (default: this prebake)
`;

export function main(argv: string[]): number {
  const [command, ...rest] = argv;
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
  const runtimePath = parsed.values.path ?? realpathSync(PREBAKE_BIN());
  let status = 0;
  for (const engine of engines as Engine[]) {
    const o = { engine, runtimePath, ...(parsed.values.config ? { config: parsed.values.config } : {}) };
    try {
      const r: InstallResult = command === 'install' ? install(o) : uninstall(o);
      let reload = r.reload;
      // Only the system dockerd reads the default daemon.json.
      if (r.changed && engine === 'docker' && !parsed.values.config && reloadDocker()) reload = 'dockerd reloaded (SIGHUP)';
      process.stdout.write(`${engine}: ${r.changed ? (command === 'install' ? 'registered in' : 'removed from') : 'unchanged'} ${r.config}; ${reload}\n`);
    } catch (e) {
      process.stderr.write(`prebake ${command} ${engine}: ${(e as Error).message}\n`);
      status = 1;
    }
  }
  return status;
}

process.exitCode = main(process.argv.slice(2));
