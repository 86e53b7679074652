// Chooses the checkpoint under a /.prebake directory that fits a container, and checks it
// before CRIU sees it: the signature of a trusted key over the manifest, its shape, host
// compatibility and spec; then the verified store's copy, hashed as it is made, is what CRIU gets.

import { existsSync, lstatSync, readdirSync } from 'node:fs';
import { readContained } from './files.ts';
import { join } from 'node:path';
import type { Spec } from '../../oci/runtime-spec.ts';
import type { HostFacts } from '../lib/host.ts';
import { type CheckpointManifest, MANIFEST_FILE, MANIFEST_MAX_BYTES, parseManifest } from './manifest.ts';
import { type BakedSpec, bakedSpecOf, isCriContainer, networkMismatch, processMismatch, restoredMismatch, securityMismatch } from './security.ts';
import { importCheckpoint, readEntry, storeEntry } from './store.ts';
import { loadTrustStore, SIGNATURE_FILE, SIGNATURE_MAX_BYTES, verifyManifestSignature } from './trust.ts';

/** Why this checkpoint cannot be restored into `spec` on this host, or null when it can. */
export function incompatibility(m: CheckpointManifest, spec: Spec, host: HostFacts, wanted: BakedSpec = bakedSpecOf(spec)): string | null {
  if (m.arch !== host.arch) return `checkpoint was baked on ${m.arch}, this host is ${host.arch}`;
  const [bakedMajor] = m.versions.criu.split('.');
  const [hostMajor] = host.criu.split('.');
  if (bakedMajor !== hostMajor) return `checkpoint was written by CRIU ${m.versions.criu}, this host has CRIU ${host.criu}`;
  const missing = m.cpuFlags.filter((f) => !host.cpuFlags.includes(f));
  if (missing.length) return `this host's CPU lacks ${missing.slice(0, 8).join(' ')}${missing.length > 8 ? ' …' : ''}, which the baking host had`;
  const extra = wanted.mounts.filter((d) => !m.spec.mounts.includes(d));
  const gone = m.spec.mounts.filter((d) => !wanted.mounts.includes(d));
  if (extra.length || gone.length)
    return `mount destinations differ from the baked ones (${[...extra.map((d) => `+${d}`), ...gone.map((d) => `-${d}`)].join(' ')})`;
  const net = networkMismatch(m.spec.network, wanted.network ?? 'new') ?? namespaceImagesMismatch(Object.keys(m.files), spec);
  if (net) return net;
  if (m.spec.terminal !== wanted.terminal)
    return `the checkpoint was baked ${m.spec.terminal ? 'with' : 'without'} a terminal, the container asks ${wanted.terminal ? 'for one' : 'for none'}`;
  const proc = processMismatch(m.spec.process, wanted.process, isCriContainer(spec));
  if (proc) return proc;
  const why = securityMismatch(m.spec.security, wanted.security) ?? restoredMismatch(m.spec.restored, wanted.restored);
  return why && `security: ${why}`;
}

/**
 * Why CRIU would restore the checkpoint's UTS or IPC namespace wrongly into `spec`, or null, by the
 * namespace images it carries (utsns-*.img, ipcns-var-*.img, which CRIU requires whenever the
 * root task had a namespace of its own). Given one to join (a pod's), CRIU joins it and then
 * writes the image's hostname, IPC sysctls and SysV objects into it, for every container of the
 * pod to see, before anything can check the result. Asked for a new one, a checkpoint without it
 * would leave the tasks in the runtime's own (the host's); asked for the host's, CRIU would make
 * one.
 */
export function namespaceImagesMismatch(files: readonly string[], spec: Spec): string | null {
  for (const [type, image] of [
    ['uts', /^utsns-\d+\.img$/],
    ['ipc', /^ipcns-var-\d+\.img$/],
  ] as const) {
    const ns = spec.linux?.namespaces?.find((n) => n.type === type);
    const carried = files.some((f) => image.test(f));
    const asked = !ns ? "the host's" : ns.path ? 'one joined by path' : 'a new one';
    // Only a new namespace is one CRIU makes from the images.
    if (carried === Boolean(ns && !ns.path)) continue;
    return `the checkpoint ${carried ? 'carries' : 'carries no'} ${type.toUpperCase()} namespace of its own, the container asks for ${asked}`;
  }
  return null;
}

