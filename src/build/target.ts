// The runtime spec a baked image will meet at run time, per target engine: runc's default spec, or
// the spec an engine generates (captured from the running dockerd or containerd), shaped for a bake run with the
// image's Entrypoint, Cmd, Env, WorkingDir and User and the user's overrides.

import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Spec } from '../../oci/runtime-spec.ts';
import { packLayer } from '../image/pack.ts';
import { scratchImage, writeImage } from '../image/write.ts';
import { PREBAKE_BIN } from '../lib/paths.ts';
import { CAPTURE_ENV } from '../runtime/create.ts';
import { runcDefaultSpec } from './spec.ts';

export const TARGETS = ['runc', 'docker', 'containerd', 'podman'] as const;
export type Target = (typeof TARGETS)[number];

export interface ImageRunConfig {
  Entrypoint?: string[] | null;
  Cmd?: string[] | null;
  Env?: string[] | null;
  WorkingDir?: string;
  User?: string;
}

export interface RunOverrides {
  env?: string[];
  /** Replaces the image's Cmd. */
  args?: string[];
}

const DEFAULT_PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
export const SPEC_PROBE_IMAGE = 'prebake/spec-probe:1';

function lookupId(rootfs: string, file: 'passwd' | 'group', name: string): { id: number; gid?: number } | undefined {
  try {
    for (const line of readFileSync(join(rootfs, 'etc', file), 'utf8').split('\n')) {
      const f = line.split(':');
      if (f[0] === name) return { id: Number(f[2]), ...(file === 'passwd' ? { gid: Number(f[3]) } : {}) };
    }
  } catch {
    /* no such file in the image */
  }
  return undefined;
}

/** Image `User` ("name", "uid", "uid:gid", "name:group") to numeric ids, as engines resolve it. */
export function resolveUser(rootfs: string, user: string | undefined): { uid: number; gid: number } {
  if (!user) return { uid: 0, gid: 0 };
  const [u, g] = user.split(':') as [string, string | undefined];
  const pw = /^\d+$/.test(u) ? { id: Number(u), gid: undefined } : lookupId(rootfs, 'passwd', u);
  if (!pw) throw new Error(`image user "${u}" is not in the image's /etc/passwd`);
  let gid = pw.gid ?? 0;
  if (g !== undefined) {
    const gr = /^\d+$/.test(g) ? { id: Number(g) } : lookupId(rootfs, 'group', g);
    if (!gr) throw new Error(`image group "${g}" is not in the image's /etc/group`);
    gid = gr.id;
  }
  return { uid: pw.id, gid };
}

/** Environment with overrides applied by variable name, as `docker run -e` does. */
export function mergeEnv(base: readonly string[], overrides: readonly string[]): string[] {
  const out = new Map<string, string>();
  for (const e of [...base, ...overrides]) out.set(e.split('=')[0]!, e);
  return [...out.values()];
}

function cli(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    const err = e as { stderr?: string; message: string; code?: string };
    if (err.code === 'ENOENT') throw new Error(`${cmd} is not installed`);
    throw new Error(`${cmd} ${args.join(' ')}: ${(err.stderr || err.message).trim().split('\n').at(-1)}`);
  }
}

/** The name dockerd knows the prebake runtime by unless told otherwise (what `prebake install docker` registers). */
export const DEFAULT_DOCKER_RUNTIME = 'prebake';

/** A runtime name as it may stand in daemon.json's "runtimes" and after `docker run --runtime=`. */
export const RUNTIME_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

export interface EngineSpecOptions {
  /**
   * The name the prebake runtime is registered under with dockerd (default "prebake"): the
   * docker target's probe container runs with `--runtime=NAME`. ctr and podman are given the
   * runtime's path, no name.
   */
  dockerRuntime?: string;
}

