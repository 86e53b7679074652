// The runtime spec a baked image will meet at run time, per target engine: runc's default spec, or
// the spec an engine generates (captured from the running dockerd or containerd), shaped for a bake run with the
// image's Entrypoint, Cmd, Env, WorkingDir and User and the user's overrides.

import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Spec } from '../../oci/runtime-spec.ts';
import { packLayer } from '../image/pack.ts';
import { scratchImage, writeImage } from '../image/write.ts';
import { criClient, criEndpoint, waitForImage } from '../lib/cri.ts';
import { createNetns, deleteNetns } from '../lib/netns.ts';
import { prebakeBinPath } from '../lib/paths.ts';
import { CAPTURE_ENV } from '../contract.ts';
import { runcDefaultSpec } from './spec.ts';

/** What an image is baked for: runc (a bundle of its own) or an engine of ENGINES below. */
export type Target = 'runc' | EngineTarget;

interface ImageRunConfig {
  Entrypoint?: string[] | null;
  Cmd?: string[] | null;
  Env?: string[] | null;
  WorkingDir?: string;
  User?: string;
}

export interface RunOverrides {
  env?: string[];
  /** Replaces the image's Entrypoint (a CRI container config's command). */
  entrypoint?: string[];
  /** Replaces the image's Cmd. */
  args?: string[];
  /** Replaces the image's WorkingDir. */
  cwd?: string;
  /** The engine's process.user stays (a CRI container config's run_as_user), not the image's User. */
  engineUser?: boolean;
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
function resolveUser(rootfs: string, user: string | undefined): { uid: number; gid: number } {
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
function mergeEnv(base: readonly string[], overrides: readonly string[]): string[] {
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

/**
 * The name dockerd and the CRI plugin know the prebake runtime by unless told otherwise (what
 * `prebake install docker|containerd` registers).
 */
export const DEFAULT_RUNTIME_NAME = 'prebake';

/** A runtime name as it may stand in daemon.json's "runtimes" and after `docker run --runtime=`. */
export const RUNTIME_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

interface EngineSpecOptions {
  /**
   * The name the prebake runtime is registered under with dockerd, or as the CRI plugin's runtime
   * handler (default "prebake"): the docker target's probe container runs with `--runtime=NAME`,
   * the cri target's probe pod with runtime_handler NAME. ctr and podman are given the runtime's
   * path, no name.
   */
  runtimeName?: string;
  /** For the cri target: the pod's PodSandboxConfig and the container's ContainerConfig (CRI's JSON, as crictl reads it). */
  podConfig?: CriConfig;
  containerConfig?: CriConfig;
}

/** A CRI message as JSON, field names as in api.proto (snake_case). */
export type CriConfig = Record<string, unknown>;

/** The probe image in containerd's default namespace, for both ctr targets. */
const CTR_PROBE = {
  image: `containerd:${SPEC_PROBE_IMAGE}`,
  present: () => cli('ctr', ['images', 'inspect', `docker.io/${SPEC_PROBE_IMAGE}`]),
  check: (_o: EngineSpecOptions) => void cli('ctr', ['version']),
};
const ctrRun = (env: string, flags: string[] = []) => cli('ctr', ['run', '--rm', '--runc-binary', prebakeBinPath(), ...flags, '--env', env, `docker.io/${SPEC_PROBE_IMAGE}`, `prebake-spec-${process.pid}`, '/bin/true']);

/** How each engine target runs a one-off container under the prebake runtime, and its probe image. */
const ENGINES = {
  docker: {
    image: `docker-daemon:${SPEC_PROBE_IMAGE}`,
    present: () => cli('docker', ['image', 'inspect', SPEC_PROBE_IMAGE]),
    check: (o: EngineSpecOptions) => {
      const name = o.runtimeName ?? DEFAULT_RUNTIME_NAME;
      const runtimes = JSON.parse(cli('docker', ['info', '--format', '{{json .Runtimes}}']) || '{}') as Record<string, unknown> | null;
      if (!runtimes || !Object.hasOwn(runtimes, name))
        throw new Error(`no runtime named "${name}" is registered with dockerd (runtimes.${name} in /etc/docker/daemon.json; prebake install docker registers prebake as "prebake", --runtime NAME names another)`);
    },
    run: (env: string, o: EngineSpecOptions) => cli('docker', ['run', '--rm', `--runtime=${o.runtimeName ?? DEFAULT_RUNTIME_NAME}`, '-e', env, SPEC_PROBE_IMAGE, '/bin/true']),
  },
  containerd: {
    ...CTR_PROBE,
    run: (env: string, _o: EngineSpecOptions) => ctrRun(env),
  },
  // `ctr run --with-ns network:PATH`: a network namespace made beforehand and joined by path, as
  // CNI, faasd and the CRI plugin give one.
  'containerd-netns': {
    ...CTR_PROBE,
    run: (env: string, _o: EngineSpecOptions) => {
      const name = `prebake-spec-${process.pid}`;
      try {
        return ctrRun(env, ['--with-ns', `network:${createNetns(name)}`]);
      } finally {
        deleteNetns(name);
      }
    },
  },
  // A pod through containerd's CRI plugin, with the prebake runtime handler: the spec a
  // Kubernetes pod's container gets (the sandbox's network, IPC and UTS namespaces joined by path,
  // the pod's /etc/hosts, /etc/hostname, /etc/resolv.conf and /dev/shm, the pod's volumes).
  cri: {
    image: `containerd:k8s.io/docker.io/${SPEC_PROBE_IMAGE}`,
    present: () => cli('ctr', ['-n', 'k8s.io', 'images', 'inspect', `docker.io/${SPEC_PROBE_IMAGE}`]),
    check: (_o: EngineSpecOptions) => void cli('ctr', ['version']),
    run: (env: string, o: EngineSpecOptions) => criProbe(env, o),
  },
  podman: {
    image: `containers-storage:${SPEC_PROBE_IMAGE}`,
    present: () => cli('podman', ['image', 'inspect', `localhost/${SPEC_PROBE_IMAGE}`]),
    check: (_o: EngineSpecOptions) => void cli('podman', ['version']),
    run: (env: string, _o: EngineSpecOptions) => cli('podman', ['run', '--rm', '--runtime', prebakeBinPath(), '--env', env, `localhost/${SPEC_PROBE_IMAGE}`, '/bin/true']),
  },
} as const;
type EngineTarget = keyof typeof ENGINES;
export const TARGETS: readonly Target[] = ['runc', ...(Object.keys(ENGINES) as EngineTarget[])];

/** What kubelet asks for a pod without host namespaces: the pod's network and IPC, a pid namespace per container. */
export const POD_NAMESPACES = { network: 'POD', pid: 'CONTAINER', ipc: 'POD' };

/** NAME=VALUE as a CRI KeyValue (a container config's envs). */
export const criKeyValue = (e: string) => ({ key: e.slice(0, e.indexOf('=')), value: e.slice(e.indexOf('=') + 1) });

/** A CRI config's linux.security_context ({} when it has none). */
export const securityContextOf = (config: CriConfig): CriConfig => (((config.linux ?? {}) as CriConfig).security_context ?? {}) as CriConfig;

function withNamespaceOptions(config: CriConfig): CriConfig {
  const sc = securityContextOf(config);
  return { ...config, linux: { ...((config.linux ?? {}) as CriConfig), security_context: { ...sc, namespace_options: sc.namespace_options ?? POD_NAMESPACES } } };
}

/**
 * Runs the probe container in a pod of its own through CRI (runtime handler --runtime, default
 * prebake), with the pod and container configs given, and removes both again. The runtime
 * copies the spec at the container's create, which the CRI plugin asks for at StartContainer.
 */
async function criProbe(env: string, o: EngineSpecOptions): Promise<void> {
  const endpoint = criEndpoint();
  const cri = criClient(endpoint);
  const handler = o.runtimeName ?? DEFAULT_RUNTIME_NAME;
  const image = `docker.io/${SPEC_PROBE_IMAGE}`;
  const logs = mkdtempSync(join(tmpdir(), 'prebake-cri-probe-'));
  let pod: string | undefined;
  let container: string | undefined;
  try {
    await waitForImage(cri, image);
    const given = o.podConfig ?? {};
    const sandbox = withNamespaceOptions({
      ...given,
      metadata: { namespace: 'default', ...((given.metadata ?? {}) as CriConfig), name: `prebake-spec-probe-${process.pid}`, uid: randomUUID(), attempt: 0 },
      log_directory: logs,
    });
    try {
      ({ pod_sandbox_id: pod } = await cri.runtime<{ pod_sandbox_id: string }>('RunPodSandbox', { config: sandbox, runtime_handler: handler }, 120_000));
    } catch (e) {
      const msg = (e as Error).message;
      if (/no runtime for|runtime handler/i.test(msg)) throw new Error(`the CRI plugin at ${endpoint} has no runtime handler "${handler}" (prebake install containerd registers "prebake"; --runtime NAME names another): ${msg}`);
      throw new Error(`CRI at ${endpoint}: ${msg}`);
    }
    const c = o.containerConfig ?? {};
    const config = withNamespaceOptions({
      ...c,
      metadata: { name: 'spec-probe', attempt: 0 },
      image: { image },
      command: ['/bin/true'],
      args: [],
      envs: [...((c.envs as unknown[] | undefined) ?? []), criKeyValue(env)],
      log_path: 'spec-probe.log',
    });
    ({ container_id: container } = await cri.runtime<{ container_id: string }>('CreateContainer', { pod_sandbox_id: pod, config, sandbox_config: sandbox }, 120_000));
    // The CRI plugin has the runtime create the container at StartContainer, not before.
    await cri.runtime('StartContainer', { container_id: container }, 120_000);
  } finally {
    if (container) await cri.runtime('StopContainer', { container_id: container, timeout: 10 }).catch(() => {});
    if (container) await cri.runtime('RemoveContainer', { container_id: container }).catch(() => {});
    if (pod) {
      await cri.runtime('StopPodSandbox', { pod_sandbox_id: pod }).catch(() => {});
      await cri.runtime('RemovePodSandbox', { pod_sandbox_id: pod }).catch(() => {});
    }
    cri.close();
    rmSync(logs, { recursive: true, force: true });
  }
}

/** A one-file image (busybox) to run the probe container from; written to the engine once. */
async function ensureSpecProbeImage(target: EngineTarget): Promise<void> {
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
async function captureEngineSpec(target: EngineTarget, o: EngineSpecOptions = {}, stateBase = process.env.PREBAKE_STATE_DIR ?? '/run/prebake'): Promise<Spec> {
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
    await engine.run(`${CAPTURE_ENV}=${token}`, o);
    if (!existsSync(file))
      throw new Error(target === 'docker' ? `the runtime "${o.runtimeName ?? DEFAULT_RUNTIME_NAME}" ran the probe container but handed no spec back: is it prebake?` : 'the runtime ran the probe container but handed no spec back');
    return JSON.parse(readFileSync(file, 'utf8')) as Spec;
  } catch (e) {
    throw new Error(`--target ${target}: could not capture the engine's spec: ${(e as Error).message}`);
  } finally {
    rmSync(file, { force: true });
    rmSync(request, { force: true });
  }
}

/** Namespaces a bake or verify run can make and then join by path, as the engine's spec joins them. */
export type JoinedType = 'network' | 'ipc' | 'uts';
export type JoinedPaths = Partial<Record<JoinedType, string>>;

/**
 * The namespaces the bake (and verify) run joins by path: the network for runc's own spec and
 * for every engine that hands runc a namespace it made (podman, ctr --with-ns, CRI); IPC and UTS
 * where the engine joins its own (the CRI pod's sandbox). docker and plain ctr let runc make one.
 */
export function joinedTypes(target: Target, engine: Spec): JoinedType[] {
  const types = new Set((engine.linux?.namespaces ?? []).filter((n) => n.path).map((n) => n.type as string));
  if (target === 'runc') types.add('network');
  for (const t of types)
    if (t !== 'network' && t !== 'ipc' && t !== 'uts') throw new Error(`--target ${target}: the engine's spec joins a ${t} namespace by path; a bake cannot make one to join`);
  return [...types] as JoinedType[];
}

/**
 * Makes the namespaces to join: the network one with `ip netns` (named `name`, loopback up), IPC
 * and UTS with unshare, each kept by a bind mount of its ns file under `dir` (the UTS one's
 * hostname is "prebake"). remove() unmounts and deletes them; idempotent.
 */
export function makeNamespaces(types: readonly JoinedType[], name: string, dir: string): { paths: JoinedPaths; remove(): void } {
  const paths: JoinedPaths = {};
  const bound: string[] = [];
  const remove = () => {
    if (paths.network) deleteNetns(name);
    for (const f of bound.splice(0)) {
      spawnSync('umount', [f], { stdio: 'ignore' });
      rmSync(f, { force: true });
    }
  };
  try {
    if (types.includes('network')) paths.network = createNetns(name);
    const other = types.filter((t): t is 'ipc' | 'uts' => t !== 'network');
    if (other.length) {
      mkdirSync(dir, { recursive: true });
      for (const t of other) {
        paths[t] = join(dir, t);
        writeFileSync(paths[t]!, '');
        bound.push(paths[t]!);
      }
      execFileSync('unshare', [...other.map((t) => `--${t}=${paths[t]}`), ...(other.includes('uts') ? ['hostname', 'prebake'] : ['true'])], { stdio: ['ignore', 'ignore', 'pipe'] });
    }
  } catch (e) {
    remove();
    throw new Error(`cannot make the namespaces a bake run joins (${types.join(', ')}): ${(e as Error).message}`);
  }
  return { paths, remove };
}

/** The engine's spec for a plain `run` of an image, before the image's own settings. */
export async function engineSpec(target: Target, o: EngineSpecOptions = {}): Promise<Spec> {
  return target === 'runc' ? runcDefaultSpec() : captureEngineSpec(target, o);
}

interface BakeSpecOptions {
  /** root.path as written into config.json. */
  rootfs: string;
  /** The unpacked image on the host, to resolve its User. */
  hostRootfs: string;
  /** The namespaces to join by path (see makeNamespaces); others the run makes. docker's network has no path (its hook sets it up). */
  nsPaths?: JoinedPaths;
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
  const args = [...(o.overrides?.entrypoint ?? image.Entrypoint ?? []), ...(o.overrides?.args ?? image.Cmd ?? [])];
  if (args.length === 0) throw new Error('the image has neither Entrypoint nor Cmd, and no --arg was given: nothing to run');
  let env = mergeEnv(image.Env ?? [], o.overrides?.env ?? []);
  if (!env.some((e) => e.startsWith('PATH='))) env = [DEFAULT_PATH, ...env];
  const user = o.overrides?.engineUser ? {} : resolveUser(o.hostRootfs, image.User);
  spec.process = {
    ...spec.process!,
    terminal: false,
    args,
    env: target === 'docker' ? [...env.filter((e) => !e.startsWith('HOSTNAME=')), 'HOSTNAME=prebake'] : env,
    cwd: o.overrides?.cwd || image.WorkingDir || '/',
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
    spec.linux.namespaces = (spec.linux.namespaces ?? []).map((ns) => {
      const path = o.nsPaths?.[ns.type as JoinedType];
      return path ? { type: ns.type, path } : { type: ns.type };
    });
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
