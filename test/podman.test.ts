// podman run --runtime bin/prebake, with podman's storage and config in a temp dir: an image
// baked with prebake-build --target podman is restored, serves on a published port, logs.

import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PREBAKE, REPO } from './helpers/bundle.ts';
import { noopImage } from './helpers/images.ts';

let dir: string;
let env: NodeJS.ProcessEnv;
const podman = (args: string[]) => spawnSync('podman', args, { env, encoding: 'utf8' });

test.before(async (t) => {
  dir = mkdtempSync(join(tmpdir(), 'prebake-podman-'));
  // root here lacks CAP_SYS_RESOURCE for podman's default ulimits; crun 1.8 refuses this cgroup layout.
  writeFileSync(join(dir, 'containers.conf'), '[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n[engine]\nruntime = "runc"\n');
  writeFileSync(join(dir, 'storage.conf'), `[storage]\ndriver = "overlay"\ngraphroot = "${dir}/root"\nrunroot = "${dir}/runroot"\n`);
  env = { ...process.env, CONTAINERS_CONF: join(dir, 'containers.conf'), CONTAINERS_STORAGE_CONF: join(dir, 'storage.conf') };
  const r = spawnSync(join(REPO, 'bin/prebake-build'), ['--target', 'podman', `oci:${await noopImage()}:latest`, 'containers-storage:prebake/noop:baked'], { env, encoding: 'utf8' });
  t.log(r.stderr.trim());
  if (r.status !== 0) throw new Error(`prebake-build failed: ${r.stderr}`);
});

test.after.always(() => {
  podman(['rm', '-a', '-f']);
  podman(['system', 'reset', '-f']);
  spawnSync('sh', ['-c', `grep -F '${dir}' /proc/mounts | cut -d' ' -f2 | sort -r | xargs -r -n1 umount -l`]);
  rmSync(dir, { recursive: true, force: true });
});

test('podman run --runtime prebake restores the baked function: HTTP on the published port, logs after the restore', async (t) => {
  const port = 18950 + (process.pid % 40);
  const run = podman(['run', '-d', '--runtime', PREBAKE, '-p', `127.0.0.1:${port}:8080`, 'localhost/prebake/noop:baked']);
  t.is(run.status, 0, run.stderr);
  const id = run.stdout.trim();
  t.teardown(() => podman(['rm', '-f', id]));
  let body = '';
  for (let i = 0; i < 200 && !body; i++) {
    body = spawnSync('curl', ['-s', '-m', '1', `http://127.0.0.1:${port}/`], { encoding: 'utf8' }).stdout;
    if (!body) await new Promise((r) => setTimeout(r, 50));
  }
  const served = (JSON.parse(body) as { served: number }).served;
  t.true(served > 1, `served ${served}: a cold start would say 1 (${podman(['logs', id]).stderr})`);
  t.regex(podman(['logs', id]).stdout, new RegExp(`request ${served} GET /`));
  const stop = podman(['stop', '-t', '5', id]);
  t.is(stop.status, 0, stop.stderr);
  t.is(podman(['inspect', '--format', '{{.State.ExitCode}}', id]).stdout.trim(), '0');
});
