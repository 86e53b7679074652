// The mount part of the check of restored tasks, on mount tables written by hand: an honest
// container's passes, and each way a checkpoint's mount images could give more than the spec is
// named (below the cgroup mount or a volume, a writable flag, a mask or read-only path that is
// not one).

import test from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Spec } from '../oci/runtime-spec.ts';
import { expectationsOf, type MountInfo, mountExcess } from '../src/runtime/inspect.ts';

const spec = (rootfs: string, volume: string): Spec => ({
  ociVersion: '1.0.2',
  root: { path: rootfs },
  mounts: [
    { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
    { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
    { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
    { destination: '/sys/fs/cgroup', type: 'cgroup', source: 'cgroup', options: ['ro', 'nosuid', 'noexec', 'nodev'] },
    { destination: '/data', type: 'bind', source: volume, options: ['rbind', 'rprivate'] },
  ],
  linux: { maskedPaths: ['/proc/keys', '/proc/acpi'], readonlyPaths: ['/proc/sys'] },
});

const row = (mountPoint: string, fsType: string, dev: string, root = '/', opts = 'rw', source = fsType): MountInfo => ({
  mountPoint,
  fsType,
  dev,
  root,
  opts: opts.split(','),
  superOpts: ['rw'],
  source,
});

test('the mount table of a restored container: what the spec gives passes, anything more is named', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'prebake-inspect-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const x = expectationsOf(spec(dir, dir), dir, { masked: [], readonly: [] }).mounts;
  const rootDev = x.rootDev!;
  const volume = x.bindPlace.get('/data')!;
  t.truthy(rootDev);
  t.truthy(volume);
  const honest = (): MountInfo[] => [
    row('/', 'overlay', rootDev),
    row('/proc', 'proc', '0:90', '/', 'rw,nosuid,nodev,noexec'),
    row('/dev', 'tmpfs', '0:91', '/', 'rw,nosuid'),
    row('/sys', 'sysfs', '0:92', '/', 'ro,nosuid,nodev,noexec'),
    row('/sys/fs/cgroup', 'tmpfs', '0:93', '/', 'ro,nosuid,nodev,noexec'),
    row('/sys/fs/cgroup/cpu', 'cgroup', '0:94', '/', 'ro,nosuid,nodev,noexec'),
    row('/data', 'ext4', volume.dev, volume.root, 'rw'),
    row('/proc/keys', 'tmpfs', '0:91', '/null', 'rw,nosuid'),
    row('/proc/acpi', 'tmpfs', '0:95', '/', 'ro'),
    row('/proc/sys', 'proc', '0:90', '/sys', 'ro,nosuid,nodev,noexec'),
  ];
  const exists = () => true;
  t.is(mountExcess(honest(), exists, x), null);
  const refused = (what: string, change: (rows: MountInfo[]) => MountInfo[], why: RegExp) => t.regex(mountExcess(change(honest()), exists, x) ?? 'passed', why, what);
  refused('the host root bound below the cgroup mount', (r) => [...r, row('/sys/fs/cgroup/evil', 'ext4', rootDev, '/', 'rw')], /mount \/sys\/fs\/cgroup\/evil .* is not part of the spec's \/sys\/fs\/cgroup/);
  refused('a writable proc below the cgroup mount', (r) => [...r, row('/sys/fs/cgroup/evil', 'proc', '0:96', '/', 'rw')], /not part of the spec's \/sys\/fs\/cgroup/);
  refused('a writable cgroup controller', (r) => r.map((m) => (m.mountPoint === '/sys/fs/cgroup/cpu' ? { ...m, opts: ['rw'] } : m)), /mount \/sys\/fs\/cgroup\/cpu lacks ro,nosuid,nodev,noexec/);
  refused('a writable sysfs below a volume', (r) => [...r, row('/data/evil', 'sysfs', '0:97', '/', 'rw')], /mount \/data\/evil .* is not part of the spec's \/data/);
  refused('a writable /sys', (r) => r.map((m) => (m.mountPoint === '/sys' ? { ...m, opts: ['rw', 'nosuid', 'nodev', 'noexec'] } : m)), /mount \/sys lacks ro/);
  refused('another place bound as the volume', (r) => r.map((m) => (m.mountPoint === '/data' ? { ...m, root: '/etc' } : m)), /mount \/data is \/etc of device/);
  refused('a writable tmpfs as a mask', (r) => r.map((m) => (m.mountPoint === '/proc/acpi' ? { ...m, opts: ['rw'] } : m)), /mount \/proc\/acpi \(tmpfs tmpfs\) is not in the spec/);
  refused('a disk device bound over a masked file', (r) => r.map((m) => (m.mountPoint === '/proc/keys' ? { ...m, fsType: 'devtmpfs', root: '/vda' } : m)), /mount \/proc\/keys .* is not in the spec/);
  refused('a read-only path bound from elsewhere', (r) => r.map((m) => (m.mountPoint === '/proc/sys' ? { ...m, root: '/sys/kernel' } : m)), /mount \/proc\/sys .* is not in the spec/);
  refused('a mask missing', (r) => r.filter((m) => m.mountPoint !== '/proc/keys'), /masked path \/proc\/keys is open/);
  refused('a mount nowhere in the spec', (r) => [...r, row('/mnt', 'ext4', rootDev)], /mount \/mnt .* is not in the spec/);
  refused('another root', (r) => r.map((m) => (m.mountPoint === '/' ? { ...m, dev: '8:1' } : m)), /the root mount is .* not the container's rootfs/);
  // A masked path that does not exist in the container needs no mask.
  t.is(mountExcess(honest().filter((m) => m.mountPoint !== '/proc/acpi'), (p) => p !== '/proc/acpi', x), null);
});
