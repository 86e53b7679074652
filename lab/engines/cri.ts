// The CRI side of the private containerd that startContainerd({ cri: true }) starts
// (lab/engines/daemons.ts) for tests and benchmarks: its bridge, net and namespaces, the parts of
// the CRI messages the tests read, the pause image, images imported into it, and HTTP to its pods.

import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { packLayer } from '../../src/image/pack.ts';
import { scratchImage, writeImage } from '../../src/image/write.ts';
import type { Containerd } from './daemons.ts';

export { waitForImage } from '../../src/lib/cri.ts';

/** The test pods' bridge and /24; nothing else here uses them. */
export const CRI_BRIDGE = 'prebake-cri0';
export const CRI_NET = '10.250.77';
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

export interface PodSandboxStatusResponse {
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

/** Writes PAUSE_IMAGE into containerd's k8s.io namespace: /bin/busybox running a shell that exits 0 on SIGTERM. */
export async function writePauseImage(ctd: Pick<Containerd, 'socket'>): Promise<void> {
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
export async function importLayout(ctd: Pick<Containerd, 'ctr'>, layout: string, tag: string, ns: string, name: string): Promise<void> {
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
    await ctd.ctr(['-n', ns, 'images', 'import', join(dir, 'image.tar')]);
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
