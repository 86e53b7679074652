// Hands images to and from the local engines through their own CLIs, as archive files:
// `docker save/load`, `ctr -n NS images export/import`, `podman save/load`.

import { execa } from 'execa';
import type { ImageRef } from './ref.ts';

type EngineRef = Extract<ImageRef, { transport: 'docker-daemon' | 'containerd' | 'containers-storage' }>;

/** The archive format each engine exports and is given to import. */
export const ENGINE_ARCHIVE = {
  'docker-daemon': 'docker-archive',
  containerd: 'oci-archive',
  'containers-storage': 'oci-archive',
} as const satisfies Record<EngineRef['transport'], 'docker-archive' | 'oci-archive'>;

async function run(cmd: string, args: string[], what: string): Promise<void> {
  try {
    await execa(cmd, args, { stdin: 'ignore' });
  } catch (e) {
    const err = e as { code?: string; stderr?: unknown; shortMessage?: string; message: string };
    const stderr = typeof err.stderr === 'string' ? err.stderr.trim().split('\n').slice(-3).join(' | ') : '';
    const detail = err.code === 'ENOENT' ? `${cmd} is not installed` : stderr || err.shortMessage || err.message;
    throw new Error(`${what}: \`${cmd} ${args.join(' ')}\` failed: ${detail}`);
  }
}

/** Writes the engine's image to `file`, in the format ENGINE_ARCHIVE names. */
export async function exportImage(ref: EngineRef, file: string): Promise<void> {
  switch (ref.transport) {
    case 'docker-daemon':
      return run('docker', ['save', '-o', file, ref.name], `exporting ${ref.name} from docker`);
    case 'containerd':
      return run('ctr', ['-n', ref.namespace, 'images', 'export', file, ref.name], `exporting ${ref.name} from containerd namespace ${ref.namespace}`);
    case 'containers-storage':
      return run('podman', ['save', '--format', 'oci-archive', '-o', file, ref.name], `exporting ${ref.name} from podman`);
  }
}

/** Loads `file` (in the format ENGINE_ARCHIVE names, already carrying the image's name) into the engine. */
export async function importImage(ref: EngineRef, file: string): Promise<void> {
  switch (ref.transport) {
    case 'docker-daemon':
      return run('docker', ['load', '-i', file], `loading ${ref.name} into docker`);
    case 'containerd':
      return run('ctr', ['-n', ref.namespace, 'images', 'import', file], `importing ${ref.name} into containerd namespace ${ref.namespace}`);
    case 'containers-storage':
      return run('podman', ['load', '-i', file], `loading ${ref.name} into podman`);
  }
}
