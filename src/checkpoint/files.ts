// Reading files an image provides: only regular files, never through a symlink, bounded.

import { closeSync, constants, fstatSync, lstatSync, openSync, readSync } from 'node:fs';

/**
 * Opens a file of the image for reading only if it is a regular file: checked before the open
 * (a FIFO would block the open, a device node's open acts on the device) and again after it
 * (O_NONBLOCK, O_NOCTTY and O_NOFOLLOW make the open itself harmless if it was swapped).
 */
export function openRegular(path: string): number {
  const st = lstatSync(path);
  if (st.isSymbolicLink()) throw new Error(`${path} is a symlink, refused`);
  if (!st.isFile()) throw new Error(`${path} is not a regular file`);
  return openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK | constants.O_NOCTTY);
}

/** Reads a regular file that must not be a symlink, refusing it past `max` bytes. */
export function readContained(path: string, max: number): Buffer {
  const fd = openRegular(path);
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new Error(`${path} is not a regular file`);
    if (st.size > max) throw new Error(`${path} is ${st.size} bytes, more than the ${max} allowed`);
    const buf = Buffer.alloc(st.size);
    let off = 0;
    for (let n; off < st.size && (n = readSync(fd, buf, off, st.size - off, off)) > 0; ) off += n;
    return buf.subarray(0, off);
  } finally {
    closeSync(fd);
  }
}