/** How each engine target runs a one-off container under the prebake runtime, and its probe image. */
const ENGINES = {
  docker: {
    image: `docker-daemon:${SPEC_PROBE_IMAGE}`,
    present: () => cli('docker', ['image', 'inspect', SPEC_PROBE_IMAGE]),
    check: (o: EngineSpecOptions) => {
      const name = o.dockerRuntime ?? DEFAULT_DOCKER_RUNTIME;
      const runtimes = JSON.parse(cli('docker', ['info', '--format', '{{json .Runtimes}}']) || '{}') as Record<string, unknown> | null;
      if (!runtimes || !Object.hasOwn(runtimes, name))
        throw new Error(`no runtime named "${name}" is registered with dockerd (runtimes.${name} in /etc/docker/daemon.json; prebake install docker registers prebake as "prebake", --runtime NAME names another)`);
    },
    run: (env: string, o: EngineSpecOptions) => cli('docker', ['run', '--rm', `--runtime=${o.dockerRuntime ?? DEFAULT_DOCKER_RUNTIME}`, '-e', env, SPEC_PROBE_IMAGE, '/bin/true']),
  },
  containerd: {
    image: `containerd:${SPEC_PROBE_IMAGE}`,
    present: () => cli('ctr', ['images', 'inspect', `docker.io/${SPEC_PROBE_IMAGE}`]),
    check: (_o: EngineSpecOptions) => void cli('ctr', ['version']),
    run: (env: string, _o: EngineSpecOptions) => cli('ctr', ['run', '--rm', '--runc-binary', PREBAKE_BIN(), '--env', env, `docker.io/${SPEC_PROBE_IMAGE}`, `prebake-spec-${process.pid}`, '/bin/true']),
  },
  podman: {
    image: `containers-storage:${SPEC_PROBE_IMAGE}`,
    present: () => cli('podman', ['image', 'inspect', `localhost/${SPEC_PROBE_IMAGE}`]),
    check: (_o: EngineSpecOptions) => void cli('podman', ['version']),
    run: (env: string, _o: EngineSpecOptions) => cli('podman', ['run', '--rm', '--runtime', PREBAKE_BIN(), '--env', env, `localhost/${SPEC_PROBE_IMAGE}`, '/bin/true']),
  },
} as const;

