// One engine, started privately (lab/engines/daemons.ts), and the one thing the benchmark and the
// study do with it: start a container of an image detached, under runc or prebake, and time it from
// the spawn of `run -d` to the first HTTP 200 — docker and podman on a published port from the
// host, a ctr task (loopback only) from inside its network namespace — then talk to it and remove it.
//
//   const engine = await startEngine('docker');
//   try {
//     const image = await engine.bake('noop');
//     const c = await engine.start({ image, runtime: 'prebake', port: 8080 });
//     c.startupMs; JSON.parse(c.first.body).served; await c.remove();
//   } finally { await engine.stop(); }

import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { criKeyValue, type Target } from '../../src/bake/target.ts';
import type { FunctionName } from '../functions.ts';
import { waitForImage } from '../../src/lib/cri.ts';
import type { HttpResult, Request } from '../../src/lib/netns.ts';
import { prebakeBinPath } from '../../src/lib/paths.ts';
import { bakeFunction } from './bake.ts';
import { EngineClient, type Endpoint } from './client.ts';
import { cniNetwork } from './cni.ts';
import { CRI_NAMESPACE, CRI_RUNC_ROOT, type Pod, writePauseImage } from './cri.ts';
import { type Containerd, type Dockerd, type Podman, startContainerd, startDockerd, startPodman } from './daemons.ts';

/**
 * containerd-cni: ctr run --with-ns network:PATH in a CNI bridge network's namespace (faasd's way);
 * cri: a pod through containerd's CRI plugin (Kubernetes' way).
 */
export const ENGINE_NAMES = ['docker', 'containerd', 'containerd-cni', 'cri', 'podman'] as const;
export type EngineName = (typeof ENGINE_NAMES)[number];
export const isEngineName = (s: string): s is EngineName => (ENGINE_NAMES as readonly string[]).includes(s);

type Runtime = 'prebake' | 'runc';

export interface StartOptions {
  /** The image as NAME:TAG, as `bake` returns it (the engine adds its own registry prefix). */
  image: string;
  runtime: Runtime;
  /** NAME=VALUE pairs for the container's environment (`-e`, ctr's `--env`). */
  env?: string[];
  /**
   * Start cold although the image is prebaked: `-e PREBAKE_CHECKPOINT=off` (docker, ctr), or
   * `--annotation io.prebake.checkpoint=off` under podman, which copies the image's annotations
   * into the spec, where the annotation wins over the environment.
   */
  checkpointOff?: boolean;
  /** The port the container listens on. */
  port: number;
  /** What is polled for the first answer; default GET /. */
  path?: string;
  /** Give up waiting for the first answer after this long (default 60 s). */
  timeoutMs?: number;
}

/** A running container, started and answered. */
export interface Started {
  /** The name the engine knows it by. */
  name: string;
  /** Spawn of `run -d` to the first HTTP answer below 500, ms. */
  startupMs: number;
  first: HttpResult;
  /** One request to the container, by the same way as the first. */
  request(r: Omit<Request, 'port'> & { timeoutMs?: number }): Promise<HttpResult>;
  /** Removes the container (killed first). */
  remove(): Promise<void>;
  /**
   * With two CPUs or more, puts the client on CPU 0 and the container on the others: the
   * scheduler otherwise stacks a just-restored server on its client's CPU far more often than a
   * cold one, which shows in sub-millisecond requests. For latency measurements, in both modes;
   * the next start frees the client again.
   */
  settle(): Promise<void>;
  /** The resident memory (VmRSS, kB) of the container's processes now, where the runner can read it. */
  residentKB?(): number | undefined;
}

export interface Engine {
  name: EngineName;
  /** e.g. "docker 20.10.24+dfsg1". */
  version: string;
  /** The environment prebake-build and the engine's CLI need to reach this private instance. */
  env: NodeJS.ProcessEnv;
  /** How a container is started, started cold and reached, for reports; `run`: what is timed, `runRm`: a foreground run. */
  describe: { prebake: string; runc: string; off: string; reached: string; run: string; runRm: string };
  /** prebake-build's reference for NAME:TAG in this engine. */
  transportRef(image: string): string;
  /** Bakes a sample function with `--target <engine>` into the engine; resolves to its NAME:TAG. */
  bake(fn: FunctionName): Promise<string>;
  /** Starts a container of `image` detached and times it to its first HTTP answer. */
  start(o: StartOptions): Promise<Started>;
  /** `run --rm IMAGE ARGS…` (a foreground container) to its exit; resolves to the time it took, ms. */
  runRm(image: string, runtime: Runtime, args: string[]): Promise<number>;
  /** Removes every container and stops the engine; leaves nothing behind. */
  stop(): Promise<void>;
}

