// prebake-build: reads an image, runs it under runc until it is ready, warms it, checkpoints it,
// verifies the checkpoint restores, and writes the image with the checkpoint as its top layer.

import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { Spec } from '../../oci/runtime-spec.ts';
import { CHECKPOINT_ANNOTATION, CHECKPOINT_ENV, IMAGE_CHECKPOINT_PATH } from '../contract.ts';
import { type CheckpointManifest, MEMORY_RESTORES, type MemoryRestore } from '../checkpoint/manifest.ts';
import { DEFAULT_KEY, keyIdOf, loadSigningKey } from '../checkpoint/trust.ts';
import type { KeyObject } from 'node:crypto';
import { packLayer } from '../image/pack.ts';
import { readImage, type SourceImage } from '../image/read.ts';
import { formatImageRef, type ImageRef, parseImageRef } from '../image/ref.ts';
import { unpackLayers } from '../image/unpack.ts';
import { writeImage } from '../image/write.ts';
import { LAZY_AUTO_BYTES } from '../checkpoint/write.ts';
import { compareVersions, criuVersion, MIN_CRIU } from '../lib/host.ts';
import { attachNetns, deleteNetns, NetnsClient } from '../lib/netns.ts';
import { prebakeBinPath } from '../lib/paths.ts';
import { mountOverlay } from '../lib/overlay.ts';
import { spawnPiped } from '../lib/pipe.ts';
import { bake } from './bake.ts';
import { hiddenByOpaqueDirs, pruneUpper } from './changes.ts';
import { parseProbe, parseWarmupRequest, type Probe, probeText } from './probe.ts';
import { PROGRESS_MODES, type ProgressMode, type Progress, progressFor } from './progress.ts';
import { findSecrets } from './secrets.ts';
import { type CriConfig, DEFAULT_RUNTIME_NAME, engineSpec, type JoinedPaths, type JoinedType, joinedTypes, makeNamespaces, type RunOverrides, RUNTIME_NAME, securityContextOf, type Target, TARGETS, targetSpec } from './target.ts';

declare const PREBAKE_VERSION: string | undefined;
const VERSION = typeof PREBAKE_VERSION === 'string' ? PREBAKE_VERSION : 'dev';

const USAGE = `usage: prebake-build [options] SOURCE DEST

SOURCE and DEST are image references: oci:DIR[:TAG], oci-archive:FILE[:TAG],
docker-archive:FILE[:NAME:TAG], docker-daemon:NAME:TAG, containerd:[NS/]NAME:TAG,
containers-storage:NAME:TAG, docker://[HOST[:PORT]/]NAME[:TAG] (a registry, through skopeo
and its auth file).

  --ready PROBE            http:PORT[/PATH], tcp:PORT, log:REGEX or delay:MS
                           (default: http on the image's first exposed port)
  --ready-timeout MS       give up waiting for readiness after MS (default 30000)
  --warmup N               warm-up requests before the checkpoint (default 1 with an http probe)
  --warmup-request REQ     'METHOD /path' (default GET on the probe's path)
  --warmup-body FILE       body of each warm-up request
  --warmup-port PORT       port of the warm-up requests (default the probe's)
  --env NAME=VALUE         set in the bake run, the baked process and DEST's Env (repeatable)
  --arg ARG                replaces the image's Cmd, in the bake run and in DEST (repeatable)
  --target TARGET          the runtime spec to bake for (default docker; repeatable):
                           ${TARGETS.join(', ')};
                           docker, containerd, podman: the spec that engine, running here with
                           prebake registered, generates; containerd-netns: ctr run --with-ns
                           network:PATH (CNI, faasd); cri: a Kubernetes pod's container through
                           containerd's CRI plugin; runc: runc's own, no engine needed
  --runtime NAME           --target docker: the name prebake is registered under with dockerd;
                           --target cri: the CRI runtime handler (default ${DEFAULT_RUNTIME_NAME})
  --pod-config FILE        --target cri: the pod's PodSandboxConfig, CRI's JSON as crictl runp
                           reads it (namespace options, sysctls, security context, DNS)
  --container-config FILE  --target cri: the container's ContainerConfig, CRI's JSON as crictl
                           create reads it (mounts for the pod's volumes, envs, command, args,
                           working_dir, security context); its image is ignored
  --allow-secrets          bake even when the environment or arguments look like they hold
                           secrets (process memory is shipped inside the image)
  --key FILE               the ed25519 key that signs the checkpoint (default ${DEFAULT_KEY});
                           hosts restore it only if they trust its public key
  --tls-verify[=BOOL]      docker:// only: false talks to the registry over plain HTTP or
                           unverified HTTPS (default: HTTPS, or what registries.conf says)
  --memory MODE            how restores bring the memory back: eager (every page copied in
                           before the process runs), lazy (pages served on first touch while
                           the rest are copied in behind), or auto (default: lazy from ${LAZY_AUTO_BYTES / 2 ** 20} MiB
                           of lazily restorable pages)
  --no-verify              do not restore the checkpoint once before writing DEST
  --json                   print one JSON summary on stdout
  --progress MODE          auto (tty on a terminal, else plain), plain (a line as each step
                           starts and ends), tty (one line per step, counting seconds), quiet
  --quiet, -q              no progress on stderr; only DEST's reference on stdout
  --version                print prebake-build's version
  --help, -h               this text (on stdout)
`;

