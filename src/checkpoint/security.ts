// The security-relevant part of a runtime spec, as recorded at bake time, and the rule that
// decides whether a checkpoint may be restored under a new spec (never more privilege).

import { createHash } from 'node:crypto';
import type { Spec } from '../../oci/runtime-spec.ts';

export interface SecurityContext {
  uid: number;
  gid: number;
  additionalGids: number[];
  capabilities: Record<'bounding' | 'effective' | 'inheritable' | 'permitted' | 'ambient', string[]>;
  noNewPrivileges: boolean;
  /** sha256 of the canonical JSON of linux.seccomp, or null when there is none. */
  seccomp: string | null;
  apparmorProfile: string;
  selinuxLabel: string;
  readonlyRootfs: boolean;
  maskedPaths: string[];
  readonlyPaths: string[];
  rlimits: Record<string, { soft: number; hard: number }>;
}

/** What the restored process needs to be the same as at bake time. */
export interface BakedSpec {
  security: SecurityContext;
  /** Mount destinations, sorted. */
  mounts: string[];
  terminal: boolean;
  /** The process that was baked: a container asking for another command or environment is not it. */
  process: BakedProcess;
  /**
   * The network namespace: `new` (the runtime made it; CRIU saves it in the checkpoint), `path`
   * (joined by path: CRIU leaves it out and expects one to join) or `host` (none in the spec).
   * Absent in manifests written before it was recorded.
   */
  network?: NetworkMode;
  /** The rest of the spec that CRIU restores from the images instead of taking it from the new spec. */
  restored: RestoredState;
  /** The hostname the process was baked with (CRIU restores it; the runtime sets the spec's if it differs). */
  hostname?: string;
}

/**
 * What a restored process gets from the images, not from the spec it is restored into: so the
 * new spec must ask for exactly what was baked.
 */
export interface RestoredState {
  /** The user namespace's ID mappings (canonical JSON), or null when there is no user namespace. */
  userns: string | null;
  /** Per mount destination: its type (bind for bind mounts) and its ro/nosuid/nodev/noexec flags. */
  mountOptions: Record<string, string>;
  /** linux.devices, by path (canonical JSON). */
  devices: string;
  /** linux.sysctl (canonical JSON). */
  sysctl: string;
  /** Recorded, not compared: the runtime gives the restored processes the spec's (see applyOomScoreAdj). */
  oomScoreAdj: number | null;
}

const MOUNT_FLAGS = ['ro', 'nosuid', 'nodev', 'noexec'];

/** A mount's type and security flags as one word list, e.g. "bind ro nosuid". */
export function mountShape(m: { type?: string; options?: string[] }): string {
  const opts = m.options ?? [];
  const bind = m.type === 'bind' || opts.includes('bind') || opts.includes('rbind');
  return [bind ? 'bind' : (m.type ?? 'none'), ...MOUNT_FLAGS.filter((f) => opts.includes(f))].join(' ');
}

export function restoredStateOf(spec: Spec): RestoredState {
  const user = spec.linux?.namespaces?.some((n) => n.type === 'user');
  const mountOptions: Record<string, string> = {};
  for (const m of spec.mounts ?? []) mountOptions[m.destination] = mountShape(m);
  const devices = [...((spec.linux?.devices as { path: string }[] | undefined) ?? [])].sort((a, b) => (a.path < b.path ? -1 : 1));
  return {
    userns: user ? canonicalJson({ uidMappings: spec.linux?.uidMappings ?? [], gidMappings: spec.linux?.gidMappings ?? [] }) : null,
    mountOptions,
    devices: canonicalJson(devices),
    sysctl: canonicalJson(spec.linux?.sysctl ?? {}),
    oomScoreAdj: spec.process?.oomScoreAdj ?? null,
  };
}

/** Why a process baked with `baked` cannot be restored where `wanted` is asked for, or null. */
export function restoredMismatch(baked: RestoredState, wanted: RestoredState): string | null {
  if (baked.userns !== wanted.userns)
    return wanted.userns === null
      ? 'the checkpoint was baked in a user namespace, the container asks for none'
      : baked.userns === null
        ? 'the container asks for a user namespace, the checkpoint was baked without one (it would restore as the host\'s root)'
        : 'the user namespace ID mappings differ from the baked ones';
  for (const [dest, shape] of Object.entries(wanted.mountOptions))
    if (baked.mountOptions[dest] !== undefined && baked.mountOptions[dest] !== shape)
      return `mount ${dest} is "${shape}", it was baked as "${baked.mountOptions[dest]}"`;
  if (baked.devices !== wanted.devices) return 'linux.devices differ from the baked ones';
  if (baked.sysctl !== wanted.sysctl) return 'linux.sysctl differs from the baked one';
  return null;
}

/** Annotations runc or CRIU act on (runc hands `org.criu.config` to CRIU as its config file). */
export function criuAnnotations(spec: Spec): string[] {
  return Object.keys(spec.annotations ?? {}).filter((k) => k.startsWith('org.criu.'));
}