const exec = promisify(execFile);

/** A TCP port on 127.0.0.1 that nothing listens on right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => (a && typeof a === 'object' ? resolve(a.port) : reject(new Error('no port'))));
    });
  });
}

/** What differs between engines: how a container is run, reached, removed. */
interface Driver {
  version: string;
  /** prebake-build's --target for this engine. */
  target: Target;
  env: NodeJS.ProcessEnv;
  describe: Engine['describe'];
  transportRef(image: string): string;
  /** What comes before the clock starts (a CRI pod and its container made, a CNI netns). */
  prepare?(name: string, o: StartOptions): Promise<void>;
  /** `run -d` (publishing `o.port` on 127.0.0.1:hostPort where there is a port to publish); resolves once the engine's command has returned, to how the container is reached. */
  runDetached(name: string, o: StartOptions, hostPort: number): Promise<Endpoint>;
  remove(name: string): Promise<void>;
  /** Sets the container's cpuset. */
  pin(name: string, cpus: string): Promise<void>;
  runRm(name: string, image: string, runtime: Runtime, args: string[]): Promise<void>;
  logs(name: string): Promise<string>;
  stop(): Promise<void>;
}

const envFlags = (flag: string, env: string[] | undefined) => (env ?? []).flatMap((e) => [flag, e]);
const OFF_ENV = 'PREBAKE_CHECKPOINT=off';

