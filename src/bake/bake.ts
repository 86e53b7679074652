// Bakes a running bundle: runs it with runc in its network namespace, waits until it is ready,
// warms it up, closes client connections, checkpoints it and writes the manifest beside it,
// signed.

import { execFileSync } from 'node:child_process';
import type { KeyObject } from 'node:crypto';
import { appendFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import type { Spec } from '../../oci/runtime-spec.ts';
import { CHECKPOINT_DIR, type CheckpointManifest, type MemoryRestore } from '../checkpoint/manifest.ts';
import { DEFAULT_KEY, loadSigningKey, signCheckpoint } from '../checkpoint/trust.ts';
import { writeManifest } from '../checkpoint/write.ts';
import { HOST_MOUNTS } from '../contract.ts';
import { type MountInfo, mountInfo } from '../lib/mountinfo.ts';
import { attachNetns, deleteNetns, NetnsClient } from '../lib/netns.ts';
import { type PipedCommand, spawnPiped } from '../lib/pipe.ts';
import { type Probe, probeText, type WarmupRequest } from './probe.ts';

interface BakeOptions {
  bundle: string;
  id: string;
  /**
   * Name of the network namespace the bundle's spec joins by path (see createNetns); when the
   * spec's has no path, the name given to the container's own namespace while it is probed.
   */
  netns: string;
  ready: Probe;
  readyTimeoutMs?: number;
  warmup?: { count: number; request: WarmupRequest; port: number };
  /** Directory that receives checkpoint/ and manifest.json (inside the rootfs for an image). */
  outDir: string;
  runc?: string;
  prebakeVersion: string;
  baseImage?: string;
  /**
   * For a spec with a terminal: the console socket runc sends the pty master to. Whoever listens
   * there holds the terminal during the bake; CRIU dumps it as an external terminal.
   */
  consoleSocket?: string;
  /** How restores bring the memory back (the manifest's memory.restore); default auto. */
  memory?: MemoryRestore | 'auto';
  /** Signs the manifest (manifest.sig); default: this host's bake key. */
  signingKey?: KeyObject;
  /** Progress: a step starts, a step ends. */
  onStart?: (step: string) => void;
  onStep?: (step: string, ms: number) => void;
}

interface BakeResult {
  manifest: CheckpointManifest;
  /** What the container printed before the checkpoint. */
  output: string;
}

/** Collects a container's output without waiting for the pipes to close (the container holds them). */
class Output {
  text = '';
  private waiters: (() => void)[] = [];
  add(chunk: Buffer) {
    this.text += chunk.toString('utf8');
    if (this.text.length > 1 << 20) this.text = this.text.slice(-(1 << 19));
    for (const w of this.waiters.splice(0)) w();
  }
  changed(): Promise<void> {
    return new Promise((r) => this.waiters.push(r));
  }
  tail(n = 10): string {
    return this.text.trimEnd().split('\n').slice(-n).join('\n');
  }
}

async function waitReady(probe: Probe, client: NetnsClient, out: Output, timeoutMs: number): Promise<void> {
  switch (probe.kind) {
    case 'http':
      await client.waitHttp({ port: probe.port, path: probe.path, timeoutMs });
      return;
    case 'tcp':
      await client.waitTcp(probe.port, timeoutMs);
      return;
    case 'delay':
      await new Promise((r) => setTimeout(r, probe.ms));
      return;
    case 'log': {
      const end = Date.now() + timeoutMs;
      while (!probe.regex.test(out.text)) {
        const left = end - Date.now();
        if (left <= 0) throw new Error(`no output line matched /${probe.regex.source}/ within ${timeoutMs} ms`);
        await Promise.race([out.changed(), new Promise((r) => setTimeout(r, left))]);
      }
    }
  }
}

/** Waits until the namespace holds no live TCP connection (TIME-WAIT has no owner) and no listener has a connection queued. */
async function waitQuiet(netns: string, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const ss = execFileSync('ip', ['netns', 'exec', netns, 'ss', '-Htna'], { encoding: 'utf8' });
    const busy = ss.split('\n').filter((l) => {
      const [state, recvQ] = l.trim().split(/\s+/);
      return state && state !== 'TIME-WAIT' && (state !== 'LISTEN' || recvQ !== '0');
    });
    if (busy.length === 0) return;
    if (Date.now() > end) throw new Error(`client connections still open before checkpoint: ${busy.join('; ')}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/**
 * CRIU config lines that make runc's own tmpfs mounts in the running container (`table`, its
 * init's mountinfo) external mounts of the checkpoint: each masked directory (a read-only, empty
 * tmpfs) and, under cgroup v1, the tmpfs runc mounts at /sys/fs/cgroup (directories only, one per
 * controller, with the controllers' own mounts below). CRIU then leaves their contents out of the
 * checkpoint, and a restore binds the host's read-only tmpfs there (HOST_MOUNTS, dist/criu.conf)
 * instead of unpacking a tar.gz for each (~3 ms apiece). Only a path mounted once, as a plain name
 * CRIU's config syntax cannot misread.
 */
export function externalMountLines(spec: Spec, table: readonly MountInfo[]): string[] {
  const norm = (p: string) => posix.normalize(`/${p}`).replace(/(.)\/$/, '$1');
  const masked = new Set((spec.linux?.maskedPaths ?? []).map(norm));
  const cgroup = (spec.mounts ?? []).some((m) => norm(m.destination) === '/sys/fs/cgroup' && (m.type === 'cgroup' || m.type === 'cgroup2'));
  const count = new Map<string, number>();
  for (const m of table) count.set(m.mountPoint, (count.get(m.mountPoint) ?? 0) + 1);
  const lines: string[] = [];
  for (const m of table) {
    // A tmpfs of its own (a masked file is /dev/null of /dev's tmpfs, bound: root /null).
    if (m.fsType !== 'tmpfs' || m.root !== '/' || count.get(m.mountPoint) !== 1 || !/^(\/[A-Za-z0-9_.+-]+)+$/.test(m.mountPoint)) continue;
    if (masked.has(m.mountPoint)) lines.push(`external mnt[${m.mountPoint}]:${HOST_MOUNTS.mask.key}`);
    else if (m.mountPoint === '/sys/fs/cgroup' && cgroup) lines.push(`external mnt[${m.mountPoint}]:${HOST_MOUNTS.cgroupV1.key}`);
  }
  return lines;
}

export async function bake(opts: BakeOptions): Promise<BakeResult> {
  const runc = opts.runc ?? 'runc';
  const step = opts.onStep ?? (() => {});
  const spec = JSON.parse(readFileSync(join(opts.bundle, 'config.json'), 'utf8')) as Spec;
  const signingKey = opts.signingKey ?? loadSigningKey(DEFAULT_KEY);
  const out = new Output();
  const work = mkdtempSync(join(tmpdir(), 'prebake-bake-'));
  let t = performance.now();
  const begin = (name: string) => {
    t = performance.now();
    opts.onStart?.(name);
  };
  const lap = (name: string) => {
    const now = performance.now();
    step(name, now - t);
    t = now;
  };
  let client: NetnsClient | undefined;
  let piped: PipedCommand | undefined;
  try {
    // stdin /dev/null, stdout and stderr a pipe: what engines give, and what CRIU can re-attach.
    // CRIU locks the network with iptables while it dumps and restores, and records the method
    // in the checkpoint: unlocking alone costs ~60 ms per restore. The bake namespace is private
    // and holds no live connection at dump time (waitQuiet), so no lock is needed.
    begin('start');
    const criuConf = join(work, 'criu.conf');
    writeFileSync(criuConf, 'network-lock skip\n');
    const runSpec: Spec = { ...spec, annotations: { ...(spec.annotations ?? {}), 'org.criu.config': criuConf } };
    writeFileSync(join(opts.bundle, 'config.json'), JSON.stringify(runSpec));
    piped = spawnPiped(runc, ['run', '--detach', ...(opts.consoleSocket ? ['--console-socket', opts.consoleSocket] : []), '--bundle', opts.bundle, opts.id]);
    piped.output.on('data', (d: Buffer) => out.add(d));
    const code = await piped.exit;
    if (code !== 0) throw new Error(`runc run of ${opts.id} failed (exit ${code}): ${out.tail(3).replace(/\n/g, ' | ')}`);
    // A spec whose network namespace has no path (docker's: its hook wires it) gets a new one
    // from runc; it is named for the probe and unnamed again before the dump.
    const ownNetns = !spec.linux?.namespaces?.find((n) => n.type === 'network')?.path;
    if (ownNetns) attachNetns(opts.netns, (JSON.parse(execFileSync(runc, ['state', opts.id], { encoding: 'utf8' })) as { pid: number }).pid);
    client = await NetnsClient.start(opts.netns);
    lap('start');
    begin('ready');
    try {
      await waitReady(opts.ready, client, out, opts.readyTimeoutMs ?? 30000);
    } catch (e) {
      throw new Error(`${probeText(opts.ready)} never became ready: ${(e as Error).message}; last output: ${out.tail(3).replace(/\n/g, ' | ')}`);
    }
    lap('ready');
    if (opts.warmup) {
      begin('warmup');
      const { count, request, port } = opts.warmup;
      for (let i = 0; i < count; i++) {
        const r = await client.request({
          port,
          method: request.method,
          path: request.path,
          ...(request.body ? { body64: request.body.toString('base64') } : {}),
        });
        if (r.status >= 500) throw new Error(`warm-up request ${request.method} ${request.path} answered ${r.status}`);
      }
      lap('warmup');
    }
    client.close();
    client = undefined;
    await waitQuiet(opts.netns);
    if (ownNetns) deleteNetns(opts.netns);
    mkdirSync(opts.outDir, { recursive: true });
    const imagePath = join(opts.outDir, CHECKPOINT_DIR);
    begin('checkpoint');
    // runc hands CRIU the config file at the checkpoint, read then: the container's own tmpfs
    // masks (and cgroup v1's /sys/fs/cgroup) become external mounts.
    const external = externalMountLines(spec, mountInfo((JSON.parse(execFileSync(runc, ['state', opts.id], { encoding: 'utf8' })) as { pid: number }).pid));
    if (external.length) appendFileSync(criuConf, `${external.join('\n')}\n`);
    try {
      // A UTS or IPC namespace the container joins by path (a pod's) is shared with CRIU for the
      // dump, so CRIU leaves it out of the checkpoint: a restore then joins the pod's namespace
      // instead of writing the baked hostname and SysV IPC objects into it.
      const shared = (spec.linux?.namespaces ?? []).filter((n) => n.path && (n.type === 'uts' || n.type === 'ipc')).map((n) => `--${n.type}=${n.path}`);
      const argv = ['checkpoint', '--image-path', imagePath, '--work-path', work, opts.id];
      if (shared.length) execFileSync('nsenter', [...shared, runc, ...argv], { stdio: ['ignore', 'pipe', 'pipe'] });
      else execFileSync(runc, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (e) {
      let log = '';
      try {
        log = readFileSync(join(work, 'dump.log'), 'utf8').split('\n').filter((l) => /Error/.test(l)).slice(-3).join(' | ');
      } catch {
        /* no dump log */
      }
      throw new Error(`runc checkpoint of ${opts.id} failed: ${((e as { stderr?: Buffer }).stderr ?? '').toString().trim()} ${log}`);
    }
    lap('checkpoint');
    begin('manifest');
    const manifest = writeManifest(opts.outDir, {
      spec,
      runc,
      prebakeVersion: opts.prebakeVersion,
      ...(opts.memory ? { memory: opts.memory } : {}),
      probe: probeText(opts.ready),
      ...(opts.baseImage ? { baseImage: opts.baseImage } : {}),
    });
    signCheckpoint(opts.outDir, signingKey);
    lap('manifest');
    return { manifest, output: out.text };
  } catch (e) {
    rmSync(join(opts.outDir, CHECKPOINT_DIR), { recursive: true, force: true });
    throw e;
  } finally {
    writeFileSync(join(opts.bundle, 'config.json'), JSON.stringify(spec, null, 2));
    client?.close();
    piped?.close();
    try {
      execFileSync(runc, ['delete', '--force', opts.id], { stdio: 'ignore' });
    } catch {
      /* checkpoint already removed it */
    }
    rmSync(work, { recursive: true, force: true });
  }
}
