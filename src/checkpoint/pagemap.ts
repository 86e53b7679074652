// CRIU's pagemap-<pid>.img, read: which of a checkpoint's pages a restore may leave to CRIU's
// lazy-pages daemon (userfaultfd) instead of copying them in before the tasks run.

import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

// criu/include/magic.h: the common magic, then the pagemap image's own.
export const IMG_COMMON_MAGIC = 0x54564319;
export const PAGEMAP_MAGIC = 0x56084025;
/** criu/include/pagemap.h: pages CRIU may restore lazily (anonymous, private, not a stack). */
const PE_LAZY = 1 << 1;
const PAGE_SIZE = 4096;

/** A protobuf varint at `off` of `b`: [value, next offset]. Values here fit a double exactly. */
function varint(b: Buffer, off: number): [number, number] {
  let v = 0;
  for (let shift = 1; off < b.length; shift *= 128) {
    const x = b[off++]!;
    v += (x & 0x7f) * shift;
    if (x < 0x80) return [v, off];
  }
  throw new Error('a varint runs past the end');
}

/** The pages (nr_pages, field 5, or the older compat_nr_pages, 2) and flags (4) of one pagemap_entry. */
function entryOf(b: Buffer): { pages: number; flags: number } {
  let compat = 0;
  let pages: number | undefined;
  let flags = 0;
  for (let off = 0; off < b.length; ) {
    let key: number;
    [key, off] = varint(b, off);
    if ((key & 7) !== 0) throw new Error(`field ${key >> 3} is not a varint`);
    let v: number;
    [v, off] = varint(b, off);
    if (key >> 3 === 2) compat = v;
    else if (key >> 3 === 4) flags = v;
    else if (key >> 3 === 5) pages = v;
  }
  return { pages: pages ?? compat, flags };
}

/** The bytes of the pages in `dir` (a CRIU images dir) that CRIU marked as lazily restorable. */
export function lazyPageBytes(dir: string): number {
  let pages = 0;
  for (const name of readdirSync(dir).filter((f) => /^pagemap-\d+\.img$/.test(f))) {
    const b = readFileSync(join(dir, name));
    if (b.length < 8 || b.readUInt32LE(0) !== IMG_COMMON_MAGIC || b.readUInt32LE(4) !== PAGEMAP_MAGIC) throw new Error(`${name} is not a CRIU pagemap image`);
    // Each entry: a u32 length, then the message; the first is the pagemap_head.
    for (let off = 8, first = true; off < b.length; first = false) {
      const len = b.readUInt32LE(off);
      const e = entryOf(b.subarray(off + 4, off + 4 + len));
      off += 4 + len;
      if (!first && e.flags & PE_LAZY) pages += e.pages;
    }
  }
  return pages * PAGE_SIZE;
}