class UsageError extends Error {}

const DEFAULT_TARGET: Target = 'docker';

interface BuildOptions {
  source: ImageRef;
  dest: ImageRef;
  targets: Target[];
  /** No --target was given: the default target, docker. */
  defaultTarget?: boolean;
  ready?: Probe;
  readyTimeoutMs: number;
  warmup?: number;
  warmupRequest?: string;
  warmupBody?: Buffer;
  warmupPort?: number;
  env: string[];
  args?: string[];
  verify: boolean;
  memory: MemoryRestore | 'auto';
  allowSecrets: boolean;
  json: boolean;
  quiet: boolean;
  progress: ProgressMode;
  /** The bake key's file (--key), read once the build has started as root. */
  keyFile: string;
  /** The name dockerd or the CRI plugin knows the prebake runtime by (--runtime; default "prebake"), for --target docker and cri. */
  runtimeName?: string;
  /** --pod-config and --container-config, for --target cri. */
  podConfig?: CriConfig;
  containerConfig?: CriConfig;
}

function parseBuildArgs(argv: string[]): BuildOptions {
  let parsed;
  // --tls-verify alone means true, as in podman and skopeo (a Go boolean flag): its value only after "=".
  const end = argv.indexOf('--');
  const args = argv.map((a, i) => {
    if (a !== '--tls-verify' || (end >= 0 && i > end)) return a;
    if (/^(true|false)$/.test(argv[i + 1] ?? '')) throw new UsageError(`--tls-verify ${argv[i + 1]}: write --tls-verify=${argv[i + 1]}`);
    return '--tls-verify=true';
  });
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      options: {
        ready: { type: 'string' },
        'ready-timeout': { type: 'string' },
        warmup: { type: 'string' },
        'warmup-request': { type: 'string' },
        'warmup-body': { type: 'string' },
        'warmup-port': { type: 'string' },
        env: { type: 'string', multiple: true },
        arg: { type: 'string', multiple: true },
        target: { type: 'string', multiple: true },
        runtime: { type: 'string' },
        'pod-config': { type: 'string' },
        'container-config': { type: 'string' },
        'no-verify': { type: 'boolean' },
        memory: { type: 'string' },
        'tls-verify': { type: 'string' },
        key: { type: 'string' },
        'allow-secrets': { type: 'boolean' },
        json: { type: 'boolean' },
        quiet: { type: 'boolean', short: 'q' },
        progress: { type: 'string' },
        version: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const v = parsed.values;
  if (v.help) throw new UsageError('');
  if (v.version) throw new UsageError(`version`);
  if (parsed.positionals.length !== 2) throw new UsageError(`expected SOURCE and DEST, got ${parsed.positionals.length} argument(s)`);
  const int = (name: string, text: string | undefined, min: number): number | undefined => {
    if (text === undefined) return undefined;
    const n = Number(text);
    if (!Number.isInteger(n) || n < min) throw new UsageError(`--${name} ${text}: expected an integer >= ${min}`);
    return n;
  };
  const targets = (v.target ?? [DEFAULT_TARGET]).map((t) => {
    if (!(TARGETS as readonly string[]).includes(t)) throw new UsageError(`--target ${t}: supported targets are ${TARGETS.join(', ')}`);
    return t as Target;
  });
  for (const e of v.env ?? []) if (!/^[A-Za-z_][A-Za-z0-9_]*=/.test(e)) throw new UsageError(`--env ${e}: expected NAME=VALUE`);
  let warmupBody: Buffer | undefined;
  if (v['warmup-body'] !== undefined) {
    try {
      warmupBody = readFileSync(v['warmup-body']);
    } catch (e) {
      throw new UsageError(`--warmup-body ${v['warmup-body']}: ${(e as Error).message}`);
    }
  }
  const opts: BuildOptions = {
    source: parseImageRef(parsed.positionals[0]!),
    dest: parseImageRef(parsed.positionals[1]!),
    targets: [...new Set(targets)],
    ...(v.target ? {} : { defaultTarget: true }),
    readyTimeoutMs: int('ready-timeout', v['ready-timeout'], 1) ?? 30000,
    env: v.env ?? [],
    verify: !v['no-verify'],
    memory: (() => {
      const m = v.memory ?? 'auto';
      if (m !== 'auto' && !(MEMORY_RESTORES as readonly string[]).includes(m)) throw new UsageError(`--memory ${m}: expected eager, lazy or auto`);
      return m as MemoryRestore | 'auto';
    })(),
    allowSecrets: v['allow-secrets'] ?? false,
    json: v.json ?? false,
    quiet: v.quiet ?? false,
    progress: (() => {
      const m = v.progress ?? 'auto';
      if (!(PROGRESS_MODES as readonly string[]).includes(m)) throw new UsageError(`--progress ${m}: expected ${PROGRESS_MODES.join(', ')}`);
      return m as ProgressMode;
    })(),
    keyFile: v.key ?? DEFAULT_KEY,
  };
  if (v.ready !== undefined) opts.ready = parseProbe(v.ready);
  const warmup = int('warmup', v.warmup, 0);
  if (warmup !== undefined) opts.warmup = warmup;
  if (v['warmup-request'] !== undefined) {
    parseWarmupRequest(v['warmup-request']); // fails early on a malformed request
    opts.warmupRequest = v['warmup-request'];
  }
  if (warmupBody) opts.warmupBody = warmupBody;
  const port = int('warmup-port', v['warmup-port'], 1);
  if (port !== undefined) opts.warmupPort = port;
  if (v.arg) opts.args = v.arg;
  if (v.runtime !== undefined) {
    if (!RUNTIME_NAME.test(v.runtime)) throw new UsageError(`--runtime ${JSON.stringify(v.runtime)}: expected a runtime name as dockerd's daemon.json has it (letters, digits, "_", "." and "-", starting with a letter or digit)`);
    if (!opts.targets.includes('docker') && !opts.targets.includes('cri')) throw new UsageError(`--runtime names the runtime for --target docker or cri, neither of which is among the targets (${opts.targets.join(', ')})`);
    opts.runtimeName = v.runtime;
  }
  for (const [flag, key] of [['pod-config', 'podConfig'], ['container-config', 'containerConfig']] as const) {
    const file = v[flag];
    if (file === undefined) continue;
    if (!opts.targets.includes('cri')) throw new UsageError(`--${flag} is for --target cri, which is not among the targets (${opts.targets.join(', ')})`);
    opts[key] = readCriConfig(flag, file);
  }
  const cc = opts.containerConfig;
  if (cc && opts.args && ((cc.command as unknown[] | undefined)?.length || (cc.args as unknown[] | undefined)?.length))
    throw new UsageError('--arg and the command or args of --container-config both say what to run: give one');
  const tls = v['tls-verify'];
  if (tls !== undefined) {
    if (tls !== 'true' && tls !== 'false') throw new UsageError(`--tls-verify=${tls}: expected true or false`);
    const registry = [opts.source, opts.dest].filter((r) => r.transport === 'docker');
    if (!registry.length) throw new UsageError('--tls-verify applies to docker:// references; neither SOURCE nor DEST is one');
    for (const r of registry) r.tlsVerify = tls === 'true';
  }
  return opts;
}

interface BuildResult {
  source: string;
  dest: string;
  targets: Target[];
  steps: { step: string; ms: number }[];
  checkpoint: { files: number; bytes: number };
  layer: { digest: string; size: number };
  verified: boolean;
  manifestDigest: string;
}

interface Cleanup {
  (): void;
}


const strings = (x: unknown): x is string[] => Array.isArray(x) && x.every((e) => typeof e === 'string');

/** A CRI config file (JSON, field names as in api.proto), checked for the fields prebake-build reads. */
function readCriConfig(flag: string, file: string): CriConfig {
  let c: unknown;
  try {
    c = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new UsageError(`--${flag} ${file}: ${(e as Error).message}`);
  }
  if (!c || typeof c !== 'object' || Array.isArray(c)) throw new UsageError(`--${flag} ${file}: expected a JSON object (CRI's ${flag === 'pod-config' ? 'PodSandboxConfig' : 'ContainerConfig'})`);
  const o = c as CriConfig;
  for (const f of ['command', 'args'])
    if (o[f] !== undefined && !strings(o[f])) throw new UsageError(`--${flag} ${file}: ${f} must be a list of strings`);
  if (o.envs !== undefined && !(Array.isArray(o.envs) && o.envs.every((e: { key?: unknown; value?: unknown }) => typeof e?.key === 'string' && /^[A-Za-z_][A-Za-z0-9_]*$/.test(e.key) && ['string', 'undefined'].includes(typeof e.value))))
    throw new UsageError(`--${flag} ${file}: envs must be a list of {"key": NAME, "value": STRING}`);
  const sc = securityContextOf(o);
  if (sc.run_as_username) throw new UsageError(`--${flag} ${file}: run_as_username is not supported; give run_as_user (and run_as_group)`);
  // The bake runs the image as root on the host that holds the signing key: not with the host's
  // devices and capabilities, nor in its network, PID or IPC namespace.
  if (sc.privileged === true) throw new UsageError(`--${flag} ${file}: a privileged container is not baked (the bake host holds the signing key)`);
  const nsOptions = (sc.namespace_options ?? {}) as CriConfig;
  for (const k of ['network', 'pid', 'ipc'])
    if (nsOptions[k] === 'NODE' || nsOptions[k] === 2) throw new UsageError(`--${flag} ${file}: namespace_options.${k} NODE (the host's) is not baked (the bake host holds the signing key)`);
  return o;
}

/**
 * The process a bake runs for `target`: --env and --arg; for cri also the container config's
 * envs, command, args and working_dir, as containerd's CRI plugin applies them (a command
 * replaces the image's Entrypoint and Cmd, args alone its Cmd), and its run_as_user.
 */
function runOverrides(target: Target, opts: BuildOptions, env: string[]): RunOverrides {
  const o: RunOverrides = { env: [...opts.env, ...env], ...(opts.args ? { args: opts.args } : {}) };
  const c = target === 'cri' ? opts.containerConfig : undefined;
  if (!c) return o;
  o.env = [...((c.envs ?? []) as { key: string; value?: string }[]).map((e) => `${e.key}=${e.value ?? ''}`), ...o.env!];
  const [command, args] = [(c.command ?? []) as string[], (c.args ?? []) as string[]];
  if (command.length) {
    o.entrypoint = command;
    o.args = args;
  } else if (args.length) o.args = args;
  if (typeof c.working_dir === 'string' && c.working_dir) o.cwd = c.working_dir;
  if (securityContextOf(c).run_as_user) o.engineUser = true;
  return o;
}

function defaultProbe(image: SourceImage): Probe {
  const ports = Object.keys(image.config.config?.ExposedPorts ?? {});
  const tcp = ports.map((p) => /^(\d+)(?:\/tcp)?$/.exec(p)?.[1]).find(Boolean);
  if (!tcp) throw new UsageError('the image exposes no TCP port: say how to tell it is ready with --ready');
  return { kind: 'http', port: Number(tcp), path: '/' };
}

async function build(opts: BuildOptions, report: Progress): Promise<BuildResult> {
  const progress = (line: string) => report.line(line);
  if (process.getuid?.() !== 0) throw new Error('prebake-build must run as root (runc, CRIU, mounts and network namespaces need it)');
  let criu: string;
  try {
    criu = criuVersion();
  } catch (e) {
    throw new Error(`CRIU is missing: ${(e as Error).message}`);
  }
  if (compareVersions(criu, MIN_CRIU) < 0) throw new Error(`CRIU ${criu} is too old: prebake-build needs CRIU >= ${MIN_CRIU}`);
  let signingKey: KeyObject;
  try {
    signingKey = loadSigningKey(opts.keyFile);
  } catch (e) {
    throw new Error(`--key: ${(e as Error).message}`);
  }

  // Each engine's spec first: a missing engine stops the build before anything is read or run.
  const engines = new Map<Target, Spec>();
  for (const target of opts.targets)
    try {
      engines.set(target, await engineSpec(target, { ...(opts.runtimeName ? { runtimeName: opts.runtimeName } : {}), ...(opts.podConfig ? { podConfig: opts.podConfig } : {}), ...(opts.containerConfig ? { containerConfig: opts.containerConfig } : {}) }));
    } catch (e) {
      throw new Error(`${(e as Error).message}${opts.defaultTarget ? ` (docker is the default target; --target runc bakes for plain runc, no engine needed)` : ''}`, { cause: e });
    }

  const steps: BuildResult['steps'] = [];
  let t = performance.now();
  /** The next step starts (its line comes now, not only when it ends). */
  const begin = (step: string) => {
    t = performance.now();
    report.begin(step);
  };
  const lap = (step: string) => {
    const now = performance.now();
    steps.push({ step, ms: Math.round(now - t) });
    report.end(step, now - t);
    t = now;
  };
  const cleanups: Cleanup[] = [];
  const tmp = mkdtempSync(join(tmpdir(), 'prebake-build-'));
  cleanups.push(() => rmSync(tmp, { recursive: true, force: true }));
  let image: SourceImage | undefined;
  try {
    begin(opts.source.transport === 'docker' ? 'pull' : 'read image');
    image = await readImage(opts.source);
    lap(opts.source.transport === 'docker' ? 'pull' : 'read image');
    const cfg = image.config.config ?? {};
    const pod = runOverrides(opts.targets.includes('cri') ? 'cri' : opts.targets[0]!, opts, []);
    const secrets = findSecrets([...(cfg.Env ?? []), ...pod.env!], [...(pod.entrypoint ?? cfg.Entrypoint ?? []), ...(pod.args ?? cfg.Cmd ?? [])]);
    if (secrets.length && !opts.allowSecrets)
      throw new Error(`the baked process's memory would carry secrets into the image: ${secrets.join('; ')}; pass --allow-secrets to bake anyway`);
    for (const s of secrets) progress(`warning: ${s} (baked anyway: --allow-secrets)`);
    const lower = join(tmp, 'rootfs');
    begin('unpack');
    await unpackLayers(image.layers, lower);
    lap('unpack');
    const ready = opts.ready ?? defaultProbe(image);
    const warmupCount = opts.warmup ?? (ready.kind === 'http' ? 1 : 0);
    const warmupPort = opts.warmupPort ?? (ready.kind === 'http' || ready.kind === 'tcp' ? ready.port : undefined);
    if (warmupCount > 0 && warmupPort === undefined) throw new UsageError('--warmup needs --warmup-port with a log: or delay: probe');
    const warmupRequest = parseWarmupRequest(opts.warmupRequest ?? (ready.kind === 'http' ? ready.path : '/'), opts.warmupBody);
    const stage = join(tmp, 'stage');
    const manifests: CheckpointManifest[] = [];
    const bakes: { target: Target; joins: JoinedType[]; rootfsMode: number | undefined; shape: (paths: JoinedPaths, env?: string[]) => Spec; spec: Spec; upper: string; merged: string; unmount: () => void }[] = [];
    for (const target of opts.targets) {
      const outDir = opts.targets.length > 1 ? join(stage, '.prebake', target) : join(stage, '.prebake');
      begin(`bake (${target})`);
      const bundle = join(tmp, `bake-${target}`);
      const netns = `prebake-build-${process.pid}-${target}`;
      const engine = engines.get(target)!;
      const joins = joinedTypes(target, engine);
      const ns = makeNamespaces(joins, netns, join(tmp, `ns-${target}`));
      cleanups.push(() => {
        ns.remove();
        deleteNetns(netns);
      });
      const upper = join(tmp, `upper-${target}`);
      const merged = join(bundle, 'rootfs');
      const unmount = mountOverlay([lower], upper, join(tmp, `work-${target}`), merged);
      cleanups.push(unmount);
      // The engine's rootfs root has a mode of its own (podman's is 0555); CRIU checks it on restore.
      const rootfsMode = (engine as { 'io.prebake.rootfsMode'?: number })['io.prebake.rootfsMode'];
      if (rootfsMode !== undefined) chmodSync(merged, rootfsMode);
      const shape = (nsPaths: JoinedPaths, env: string[] = []) =>
        targetSpec(target, engine, image!.config.config ?? {}, {
          rootfs: 'rootfs',
          hostRootfs: lower,
          nsPaths,
          scratch: join(tmp, `files-${target}`),
          overrides: runOverrides(target, opts, env),
        });
      const spec = shape(ns.paths);
      writeFileSync(join(bundle, 'config.json'), JSON.stringify(spec, null, 2));
      const { manifest } = await bake({
        bundle,
        id: `prebake-build-${process.pid}-${target}`,
        netns,
        ready,
        readyTimeoutMs: opts.readyTimeoutMs,
        ...(warmupCount > 0 ? { warmup: { count: warmupCount, port: warmupPort!, request: warmupRequest } } : {}),
        outDir,
        prebakeVersion: VERSION,
        baseImage: image.configDigest,
        memory: opts.memory,
        signingKey,
        onStart: (s) => report.begin(`${target}: ${s}`),
        onStep: (s, ms) => report.end(`${target}: ${s}`, ms),
      });
      manifests.push(manifest);
      bakes.push({ target, joins, rootfsMode, shape, spec, upper, merged, unmount });
      lap(`bake (${target})`);
    }
    // The image carries what the (first) bake changed in the rootfs; each target's verify run
    // restores over exactly that.
    const first = bakes[0]!;
    const hidden = hiddenByOpaqueDirs(first.upper, lower, first.merged);
    for (const b of bakes) b.unmount();
    const changes = pruneUpper(first.upper, lower, { mountPoints: (first.spec.mounts ?? []).map((m) => m.destination), hidden, exclude: '.prebake' });
    begin('rootfs changes');
    for (const s of changes.skipped) progress(`warning: ${s} is a socket: an image cannot carry it, left out`);
    progress(`rootfs changes: ${changes.files} file(s), ${(changes.bytes / 1024).toFixed(1)} kB, ${changes.removed} removed`);
    lap('rootfs changes');
    if (opts.verify)
      for (const b of bakes) {
        begin(`verify (${b.target})`);
        await verifyRestore(b.target, b.joins, b.rootfsMode, (p) => b.shape(p, [`${CHECKPOINT_ENV}=/.prebake`]), [stage, first.upper, lower], ready, opts, tmp, cleanups);
        lap(`verify (${b.target})`);
      }
    begin('pack layer');
    const layer = await packLayer(stage, '/', { upper: first.upper });
    cleanups.push(() => void layer.cleanup());
    lap('pack layer');
    const labels: Record<string, string> = {
      'io.prebake.version': VERSION,
      [CHECKPOINT_ANNOTATION]: IMAGE_CHECKPOINT_PATH,
      'io.prebake.targets': opts.targets.join(','),
      'io.prebake.probe': probeText(ready),
      'io.prebake.criu': criu,
      'io.prebake.key-id': keyIdOf(signingKey),
    };
    begin(opts.dest.transport === 'docker' ? 'push' : 'write image');
    // DEST runs the baked process as it is: --env in its Env (by name, as `docker run -e` sets
    // it), --arg as its Cmd. Otherwise a plain run of DEST asks for another environment or
    // command than the checkpoint's, and the runtime starts it cold.
    const bakedEnv: Record<string, string> = {};
    for (const e of opts.env) bakedEnv[e.slice(0, e.indexOf('='))] = e.slice(e.indexOf('=') + 1);
    const written = await writeImage(opts.dest, {
      source: opts.args ? { ...image, config: { ...image.config, config: { ...image.config.config, Cmd: opts.args } } } : image,
      addLayer: layer,
      env: { ...bakedEnv, [CHECKPOINT_ENV]: IMAGE_CHECKPOINT_PATH },
      // As labels and as annotations (engines show either). No org.criu.* names: podman and umoci
      // copy them into every container's spec, and the runtime refuses any org.criu.* there
      // (runc hands org.criu.config to CRIU).
      labels,
      annotations: labels,
      createdBy: `prebake-build ${VERSION}: checkpoint after ${probeText(ready)}${warmupCount ? `, ${warmupCount} warm-up request(s)` : ''}`,
    });
    lap(opts.dest.transport === 'docker' ? 'push' : 'write image');
    return {
      source: formatImageRef(opts.source),
      dest: formatImageRef(opts.dest),
      targets: opts.targets,
      steps,
      checkpoint: {
        files: manifests.reduce((n, m) => n + Object.keys(m.files).length, 0),
        bytes: manifests.reduce((n, m) => n + Object.values(m.files).reduce((a, f) => a + f.size, 0), 0),
      },
      layer: { digest: layer.digest, size: layer.size },
      verified: opts.verify,
      manifestDigest: written.manifestDigest,
    };
  } finally {
    report.close();
    for (const c of cleanups.reverse()) c();
    await image?.cleanup();
  }
}

/** Restores the staged checkpoint once through the prebake runtime in a fresh netns and probes it. */
async function verifyRestore(
  target: Target,
  joins: JoinedType[],
  rootfsMode: number | undefined,
  specFor: (paths: JoinedPaths) => Spec,
  lowers: string[],
  ready: Probe,
  opts: BuildOptions,
  tmp: string,
  cleanups: Cleanup[],
): Promise<void> {
  const id = `prebake-verify-${process.pid}-${target}`;
  const netns = `prebake-verify-${process.pid}-${target}`;
  const bundle = join(tmp, `verify-${target}`);
  const root = join(tmp, `verify-root-${target}`);
  const log = join(tmp, `verify-${target}.log`);
  const pidFile = join(tmp, `verify-${target}.pid`);
  const prebake = prebakeBinPath();
  const g = ['--root', root, '--log', log, '--log-format', 'json'];
  // The verify run keeps its runtime state and its verified copy of the checkpoint in the
  // build's temp dir, gone with it (the host's store gets the checkpoint at its first restore).
  const env = { ...process.env, PREBAKE_STATE_DIR: join(tmp, 'state'), PREBAKE_STORE_DIR: join(tmp, 'store') };
  let client: NetnsClient | undefined;
  let created: ReturnType<typeof spawnPiped> | undefined;
  let ns: ReturnType<typeof makeNamespaces> | undefined;
  const unmount = mountOverlay(lowers, join(tmp, `vupper-${target}`), join(tmp, `vwork-${target}`), join(bundle, 'rootfs'));
  if (rootfsMode !== undefined) chmodSync(join(bundle, 'rootfs'), rootfsMode);
  const done = () => {
    client?.close();
    try {
      execFileSync(prebake, ['--root', root, 'delete', '--force', id], { stdio: 'ignore', env });
    } catch {
      /* never created */
    }
    created?.close();
    unmount();
    ns?.remove();
    deleteNetns(netns);
  };
  cleanups.push(done);
  try {
    ns = makeNamespaces(joins, netns, join(tmp, `vns-${target}`));
    const spec = specFor(ns.paths);
    writeFileSync(join(bundle, 'config.json'), JSON.stringify(spec, null, 2));
    created = spawnPiped(prebake, [...g, 'create', '--bundle', bundle, '--pid-file', pidFile, id], env);
    const code = await created.exit;
    const lines = existsSync(log) ? readFileSync(log, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as { level: string; msg: string }) : [];
    if (code !== 0) throw new Error(`verify: prebake create exited ${code}: ${lines.at(-1)?.msg ?? ''}`);
    const restored = lines.find((l) => /^restored /.test(l.msg));
    if (!restored) throw new Error(`verify: the checkpoint did not restore: ${lines.find((l) => l.level === 'warning')?.msg ?? 'no reason logged'}`);
    execFileSync(prebake, ['--root', root, 'start', id], { env });
    // An engine's network namespace has no path: name the restored one to probe it.
    if (!joins.includes('network')) attachNetns(netns, Number(readFileSync(pidFile, 'utf8')));
    client = await NetnsClient.start(netns);
    if (ready.kind === 'http') await client.waitHttp({ port: ready.port, path: ready.path, timeoutMs: opts.readyTimeoutMs });
    else if (ready.kind === 'tcp') await client.waitTcp(ready.port, opts.readyTimeoutMs);
  } finally {
    cleanups.splice(cleanups.indexOf(done), 1);
    done();
  }
}

export async function main(argv: string[]): Promise<number> {
  let opts: BuildOptions;
  try {
    opts = parseBuildArgs(argv);
  } catch (e) {
    const msg = (e as Error).message;
    if (msg === 'version') {
      process.stdout.write(`prebake-build version ${VERSION}\n`);
      return 0;
    }
    // --help: the text on stdout, exit 0; a usage error: the error and the text on stderr, exit 2.
    if (!msg) process.stdout.write(USAGE);
    else process.stderr.write(`prebake-build: ${msg}\n\n${USAGE}`);
    return msg ? 2 : 0;
  }
  const report = progressFor(opts.quiet ? 'quiet' : opts.progress);
  const progress = (line: string) => report.line(line);
  try {
    const result = await build(opts, report);
    if (opts.json) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    else if (opts.quiet) process.stdout.write(`${result.dest}\n`);
    else {
      // What `runc spec` writes differs from the runc target in two fields: say which bundles restore.
      if (opts.targets.includes('runc')) progress('runc target: a bundle restores with root.readonly false and process.terminal false (runc spec writes true for both), joining a network namespace by path (linux.namespaces: {"type": "network", "path": ...})');
      progress(`wrote ${result.dest} (checkpoint layer ${(result.layer.size / 1e6).toFixed(1)} MB, ${result.layer.digest})`);
    }
    return 0;
  } catch (e) {
    process.stderr.write(`prebake-build: ${(e as Error).message}\n`);
    return 1;
  }
}
