// The CRI path, driven by a real CRI client (gRPC, runtime.v1) against a containerd the test
// starts with its CRI plugin, a CNI bridge of its own and the `prebake` runtime handler that
// `prebake install containerd` registers: pods of a plain image run through prebake and serve on
// their pod IPs; a pod of an image baked with --target cri (through the same CRI plugin, with the
// pod's volume given at bake time) is restored and serves on its pod IP with kubelet's service
// variables set; an image baked for ctr starts cold and prebake's log says why; the container
// lifecycle calls work; and nothing is left afterwards.

import test, { type ExecutionContext } from 'ava';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Spec } from '../oci/runtime-spec.ts';
import type { CheckpointManifest } from '../src/checkpoint/manifest.ts';
import { bakedSpecOf, processMismatch, securityMismatch } from '../src/checkpoint/security.ts';
import { PREBAKE, REPO } from '../lab/bundle.ts';
import {
  CRI_BRIDGE,
  CRI_NAMESPACE,
  CRI_RUNC_ROOT,
  type ContainerStatusResponse,
  type ExecSyncResponse,
  PAUSE_IMAGE,
  type Pod,
  httpGet,
  importLayout,
  waitForImage,
  waitHttp,
  writePauseImage,
} from '../lab/engines/cri.ts';
import { type CriContainerd, startContainerd } from '../lab/engines/daemons.ts';
import { NOOP_CMD, NOOP_PORT, noopImage } from './helpers/images.ts';

const PLAIN = 'docker.io/prebake/noop:plain';
const BAKED = 'docker.io/prebake/noop:baked';
const CRI_BAKED = 'docker.io/prebake/noop:cri';
/** The pod's volume: a host directory bound read-only at /data, given at bake time and at run time. */
let volume: string;
const volumeMount = () => ({ container_path: '/data', host_path: volume, readonly: true });
/** What kubelet adds to every container of a pod in the default namespace (enableServiceLinks). */
const KUBELET_ENV = [
  { key: 'KUBERNETES_SERVICE_HOST', value: '10.96.0.1' },
  { key: 'KUBERNETES_SERVICE_PORT', value: '443' },
  { key: 'KUBERNETES_SERVICE_PORT_HTTPS', value: '443' },
  { key: 'KUBERNETES_PORT', value: 'tcp://10.96.0.1:443' },
  { key: 'KUBERNETES_PORT_443_TCP', value: 'tcp://10.96.0.1:443' },
  { key: 'KUBERNETES_PORT_443_TCP_PROTO', value: 'tcp' },
  { key: 'KUBERNETES_PORT_443_TCP_PORT', value: '443' },
  { key: 'KUBERNETES_PORT_443_TCP_ADDR', value: '10.96.0.1' },
  { key: 'REDIS_SERVICE_HOST', value: '10.96.7.9' },
  { key: 'REDIS_SERVICE_PORT', value: '6379' },
  { key: 'REDIS_PORT', value: 'tcp://10.96.7.9:6379' },
  { key: 'REDIS_PORT_6379_TCP', value: 'tcp://10.96.7.9:6379' },
  { key: 'REDIS_PORT_6379_TCP_PROTO', value: 'tcp' },
  { key: 'REDIS_PORT_6379_TCP_PORT', value: '6379' },
  { key: 'REDIS_PORT_6379_TCP_ADDR', value: '10.96.7.9' },
];

let ctd: CriContainerd;