async function dockerDriver(): Promise<Driver> {
  const ctd = await startContainerd();
  let dk: Dockerd;
  try {
    dk = await startDockerd(ctd);
  } catch (e) {
    await ctd.stop();
    throw e;
  }
  const stop = async () => {
    await dk.stop();
    await ctd.stop();
  };
  try {
    const version = `docker ${(await dk.docker(['version', '--format', '{{.Server.Version}}'])).trim()}`;
    return {
      version,
      env: dk.env,
      target: 'docker',
      describe: { prebake: 'docker run -d --runtime=prebake -p 127.0.0.1:PORT:8080 IMAGE', runc: 'docker run -d --runtime=runc -p 127.0.0.1:PORT:8080 IMAGE', off: `-e ${OFF_ENV}`, reached: 'on the published port from the host (docker-proxy)', run: 'docker run -d', runRm: 'docker run --rm' },
      transportRef: (image) => `docker-daemon:${image}`,
      async runDetached(name, o, port) {
        await dk.docker(['run', '-d', '--name', name, `--runtime=${o.runtime}`, ...envFlags('-e', o.env), ...(o.checkpointOff ? ['-e', OFF_ENV] : []), '-p', `127.0.0.1:${port}:${o.port}`, o.image]);
        return { host: '127.0.0.1', port };
      },
      remove: async (name) => void (await dk.docker(['rm', '-f', '-v', name]).catch(() => '')),
      pin: async (name, cpus) => void (await dk.docker(['update', '--cpuset-cpus', cpus, name])),
      runRm: async (name, image, runtime, args) => void (await dk.docker(['run', '--rm', '--name', name, `--runtime=${runtime}`, image, ...args])),
      logs: async (name) => (await exec('docker', ['logs', name], { env: dk.env }).then((r) => r.stdout + r.stderr, () => '')).trim(),
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}

/** ctr against a private containerd; with `cni`, each task joins a CNI bridge network's namespace by path (ctr run --with-ns). */
async function containerdDriver(cni = false): Promise<Driver> {
  const ctd: Containerd = await startContainerd();
  const net = cni ? cniNetwork('prebake-bench0', '10.250.79') : undefined;
  const joined = new Map<string, { path: string; ip: string }>();
  try {
    const version = `containerd ${/Server:\s*\n\s*Version:\s*(\S+)/.exec(await ctd.ctr(['version']))?.[1] ?? '?'}`;
    const ref = (image: string) => `docker.io/${image}`;
    const runtimeFlags = (runtime: Runtime) => (runtime === 'prebake' ? ['--runc-binary', prebakeBinPath()] : []);
    return {
      version,
      env: ctd.env,
      target: cni ? 'containerd-netns' : 'containerd',
      describe: net
        ? { prebake: `ctr run -d --runc-binary ${prebakeBinPath()} --with-ns network:NETNS IMAGE ID`, runc: 'ctr run -d --with-ns network:NETNS IMAGE ID', off: `--env ${OFF_ENV}`, reached: 'on its CNI address from the host (a bridge network; CNI ADD before the clock starts)', run: 'ctr run -d --with-ns network:NETNS', runRm: 'ctr run --rm' }
        : { prebake: `ctr run -d --runc-binary ${prebakeBinPath()} IMAGE ID`, runc: 'ctr run -d IMAGE ID', off: `--env ${OFF_ENV}`, reached: "inside the task's network namespace (ctr gives it loopback only)", run: 'ctr run -d', runRm: 'ctr run --rm' },
      transportRef: (image) => `containerd:${image}`,
      ...(net ? { prepare: async (name: string) => void joined.set(name, net.add(name)) } : {}),
      async runDetached(name, o) {
        const ns = joined.get(name);
        await ctd.ctr(['run', '-d', ...runtimeFlags(o.runtime), ...(ns ? ['--with-ns', `network:${ns.path}`] : []), ...envFlags('--env', o.env), ...(o.checkpointOff ? ['--env', OFF_ENV] : []), ref(o.image), name]);
        if (ns) return { host: ns.ip, port: o.port };
        // The shim writes the task's pid into its bundle before `ctr run -d` returns.
        const pid = Number(readFileSync(join(ctd.state, 'io.containerd.runtime.v2.task', 'default', name, 'init.pid'), 'utf8'));
        return { pid, port: o.port };
      },
      async remove(name) {
        await ctd.ctr(['task', 'kill', '-s', 'SIGKILL', name]).catch(() => '');
        await ctd.ctr(['task', 'delete', '-f', name]).catch(() => '');
        await ctd.ctr(['container', 'delete', name]).catch(() => '');
        if (joined.delete(name)) net?.del(name);
      },
      // ctr has no `task update`: runc's, on the root the shim gives every runtime here.
      pin: async (name, cpus) => void (await exec('runc', ['--root', '/run/containerd/runc/default', 'update', '--cpuset-cpus', cpus, name])),
      runRm: async (name, image, runtime, args) => void (await ctd.ctr(['run', '--rm', ...runtimeFlags(runtime), ref(image), name, ...args])),
      logs: async (name) => readFileSync(join(ctd.state, 'io.containerd.runtime.v2.task', 'default', name, 'log.json'), 'utf8').trim(),
      stop: async () => {
        await ctd.stop();
        net?.remove();
      },
    };
  } catch (e) {
    await ctd.stop();
    net?.remove();
    throw e;
  }
}

/**
 * Pods through a private containerd's CRI plugin (startContainerd({ cri: true })), as kubelet
 * makes them: the pod sandbox and the container are made before the clock starts, StartContainer
 * is timed to the first answer on the pod IP. The prebake runtime handler, or the default runc one.
 */
async function criDriver(): Promise<Driver> {
  const ctd = await startContainerd({ cri: true });
  const made = new Map<string, { pod: Pod; id: string }>();
  const ref = (image: string) => `docker.io/${image}`;
  const make = async (name: string, o: Pick<StartOptions, 'image' | 'runtime' | 'env' | 'checkpointOff'>, extra: Record<string, unknown> = {}) => {
    await waitForImage(ctd.cri, ref(o.image));
    const pod = await ctd.runPod(name, o.runtime === 'prebake' ? 'prebake' : '');
    made.set(name, { pod, id: '' });
    const id = await ctd.createContainer(pod, 'fn', ref(o.image), { ...extra, envs: [...(o.env ?? []), ...(o.checkpointOff ? [OFF_ENV] : [])].map(criKeyValue) });
    made.set(name, { pod, id });
    return { pod, id };
  };
  const remove = async (name: string) => {
    const m = made.get(name);
    if (!m) return;
    made.delete(name);
    if (m.id) {
      await ctd.cri.runtime('StopContainer', { container_id: m.id, timeout: 0 }).catch(() => {});
      await ctd.cri.runtime('RemoveContainer', { container_id: m.id }).catch(() => {});
    }
    await ctd.cri.runtime('StopPodSandbox', { pod_sandbox_id: m.pod.id }).catch(() => {});
    await ctd.cri.runtime('RemovePodSandbox', { pod_sandbox_id: m.pod.id }).catch(() => {});
  };
  try {
    await writePauseImage(ctd);
    const version = `containerd ${/Server:\s*\n\s*Version:\s*(\S+)/.exec(await ctd.ctr(['version']))?.[1] ?? '?'} (CRI)`;
    return {
      version,
      target: 'cri',
      env: ctd.env,
      describe: {
        prebake: 'RunPodSandbox (runtime_handler prebake), CreateContainer, then StartContainer',
        runc: 'the same with the default (runc) handler',
        off: `envs ${OFF_ENV}`,
        reached: 'on the pod IP from the host (a CNI bridge; the pod and its container are made before the clock starts)',
        run: 'CRI StartContainer',
        runRm: 'CRI pod + container to its exit',
      },
      transportRef: (image) => `containerd:${CRI_NAMESPACE}/${ref(image)}`,
      prepare: async (name, o) => void (await make(name, o)),
      async runDetached(name, o) {
        const { pod, id } = made.get(name)!;
        await ctd.cri.runtime('StartContainer', { container_id: id });
        return { host: pod.ip, port: o.port };
      },
      remove,
      pin: async (name, cpus) => void (await exec('runc', ['--root', CRI_RUNC_ROOT, 'update', '--cpuset-cpus', cpus, made.get(name)!.id])),
      async runRm(name, image, runtime, args) {
        const { id } = await make(name, { image, runtime }, { command: args });
        try {
          await ctd.cri.runtime('StartContainer', { container_id: id });
          for (;;) {
            const st = await ctd.cri.runtime<{ status: { state: string } }>('ContainerStatus', { container_id: id });
            if (st.status.state === 'CONTAINER_EXITED') break;
            await new Promise((r) => setTimeout(r, 2));
          }
        } finally {
          await remove(name);
        }
      },
      logs: async (name) => (made.get(name)?.id ? ctd.runtimeLog(made.get(name)!.id).map((l) => `${l.level}: ${l.msg}`).join('\n') : ''),
      stop: async () => {
        for (const name of [...made.keys()]) await remove(name);
        await ctd.stop();
      },
    };
  } catch (e) {
    await ctd.stop();
    throw e;
  }
}

async function podmanDriver(): Promise<Driver> {
  const pm: Podman = await startPodman();
  try {
    const version = `podman ${(await pm.podman(['version', '--format', '{{.Client.Version}}'])).trim()}`;
    const ref = (image: string) => `localhost/${image}`;
    return {
      version,
      env: pm.env,
      target: 'podman',
      describe: { prebake: 'podman run -d --runtime prebake -p 127.0.0.1:PORT:8080 IMAGE', runc: 'podman run -d --runtime runc -p 127.0.0.1:PORT:8080 IMAGE', off: '--annotation io.prebake.checkpoint=off', reached: 'on the published port from the host', run: 'podman run -d', runRm: 'podman run --rm' },
      transportRef: (image) => `containers-storage:${image}`,
      async runDetached(name, o, port) {
        await pm.podman(['run', '-d', '--name', name, '--runtime', o.runtime, ...envFlags('-e', o.env), ...(o.checkpointOff ? ['--annotation', 'io.prebake.checkpoint=off'] : []), '-p', `127.0.0.1:${port}:${o.port}`, ref(o.image)]);
        return { host: '127.0.0.1', port };
      },
      remove: async (name) => void (await pm.podman(['rm', '-f', '-t', '0', name]).catch(() => '')),
      pin: async (name, cpus) => void (await pm.podman(['update', '--cpuset-cpus', cpus, name])),
      runRm: async (name, image, runtime, args) => void (await pm.podman(['run', '--rm', '--name', name, '--runtime', runtime, ref(image), ...args])),
      logs: async (name) => (await exec('podman', ['logs', name], { env: pm.env }).then((r) => r.stdout + r.stderr, () => '')).trim(),
      stop: () => pm.stop(),
    };
  } catch (e) {
    await pm.stop();
    throw e;
  }
}

const DRIVERS: Record<EngineName, () => Promise<Driver>> = { docker: dockerDriver, containerd: () => containerdDriver(), 'containerd-cni': () => containerdDriver(true), cri: criDriver, podman: podmanDriver };

let seq = 0;

/** Engines started and not yet stopped, for stopEnginesOnSignal. */
const running = new Set<Engine>();
let signalled = false;

/** Whether stopEnginesOnSignal is stopping the engines: what fails meanwhile is the stop, not an error to report. */
export const stoppingOnSignal = (): boolean => signalled;

/**
 * On SIGINT, SIGTERM or SIGHUP, stops every engine still running (containers, daemons, temp dirs)
 * before the process exits with 128 + the signal's number. For scripts; call it once.
 */
export function stopEnginesOnSignal(log: (line: string) => void = (l) => process.stderr.write(`${l}\n`)): void {
  const numbers = { SIGINT: 2, SIGTERM: 15, SIGHUP: 1 } as const;
  for (const [sig, n] of Object.entries(numbers)) {
    process.on(sig, () => {
      if (signalled) return;
      signalled = true;
      log(`${sig}: stopping ${running.size} engine(s) ...`);
      void Promise.allSettled([...running].map((e) => e.stop())).then(() => process.exit(128 + n));
    });
  }
}

/** Starts the engine privately (podman: its own config and storage); `stop()` leaves nothing behind. */
export async function startEngine(name: EngineName): Promise<Engine> {
  const d = await DRIVERS[name]();
  let client: EngineClient;
  try {
    client = await EngineClient.start();
  } catch (e) {
    await d.stop();
    throw e;
  }
  let pinned = false;
  const placeClient = async (cpuList: string) => {
    await exec('taskset', ['-a', '-pc', cpuList, String(client.pid)]);
    pinned = cpuList === '0';
  };
  const engine: Engine = {
    name,
    version: d.version,
    env: d.env,
    describe: d.describe,
    transportRef: d.transportRef,
    async bake(fn) {
      const image = `prebake/${fn}:baked`;
      await bakeFunction(fn, { target: d.target, dest: d.transportRef(image), env: d.env });
      return image;
    },
    async start(o) {
      const cname = `pbk-${process.pid}-${++seq}`;
      const hostPort = await freePort();
      // Startup is timed with the client free to run anywhere (settle pinned it for the last one).
      if (pinned) await placeClient(`0-${cpus().length - 1}`);
      try {
        await d.prepare?.(cname, o);
      } catch (e) {
        await d.remove(cname);
        throw e;
      }
      const t0 = performance.now();
      let at: Endpoint;
      let first: HttpResult;
      try {
        at = await d.runDetached(cname, o, hostPort);
        first = await client.waitHttp(at, { path: o.path ?? '/', intervalMs: 1, timeoutMs: o.timeoutMs ?? 60_000 });
      } catch (e) {
        const logs = await d.logs(cname).catch(() => '');
        await d.remove(cname);
        throw new Error(`${name}: starting ${o.image} under ${o.runtime}: ${(e as Error).message}${logs ? `\n${logs.split('\n').slice(-10).join('\n')}` : ''}`, { cause: e });
      }
      const startupMs = performance.now() - t0;
      const settle = async () => {
        if (cpus().length < 2) return;
        await placeClient('0');
        await d.pin(cname, `1-${cpus().length - 1}`);
      };
      return { name: cname, startupMs, first, request: (r) => client.request(at, r), remove: () => d.remove(cname), settle };
    },
    async runRm(image, runtime, args) {
      const cname = `pbk-${process.pid}-${++seq}`;
      const t0 = performance.now();
      try {
        await d.runRm(cname, image, runtime, args);
      } catch (e) {
        await d.remove(cname);
        throw e;
      }
      return performance.now() - t0;
    },
    async stop() {
      if (!running.delete(engine)) return;
      client.close();
      await d.stop();
    },
  };
  running.add(engine);
  return engine;
}