export type NetworkMode = 'new' | 'path' | 'host';

export function networkModeOf(spec: Spec): NetworkMode {
  const ns = spec.linux?.namespaces?.find((n) => n.type === 'network');
  return !ns ? 'host' : ns.path ? 'path' : 'new';
}

/**
 * Why a process baked in a `baked` network namespace cannot be restored into a `wanted` one, or
 * null: only into the same kind. A namespace CRIU saved is re-created by CRIU: a container asking
 * to join one by path would get CRIU's instead. A joined one was left out of the checkpoint, and
 * runc's restore needs one to join (CRIU: "Unable to find an external netns"); the host's only
 * the host's. An image for both carries both checkpoints (one per target).
 */
export function networkMismatch(baked: NetworkMode | undefined, wanted: NetworkMode): string | null {
  if (baked === undefined || baked === wanted) return null;
  const what = { new: 'a network namespace of its own', path: 'a network namespace joined by path', host: "the host's network" };
  return `the checkpoint was baked in ${what[baked]}, the container asks for ${what[wanted]}`;
}

export interface BakedProcess {
  args: string[];
  cwd: string;
  /** Sorted; without what engines add on their own (ENGINE_ENV) and PREBAKE_* (prebake's own). */
  env: string[];
}

/**
 * Variables engines set by themselves rather than from the image or the user: docker HOSTNAME,
 * podman and umoci also HOME, TERM and container. A restored process keeps its baked values.
 */
export const ENGINE_ENV = ['HOSTNAME', 'HOME', 'TERM', 'container'];
const ENV_IGNORED = new RegExp(`^(${ENGINE_ENV.join('|')}|PREBAKE_[A-Z_]*)=`);

/**
 * What kubelet adds to every container of a pod, told apart by name and value: the `kubernetes`
 * service's variables and, with enableServiceLinks (the default), every service's of the pod's
 * namespace: NAME_SERVICE_HOST=IP, NAME_SERVICE_PORT[_PORTNAME]=N, NAME_PORT=PROTO://IP:N and
 * NAME_PORT_N_PROTO[=PROTO://IP:N | _PROTO=proto | _PORT=N | _ADDR=IP]. They change with the
 * cluster's services, so in a CRI container's spec they do not count against a checkpoint
 * (processMismatch): a restored process keeps the values it was baked with (none, unless the bake
 * was given them); processes started in the container later (exec) get the pod's. Only entries
 * of at most KUBELET_ENV_MAX characters are tested (a service name has at most 63, an address
 * 45): the pattern backtracks on long ones.
 */
const KUBELET_ENV_MAX = 200;
export const KUBELET_ENV =
  /^[A-Z_][A-Z0-9_]*_(SERVICE_HOST=[0-9A-Fa-f.:]+|SERVICE_PORT(_[A-Z0-9_]+)?=\d+|PORT=(tcp|udp|sctp):\/\/[0-9A-Fa-f.:[\]]+:\d+|PORT_\d+_(TCP|UDP|SCTP)(=(tcp|udp|sctp):\/\/[0-9A-Fa-f.:[\]]+:\d+|_PROTO=(tcp|udp|sctp)|_PORT=\d+|_ADDR=[0-9A-Fa-f.:]+))$/;

export function bakedProcessOf(spec: Spec): BakedProcess {
  const p = spec.process;
  return { args: p?.args ?? [], cwd: p?.cwd ?? '/', env: [...new Set((p?.env ?? []).filter((e) => !ENV_IGNORED.test(e)))].sort() };
}

/** Whether a spec is a Kubernetes pod's container as containerd's CRI plugin writes it. */
export const isCriContainer = (spec: Spec): boolean => spec.annotations?.['io.kubernetes.cri.container-type'] === 'container';

const kubeletVar = (e: string) => e.length <= KUBELET_ENV_MAX && KUBELET_ENV.test(e);

/**
 * Why the baked process is not the one the container asks for, or null. `kubelet`: the container
 * is a pod's (isCriContainer), and kubelet's variables (KUBELET_ENV) do not count on either side.
 */
export function processMismatch(baked: BakedProcess, wanted: BakedProcess, kubelet = false): string | null {
  if (kubelet) return processMismatch({ ...baked, env: baked.env.filter((e) => !kubeletVar(e)) }, { ...wanted, env: wanted.env.filter((e) => !kubeletVar(e)) });
  if (JSON.stringify(baked.args) !== JSON.stringify(wanted.args))
    return `the container runs ${JSON.stringify(wanted.args)}, the checkpoint is of ${JSON.stringify(baked.args)}`;
  if (baked.cwd !== wanted.cwd) return `the container's working directory is ${wanted.cwd}, the checkpoint's ${baked.cwd}`;
  const added = wanted.env.filter((e) => !baked.env.includes(e)).map((e) => e.split('=')[0]);
  const dropped = baked.env.filter((e) => !wanted.env.includes(e)).map((e) => e.split('=')[0]);
  if (added.length || dropped.length) return `the environment differs from the baked one (${[...added.map((n) => `+${n}`), ...dropped.map((n) => `-${n}`)].join(' ')})`;
  return null;
}

