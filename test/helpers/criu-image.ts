// CRIU image files (the *.img of a checkpoint) read, edited and written back, to forge hostile checkpoints.

import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, dirname, join } from 'node:path';
import protobuf from 'protobufjs';
import { IMG_COMMON_MAGIC, PAGEMAP_MAGIC } from '../../src/checkpoint/pagemap.ts';

/** CRIU's .proto definitions, installed by scripts/setup.sh with the CRIU it builds. */
const PROTO_DIR = '/usr/local/share/prebake/criu-images';

// criu/include/magic.h: every image but inventory.img starts with one of these, then its own magic.
const IMG_SERVICE_MAGIC = 0x55105940;
const INVENTORY_MAGIC = 0x58313116;

/**
 * Image magic → message type of its entries (each a u32 length then the message). Only images whose
 * entries are messages and nothing else (lib/pycriu/images/images.py's plain entry_handler); the
 * rest (pages-*, ghost files, pipe and socket data with blobs after the entries, tarballs, ip tool
 * dumps) are read raw.
 */
const TYPES: Record<number, string> = {
  [INVENTORY_MAGIC]: 'inventory_entry',
  0x55053847: 'core_entry', // core-<tid>.img: a task's registers, creds (thread_core.creds), …
  0x54432030: 'task_kobj_ids_entry', // ids-<pid>.img
  0x54023547: 'creds_entry', // creds-<pid>.img: the old layout, still restored when a core has no thread_core.creds
  0x50273030: 'pstree_entry', // pstree.img
  0x56303138: 'file_entry', // files.img
  0x56213732: 'fdinfo_entry', // fdinfo-<n>.img
  0x50363636: 'reg_file_entry', // reg-files.img: the old layout (now inside files.img)
  0x55563928: 'mnt_entry', // mountpoints-<ns>.img
  0x59453036: 'tty_info_entry', // tty-info.img
  0x59433025: 'tty_file_entry',
  0x59413026: 'tty_data_entry',
  0x59383330: 'cgroup_entry', // cgroup.img
  0x51403912: 'fs_entry', // fs-<pid>.img
  0x57492820: 'mm_entry', // mm-<pid>.img
  [PAGEMAP_MAGIC]: 'pagemap_entry', // pagemap-<pid>.img: the first entry is a pagemap_head
  0x53115007: 'ipc_var_entry', // ipcns-var-<ns>.img
  0x54473203: 'utsns_entry', // utsns-<ns>.img
  0x43114433: 'timens_entry', // timens-0.img
  0x61157326: 'pidns_entry',
  0x55474906: 'userns_entry',
  0x55933752: 'netns_entry',
  0x57373951: 'net_device_entry',
  0x64413049: 'seccomp_entry', // seccomp.img
  0x55344201: 'sa_entry',
  0x56513555: 'pipe_entry',
  0x58364939: 'fifo_entry',
  0x54373943: 'unix_sk_entry',
  0x56443851: 'inet_sk_entry',
  0x61394011: 'ns_file_entry',
  0x59423047: 'apparmor_entry',
  0x61404013: 'cpuinfo_entry',
  0x57093306: 'stats_entry', // stats-dump, stats-restore: IMG_SERVICE_MAGIC first
};

// Loaded once. 64-bit fields stay exact: protobufjs finds its `long` dependency by itself.
let root: protobuf.Root | undefined;
function messageType(name: string): protobuf.Type {
  if (!root) {
    root = new protobuf.Root();
    // CRIU's protos import "opts.proto", which imports google/protobuf/descriptor.proto (for its
    // custom field options): that one protobufjs ships.
    const pbjs = dirname(createRequire(import.meta.url).resolve('protobufjs/package.json'));
    root.resolvePath = (_origin, target) => join(target.startsWith('google/') ? pbjs : PROTO_DIR, target);
    root.loadSync(readdirSync(PROTO_DIR).filter((f) => f.endsWith('.proto')), { keepCase: true });
    root.resolveAll();
  }
  return root.lookupType(name);
}

/** An entry as protobufjs's toObject gives it: snake_case fields, 64-bit as strings, enums as numbers, bytes as Buffer. */
type Entry = { [field: string]: any };

interface CriuImage {
  /** The leading u32 magics: [IMG_COMMON or IMG_SERVICE, the image's], [INVENTORY] alone, [] if raw. */
  magics: number[];
  /** Message type of the entries (e.g. 'core_entry'), null for an image kept raw. */
  type: string | null;
  entries: Entry[];
  /** The whole file, for raw images only. */
  raw?: Buffer;
}

const TO_OBJECT: protobuf.IConversionOptions = { longs: String, enums: Number };

/** Parses one image file; images of an unknown or raw kind come back as `raw`. */
export function readImage(path: string): CriuImage {
  const buf = readFileSync(path);
  const raw: CriuImage = { magics: [], type: null, entries: [], raw: buf };
  if (basename(path).startsWith('pages-') || buf.length < 4) return raw;
  const magics = [buf.readUInt32LE(0)];
  if ((magics[0] === IMG_COMMON_MAGIC || magics[0] === IMG_SERVICE_MAGIC) && buf.length >= 8) magics.push(buf.readUInt32LE(4));
  const type = TYPES[magics.at(-1)!];
  if (!type || (magics.length === 1 && magics[0] !== INVENTORY_MAGIC)) return raw;
  const entries: Entry[] = [];
  for (let off = magics.length * 4; off < buf.length; ) {
    if (off + 4 > buf.length) throw new Error(`${path}: truncated entry size at ${off}`);
    const size = buf.readUInt32LE(off);
    const end = off + 4 + size;
    if (end > buf.length) throw new Error(`${path}: entry at ${off} runs past the end`);
    const t = messageType(type === 'pagemap_entry' && entries.length === 0 ? 'pagemap_head' : type);
    entries.push(t.toObject(t.decode(buf.subarray(off + 4, end)), TO_OBJECT));
    off = end;
  }
  return { magics, type, entries };
}