test.before(async (t) => {
  const t0 = Date.now();
  ctd = await startContainerd({ cri: true });
  await writePauseImage(ctd);
  const layout = await noopImage();
  await importLayout(ctd, layout, 'latest', CRI_NAMESPACE, PLAIN);
  // prebake-build captures the spec `ctr run` gives (in containerd's default namespace) and writes
  // the baked image into the namespace CRI reads (a NAMESPACE/ prefix needs a registry after it).
  const bake = spawnSync(join(REPO, 'bin/prebake-build'), ['--target', 'containerd', `oci:${layout}:latest`, `containerd:${CRI_NAMESPACE}/${BAKED}`], { env: ctd.env, encoding: 'utf8' });
  if (bake.status !== 0) throw new Error(`prebake-build failed (${bake.status}): ${bake.stderr}`);
  // --target cri: the spec CRI gives a container of a pod (through a probe pod under the prebake
  // handler), with the pod's volume from the container config given at bake time.
  volume = mkdtempSync(join(tmpdir(), 'prebake-cri-volume-'));
  writeFileSync(join(volume, 'greeting'), 'hello from the volume\n');
  const containerConfig = join(volume, '..', `${volume.split('/').pop()}.container.json`);
  writeFileSync(containerConfig, JSON.stringify({ mounts: [volumeMount()] }));
  const criBake = spawnSync(join(REPO, 'bin/prebake-build'), ['--target', 'cri', '--container-config', containerConfig, `oci:${layout}:latest`, `containerd:${CRI_NAMESPACE}/${CRI_BAKED}`], { env: ctd.env, encoding: 'utf8' });
  rmSync(containerConfig, { force: true });
  t.log(criBake.stderr.trim());
  if (criBake.status !== 0) throw new Error(`prebake-build --target cri failed (${criBake.status}): ${criBake.stderr}`);
  for (const image of [PAUSE_IMAGE, PLAIN, BAKED, CRI_BAKED]) await waitForImage(ctd.cri, image);
  t.log(`containerd with CRI up, images ready in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
});

test.after.always(async () => {
  await ctd?.stop();
  if (volume) rmSync(volume, { recursive: true, force: true });
});

interface Status {
  ok: boolean;
  served: number;
  pid: number;
  function: string;
  restored: boolean;
}

const status = (id: string) => ctd.cri.runtime<ContainerStatusResponse>('ContainerStatus', { container_id: id, verbose: true });
const exec = (id: string, cmd: string[]) => ctd.cri.runtime<ExecSyncResponse>('ExecSync', { container_id: id, cmd, timeout: 20 });

/** A container of `image` in a new pod under `handler`, started and answering on its pod IP. */
async function runFunction(podName: string, handler: string, image: string): Promise<{ pod: Pod; id: string; first: Status; ms: number }> {
  const pod = await ctd.runPod(podName, handler);
  const id = await ctd.createContainer(pod, 'fn', image);
  const t0 = performance.now();
  await ctd.cri.runtime('StartContainer', { container_id: id });
  const r = await waitHttp(pod.ip, NOOP_PORT);
  const ms = performance.now() - t0;
  if (r.status !== 200) throw new Error(`GET / on ${pod.ip}: HTTP ${r.status} ${r.body}`);
  return { pod, id, first: JSON.parse(r.body) as Status, ms };
}

/** The calls the runtime saw, as "<caller> <argv>" with ids and paths named by role. */
function argvShapes(names: Record<string, string>): string[] {
  let text = readFileSync(ctd.argvLog, 'utf8');
  for (const [id, name] of Object.entries(names)) text = text.replaceAll(join(ctd.state, 'io.containerd.runtime.v2.task', CRI_NAMESPACE, id), `<bundle ${name}>`).replaceAll(id, name);
  return text
    .split('\n')
    .filter((l) => l.includes(CRI_RUNC_ROOT) && Object.values(names).some((n) => l.includes(n)))
    .map((l) => l.replace(/\/tmp\/runc-process\d+/g, '<tmp>').replace(/[0-9a-f]{64}\.pid/g, '<exec-id>.pid'));
}

async function stopAndRemove(t: ExecutionContext, pod: Pod, id: string): Promise<void> {
  await ctd.cri.runtime('StopContainer', { container_id: id, timeout: 10 });
  const st = (await status(id)).status;
  t.is(st.state, 'CONTAINER_EXITED');
  t.is(st.exit_code, 0, `${pod.handler || 'runc'}: the function exits 0 on SIGTERM and CRI reports it (${st.reason})`);
  await ctd.cri.runtime('RemoveContainer', { container_id: id });
  await ctd.cri.runtime('StopPodSandbox', { pod_sandbox_id: pod.id });
  await ctd.cri.runtime('RemovePodSandbox', { pod_sandbox_id: pod.id });
  const left = await ctd.cri.runtime<{ containers: unknown[] }>('ListContainers', { filter: { pod_sandbox_id: pod.id } });
  t.deepEqual(left.containers, [], 'no container of the pod is listed after RemovePodSandbox');
}

test.serial('a pod of an image that is not prebaked runs under the prebake handler as under the runc handler', async (t) => {
  const seen: Record<string, { first: Status; cmdline: string[]; binary: unknown }> = {};
  for (const handler of ['', 'prebake']) {
    const name = handler || 'runc';
    const { pod, id, first, ms } = await runFunction(`plain-${name}`, handler, PLAIN);
    t.log(`${name}: pod ${pod.ip}, first answer ${ms.toFixed(0)} ms after StartContainer`);
    const ps = await ctd.cri.runtime<{ status: { runtime_handler: string } }>('PodSandboxStatus', { pod_sandbox_id: pod.id });
    t.is(ps.status.runtime_handler, handler);
    const info = JSON.parse((await status(id)).info.info!) as { runtimeOptions: { binary_name?: string } | null };
    const cmdline = (await exec(id, ['cat', '/proc/1/cmdline'])).stdout.toString().split('\0').filter(Boolean);
    seen[name] = { first, cmdline, binary: info.runtimeOptions?.binary_name };
    if (handler === 'prebake') {
      t.true(
        argvShapes({ [id]: 'CTR' }).some((l) => l.includes(' create --bundle <bundle CTR> ')),
        "the container's create went through prebake",
      );
      const decisions = ctd.runtimeLog(id).filter((l) => /^(restored|cold start)/.test(l.msg));
      t.deepEqual(decisions, [], 'no checkpoint: neither a restore nor a cold start is logged, runc creates it');
    }
    await stopAndRemove(t, pod, id);
  }
  t.is(seen.runc!.binary, undefined, 'the runc handler runs runc');
  t.is(seen.prebake!.binary, PREBAKE, "the prebake handler's shim runs bin/prebake");
  for (const name of ['runc', 'prebake']) {
    const s = seen[name]!;
    t.like(s.first, { ok: true, served: 1, function: 'noop', restored: false }, name);
    t.deepEqual(s.cmdline, NOOP_CMD, `${name}: the image's command is PID 1 of the container`);
  }
});