/** A one-file image (busybox) to run the probe container from; written to the engine once. */
async function ensureSpecProbeImage(target: keyof typeof ENGINES): Promise<void> {
  const engine = ENGINES[target];
  try {
    engine.present();
    return;
  } catch {
    /* not there yet */
  }
  const dir = mkdtempSync(join(tmpdir(), 'prebake-probe-image-'));
  try {
    mkdirSync(join(dir, 'bin'));
    copyFileSync('/bin/busybox', join(dir, 'bin/busybox'));
    symlinkSync('busybox', join(dir, 'bin/true'));
    const layer = await packLayer(dir, '/');
    try {
      await writeImage(engine.image, { source: scratchImage(), addLayer: layer, createdBy: 'prebake spec probe: busybox' });
    } finally {
      await layer.cleanup();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * The spec an engine generates for a plain run of an image: a probe container runs once under the
 * prebake runtime, which copies its config.json (see CAPTURE_ENV).
 */
export async function captureEngineSpec(target: keyof typeof ENGINES, o: EngineSpecOptions = {}, stateBase = process.env.PREBAKE_STATE_DIR ?? '/run/prebake'): Promise<Spec> {
  const engine = ENGINES[target];
  const token = `build-${process.pid}-${randomBytes(6).toString('hex')}`;
  const file = join(stateBase, 'captures', `${token}.json`);
  // The runtime captures a spec only for a token prebake-build asked for here (root's state).
  const request = join(stateBase, 'captures', `${token}.request`);
  try {
    engine.check(o);
    await ensureSpecProbeImage(target);
    mkdirSync(join(stateBase, 'captures'), { recursive: true, mode: 0o700 });
    writeFileSync(request, '', { mode: 0o600 });
    engine.run(`${CAPTURE_ENV}=${token}`, o);
    if (!existsSync(file))
      throw new Error(target === 'docker' ? `the runtime "${o.dockerRuntime ?? DEFAULT_DOCKER_RUNTIME}" ran the probe container but handed no spec back: is it prebake?` : 'the runtime ran the probe container but handed no spec back');
    return JSON.parse(readFileSync(file, 'utf8')) as Spec;
  } catch (e) {
    throw new Error(`--target ${target}: could not capture the engine's spec: ${(e as Error).message}`);
  } finally {
    rmSync(file, { force: true });
    rmSync(request, { force: true });
  }
}

/**
 * Whether the bake (and verify) run joins a network namespace of ours by path: runc's own spec,
 * and engines that hand runc a namespace they made (podman). docker and ctr let runc make one.
 */
export function joinsNetnsByPath(target: Target, engine: Spec): boolean {
  return target === 'runc' || Boolean(engine.linux?.namespaces?.find((n) => n.type === 'network')?.path);
}

/** The engine's spec for a plain `run` of an image, before the image's own settings. */
export async function engineSpec(target: Target, o: EngineSpecOptions = {}): Promise<Spec> {
  return target === 'runc' ? runcDefaultSpec() : captureEngineSpec(target, o);
}

export interface BakeSpecOptions {
  /** root.path as written into config.json. */
  rootfs: string;
  /** The unpacked image on the host, to resolve its User. */
  hostRootfs: string;
  /** For the runc target: the network namespace to join. docker's has no path (its hook sets it up). */
  netnsPath?: string;
  /** A directory for the files engines bind-mount (/etc/hosts, /etc/hostname, /etc/resolv.conf). */
  scratch: string;
  overrides?: RunOverrides;
}

/**
 * The engine's spec made runnable by runc for a bake or a verify run: the image's process, a
 * rootfs of ours, engine-owned bind sources replaced by our files, no hooks, no engine cgroup.
 * Everything a restore is checked against (mount destinations, capabilities, seccomp, masks) stays.
 */
export function targetSpec(target: Target, engine: Spec, image: ImageRunConfig, o: BakeSpecOptions): Spec {
  const spec = structuredClone(engine);
  const args = [...(image.Entrypoint ?? []), ...(o.overrides?.args ?? image.Cmd ?? [])];
  if (args.length === 0) throw new Error('the image has neither Entrypoint nor Cmd, and no --arg was given: nothing to run');
  let env = mergeEnv(image.Env ?? [], o.overrides?.env ?? []);
  if (!env.some((e) => e.startsWith('PATH='))) env = [DEFAULT_PATH, ...env];
  const user = resolveUser(o.hostRootfs, image.User);
  spec.process = {
    ...spec.process!,
    terminal: false,
    args,
    env: target === 'docker' ? [...env.filter((e) => !e.startsWith('HOSTNAME=')), 'HOSTNAME=prebake'] : env,
    cwd: image.WorkingDir || '/',
    user: { ...spec.process!.user, ...user },
  };
  // runc's own default is a readonly rootfs; engines (and umoci) give a writable one.
  spec.root = { path: o.rootfs, readonly: target === 'runc' ? false : (spec.root?.readonly ?? false) };
  if (target === 'docker') spec.hostname = 'prebake';
  delete spec.hooks;
  delete (spec as { 'io.prebake.rootfsMode'?: number })['io.prebake.rootfsMode'];
  spec.annotations = null;
  if (spec.linux) {
    delete spec.linux.cgroupsPath;
    spec.linux.namespaces = (spec.linux.namespaces ?? []).map((ns) => (ns.type === 'network' ? (o.netnsPath ? { type: 'network', path: o.netnsPath } : { type: 'network' }) : ns));
  }
  const files: Record<string, string> = {
    '/etc/hosts': '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n',
    '/etc/hostname': 'prebake\n',
    '/etc/resolv.conf': '',
  };
  mkdirSync(o.scratch, { recursive: true });
  spec.mounts = (spec.mounts ?? []).map((m) => {
    // The engine's own files (/etc/hosts, podman's /run/.containerenv, …) went with its probe
    // container: bind files of ours in their place, at the same destinations.
    const missing = m.type === 'bind' && m.source !== undefined && !existsSync(m.source);
    const content = files[m.destination] ?? (missing ? '' : undefined);
    if (content === undefined || m.type !== 'bind') return m;
    const source = join(o.scratch, m.destination.slice(1).replace(/\//g, '_'));
    // podman binds a shm directory of its own at /dev/shm; the rest are files.
    if (m.destination === '/dev/shm') mkdirSync(source, { recursive: true });
    else writeFileSync(source, content);
    return { ...m, source };
  });
  return spec;
}