/** Encodes an image as readImage gives it (raw ones as they are). */
export function encodeImage(img: CriuImage): Buffer {
  if (img.type === null) return img.raw ?? Buffer.alloc(0);
  const u32 = (n: number) => {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(n);
    return b;
  };
  const parts = img.magics.map(u32);
  img.entries.forEach((e, i) => {
    const t = messageType(img.type === 'pagemap_entry' && i === 0 ? 'pagemap_head' : img.type!);
    const msg = t.encode(t.fromObject(e)).finish();
    parts.push(u32(msg.length), Buffer.from(msg));
  });
  return Buffer.concat(parts);
}

export function writeImage(path: string, img: CriuImage): void {
  writeFileSync(path, encodeImage(img));
}

/** Every capability this kernel knows, as a mask. */
export function kernelCapMask(): bigint {
  const last = Number(readFileSync('/proc/sys/kernel/cap_last_cap', 'utf8'));
  return (1n << BigInt(last + 1)) - 1n;
}

// CRIU stores a capability set as u32 words, low word first (CR_CAP_SIZE = 2 of them).
const CAP_WORDS = 2;
const toWords = (mask: bigint): number[] =>
  Array.from({ length: CAP_WORDS }, (_, i) => Number((mask >> BigInt(32 * i)) & 0xffffffffn));
const toMask = (words: number[] | undefined): bigint =>
  (words ?? []).reduce((m, w, i) => m | (BigInt(w >>> 0) << BigInt(32 * i)), 0n);

const coreFiles = (dir: string): string[] =>
  readdirSync(dir).filter((f) => /^core-\d+\.img$/.test(f)).sort().map((f) => join(dir, f));

/** The creds of a core image's thread: in CRIU 4.x they live in core_entry.thread_core.creds. */
function threadCreds(img: CriuImage, path: string): Entry {
  const creds = img.entries[0]?.thread_core?.creds as Entry | undefined;
  if (img.type !== 'core_entry' || !creds) throw new Error(`${path}: no thread_core.creds`);
  return creds;
}

interface ForgeOptions {
  /** cap_prm, cap_eff and cap_bnd get every capability the kernel knows. */
  allCaps?: boolean;
  /** With allCaps, cap_inh too. */
  inheritable?: boolean;
  /** The mask allCaps sets instead of the kernel's every capability. */
  caps?: bigint;
  noNewPrivs?: 0 | 1;
  /** uid, euid, suid and fsuid. */
  uid?: number;
}

/** Edits the creds of every core-*.img in a checkpoint; returns the files that changed. */
export function forgeCredentials(checkpointDir: string, opts: ForgeOptions): string[] {
  const changed: string[] = [];
  const all = toWords(opts.caps ?? kernelCapMask());
  for (const path of coreFiles(checkpointDir)) {
    const img = readImage(path);
    const creds = threadCreds(img, path);
    if (opts.allCaps) {
      for (const set of ['cap_prm', 'cap_eff', 'cap_bnd', ...(opts.inheritable ? ['cap_inh'] : [])]) creds[set] = [...all];
    }
    if (opts.noNewPrivs !== undefined) creds.no_new_privs = opts.noNewPrivs;
    if (opts.uid !== undefined) for (const f of ['uid', 'euid', 'suid', 'fsuid']) creds[f] = opts.uid;
    const out = encodeImage(img);
    if (!out.equals(readFileSync(path))) {
      writeFileSync(path, out);
      changed.push(path);
    }
  }
  return changed;
}

interface CredsSummary {
  comm: string | undefined;
  uid: number;
  euid: number;
  suid: number;
  fsuid: number;
  gid: number;
  /** Capability sets as masks (bit n = capability n). */
  inh: bigint;
  prm: bigint;
  eff: bigint;
  bnd: bigint;
  amb: bigint;
  secbits: number;
  /** undefined when the image does not say (CRIU then leaves it unset). */
  noNewPrivs: number | undefined;
}

/** The creds of each core-*.img of a checkpoint, by file name. */
export function describeCredentials(checkpointDir: string): Record<string, CredsSummary> {
  const out: Record<string, CredsSummary> = {};
  for (const path of coreFiles(checkpointDir)) {
    const img = readImage(path);
    const c = threadCreds(img, path);
    out[basename(path)] = {
      comm: img.entries[0]?.thread_core?.comm ?? img.entries[0]?.tc?.comm,
      uid: c.uid, euid: c.euid, suid: c.suid, fsuid: c.fsuid, gid: c.gid,
      inh: toMask(c.cap_inh), prm: toMask(c.cap_prm), eff: toMask(c.cap_eff), bnd: toMask(c.cap_bnd), amb: toMask(c.cap_amb),
      secbits: c.secbits,
      noNewPrivs: c.no_new_privs,
    };
  }
  return out;
}
