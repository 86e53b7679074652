// A CNI bridge network of a test's or benchmark's own, driven through the CNI plugins of
// containernetworking-plugins as a CNI runtime drives them (CNI_COMMAND ADD/DEL, the config on
// stdin): network namespaces made beforehand, each given an address on the bridge, for
// containers that join them by path (`ctr run --with-ns network:PATH`, faasd, the CRI plugin).

import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createNetns, deleteNetns, netnsPath } from '../../src/lib/netns.ts';

/** The CNI plugins of containernetworking-plugins. */
export const CNI_BIN = '/usr/lib/cni';

interface CniNetwork {
  bridge: string;
  /** Makes the named netns and adds it to the network; its address on the bridge. */
  add(netns: string): { path: string; ip: string };
  /** Takes the netns off the network (CNI DEL) and deletes it. */
  del(netns: string): void;
  /** Every netns added and not deleted, the bridge and the address store; idempotent. */
  remove(): void;
}

/** A bridge `bridge` on `net`.0/24 (the host is .1, nothing routed or masqueraded beyond it). */
export function cniNetwork(bridge: string, net: string): CniNetwork {
  for (const p of ['bridge', 'host-local']) if (!existsSync(join(CNI_BIN, p))) throw new Error(`${join(CNI_BIN, p)} is missing: scripts/setup.sh installs containernetworking-plugins`);
  if (existsSync(`/sys/class/net/${bridge}`)) throw new Error(`the link ${bridge} exists already`);
  if (execFileSync('ip', ['-4', 'route'], { encoding: 'utf8' }).includes(`${net}.`)) throw new Error(`${net}.0/24 is routed on this host already`);
  const dir = mkdtempSync(join(tmpdir(), 'prebake-cni-'));
  const conf = JSON.stringify({
    cniVersion: '1.0.0',
    name: bridge,
    type: 'bridge',
    bridge,
    isGateway: false,
    ipMasq: false,
    ipam: { type: 'host-local', dataDir: join(dir, 'ipam'), ranges: [[{ subnet: `${net}.0/24`, rangeStart: `${net}.10`, rangeEnd: `${net}.250`, gateway: `${net}.1` }]] },
  });
  execFileSync('ip', ['link', 'add', bridge, 'type', 'bridge']);
  execFileSync('ip', ['addr', 'add', `${net}.1/24`, 'dev', bridge]);
  execFileSync('ip', ['link', 'set', bridge, 'up']);
  const added = new Set<string>();
  const plugin = (command: 'ADD' | 'DEL', netns: string) =>
    execFileSync(join(CNI_BIN, 'bridge'), [], {
      input: conf,
      encoding: 'utf8',
      env: { ...process.env, CNI_COMMAND: command, CNI_CONTAINERID: netns, CNI_NETNS: netnsPath(netns), CNI_IFNAME: 'eth0', CNI_PATH: CNI_BIN },
    });
  const del = (netns: string) => {
    try {
      plugin('DEL', netns);
    } catch {
      /* not added, or the netns is gone */
    }
    deleteNetns(netns);
    added.delete(netns);
  };
  return {
    bridge,
    add(netns) {
      const path = createNetns(netns);
      added.add(netns);
      const result = JSON.parse(plugin('ADD', netns)) as { ips?: { address: string }[] };
      const ip = result.ips?.[0]?.address.split('/')[0];
      if (!ip?.startsWith(`${net}.`)) throw new Error(`CNI ADD gave ${netns} no address on ${net}.0/24: ${JSON.stringify(result)}`);
      return { path, ip };
    },
    del,
    remove() {
      for (const n of [...added]) del(n);
      try {
        execFileSync('ip', ['link', 'delete', bridge], { stdio: 'ignore' });
      } catch {
        /* gone */
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