test.serial('a pod of the image baked with --target cri is restored: it serves on its pod IP in the pod\'s namespaces, with its volume, kubelet\'s variables for new processes, and Stop/Remove work', async (t) => {
  const pod = await ctd.runPod('cri-baked', 'prebake');
  let removed = false;
  t.teardown(async () => {
    if (!removed) await ctd.cri.runtime('RemovePodSandbox', { pod_sandbox_id: pod.id }).catch(() => {});
  });
  const id = await ctd.createContainer(pod, 'fn', CRI_BAKED, { mounts: [volumeMount()], envs: KUBELET_ENV });
  const t0 = performance.now();
  await ctd.cri.runtime('StartContainer', { container_id: id });
  const r = await waitHttp(pod.ip, NOOP_PORT);
  const ms = performance.now() - t0;
  const first = JSON.parse(r.body) as Status;
  const log = ctd.runtimeLog(id);
  t.log(`first answer ${ms.toFixed(0)} ms after StartContainer: ${JSON.stringify(first)}; prebake's log:\n${log.map((l) => `  ${l.level}: ${l.msg}`).join('\n')}`);
  t.true(log.some((l) => /^restored .* from \/\.prebake/.test(l.msg)), 'restored');
  t.deepEqual(log.filter((l) => l.level === 'warning'), [], 'no cold start, no warning (kubelet\'s variables do not count against the checkpoint)');
  t.true(first.served > 1, `the counter goes on from the bake (a cold start answers 1): ${first.served}`);

  // The pod's namespaces: the restored process joined the sandbox's network, IPC and UTS.
  const info = JSON.parse((await status(id)).info.info!) as { pid: number };
  const sandbox = JSON.parse((await ctd.cri.runtime<{ info: Record<string, string> }>('PodSandboxStatus', { pod_sandbox_id: pod.id, verbose: true })).info.info!) as { pid: number };
  for (const ns of ['net', 'ipc', 'uts']) t.is(statSync(`/proc/${info.pid}/ns/${ns}`).ino, statSync(`/proc/${sandbox.pid}/ns/${ns}`).ino, `the function is in the pod's ${ns} namespace`);
  t.not(statSync(`/proc/${info.pid}/ns/pid`).ino, statSync(`/proc/${sandbox.pid}/ns/pid`).ino, 'a pid namespace of its own');
  t.is((await exec(id, ['hostname'])).stdout.toString().trim(), 'cri-baked', "the pod's hostname");
  t.is((await exec(id, ['cat', '/data/greeting'])).stdout.toString(), 'hello from the volume\n', 'the pod\'s volume is mounted');
  t.is((await exec(id, ['sh', '-c', 'echo $KUBERNETES_SERVICE_HOST $REDIS_PORT'])).stdout.toString().trim(), '10.96.0.1 tcp://10.96.7.9:6379', 'a new process in the container gets kubelet\'s variables');
  const environ = readFileSync(`/proc/${info.pid}/environ`, 'utf8').split('\0');
  t.false(environ.some((e) => e.startsWith('KUBERNETES_')), 'the restored process keeps the environment it was baked with (documented)');
  const again = JSON.parse((await httpGet(pod.ip, NOOP_PORT)).body) as Status;
  t.is(again.served, first.served + 1, 'the same process serves on');
  await stopAndRemove(t, pod, id);
  removed = true;
});

