// Private engines for tests, benchmarks and the study: containerd (with its CRI plugin if asked)
// and dockerd started with state of their own under a temp dir (root, state, sockets, exec root, a
// bridge and a cgroup parent of their own, no iptables or sysctl changes), and podman with its
// config and storage under a temp dir; stopped so that no container, daemon, mount, link or cgroup
// is left.

import { type ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';
import { chmodSync, closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { POD_NAMESPACES } from '../../src/bake/target.ts';
import { CRI_PROTO, type CriClient, criClient } from '../../src/lib/cri.ts';
import { mountPoints } from '../../src/lib/mountinfo.ts';
import { prebakeBinPath } from '../../src/lib/paths.ts';
import { CNI_BIN } from './cni.ts';
import { CRI_BRIDGE, CRI_NAMESPACE, CRI_NET, CRI_RUNC_ROOT, PAUSE_IMAGE, type Pod, type PodSandboxStatusResponse } from './cri.ts';

const run = promisify(execFile);

export interface Containerd {
  /** The temp dir holding its root, state, socket, config and log. */
  dir: string;
  socket: string;
  root: string;
  state: string;
  /** Its config.toml. */
  config: string;
  /** containerd's stdout and stderr. */
  log: string;
  /** The environment for ctr and prebake-build (CONTAINERD_ADDRESS naming the socket). */
  env: NodeJS.ProcessEnv;
  /** Runs `ctr --address socket ARGS`; resolves to its stdout. */
  ctr(args: string[]): Promise<string>;
  /** Removes everything by force (tasks, containerd, mounts, the dir; with cri pods and the bridge); idempotent. */
  stop(): Promise<void>;
}

/** containerd with its CRI plugin (`startContainerd({ cri: true })`). */
export interface CriContainerd extends Containerd {
  /** Every runc call the prebake runtime made: "<parent's comm> <argv>" per line. */
  argvLog: string;
  cri: CriClient;
  /** The cgroup parent the pods get (under each cgroup hierarchy). */
  cgroupParent: string;
  /** Every pod and container id made through runPod/createContainer. */
  ids: string[];
  runPod(name: string, handler: string): Promise<Pod>;
  /** `extra`: more of the ContainerConfig (mounts, envs). */
  createContainer(pod: Pod, name: string, image: string, extra?: Record<string, unknown>): Promise<string>;
  /** The runtime's log (the shim's --log file) of a container while its bundle exists, as JSON lines. */
  runtimeLog(id: string): { level: string; msg: string; [k: string]: unknown }[];
  /** Removes every pod through CRI and stops containerd with SIGTERM; forces nothing. */
  shutdown(): Promise<void>;
  /** What of the pods and of containerd is still there (processes, mounts, netns, state, cgroups). */
  leftovers(): string[];
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

type Daemon = { child: ChildProcess; exited: Promise<void> };

/**
 * Starts `cmd` with its output in `log`; `exited` resolves with its exit when it ends. In a process
 * group of its own: a Ctrl-C meant for the caller must not stop it before the caller has removed
 * its containers.
 */
function daemon(cmd: string, args: string[], log: string, env?: NodeJS.ProcessEnv): Daemon {
  const fd = openSync(log, 'a');
  const child = spawn(cmd, args, { stdio: ['ignore', fd, fd], detached: true, env: env ?? process.env });
  closeSync(fd);
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  return { child, exited };
}

const running = (d: Daemon | undefined): d is Daemon => d !== undefined && d.child.exitCode === null && d.child.signalCode === null;

/** Polls `probe` until it succeeds; fails early, quoting the log, if the daemon exits. */
async function waitReady(name: string, d: Daemon, log: string, probe: () => Promise<unknown>): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      await probe();
      return;
    } catch (e) {
      const tail = () => readFileSync(log, 'utf8').trim().split('\n').slice(-5).join(' | ');
      if (!running(d)) throw new Error(`${name} exited: ${tail()}`);
      if (Date.now() > deadline) throw new Error(`${name} not ready after 30 s (${(e as Error).message}): ${tail()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone. */
async function terminate(d: Daemon, graceMs = 20_000): Promise<void> {
  if (!running(d)) return;
  d.child.kill('SIGTERM');
  const timer = setTimeout(() => d.child.kill('SIGKILL'), graceMs);
  await d.exited;
  clearTimeout(timer);
}

/** Unmounts every mount point at or under `dir`, deepest first (lazily where one is busy). */
function unmountUnder(dir: string): void {
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

/** Pids whose command line mentions `text`. */
function processesMentioning(text: string): number[] {
  const pids: number[] = [];
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p) || Number(p) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(text)) pids.push(Number(p));
    } catch {
      /* gone meanwhile */
    }
  }
  return pids;
}

const lines = (text: string) => text.split('\n').filter(Boolean);

/** prebake's state dir: it mirrors the runc roots under it. */
const prebakeStateBase = () => process.env.PREBAKE_STATE_DIR ?? '/run/prebake';

/** Fixed run dirs the engines use whatever their flags; removed when empty unless they were there. */
const SHARED_RUN = {
  // Shim sockets, ctr fifos, the runc roots the shim gives the runtime (CRI's, and the default
  // namespace's: ctr and prebake-build's spec probe); then prebake's state for those roots.
  containerd: () => [
    ...['/run/containerd/s', '/run/containerd/fifo', CRI_RUNC_ROOT, '/run/containerd/runc/default', '/run/containerd/runc', '/run/containerd'],
    ...[`runc/${CRI_NAMESPACE}`, 'runc/default', 'runc', ''].map((d) => join(prebakeStateBase(), '/run/containerd', d)),
    // ctr run puts tasks of the default namespace under /default.
    ...cgroupDirs('default'),
  ],
  dockerd: () => ['/run/docker/libnetwork', '/run/docker/plugins', '/run/docker'], // setkey socket, plugin discovery
};

interface ContainerdOptions {
  /**
   * With containerd's CRI plugin: sandbox_image PAUSE_IMAGE (writePauseImage puts it there), the
   * CNI bridge CRI_BRIDGE on CRI_NET.0/24 (plugins from /usr/lib/cni, no NAT, no default route in
   * the pods), network namespaces under its state dir, pods' cgroups under a parent of their own,
   * and the handler `prebake` added by `prebake install containerd --config`. The runtime finds
   * runc through PREBAKE_RUNC, a script that records each call in argvLog before it runs runc.
   */
  cri?: boolean;
  /** With cri: the prebake handler's BinaryName; default bin/prebake of this package. */
  runtimePath?: string;
}

/**
 * containerd with its root, state, socket, config and log under a temp dir. Stopping kills and
 * deletes the tasks of every namespace (their shims outlive containerd otherwise), stops containerd,
 * unmounts and removes the dir, and removes the namespaces' cgroups and shared run dirs when empty.
 */
export function startContainerd(options: ContainerdOptions & { cri: true }): Promise<CriContainerd>;
export function startContainerd(options?: ContainerdOptions): Promise<Containerd>;
export async function startContainerd(options: ContainerdOptions = {}): Promise<Containerd | CriContainerd> {
  if (options.cri) checkCriHost();
  const dir = mkdtempSync(join(tmpdir(), options.cri ? 'prebake-cri-' : 'pbk-ctd-'));
  const [root, state, socket, log, config] = ['root', 'state', 'containerd.sock', 'containerd.log', 'config.toml'].map((f) => join(dir, f)) as [string, string, string, string, string];
  const shared = SHARED_RUN.containerd().filter((s) => !existsSync(s));
  const ctr = (args: string[]) => exec('ctr', ['--address', socket, ...args]);
  const ctd = { dir, socket, root, state, config, log, env: { ...process.env, CONTAINERD_ADDRESS: socket }, ctr };
  let d: Daemon | undefined;
  const cri = options.cri ? criPlugin(ctd, options.runtimePath ?? prebakeBinPath(), () => d) : undefined;
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await cri?.beforeStop();
    // Tasks first: their shims outlive containerd otherwise.
    const namespaces = running(d) ? lines(await ctr(['namespaces', 'ls', '-q']).catch(() => '')) : [];
    for (const ns of namespaces) {
      for (const id of lines(await ctr(['-n', ns, 'tasks', 'ls', '-q']).catch(() => ''))) {
        await ctr(['-n', ns, 'tasks', 'kill', '-s', 'SIGKILL', id]).catch(() => {});
        await ctr(['-n', ns, 'tasks', 'delete', '-f', id]).catch(() => {});
      }
      for (const id of lines(await ctr(['-n', ns, 'containers', 'ls', '-q']).catch(() => ''))) await ctr(['-n', ns, 'containers', 'delete', id]).catch(() => {});
    }
    if (d) await terminate(d);
    cri?.afterStop();
    unmountUnder(dir);
    rmSync(dir, { recursive: true, force: true });
    rmdirIfEmpty([...namespaces.flatMap((ns) => [...cgroupDirs(ns), `/run/containerd/runc/${ns}`]), ...shared]);
  };
  try {
    const disabled = [...(cri ? [] : ['io.containerd.grpc.v1.cri']), ...['aufs', 'btrfs', 'devmapper', 'zfs'].map((s) => `io.containerd.snapshotter.v1.${s}`)];
    writeFileSync(
      config,
      `version = 2
root = "${root}"
state = "${state}"
disabled_plugins = [${disabled.map((p) => `"${p}"`).join(', ')}]
[grpc]
  address = "${socket}"
[plugins."io.containerd.internal.v1.opt"]
  path = "${join(dir, 'opt')}"
${cri?.config ?? ''}`,
    );
    await cri?.prepare();
    d = daemon('containerd', ['--config', config, '--root', root, '--state', state, '--address', socket], log, cri?.env);
    await waitReady('containerd', d, log, async () => {
      await ctr(['version']);
      await cri?.ready();
    });
  } catch (e) {
    await stop();
    throw e;
  }
  return cri ? { ...ctd, stop, ...cri.fields() } : { ...ctd, stop };
}

/** Fails before anything is made where the host lacks what the CRI plugin needs here, or has the test bridge's link or net. */
function checkCriHost(): void {
  for (const [path, pkg] of [
    [CRI_PROTO, 'golang-github-kubernetes-cri-api-dev (unpacked by scripts/setup.sh)'],
    [join(CNI_BIN, 'bridge'), 'containernetworking-plugins'],
    [join(CNI_BIN, 'host-local'), 'containernetworking-plugins'],
    [join(CNI_BIN, 'loopback'), 'containernetworking-plugins'],
  ] as const)
    if (!existsSync(path)) throw new Error(`${path} is missing: install the Debian package ${pkg} (scripts/setup.sh does)`);
  if (existsSync(`/sys/class/net/${CRI_BRIDGE}`)) throw new Error(`the link ${CRI_BRIDGE} exists already: another run of this test, or one that was not cleaned up`);
  if (execFileSync('ip', ['-4', 'route'], { encoding: 'utf8' }).includes(`${CRI_NET}.`)) throw new Error(`${CRI_NET}.0/24 is routed on this host already; the test needs it for its own bridge`);
}

/**
 * What the cri option adds to startContainerd: the CRI plugin's config section, its CNI network,
 * the runc wrapper and the prebake handler before containerd starts; the CRI client's readiness
 * check; pods removed through CRI before the tasks are killed; the pods' processes, state, cgroups
 * and the bridge removed after containerd is gone; and the CRI fields of CriContainerd.
 */
function criPlugin(ctd: Omit<Containerd, 'stop'>, runtimePath: string, containerd: () => Daemon | undefined) {
  const { dir, state, socket } = ctd;
  const tag = dir.slice(-6).toLowerCase().replace(/[^a-z0-9]/g, 'x');
  const [cniConf, argvLog, wrapper] = ['net.d', 'argv.log', 'runc-argv'].map((f) => join(dir, f)) as [string, string, string];
  const cgroupParent = `prebake-cri-${tag}`;
  const netnsBefore = existsSync('/var/run/netns') ? readdirSync('/var/run/netns') : [];
  const ids: string[] = [];
  let client: CriClient | undefined;

  const removePods = async () => {
    if (!client || !running(containerd())) return;
    const pods = await client.runtime<{ items: { id: string }[] }>('ListPodSandbox', {}, 10_000).catch(() => ({ items: [] }));
    for (const p of pods.items) {
      await client.runtime('StopPodSandbox', { pod_sandbox_id: p.id }).catch(() => {});
      await client.runtime('RemovePodSandbox', { pod_sandbox_id: p.id }).catch(() => {});
    }
  };

  const cri1 = 'plugins."io.containerd.grpc.v1.cri"';
  const config = `[${cri1}]
  sandbox_image = "${PAUSE_IMAGE}"
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  # root may lack CAP_SYS_RESOURCE here: no oom_score_adj below containerd's own (pods ask -998)
  restrict_oom_score_adj = true
  [${cri1}.cni]
    bin_dir = "${CNI_BIN}"
    conf_dir = "${cniConf}"
    max_conf_num = 1
  [${cri1}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [${cri1}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
`;

  const prepare = async () => {
    // The runtime's runc: records who called it (the shim, or prebake's Node side) and how.
    const runc = (await exec('sh', ['-c', 'command -v runc'])).trim();
    writeFileSync(wrapper, `#!/bin/sh\nprintf '%s %s\\n' "$(cat /proc/$PPID/comm 2>/dev/null)" "$*" >> ${argvLog}\nexec ${runc} "$@"\n`);
    chmodSync(wrapper, 0o755);

    mkdirSync(cniConf);
    const cni = {
      cniVersion: '1.0.0',
      name: 'prebake-cri',
      plugins: [
        {
          type: 'bridge',
          bridge: CRI_BRIDGE,
          isGateway: false,
          ipMasq: false,
          hairpinMode: false,
          ipam: { type: 'host-local', dataDir: join(dir, 'ipam'), ranges: [[{ subnet: `${CRI_NET}.0/24`, rangeStart: `${CRI_NET}.10`, rangeEnd: `${CRI_NET}.250`, gateway: `${CRI_NET}.1` }]] },
        },
      ],
    };
    writeFileSync(join(cniConf, '10-prebake-cri.conflist'), JSON.stringify(cni, null, 2));
    // The host's side of the bridge: the pods' addresses are reachable from here, nothing else is routed.
    execFileSync('ip', ['link', 'add', CRI_BRIDGE, 'type', 'bridge']);
    execFileSync('ip', ['addr', 'add', `${CRI_NET}.1/24`, 'dev', CRI_BRIDGE]);
    execFileSync('ip', ['link', 'set', CRI_BRIDGE, 'up']);

    // The handler exactly as users get it.
    await exec(prebakeBinPath(), ['install', 'containerd', '--config', ctd.config, '--path', runtimePath], { ...process.env, PREBAKE_INSTALL_STATE: join(dir, 'install') });
  };

  const ready = async () => {
    client ??= criClient(socket);
    const st = await client.runtime<{ status: { conditions: { type: string; status: boolean; message: string }[] } }>('Status', {}, 5000);
    const notReady = st.status.conditions.filter((x) => !x.status);
    if (notReady.length) throw new Error(`CRI: ${notReady.map((x) => `${x.type}: ${x.message}`).join('; ')}`);
  };

  const beforeStop = async () => {
    await removePods();
    client?.close();
  };

  const afterStop = () => {
    for (const pid of processesMentioning(dir))
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    for (const id of ids) {
      rmSync(join(prebakeStateBase(), CRI_RUNC_ROOT, id), { recursive: true, force: true });
      rmSync(`/var/lib/cni/results/prebake-cri-${id}-eth0`, { force: true });
      rmdirIfEmpty(cgroupDirs(join(cgroupParent, id)));
    }
    rmdirIfEmpty(cgroupDirs(cgroupParent));
    try {
      execFileSync('ip', ['link', 'delete', CRI_BRIDGE], { stdio: 'ignore' });
    } catch {
      /* not made */
    }
  };

  const leftovers = () => {
    const left: string[] = [];
    const d = containerd();
    if (running(d)) left.push(`containerd (pid ${d.child.pid})`);
    for (const pid of processesMentioning(dir).filter((p) => p !== d?.child.pid)) left.push(`process ${pid}: ${readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ').trim()}`);
    for (const m of mountPoints(dir)) left.push(`mount ${m}`);
    // CRI names pods' network namespaces cni-<uuid>; ours are kept under its state dir.
    for (const n of existsSync('/var/run/netns') ? readdirSync('/var/run/netns') : []) if (n.startsWith('cni-') && !netnsBefore.includes(n)) left.push(`netns /var/run/netns/${n}`);
    const netnsDir = join(state, 'io.containerd.grpc.v1.cri', 'netns');
    for (const n of existsSync(netnsDir) ? readdirSync(netnsDir) : []) left.push(`netns ${join(netnsDir, n)}`);
    for (const id of ids) {
      const prebakeState = join(prebakeStateBase(), CRI_RUNC_ROOT, id);
      if (existsSync(prebakeState)) left.push(`prebake state ${prebakeState}`);
      if (existsSync(join(CRI_RUNC_ROOT, id))) left.push(`runc state ${join(CRI_RUNC_ROOT, id)}`);
      for (const c of cgroupDirs(join(cgroupParent, id))) if (existsSync(c)) left.push(`cgroup ${c}`);
      const cniResult = `/var/lib/cni/results/prebake-cri-${id}-eth0`;
      if (existsSync(cniResult)) left.push(`CNI result ${cniResult}`);
    }
    const leases = join(dir, 'ipam', 'prebake-cri');
    if (existsSync(leases)) for (const f of readdirSync(leases).filter((f) => f.startsWith(`${CRI_NET}.`))) left.push(`IP lease ${f}`);
    return left;
  };

  /** The CRI fields of CriContainerd, once the client is up. */
  const fields = (): Omit<CriContainerd, keyof Containerd> => {
    const cri = client!;
    const runPod = async (name: string, handler: string): Promise<Pod> => {
      const logDir = join(dir, 'pods', name);
      mkdirSync(logDir, { recursive: true });
      // What kubelet sends for a pod without host namespaces: a pid namespace per container.
      const config = {
        metadata: { name, uid: `${name}-${tag}`, namespace: 'prebake-test', attempt: 0 },
        hostname: name,
        log_directory: logDir,
        labels: { app: name },
        linux: { cgroup_parent: `/${cgroupParent}`, security_context: { namespace_options: POD_NAMESPACES } },
      };
      const { pod_sandbox_id: id } = await cri.runtime<{ pod_sandbox_id: string }>('RunPodSandbox', { config, runtime_handler: handler }, 120_000);
      ids.push(id);
      const st = await cri.runtime<PodSandboxStatusResponse>('PodSandboxStatus', { pod_sandbox_id: id });
      const ip = st.status.network.ip;
      if (!ip.startsWith(`${CRI_NET}.`)) throw new Error(`pod ${name} got address ${JSON.stringify(ip)}, not one on ${CRI_BRIDGE}`);
      return { id, name, handler, config, ip, logDir };
    };

    const createContainer = async (pod: Pod, name: string, image: string, extra: Record<string, unknown> = {}): Promise<string> => {
      const config = {
        ...extra,
        metadata: { name, attempt: 0 },
        image: { image },
        log_path: `${name}.log`,
        linux: { security_context: { namespace_options: POD_NAMESPACES } },
      };
      const { container_id: id } = await cri.runtime<{ container_id: string }>('CreateContainer', { pod_sandbox_id: pod.id, config, sandbox_config: pod.config }, 120_000);
      ids.push(id);
      return id;
    };

    const runtimeLog = (id: string) =>
      readFileSync(join(state, 'io.containerd.runtime.v2.task', CRI_NAMESPACE, id, 'log.json'), 'utf8')
        .split('\n')
        .filter((l) => l.includes('"msg"'))
        .map((l) => JSON.parse(l) as { level: string; msg: string });

    const shutdown = async () => {
      await beforeStop();
      const d = containerd();
      if (d) await terminate(d);
    };

    return { argvLog, cri, cgroupParent, ids, runPod, createContainer, runtimeLog, shutdown, leftovers };
  };

  return { config, env: { ...process.env, PREBAKE_RUNC: wrapper }, prepare, ready, beforeStop, afterStop, fields };
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
  const shared = SHARED_RUN.dockerd().filter((s) => !existsSync(s));
  const host = `unix://${sock}`;
  const env = { ...process.env, DOCKER_HOST: host, DOCKER_CONFIG: join(dir, 'client') };
  const docker = (args: string[]) => exec('docker', args, env);
  let d: Daemon | undefined;
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
