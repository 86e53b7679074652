// Private engines for tests, benchmarks and the study: containerd and dockerd started with state of
// their own under a temp dir (root, state, sockets, exec root, a bridge and a cgroup parent of their
// own, no iptables or sysctl changes), and podman with its config and storage under a temp dir;
// stopped so that no container, daemon, mount, link or cgroup is left.

import { type ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { mountPoints } from '../../src/lib/mountinfo.ts';
import { prebakeBinPath } from '../../src/lib/paths.ts';

const run = promisify(execFile);

export interface Containerd {
  socket: string;
  root: string;
  state: string;
  /** containerd's stdout and stderr. */
  log: string;
  /** Runs `ctr --address socket ARGS`; resolves to its stdout. */
  ctr(args: string[]): Promise<string>;
  stop(): Promise<void>;
}

export interface Dockerd {
  /** The DOCKER_HOST value (unix://…). */
  host: string;
  dataRoot: string;
  execRoot: string;
  pidfile: string;
  log: string;
  /** The environment for docker clients (DOCKER_HOST, and a private DOCKER_CONFIG). */
  env: NodeJS.ProcessEnv;
  /** Runs `docker ARGS` against this daemon; resolves to its stdout. */
  docker(args: string[]): Promise<string>;
  stop(): Promise<void>;
}

async function exec(cmd: string, args: string[], env?: NodeJS.ProcessEnv): Promise<string> {
  try {
    return (await run(cmd, args, { env: env ?? process.env, maxBuffer: 64 << 20 })).stdout;
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')}: ${(err.stderr || err.message).trim()}`, { cause: e });
  }
}

/**
 * Starts `cmd` with its output in `log`; `exited` resolves with its exit when it ends. In a process
 * group of its own: a Ctrl-C meant for the caller must not stop it before the caller has removed
 * its containers.
 */
function daemon(cmd: string, args: string[], log: string): { child: ChildProcess; exited: Promise<void> } {
  const fd = openSync(log, 'a');
  const child = spawn(cmd, args, { stdio: ['ignore', fd, fd], detached: true });
  closeSync(fd);
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  return { child, exited };
}

/** Polls `probe` until it succeeds; fails early, quoting the log, if the daemon exits. */
async function waitReady(name: string, d: { child: ChildProcess }, log: string, probe: () => Promise<unknown>): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      await probe();
      return;
    } catch (e) {
      const tail = () => readFileSync(log, 'utf8').trim().split('\n').slice(-5).join(' | ');
      if (d.child.exitCode !== null || d.child.signalCode !== null) throw new Error(`${name} exited: ${tail()}`);
      if (Date.now() > deadline) throw new Error(`${name} not ready after 30 s (${(e as Error).message}): ${tail()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone. */
async function terminate(d: { child: ChildProcess; exited: Promise<void> }, graceMs = 20_000): Promise<void> {
  if (d.child.exitCode !== null || d.child.signalCode !== null) return;
  d.child.kill('SIGTERM');
  const timer = setTimeout(() => d.child.kill('SIGKILL'), graceMs);
  await d.exited;
  clearTimeout(timer);
}

/** Unmounts every mount point at or under `dir`, deepest first (lazily where one is busy). */
export function unmountUnder(dir: string): void {
  const points = mountPoints(dir).sort((a, b) => b.length - a.length);
  for (const p of points) {
    try {
      execFileSync('umount', [p], { stdio: 'ignore' });
    } catch {
      try {
        execFileSync('umount', ['-l', p], { stdio: 'ignore' });
      } catch {
        /* already gone with its parent */
      }
    }
  }
}

/** Removes each directory if it is empty (cgroups, shared run dirs); others are left alone. */
function rmdirIfEmpty(dirs: string[]): void {
  for (const d of dirs)
    try {
      rmdirSync(d);
    } catch {
      /* absent, busy or not empty */
    }
}

const cgroupDirs = (name: string) => readdirSync('/sys/fs/cgroup').map((h) => join('/sys/fs/cgroup', h, name));

/** Fixed run dirs the engines use whatever their flags; removed when empty unless they were there. */
const SHARED_RUN = {
  containerd: ['/run/containerd/s', '/run/containerd/fifo', '/run/containerd/runc', '/run/containerd'], // shim sockets, ctr fifos, shim's runc root
  dockerd: ['/run/docker/libnetwork', '/run/docker/plugins', '/run/docker'], // setkey socket, plugin discovery
};

export async function startContainerd(): Promise<Containerd> {
  const dir = mkdtempSync(join(tmpdir(), 'pbk-ctd-'));
  const [root, state, socket, log, config] = ['root', 'state', 'containerd.sock', 'containerd.log', 'config.toml'].map((f) => join(dir, f)) as [string, string, string, string, string];
  const shared = SHARED_RUN.containerd.filter((s) => !existsSync(s));
  writeFileSync(
    config,
    `version = 2
root = "${root}"
state = "${state}"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]
[grpc]
  address = "${socket}"
[plugins."io.containerd.internal.v1.opt"]
  path = "${join(dir, 'opt')}"
`,
  );
  const d = daemon('containerd', ['--config', config, '--root', root, '--state', state, '--address', socket], log);
  const ctr = (args: string[]) => exec('ctr', ['--address', socket, ...args]);
  const stop = async () => {
    // Tasks first: their shims outlive containerd otherwise.
    const namespaces = d.child.exitCode === null ? (await ctr(['namespaces', 'ls', '-q']).catch(() => '')).split('\n').filter(Boolean) : [];
    for (const ns of namespaces) {
      for (const id of (await ctr(['-n', ns, 'tasks', 'ls', '-q']).catch(() => '')).split('\n').filter(Boolean)) {
        await ctr(['-n', ns, 'tasks', 'kill', '-s', 'SIGKILL', id]).catch(() => {});
        await ctr(['-n', ns, 'tasks', 'delete', '-f', id]).catch(() => {});
      }
      for (const id of (await ctr(['-n', ns, 'containers', 'ls', '-q']).catch(() => '')).split('\n').filter(Boolean)) await ctr(['-n', ns, 'containers', 'delete', id]).catch(() => {});
    }
    await terminate(d);
    unmountUnder(dir);
    rmSync(dir, { recursive: true, force: true });
    rmdirIfEmpty(namespaces.flatMap((ns) => [...cgroupDirs(ns), `/run/containerd/runc/${ns}`]));
    rmdirIfEmpty(shared);
  };
  try {
    await waitReady('containerd', d, log, () => ctr(['version']));
  } catch (e) {
    await stop();
    throw e;
  }
  return { socket, root, state, log, ctr, stop };
}

interface DockerdOptions {
  /** The "prebake" runtime's path; default bin/prebake of this package. */
  runtimePath?: string;
}

export async function startDockerd(containerd: Pick<Containerd, 'socket'>, options: DockerdOptions = {}): Promise<Dockerd> {
  const dir = mkdtempSync(join(tmpdir(), 'pbk-dkd-'));
  const [dataRoot, execRoot, pidfile, log, config, sock] = ['data', 'exec', 'dockerd.pid', 'dockerd.log', 'daemon.json', 'docker.sock'].map((f) => join(dir, f)) as [string, string, string, string, string, string];
  const tag = dir.slice(-6).toLowerCase().replace(/[^a-z0-9]/g, 'x');
  // A bridge of our own (docker0 would outlive the daemon) on a /24 nobody routes yet.
  const bridge = `pbk${tag}`;
  const routes = execFileSync('ip', ['-4', 'route'], { encoding: 'utf8' });
  let net = '';
  for (let i = 0; i < 50 && !net; i++) {
    const n = `10.${200 + Math.floor(Math.random() * 50)}.${Math.floor(Math.random() * 256)}`;
    if (!routes.includes(`${n}.`)) net = n;
  }
  const cgroupParent = `pbk-${tag}`;
  const shared = SHARED_RUN.dockerd.filter((s) => !existsSync(s));
  const host = `unix://${sock}`;
  const env = { ...process.env, DOCKER_HOST: host, DOCKER_CONFIG: join(dir, 'client') };
  const docker = (args: string[]) => exec('docker', args, env);
  let d: ReturnType<typeof daemon> | undefined;
  const stop = async () => {
    if (d && d.child.exitCode === null) {
      const ids = (await docker(['ps', '-aq']).catch(() => '')).split('\n').filter(Boolean);
      if (ids.length) await docker(['rm', '-f', '-v', ...ids]).catch(() => {});
      await terminate(d);
    }
    unmountUnder(dir);
    rmSync(dir, { recursive: true, force: true });
    // prebake's own state is keyed by the runc root, which lies under our exec root.
    rmSync(join(process.env.PREBAKE_STATE_DIR ?? '/run/prebake', dir), { recursive: true, force: true });
    try {
      execFileSync('ip', ['link', 'delete', bridge], { stdio: 'ignore' });
    } catch {
      /* not created */
    }
    rmdirIfEmpty([...cgroupDirs(cgroupParent), ...shared]);
  };
  try {
    execFileSync('ip', ['link', 'add', bridge, 'type', 'bridge']);
    execFileSync('ip', ['addr', 'add', `${net}.1/24`, 'dev', bridge]);
    execFileSync('ip', ['link', 'set', bridge, 'up']);
    const daemonJson = { runtimes: { prebake: { path: options.runtimePath ?? prebakeBinPath() } }, 'cgroup-parent': `/${cgroupParent}`, 'deprecated-key-path': join(dir, 'key.json') };
    writeFileSync(config, JSON.stringify(daemonJson));
    // Own bridge, no iptables, NAT or ip_forward changes: published ports go through docker-proxy.
    const flags = [`--containerd=${containerd.socket}`, `--bridge=${bridge}`, '--iptables=false', '--ip-forward=false', '--ip-masq=false'];
    d = daemon('dockerd', ['--config-file', config, '--data-root', dataRoot, '--exec-root', execRoot, '--pidfile', pidfile, '-H', host, ...flags], log);
    await waitReady('dockerd', d, log, () => docker(['info']));
  } catch (e) {
    await stop();
    throw e;
  }
  return { host, dataRoot, execRoot, pidfile, log, env, docker, stop };
}