let baked: { pod: Pod; id: string; first: Status } | undefined;

test.serial('a pod of the image baked for ctr starts cold through prebake, which logs that the CRI spec has other mounts', async (t) => {
  const { pod, id, first, ms } = await runFunction('baked', 'prebake', BAKED);
  baked = { pod, id, first };
  const log = ctd.runtimeLog(id);
  t.log(`prebake's log (the shim's --log file):\n${log.map((l) => `  ${l.level}: ${l.msg}`).join('\n')}`);
  t.log(`first answer ${ms.toFixed(0)} ms after StartContainer: ${JSON.stringify(first)}`);
  t.false(log.some((l) => l.msg.startsWith('restored ')), 'not restored');
  // The CRI plugin's spec has its own files for the pod's hosts, hostname and resolv.conf and a
  // read-only cgroup mount, and no tmpfs on /run, unlike the `ctr run` spec the image was baked with.
  t.deepEqual(
    log.filter((l) => l.level === 'warning').map((l) => l.msg),
    ['cold start: mount destinations differ from the baked ones (+/etc/hostname +/etc/hosts +/etc/resolv.conf +/sys/fs/cgroup -/run)'],
  );
  t.like(first, { ok: true, served: 1, restored: false }, 'a cold start answers its first request');
  t.false(existsSync(join(process.env.PREBAKE_STATE_DIR ?? '/run/prebake', CRI_RUNC_ROOT, id)), 'no prebake state for a cold start');

  // Beyond the first difference prebake reports: every check against the spec CRI gave.
  const spec = (JSON.parse((await status(id)).info.info!) as { runtimeSpec: Spec }).runtimeSpec;
  const manifest = JSON.parse((await exec(id, ['cat', '/.prebake/manifest.json'])).stdout.toString()) as CheckpointManifest;
  const wanted = bakedSpecOf(spec);
  const diffs = [
    `mounts: ${[...wanted.mounts.filter((d) => !manifest.spec.mounts.includes(d)).map((d) => `+${d}`), ...manifest.spec.mounts.filter((d) => !wanted.mounts.includes(d)).map((d) => `-${d}`)].join(' ') || 'equal'}`,
    `terminal: ${manifest.spec.terminal === wanted.terminal ? 'equal' : `baked ${manifest.spec.terminal}, asked ${wanted.terminal}`}`,
    `process: ${processMismatch(manifest.spec.process, wanted.process) ?? 'fits'}`,
    `security: ${securityMismatch(manifest.spec.security, wanted.security) ?? 'fits'}`,
  ];
  t.log(`the CRI spec against the baked one:\n${diffs.map((d) => `  ${d}`).join('\n')}`);
});

