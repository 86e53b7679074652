// Registers the prebake runtime with docker, containerd and podman, and removes it again. Each
// engine's config is merged, never rewritten: the original bytes are kept beside prebake's state
// and put back on uninstall when nobody changed the file since; a malformed file is left alone.

import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { parse as parseToml, stringify as stringifyToml } from 'smol-toml';

export type Engine = 'docker' | 'containerd' | 'podman';
export const ENGINES: readonly Engine[] = ['docker', 'containerd', 'podman'];

const DEFAULT_CONFIG: Record<Engine, string> = {
  docker: '/etc/docker/daemon.json',
  containerd: '/etc/containerd/config.toml',
  podman: '/etc/containers/containers.conf',
};

const BEGIN = '# prebake: begin (written by `prebake install`, removed by `prebake uninstall`)';
const END = '# prebake: end';

interface InstallOptions {
  engine: Engine;
  /** The runtime binary the engine is given. */
  runtimePath: string;
  config?: string;
  /** Where the original config is kept (default PREBAKE_INSTALL_STATE, else /var/lib/prebake/install). */
  backupDir?: string;
}

const sha = (s: string) => createHash('sha256').update(s).digest('hex');

function readConfig(file: string): string | null {
  return existsSync(file) ? readFileSync(file, 'utf8') : null;
}

function writeAtomically(file: string, text: string): void {
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(`${file}.prebake-tmp`, text);
  renameSync(`${file}.prebake-tmp`, file);
}

function parseOrFail(engine: Engine, file: string, text: string): Record<string, unknown> {
  try {
    return engine === 'docker' ? (JSON.parse(text) as Record<string, unknown>) : (parseToml(text) as Record<string, unknown>);
  } catch (e) {
    throw new Error(`${file} is not valid ${engine === 'docker' ? 'JSON' : 'TOML'} (${(e as Error).message.split('\n')[0]}): left as it was`);
  }
}

const get = (o: unknown, path: string[]): unknown => path.reduce<unknown>((v, k) => (v && typeof v === 'object' ? (v as Record<string, unknown>)[k] : undefined), o);

/**
 * Where containerd's CRI runtime handlers live: a `version = 2` config (containerd 1.x; 2.x reads
 * it too) has them in the CRI plugin, a `version = 3` one (containerd 2.x) in the CRI runtime plugin.
 */
const CRI_RUNTIMES = {
  2: ['plugins', 'io.containerd.grpc.v1.cri', 'containerd', 'runtimes'],
  3: ['plugins', 'io.containerd.cri.v1.runtime', 'containerd', 'runtimes'],
} as const;

/** The shape of a containerd config: 3 for `version = 3` (or later), else 2 (also no file, no version). */
function containerdVersion(parsed: Record<string, unknown> | null): 2 | 3 {
  const v = parsed?.version;
  return (typeof v === 'number' || typeof v === 'bigint') && Number(v) >= 3 ? 3 : 2;
}

/** Is prebake already registered in this config? */
function registered(engine: Engine, parsed: Record<string, unknown>): boolean {
  switch (engine) {
    case 'docker':
      return get(parsed, ['runtimes', 'prebake']) !== undefined;
    case 'containerd':
      return get(parsed, [...CRI_RUNTIMES[containerdVersion(parsed)], 'prebake']) !== undefined;
    case 'podman':
      return get(parsed, ['engine', 'runtimes', 'prebake']) !== undefined;
  }
}

