// The checkpoint manifest (/.prebake[/<name>]/manifest.json): what was baked, where and how,
// and the digest of every file under checkpoint/. Parsing checks shape, never trusts it.

import type { BakedSpec } from './security.ts';

/** 2: signed (manifest.sig) and with spec.restored. Format 1 checkpoints are unsigned: refused. */
export const MANIFEST_FORMAT = 2;
export const MANIFEST_FILE = 'manifest.json';
export const CHECKPOINT_DIR = 'checkpoint';
/** A manifest larger than this is refused unread. */
export const MANIFEST_MAX_BYTES = 4 << 20;

export interface FileDigest {
  size: number;
  sha256: string;
}

export interface CheckpointManifest {
  format: number;
  created: string;
  versions: { prebake: string; runc: string; criu: string; kernel: string };
  arch: string;
  /** CPU feature flags of the baking host (/proc/cpuinfo); the restoring host must have them all. */
  cpuFlags: string[];
  /** Digest of the image the checkpoint was baked from (its config), when known. */
  baseImage?: string;
  spec: BakedSpec;
  /** How readiness was established before the checkpoint, e.g. "http:8080/". */
  probe?: string;
  /**
   * How a restore brings the memory back: `eager` (CRIU copies every page in before the tasks
   * run) or `lazy` (CRIU's lazy-pages daemon serves the pages CRIU marked lazy, `lazyBytes` of
   * them, on first touch and copies the rest in right after the restore). Absent: eager.
   */
  memory?: { restore: MemoryRestore; lazyBytes: number };
  /** Paths relative to checkpoint/, each with its size and sha256. */
  files: Record<string, FileDigest>;
}

export const MEMORY_RESTORES = ['eager', 'lazy'] as const;
export type MemoryRestore = (typeof MEMORY_RESTORES)[number];

function fail(what: string): never {
  throw new Error(`manifest: ${what}`);
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isStringArray = (v: unknown): v is string[] => Array.isArray(v) && v.every((x) => typeof x === 'string');

/** A relative path that stays inside its directory: no absolute paths, no `..`, no empty parts. */
export function isContainedRelativePath(p: string): boolean {
  return p.length > 0 && !p.startsWith('/') && p.split('/').every((c) => c !== '' && c !== '.' && c !== '..') && !p.includes('\0');
}

export function parseManifest(text: string): CheckpointManifest {
  let m: unknown;
  try {
    m = JSON.parse(text);
  } catch (e) {
    fail(`not valid JSON (${(e as Error).message})`);
  }
  if (!isObject(m)) fail('not a JSON object');
  if (m.format !== MANIFEST_FORMAT) fail(`format ${JSON.stringify(m.format)} is not supported (this prebake reads format ${MANIFEST_FORMAT})`);
  const v = m.versions;
  if (!isObject(v) || typeof v.criu !== 'string' || typeof v.runc !== 'string' || typeof v.kernel !== 'string')
    fail('versions.criu, versions.runc and versions.kernel are required');
  if (typeof m.arch !== 'string') fail('arch is required');
  if (!isStringArray(m.cpuFlags)) fail('cpuFlags must be a list of strings');
  const spec = m.spec;
  if (!isObject(spec) || !isObject(spec.security) || !isStringArray(spec.mounts) || typeof spec.terminal !== 'boolean')
    fail('spec.security, spec.mounts and spec.terminal are required');
  const proc = spec.process;
  if (!isObject(proc) || !isStringArray(proc.args) || typeof proc.cwd !== 'string' || !isStringArray(proc.env))
    fail('spec.process.args, spec.process.cwd and spec.process.env are required');
  const r = spec.restored;
  if (!isObject(r) || !(r.userns === null || typeof r.userns === 'string') || !isObject(r.mountOptions) || typeof r.devices !== 'string' || typeof r.sysctl !== 'string' || !(r.oomScoreAdj === null || typeof r.oomScoreAdj === 'number'))
    fail('spec.restored (userns, mountOptions, devices, sysctl, oomScoreAdj) is required');
  if (spec.network !== undefined && !['new', 'path', 'host'].includes(spec.network as string)) fail(`spec.network ${JSON.stringify(spec.network)} is not new, path or host`);
  const mem = m.memory;
  if (mem !== undefined && (!isObject(mem) || !(MEMORY_RESTORES as readonly unknown[]).includes(mem.restore) || typeof mem.lazyBytes !== 'number'))
    fail(`memory ${JSON.stringify(mem)} is not {"restore": "eager" or "lazy", "lazyBytes": N}`);
  if (!isObject(m.files) || Object.keys(m.files).length === 0) fail('files must list the checkpoint files');
  for (const [name, d] of Object.entries(m.files)) {
    if (!isContainedRelativePath(name)) fail(`file ${JSON.stringify(name)} is outside the checkpoint directory`);
    if (!isObject(d) || typeof d.size !== 'number' || typeof d.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(d.sha256))
      fail(`file ${name}: size and sha256 are required`);
  }
  return m as unknown as CheckpointManifest;
}
