// A private containerd with its CRI plugin enabled, for tests and benchmarks: root, state,
// socket, config, CNI config and a bridge of its own, the `prebake` runtime handler registered by
// `prebake install containerd`, and pods' network namespaces, cgroups and logs kept apart from
// anything else on the host.

import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { chmodSync, closeSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { POD_NAMESPACES } from '../../src/bake/target.ts';
import { packLayer } from '../../src/image/pack.ts';
import { scratchImage, writeImage } from '../../src/image/write.ts';
import { CRI_PROTO, type CriClient, criClient } from '../../src/lib/cri.ts';
import { mountPoints } from '../../src/lib/mountinfo.ts';
import { prebakeBinPath } from '../../src/lib/paths.ts';
import { CNI_BIN } from './cni.ts';
import { unmountUnder } from './daemons.ts';

export { waitForImage } from '../../src/lib/cri.ts';

/** The test pods' bridge and /24; nothing else here uses them. */
export const CRI_BRIDGE = 'prebake-cri0';
const CRI_NET = '10.250.77';
/** containerd's namespace for CRI pods, and the runc root the runc shim gives the runtime for it. */
export const CRI_NAMESPACE = 'k8s.io';
export const CRI_RUNC_ROOT = `/run/containerd/runc/${CRI_NAMESPACE}`;
/** A pause image built from /bin/busybox: a shell that waits until it gets SIGTERM. */
export const PAUSE_IMAGE = 'docker.io/prebake/pause:1';

// The parts of the CRI messages the tests read (field names as in api.proto).

interface ContainerStatus {
  id: string;
  state: 'CONTAINER_CREATED' | 'CONTAINER_RUNNING' | 'CONTAINER_EXITED' | 'CONTAINER_UNKNOWN';
  exit_code: number;
  reason: string;
  message: string;
  image: { image: string };
  log_path: string;
}

export interface ContainerStatusResponse {
  status: ContainerStatus;
  /** With verbose: "info", JSON of the container's pid, runtime type and options, spec. */
  info: Record<string, string>;
}

interface PodSandboxStatusResponse {
  status: { id: string; state: 'SANDBOX_READY' | 'SANDBOX_NOTREADY'; network: { ip: string }; runtime_handler: string };
  info: Record<string, string>;
}

export interface ExecSyncResponse {
  stdout: Buffer;
  stderr: Buffer;
  exit_code: number;
}

export interface Pod {
  id: string;
  name: string;
  handler: string;
  /** The PodSandboxConfig it was run with (CreateContainer takes it again). */
  config: Record<string, unknown>;
  ip: string;
  /** The directory its containers' logs go to. */
  logDir: string;
}

export interface CriContainerd {
  dir: string;
  socket: string;
  state: string;
  config: string;
  /** containerd's own output. */
  log: string;
  /** Every runc call the prebake runtime made: "<parent's comm> <argv>" per line. */
  argvLog: string;
  /** The CONTAINERD_ADDRESS for ctr and prebake-build. */
  env: NodeJS.ProcessEnv;
  cri: CriClient;
  /** The cgroup parent the pods get (under each cgroup hierarchy). */
  cgroupParent: string;
  /** Every pod and container id made through runPod/createContainer. */
  ids: string[];
  ctr(args: string[]): string;
  runPod(name: string, handler: string): Promise<Pod>;
  /** `extra`: more of the ContainerConfig (mounts, envs). */
  createContainer(pod: Pod, name: string, image: string, extra?: Record<string, unknown>): Promise<string>;
  /** The runtime's log (the shim's --log file) of a container while its bundle exists, as JSON lines. */
  runtimeLog(id: string): { level: string; msg: string; [k: string]: unknown }[];
  /** Removes every pod through CRI and stops containerd with SIGTERM; forces nothing. */
  shutdown(): Promise<void>;
  /** What of the pods and of containerd is still there (processes, mounts, netns, state, cgroups). */
  leftovers(): string[];
  /** Removes everything by force (tasks, containerd, mounts, the bridge, the dir); idempotent. */
  stop(): Promise<void>;
}

function sh(cmd: string, args: string[], env?: NodeJS.ProcessEnv): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], env: env ?? process.env });
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')}: ${(err.stderr || err.message).trim()}`, { cause: e });
  }
}

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

const cgroupDirs = (name: string) => readdirSync('/sys/fs/cgroup').map((h) => join('/sys/fs/cgroup', h, name));

function rmdirIfEmpty(dirs: string[]): void {
  for (const d of dirs)
    try {
      rmdirSync(d);
    } catch {
      /* absent, busy or not empty */
    }
}

/**
 * Run dirs containerd and its shims use whatever their flags (the runc root of the default namespace
 * holds prebake-build's spec probe); removed at the end if they were not there.
 */