export interface ChosenCheckpoint {
  dir: string;
  manifest: CheckpointManifest;
  /** The verified store's copy (entry/checkpoint is CRIU's image directory). */
  entry: string;
  /** The key that signed it ("none": not signed, taken because the host trusts any checkpoint). */
  keyId: string;
}

/** The most checkpoints one /.prebake may offer (one per target is the usual: a few). */
export const MAX_CANDIDATES = 16;

/** Which checkpoints this host restores, and where it keeps the verified copies. */
export interface TrustPolicy {
  /** The trust store: ed25519 public keys (*.pub); the fast path finds a key as <key id>.pub. */
  trustDir: string;
  /** Development only: unsigned or untrusted checkpoints are taken too. */
  any: boolean;
  store: string;
}

/** The manifest's bytes and the signature beside it (null: none), both bounded. */
export function readSigned(dir: string): { manifest: Buffer; signature: string | null } {
  const manifest = readContained(join(dir, MANIFEST_FILE), MANIFEST_MAX_BYTES);
  let signature: string | null = null;
  try {
    signature = readContained(join(dir, SIGNATURE_FILE), SIGNATURE_MAX_BYTES).toString('utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  return { manifest, signature };
}

/** Authenticates, parses and checks one checkpoint directory, and imports it into the store. */
function admit(dir: string, spec: Spec, host: HostFacts, wanted: BakedSpec, policy: TrustPolicy): ChosenCheckpoint {
  const { manifest: bytes, signature } = readSigned(dir);
  // A manifest the store holds was verified when it was imported, under the key its entry names:
  // while that key is in the trust store, the verdict stands (the bytes are the same: the entry
  // is named by their sha256). Otherwise the signature is checked against the trust store.
  const known = readEntry(storeEntry(policy.store, bytes));
  let keyId: string;
  if (known && /^[0-9a-f]{64}$/.test(known.keyId) && existsSync(join(policy.trustDir, `${known.keyId}.pub`))) keyId = known.keyId;
  else
    try {
      keyId = verifyManifestSignature(bytes, signature, loadTrustStore(policy.trustDir));
    } catch (e) {
      if (!policy.any) throw e;
      keyId = 'none';
    }
  const manifest = parseManifest(bytes.toString('utf8'));
  const why = incompatibility(manifest, spec, host, wanted);
  if (why) throw new Error(why);
  const entry = importCheckpoint(policy.store, dir, bytes, signature, manifest, keyId, host.lazyPages === true);
  return { dir, manifest, entry, keyId };
}

/**
 * `root` holds either one checkpoint (manifest.json) or several (<name>/manifest.json).
 * Returns the first that is signed by a trusted key and fits; throws with every candidate's
 * reason otherwise.
 */
export function chooseCheckpoint(root: string, spec: Spec, host: HostFacts, policy: TrustPolicy): ChosenCheckpoint {
  const single = lstatSync(join(root, MANIFEST_FILE), { throwIfNoEntry: false });
  const dirs = single
    ? [root]
    : readdirSync(root, { withFileTypes: true })
        .filter((e) => e.isDirectory() && lstatSync(join(root, e.name, MANIFEST_FILE), { throwIfNoEntry: false }))
        .map((e) => join(root, e.name))
        .sort();
  if (dirs.length === 0) throw new Error(`no ${MANIFEST_FILE} in ${root}`);
  // Each candidate costs a bounded read and a signature check: an image gets a bounded number.
  if (dirs.length > MAX_CANDIDATES) throw new Error(`${root} holds ${dirs.length} checkpoints, more than the ${MAX_CANDIDATES} allowed`);
  const reasons: string[] = [];
  // What the container asks for, worked out once for every candidate (it hashes the seccomp profile).
  const wanted = bakedSpecOf(spec);
  for (const dir of dirs) {
    try {
      return admit(dir, spec, host, wanted, policy);
    } catch (e) {
      reasons.push(dirs.length > 1 ? `${dir}: ${(e as Error).message}` : (e as Error).message);
    }
  }
  throw new Error(reasons.join('; '));
}