/** The config with prebake added: JSON merged for docker, a marked block for the TOML files. */
function withPrebake(engine: Engine, text: string | null, runtimePath: string): string {
  const q = JSON.stringify(runtimePath);
  switch (engine) {
    case 'docker': {
      const conf = text === null ? {} : (JSON.parse(text) as Record<string, unknown>);
      const runtimes = (conf.runtimes ?? {}) as Record<string, unknown>;
      return `${JSON.stringify({ ...conf, runtimes: { ...runtimes, prebake: { path: runtimePath } } }, null, 2)}\n`;
    }
    case 'containerd': {
      const base = text ?? 'version = 2\n';
      const parsed = text === null ? null : (parseToml(text) as Record<string, unknown>);
      const path = CRI_RUNTIMES[containerdVersion(parsed)];
      const table = `${path.map(tomlKey).join('.')}.prebake`;
      const block = [
        BEGIN,
        `[${table}]`,
        `  runtime_type = "io.containerd.runc.v2"`,
        `  [${table}.options]`,
        ...Object.entries(handlerOptions(parsed, path, runtimePath)).map(([k, v]) => `    ${tomlKey(k)} = ${tomlValue(v)}`),
        END,
      ].join('\n');
      return `${base.replace(/\n*$/, '\n')}\n${block}\n`;
    }
    case 'podman': {
      const line = `${BEGIN}\nprebake = [${q}]\n${END}`;
      const base = text ?? '';
      // A second [engine.runtimes] header would be a TOML error: add the key to the one there is.
      const header = /^\[engine\.runtimes\][ \t]*(#.*)?$/m.exec(base);
      if (header) return `${base.slice(0, header.index + header[0].length)}\n${line}${base.slice(header.index + header[0].length)}`;
      return `${base.replace(/\n*$/, base ? '\n' : '')}${base ? '\n' : ''}[engine.runtimes]\n${line}\n`;
    }
  }
}

/** A TOML key: bare where it may be, else quoted. */
function tomlKey(k: string): string {
  return /^[A-Za-z0-9_-]+$/.test(k) ? k : JSON.stringify(k);
}

/** A TOML value on one line (tables inline). */
function tomlValue(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(tomlValue).join(', ')}]`;
  if (v !== null && typeof v === 'object' && !(v instanceof Date))
    return `{ ${Object.entries(v as Record<string, unknown>)
      .map(([k, x]) => `${tomlKey(k)} = ${tomlValue(x)}`)
      .join(', ')} }`;
  return stringifyToml({ v }).replace(/^v = /, '').trimEnd();
}

/**
 * prebake's handler options: those of the config's runc handler (SystemdCgroup, Root, CriuPath,
 * …: the shim runs prebake as it runs runc, and the host's containers keep their cgroup driver),
 * with prebake's BinaryName, as nvidia-ctk makes its handler.
 */
function handlerOptions(parsed: Record<string, unknown> | null, runtimes: readonly string[], runtimePath: string): Record<string, unknown> {
  const runc = get(parsed, [...runtimes, 'runc', 'options']);
  const options = runc && typeof runc === 'object' && !Array.isArray(runc) ? { ...(runc as Record<string, unknown>) } : {};
  delete options.BinaryName;
  return { BinaryName: runtimePath, ...options };
}

/** The config without prebake's block (or key, for docker). */
function withoutPrebake(engine: Engine, text: string): string {
  if (engine === 'docker') {
    const conf = JSON.parse(text) as Record<string, unknown>;
    const runtimes = { ...((conf.runtimes ?? {}) as Record<string, unknown>) };
    delete runtimes.prebake;
    const out: Record<string, unknown> = { ...conf, runtimes };
    if (Object.keys(runtimes).length === 0) delete out.runtimes;
    return `${JSON.stringify(out, null, 2)}\n`;
  }
  const start = text.indexOf(BEGIN);
  const end = text.indexOf(END, start);
  if (start === -1 || end === -1) return text;
  return text.slice(0, start).replace(/\n\n$/, '\n') + text.slice(end + END.length).replace(/^\n/, '');
}

function backupFiles(o: InstallOptions) {
  const dir = o.backupDir ?? process.env.PREBAKE_INSTALL_STATE ?? '/var/lib/prebake/install';
  const key = sha(o.config ?? DEFAULT_CONFIG[o.engine]).slice(0, 12);
  return { dir, original: join(dir, `${o.engine}-${key}.orig`), written: join(dir, `${o.engine}-${key}.sha256`) };
}

export interface InstallResult {
  engine: Engine;
  config: string;
  changed: boolean;
  /** What the user still has to do for the engine to see the change. */
  reload: string;
}

const RELOAD: Record<Engine, string> = {
  docker: 'dockerd reloads runtimes on SIGHUP: kill -HUP $(pidof dockerd)',
  containerd: 'restart containerd to load it (systemctl restart containerd)',
  podman: 'podman reads it on its next run',
};

export function install(o: InstallOptions): InstallResult {
  const file = o.config ?? DEFAULT_CONFIG[o.engine];
  const before = readConfig(file);
  if (before !== null && registered(o.engine, parseOrFail(o.engine, file, before)))
    return { engine: o.engine, config: file, changed: false, reload: 'already registered' };
  const after = withPrebake(o.engine, before, o.runtimePath);
  if (!registered(o.engine, parseOrFail(o.engine, file, after))) throw new Error(`${file}: prebake's entry did not parse back (nothing written)`);
  const b = backupFiles(o);
  mkdirSync(b.dir, { recursive: true });
  if (before === null) rmSync(b.original, { force: true });
  else writeFileSync(b.original, before);
  writeFileSync(b.written, `${sha(after)}${before === null ? ' created' : ''}\n`);
  writeAtomically(file, after);
  return { engine: o.engine, config: file, changed: true, reload: RELOAD[o.engine] };
}

export function uninstall(o: InstallOptions): InstallResult {
  const file = o.config ?? DEFAULT_CONFIG[o.engine];
  const now = readConfig(file);
  if (now === null || !registered(o.engine, parseOrFail(o.engine, file, now))) return { engine: o.engine, config: file, changed: false, reload: 'not registered' };
  const b = backupFiles(o);
  const [writtenSha, created] = (existsSync(b.written) ? readFileSync(b.written, 'utf8').trim() : '').split(' ');
  if (writtenSha === sha(now)) {
    // Nobody touched the file since install: put back the very bytes that were there.
    if (created) rmSync(file);
    else writeAtomically(file, readFileSync(b.original, 'utf8'));
  } else {
    writeAtomically(file, withoutPrebake(o.engine, now));
  }
  rmSync(b.original, { force: true });
  rmSync(b.written, { force: true });
  return { engine: o.engine, config: file, changed: true, reload: RELOAD[o.engine] };
}

/** Sends dockerd SIGHUP so it reloads runtimes from daemon.json; false when no dockerd runs. */
export function reloadDocker(pidFile = '/var/run/docker.pid'): boolean {
  // The system dockerd only (its pid file), never every dockerd on the host: a private one still
  // starting has no SIGHUP handler yet and would die of it.
  try {
    const pid = Number(readFileSync(pidFile, 'utf8').trim());
    if (!Number.isInteger(pid) || pid <= 1 || readFileSync(`/proc/${pid}/comm`, 'utf8').trim() !== 'dockerd') return false;
    process.kill(pid, 'SIGHUP');
    return true;
  } catch {
    return false;
  }
}