export interface Podman {
  /** The temp dir holding podman's config, storage, run and network config dirs. */
  dir: string;
  /** The environment for podman (CONTAINERS_CONF, CONTAINERS_STORAGE_CONF naming our files). */
  env: NodeJS.ProcessEnv;
  /** Runs `podman ARGS` with this config and storage; resolves to its stdout. */
  podman(args: string[]): Promise<string>;
  stop(): Promise<void>;
}

interface PodmanOptions {
  /** The path of the runtime named "prebake" in [engine.runtimes]; default bin/prebake of this package. */
  runtimePath?: string;
}

/** podman's default network's bridge, made by CNI on the first container with a network. */
const PODMAN_BRIDGE = 'cni-podman0';

/**
 * podman with its config, storage, tmp dir and network config under a temp dir: nothing of the
 * host's podman is read or written. `--runtime prebake` names bin/prebake. Stopping removes every
 * container and the dir, and the default network's bridge if it was made here and is unused.
 */
export async function startPodman(options: PodmanOptions = {}): Promise<Podman> {
  const dir = mkdtempSync(join(tmpdir(), 'pbk-podman-'));
  // root here may lack CAP_SYS_RESOURCE for podman's default ulimits; crun 1.8 refuses a hybrid cgroup layout.
  writeFileSync(
    join(dir, 'containers.conf'),
    `[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
tmp_dir = "${join(dir, 'tmp')}"
[engine.runtimes]
prebake = ["${options.runtimePath ?? prebakeBinPath()}"]
[network]
network_config_dir = "${join(dir, 'net')}"
`,
  );
  writeFileSync(join(dir, 'storage.conf'), `[storage]\ndriver = "overlay"\ngraphroot = "${join(dir, 'root')}"\nrunroot = "${join(dir, 'runroot')}"\n`);
  const env = { ...process.env, CONTAINERS_CONF: join(dir, 'containers.conf'), CONTAINERS_STORAGE_CONF: join(dir, 'storage.conf') };
  const podman = (args: string[]) => exec('podman', args, env);
  const bridgeWasThere = existsSync(`/sys/class/net/${PODMAN_BRIDGE}`);
  const stop = async () => {
    await podman(['rm', '-a', '-f', '-t', '0']).catch(() => {});
    await podman(['system', 'reset', '-f']).catch(() => {});
    unmountUnder(dir);
    rmSync(dir, { recursive: true, force: true });
    const attached = existsSync(`/sys/class/net/${PODMAN_BRIDGE}/brif`) ? readdirSync(`/sys/class/net/${PODMAN_BRIDGE}/brif`) : [];
    if (!bridgeWasThere && attached.length === 0)
      try {
        execFileSync('ip', ['link', 'delete', PODMAN_BRIDGE], { stdio: 'ignore' });
      } catch {
        /* not created */
      }
  };
  try {
    await podman(['info', '--format', '{{.Store.GraphRoot}}']);
  } catch (e) {
    await stop();
    throw e;
  }
  return { dir, env, podman, stop };
}