const SHARED_RUN = ['/run/containerd/s', '/run/containerd/fifo', CRI_RUNC_ROOT, '/run/containerd/runc/default', '/run/containerd/runc', '/run/containerd'];

interface CriContainerdOptions {
  /** The prebake handler's BinaryName; default bin/prebake of this repository. */
  runtimePath?: string;
}

/**
 * containerd 1.6 with its CRI plugin: sandbox_image PAUSE_IMAGE (writePauseImage puts it there),
 * the CNI bridge CRI_BRIDGE on CRI_NET.0/24 (plugins from /usr/lib/cni, no NAT, no default route
 * in the pods), network namespaces under its state dir, and the handler `prebake` added by
 * `prebake install containerd --config`. The runtime finds runc through PREBAKE_RUNC, a script
 * that records each call in argvLog before it runs runc.
 */
export async function startCriContainerd(options: CriContainerdOptions = {}): Promise<CriContainerd> {
  for (const [path, pkg] of [
    [CRI_PROTO, 'golang-github-kubernetes-cri-api-dev (unpacked by scripts/setup.sh)'],
    [join(CNI_BIN, 'bridge'), 'containernetworking-plugins'],
    [join(CNI_BIN, 'host-local'), 'containernetworking-plugins'],
    [join(CNI_BIN, 'loopback'), 'containernetworking-plugins'],
  ] as const)
    if (!existsSync(path)) throw new Error(`${path} is missing: install the Debian package ${pkg} (scripts/setup.sh does)`);
  if (existsSync(`/sys/class/net/${CRI_BRIDGE}`)) throw new Error(`the link ${CRI_BRIDGE} exists already: another run of this test, or one that was not cleaned up`);
  if (sh('ip', ['-4', 'route']).includes(`${CRI_NET}.`)) throw new Error(`${CRI_NET}.0/24 is routed on this host already; the test needs it for its own bridge`);

  const runtimePath = options.runtimePath ?? prebakeBinPath();
  const runc = sh('sh', ['-c', 'command -v runc']).trim();
  const dir = mkdtempSync(join(tmpdir(), 'prebake-cri-'));
  const tag = dir.slice(-6).toLowerCase().replace(/[^a-z0-9]/g, 'x');
  const at = (f: string) => join(dir, f);
  const [root, state, socket, log, config] = [at('root'), at('state'), at('containerd.sock'), at('containerd.log'), at('config.toml')];
  const [cniConf, argvLog, wrapper] = [at('net.d'), at('argv.log'), at('runc-argv')];
  const cgroupParent = `prebake-cri-${tag}`;
  const shared = SHARED_RUN.filter((s) => !existsSync(s));
  // prebake's state mirrors the runc roots under its base (the spec probe of prebake-build runs in "default").
  const stateBase = process.env.PREBAKE_STATE_DIR ?? '/run/prebake';
  // ctr run (prebake-build's spec probe) puts tasks of the default namespace under /default.
  const probeCgroups = cgroupDirs('default').filter((d) => !existsSync(d));
  const prebakeRun = ['runc/k8s.io', 'runc/default', 'runc', ''].map((d) => join(stateBase, '/run/containerd', d)).filter((d) => !existsSync(d));
  const netnsBefore = existsSync('/var/run/netns') ? readdirSync('/var/run/netns') : [];
  const env = { ...process.env, CONTAINERD_ADDRESS: socket };
  const ids: string[] = [];
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  let cri: CriClient | undefined;
  let stopped = false;

  const ctr = (args: string[]) => sh('ctr', ['--address', socket, ...args]);
  const alive = () => child !== undefined && child.exitCode === null && child.signalCode === null;

  /** SIGTERM, SIGKILL after `graceMs`. */
  const terminate = async (graceMs: number) => {
    if (!alive()) return;
    child!.kill('SIGTERM');
    const timer = setTimeout(() => child!.kill('SIGKILL'), graceMs);
    await exited;
    clearTimeout(timer);
  };

  const removePods = async () => {
    if (!cri || !alive()) return;
    const pods = await cri.runtime<{ items: { id: string }[] }>('ListPodSandbox', {}, 10_000).catch(() => ({ items: [] }));
    for (const p of pods.items) {
      await cri.runtime('StopPodSandbox', { pod_sandbox_id: p.id }).catch(() => {});
      await cri.runtime('RemovePodSandbox', { pod_sandbox_id: p.id }).catch(() => {});
    }
  };

  const shutdown = async () => {
    await removePods();
    cri?.close();
    await terminate(20_000);
  };

  const leftovers = () => {
    const left: string[] = [];
    if (alive()) left.push(`containerd (pid ${child!.pid})`);
    for (const pid of processesMentioning(dir).filter((p) => p !== child?.pid)) left.push(`process ${pid}: ${readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ').trim()}`);
    for (const m of mountPoints(dir)) left.push(`mount ${m}`);
    // CRI names pods' network namespaces cni-<uuid>; ours are kept under its state dir.
    for (const n of existsSync('/var/run/netns') ? readdirSync('/var/run/netns') : []) if (n.startsWith('cni-') && !netnsBefore.includes(n)) left.push(`netns /var/run/netns/${n}`);
    const netnsDir = join(state, 'io.containerd.grpc.v1.cri', 'netns');
    for (const n of existsSync(netnsDir) ? readdirSync(netnsDir) : []) left.push(`netns ${join(netnsDir, n)}`);
    for (const id of ids) {
      const prebakeState = join(stateBase, CRI_RUNC_ROOT, id);
      if (existsSync(prebakeState)) left.push(`prebake state ${prebakeState}`);
      if (existsSync(join(CRI_RUNC_ROOT, id))) left.push(`runc state ${join(CRI_RUNC_ROOT, id)}`);
      for (const d of cgroupDirs(join(cgroupParent, id))) if (existsSync(d)) left.push(`cgroup ${d}`);
      const cniResult = `/var/lib/cni/results/prebake-cri-${id}-eth0`;
      if (existsSync(cniResult)) left.push(`CNI result ${cniResult}`);
    }
    const leases = join(dir, 'ipam', 'prebake-cri');
    if (existsSync(leases)) for (const f of readdirSync(leases).filter((f) => f.startsWith(`${CRI_NET}.`))) left.push(`IP lease ${f}`);
    return left;
  };

  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await removePods();
    cri?.close();
    // Tasks CRI did not remove: their shims would outlive containerd.
    const quiet = (args: string[]) => {
      try {
        return ctr(args);
      } catch {
        return '';
      }
    };
    if (alive())
      for (const ns of quiet(['namespaces', 'ls', '-q']).split('\n').filter(Boolean))
        for (const id of quiet(['-n', ns, 'tasks', 'ls', '-q']).split('\n').filter(Boolean)) {
          quiet(['-n', ns, 'tasks', 'kill', '-s', 'SIGKILL', id]);
          quiet(['-n', ns, 'tasks', 'delete', '-f', id]);
        }
    await terminate(20_000);
    for (const pid of processesMentioning(dir))
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    unmountUnder(dir);
    for (const id of ids) {
      rmSync(join(stateBase, CRI_RUNC_ROOT, id), { recursive: true, force: true });
      rmSync(`/var/lib/cni/results/prebake-cri-${id}-eth0`, { force: true });
      rmdirIfEmpty(cgroupDirs(join(cgroupParent, id)));
    }
    rmdirIfEmpty([...cgroupDirs(cgroupParent), ...probeCgroups]);
    try {
      execFileSync('ip', ['link', 'delete', CRI_BRIDGE], { stdio: 'ignore' });
    } catch {
      /* not made */
    }
    rmSync(dir, { recursive: true, force: true });
    rmdirIfEmpty([...prebakeRun, ...shared]);
  };

  try {
    // The runtime's runc: records who called it (the shim, or prebake's Node side) and how.
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

    const cri1 = 'plugins."io.containerd.grpc.v1.cri"';
    writeFileSync(
      config,
      `version = 2
root = "${root}"
state = "${state}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]
[grpc]
  address = "${socket}"
[plugins."io.containerd.internal.v1.opt"]
  path = "${join(dir, 'opt')}"
[${cri1}]
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
`,
    );
    // The handler exactly as users get it.
    sh(prebakeBinPath(), ['install', 'containerd', '--config', config, '--path', runtimePath], { ...process.env, PREBAKE_INSTALL_STATE: join(dir, 'install') });

    const fd = openSync(log, 'a');
    child = spawn('containerd', ['--config', config], { stdio: ['ignore', fd, fd], detached: true, env: { ...process.env, PREBAKE_RUNC: wrapper } });
    closeSync(fd);
    const c = child;
    exited = new Promise<void>((r) => c.once('exit', () => r()));

    const deadline = Date.now() + 30_000;
    for (;;) {
      try {
        ctr(['version']);
        cri ??= criClient(socket);
        const st = await cri.runtime<{ status: { conditions: { type: string; status: boolean; message: string }[] } }>('Status', {}, 5000);
        const notReady = st.status.conditions.filter((x) => !x.status);
        if (notReady.length) throw new Error(notReady.map((x) => `${x.type}: ${x.message}`).join('; '));
        break;
      } catch (e) {
        const tail = () => readFileSync(log, 'utf8').trim().split('\n').slice(-5).join(' | ');
        if (!alive()) throw new Error(`containerd exited: ${tail()}`);
        if (Date.now() > deadline) throw new Error(`containerd's CRI not ready after 30 s (${(e as Error).message}): ${tail()}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  } catch (e) {
    await stop();
    throw e;
  }

  const client = cri!;
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
    const { pod_sandbox_id: id } = await client.runtime<{ pod_sandbox_id: string }>('RunPodSandbox', { config, runtime_handler: handler }, 120_000);
    ids.push(id);
    const st = await client.runtime<PodSandboxStatusResponse>('PodSandboxStatus', { pod_sandbox_id: id });
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
    const { container_id: id } = await client.runtime<{ container_id: string }>('CreateContainer', { pod_sandbox_id: pod.id, config, sandbox_config: pod.config }, 120_000);
    ids.push(id);
    return id;
  };

  const runtimeLog = (id: string) =>
    readFileSync(join(state, 'io.containerd.runtime.v2.task', CRI_NAMESPACE, id, 'log.json'), 'utf8')
      .split('\n')
      .filter((l) => l.includes('"msg"'))
      .map((l) => JSON.parse(l) as { level: string; msg: string });

  return { dir, socket, state, config, log, argvLog, env, cri: client, cgroupParent, ids, ctr, runPod, createContainer, runtimeLog, shutdown, leftovers, stop };
}

/** Writes PAUSE_IMAGE into containerd's k8s.io namespace: /bin/busybox running a shell that exits 0 on SIGTERM. */
export async function writePauseImage(ctd: Pick<CriContainerd, 'socket'>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'prebake-pause-'));
  try {
    mkdirSync(join(dir, 'bin'));
    copyFileSync('/bin/busybox', join(dir, 'bin/busybox'));
    for (const applet of ['sh', 'sleep']) symlinkSync('busybox', join(dir, 'bin', applet));
    const layer = await packLayer(dir, '/');
    const saved = process.env.CONTAINERD_ADDRESS;
    process.env.CONTAINERD_ADDRESS = ctd.socket; // ctr, run by writeImage, takes its address from here
    try {
      await writeImage(`containerd:${CRI_NAMESPACE}/${PAUSE_IMAGE}`, {
        source: scratchImage({ Entrypoint: ['/bin/sh', '-c', "trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done"] }),
        addLayer: layer,
        createdBy: 'prebake test pause: busybox',
      });
    } finally {
      if (saved === undefined) delete process.env.CONTAINERD_ADDRESS;
      else process.env.CONTAINERD_ADDRESS = saved;
      await layer.cleanup();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Imports the image tagged `tag` in the OCI layout `layout` into containerd's namespace `ns` as `name`, unchanged. */
export function importLayout(ctd: Pick<CriContainerd, 'ctr'>, layout: string, tag: string, ns: string, name: string): void {
  const dir = mkdtempSync(join(tmpdir(), 'prebake-import-'));
  try {
    const index = JSON.parse(readFileSync(join(layout, 'index.json'), 'utf8')) as { manifests: { annotations?: Record<string, string> }[] };
    const m = index.manifests.find((d) => d.annotations?.['org.opencontainers.image.ref.name'] === tag);
    if (!m) throw new Error(`no image tagged ${tag} in ${layout}`);
    const named = { ...m, annotations: { ...m.annotations, 'io.containerd.image.name': name } };
    writeFileSync(join(dir, 'index.json'), JSON.stringify({ ...index, manifests: [named] }));
    copyFileSync(join(layout, 'oci-layout'), join(dir, 'oci-layout'));
    symlinkSync(join(layout, 'blobs'), join(dir, 'blobs'));
    execFileSync('tar', ['-C', dir, '-chf', join(dir, 'image.tar'), 'oci-layout', 'index.json', 'blobs']);
    ctd.ctr(['-n', ns, 'images', 'import', join(dir, 'image.tar')]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** GET http://IP:port/ once; only addresses on the test's own bridge are asked. */
export function httpGet(ip: string, port: number, timeoutMs = 5000): Promise<{ status: number; body: string }> {
  if (!ip.startsWith(`${CRI_NET}.`)) return Promise.reject(new Error(`${ip} is not on ${CRI_BRIDGE}`));
  return new Promise((resolve, reject) => {
    const req = request({ host: ip, port, path: '/', method: 'GET', timeout: timeoutMs, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET http://${ip}:${port}/ timed out`)));
    req.on('error', reject);
    req.end();
  });
}

/** Polls GET / until it answers (a bounded number of tries, 50 ms apart). */
export async function waitHttp(ip: string, port: number, timeoutMs = 30_000): Promise<{ status: number; body: string }> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await httpGet(ip, port, 2000);
    } catch (e) {
      if (Date.now() > end) throw new Error(`http://${ip}:${port}/ did not answer in ${timeoutMs} ms: ${(e as Error).message}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}
