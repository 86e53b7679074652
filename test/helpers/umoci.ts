// A bundle `umoci unpack` made of a baked image, run through prebake the way a runc user would
// (a network namespace of the test's own joined by path, no terminal, a writable rootfs).

import type { ExecutionContext } from 'ava';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Spec } from '../../oci/runtime-spec.ts';
import { runcDefaultSpec } from '../../src/bake/spec.ts';
import { createNetns, deleteNetns, NetnsClient } from '../../src/lib/netns.ts';
import { PREBAKE, runtimeDirs, uniqueName } from '../../lab/bundle.ts';
import { run } from './bundle.ts';
import { NOOP_PORT } from './images.ts';

/**
 * Creates and starts the bundle through prebake, checks it was restored; returns what it served.
 * `runcSpec`: its config.json is first replaced by what `runc spec` writes, with umoci's process
 * (args, env, cwd, user) put in, as a runc user makes a bundle by hand.
 */
export async function restoreUmociBundle(t: ExecutionContext, bundle: string, o: { runcSpec?: boolean } = {}): Promise<number> {
  const netns = uniqueName('pbu');
  const netnsPath = createNetns(netns);
  const rt = runtimeDirs();
  const id = uniqueName('umoci');
  let client: NetnsClient | undefined;
  t.teardown(async () => {
    client?.close();
    await run('runc', ['--root', rt.root, 'delete', '--force', id]);
    deleteNetns(netns);
    rt.cleanup();
  });
  const configPath = join(bundle, 'config.json');
  const umoci = JSON.parse(readFileSync(configPath, 'utf8')) as Spec;
  const spec = o.runcSpec ? runcDefaultSpec() : umoci;
  if (o.runcSpec) {
    const { args, env, cwd, user } = umoci.process!;
    spec.process = { ...spec.process!, args, env, cwd, user };
  }
  // What prebake-build prints for the runc target: runc spec writes true for both.
  spec.root = { ...spec.root!, readonly: false };
  spec.process!.terminal = false;
  spec.linux!.namespaces = spec.linux!.namespaces!.map((ns) => (ns.type === 'network' ? { type: 'network', path: netnsPath } : ns));
  writeFileSync(configPath, JSON.stringify(spec, null, 2));
  client = await NetnsClient.start(netns);
  const create = await run(PREBAKE, ['--root', rt.root, '--log', rt.log, '--log-format', 'json', 'create', '--bundle', bundle, id]);
  t.is(create.code, 0, create.output);
  const start = await run(PREBAKE, ['--root', rt.root, 'start', id]);
  t.is(start.code, 0, start.output);
  // Served either way (a cold start too), so the log says which it was.
  const answer = await client.waitHttp({ port: NOOP_PORT, path: '/', timeoutMs: 10000 });
  const served = (JSON.parse(answer.body) as { served: number }).served;
  const log = rt.logLines();
  const restored = log.find((l) => l.level === 'info' && /^restored /.test(l.msg));
  t.truthy(restored, `not restored: ${log.find((l) => l.level === 'warning')?.msg ?? JSON.stringify(log)}`);
  t.true(served > 1, `served ${served}: the process was baked after its probe and warm-up requests`);
  return served;
}