export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value && typeof value === 'object') {
    const o = value as Record<string, unknown>;
    return `{${Object.keys(o)
      .filter((k) => o[k] !== undefined)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(value);
}

const sorted = (a: readonly string[] | undefined): string[] => [...new Set(a ?? [])].sort();

export function bakedSpecOf(spec: Spec): BakedSpec {
  const p = spec.process;
  const caps = p?.capabilities ?? {};
  const rlimits: SecurityContext['rlimits'] = {};
  for (const r of p?.rlimits ?? []) rlimits[r.type] = { soft: r.soft, hard: r.hard };
  const seccomp = spec.linux?.seccomp;
  return {
    security: {
      uid: p?.user.uid ?? 0,
      gid: p?.user.gid ?? 0,
      additionalGids: [...new Set(p?.user.additionalGids ?? [])].sort((a, b) => a - b),
      capabilities: {
        bounding: sorted(caps.bounding),
        effective: sorted(caps.effective),
        inheritable: sorted(caps.inheritable),
        permitted: sorted(caps.permitted),
        ambient: sorted(caps.ambient),
      },
      noNewPrivileges: p?.noNewPrivileges ?? false,
      seccomp: seccomp ? createHash('sha256').update(canonicalJson(seccomp)).digest('hex') : null,
      apparmorProfile: p?.apparmorProfile ?? '',
      selinuxLabel: p?.selinuxLabel ?? '',
      readonlyRootfs: spec.root?.readonly ?? false,
      maskedPaths: sorted(spec.linux?.maskedPaths),
      readonlyPaths: sorted(spec.linux?.readonlyPaths),
      rlimits,
    },
    mounts: sorted((spec.mounts ?? []).map((m) => m.destination)),
    terminal: p?.terminal ?? false,
    process: bakedProcessOf(spec),
    network: networkModeOf(spec),
    restored: restoredStateOf(spec),
    ...(spec.hostname !== undefined ? { hostname: spec.hostname } : {}),
  };
}

const subset = (a: readonly (string | number)[], b: readonly (string | number)[]) => a.every((x) => b.includes(x));

/**
 * Why a process baked with `baked` may not be restored where `wanted` is asked for, or null
 * when the baked context is equal to or strictly less privileged than the wanted one.
 */
export function securityMismatch(baked: SecurityContext, wanted: SecurityContext): string | null {
  if (baked.uid !== wanted.uid || baked.gid !== wanted.gid)
    return `user ${baked.uid}:${baked.gid} was baked, the container asks for ${wanted.uid}:${wanted.gid}`;
  if (!subset(baked.additionalGids, wanted.additionalGids))
    return `baked additional groups [${baked.additionalGids}] are not all in [${wanted.additionalGids}]`;
  for (const set of Object.keys(baked.capabilities) as (keyof SecurityContext['capabilities'])[]) {
    const extra = baked.capabilities[set].filter((c) => !wanted.capabilities[set].includes(c));
    if (extra.length) return `baked ${set} capabilities ${extra.join(',')} are not granted by the container's spec`;
  }
  if (wanted.noNewPrivileges && !baked.noNewPrivileges)
    return 'the container asks for noNewPrivileges, the checkpoint was baked without it';
  if (wanted.seccomp !== null && baked.seccomp !== wanted.seccomp)
    return baked.seccomp === null
      ? 'the container asks for a seccomp filter, the checkpoint was baked without one'
      : 'the seccomp profile differs from the baked one';
  if (baked.apparmorProfile !== wanted.apparmorProfile)
    return `AppArmor profile "${baked.apparmorProfile}" was baked, the container asks for "${wanted.apparmorProfile}"`;
  if (baked.selinuxLabel !== wanted.selinuxLabel)
    return `SELinux label "${baked.selinuxLabel}" was baked, the container asks for "${wanted.selinuxLabel}"`;
  if (baked.readonlyRootfs !== wanted.readonlyRootfs)
    return `readonly rootfs ${baked.readonlyRootfs} was baked, the container asks for ${wanted.readonlyRootfs}`;
  // The restored mount table is the baked one: its masks stay, whatever the new spec lists.
  const unmasked = wanted.maskedPaths.filter((p) => !baked.maskedPaths.includes(p));
  if (unmasked.length) return `masked paths ${unmasked.join(',')} asked for were not masked at bake time`;
  const writable = wanted.readonlyPaths.filter((p) => !baked.readonlyPaths.includes(p) && !baked.maskedPaths.includes(p));
  if (writable.length) return `readonly paths ${writable.join(',')} asked for were neither readonly nor masked at bake time`;
  for (const [type, w] of Object.entries(wanted.rlimits)) {
    const b = baked.rlimits[type];
    if (!b || b.soft > w.soft || b.hard > w.hard)
      return `rlimit ${type} ${w.soft}/${w.hard} asked for, ${b ? `${b.soft}/${b.hard}` : 'unlimited'} was baked`;
  }
  return null;
}