test.serial('ContainerStatus, ExecSync, StopContainer, RemoveContainer, StopPodSandbox and RemovePodSandbox of the baked pod work through prebake', async (t) => {
  if (!baked) return t.fail('the baked pod did not start (previous test)');
  const { pod, id } = baked;
  const st = await status(id);
  t.is(st.status.state, 'CONTAINER_RUNNING');
  t.is(st.status.image.image, BAKED);
  const info = JSON.parse(st.info.info!) as { pid: number; runtimeType: string; runtimeOptions: { binary_name?: string } };
  t.is(info.runtimeType, 'io.containerd.runc.v2');
  t.is(info.runtimeOptions.binary_name, PREBAKE);

  const cmdline = await exec(id, ['cat', '/proc/1/cmdline']);
  t.is(cmdline.exit_code, 0);
  t.deepEqual(cmdline.stdout.toString().split('\0').filter(Boolean), NOOP_CMD, "the function is PID 1 of the container's pid namespace");
  const failing = await exec(id, ['sh', '-c', 'echo out; echo err >&2; exit 7']);
  t.like({ exit_code: failing.exit_code, stdout: failing.stdout.toString(), stderr: failing.stderr.toString() }, { exit_code: 7, stdout: 'out\n', stderr: 'err\n' });

  const again = JSON.parse((await httpGet(pod.ip, NOOP_PORT)).body) as Status;
  t.is(again.served, baked.first.served + 1, 'the same process serves on');

  await ctd.cri.runtime('StopContainer', { container_id: id, timeout: 10 });
  const stopped = (await status(id)).status;
  t.is(stopped.state, 'CONTAINER_EXITED');
  t.is(stopped.exit_code, 0, `the function exits 0 on SIGTERM and CRI reports it (reason ${stopped.reason})`);
  t.regex(readFileSync(join(pod.logDir, 'fn.log'), 'utf8'), new RegExp(`stdout F request ${again.served} GET /`), "the container's output reaches CRI's log");

  // The argv contract: what the runc shim sent prebake, and what reached runc.
  const shapes = argvShapes({ [id]: '$CTR', [pod.id]: '$POD' });
  t.log(`calls the runtime made to runc for the baked pod ("<caller> <argv>"; containerd-shim: prebake exec'd runc with the shim's argv unchanged):\n${shapes.join('\n')}`);
  const g = `--root ${CRI_RUNC_ROOT} --log <bundle $CTR>/log.json --log-format json`;
  for (const call of [`exec --process <tmp> --detach --pid-file <bundle $CTR>/<exec-id>.pid $CTR`, `kill $CTR 15`])
    t.true(shapes.includes(`containerd-shim ${g} ${call}`), `the shim's ${call.split(' ')[0]} reaches runc unchanged`);
  t.true(shapes.includes(`containerd-shim ${g} create --bundle <bundle $CTR> --pid-file <bundle $CTR>/init.pid $CTR`), "the cold start: prebake execs runc with the shim's create unchanged");
  t.true(shapes.includes(`containerd-shim ${g} start $CTR`), "a cold-started container's start goes to runc");

  await ctd.cri.runtime('RemoveContainer', { container_id: id });
  await t.throwsAsync(status(id), { message: /not found|does not exist/ });
  await ctd.cri.runtime('StopPodSandbox', { pod_sandbox_id: pod.id });
  const ps = await ctd.cri.runtime<{ status: { state: string } }>('PodSandboxStatus', { pod_sandbox_id: pod.id });
  t.is(ps.status.state, 'SANDBOX_NOTREADY');
  await ctd.cri.runtime('RemovePodSandbox', { pod_sandbox_id: pod.id });
  const pods = await ctd.cri.runtime<{ items: unknown[] }>('ListPodSandbox', {});
  t.deepEqual(pods.items, []);
  t.true(argvShapes({ [id]: '$CTR' }).includes(`prebake ${g} delete $CTR`), "the container's delete went through prebake");
});

test.serial('after the pods are removed and containerd stops, nothing is left', async (t) => {
  await ctd.shutdown();
  t.deepEqual(ctd.leftovers(), [], 'no containerd, shim, mount, netns, IP lease, runc or prebake state or cgroup');
  await ctd.stop();
  t.false(existsSync(`/sys/class/net/${CRI_BRIDGE}`), `the bridge ${CRI_BRIDGE} is gone`);
  t.false(existsSync(ctd.dir));
  t.deepEqual(spawnSync('ip', ['netns'], { encoding: 'utf8' }).stdout.split('\n').filter((n) => n.startsWith('cni-')), []);
});
