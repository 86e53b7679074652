// prebake-build refuses to freeze secret-looking values into an image unless told to.

import test from 'ava';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findSecrets } from '../src/bake/secrets.ts';
import { REPO } from '../lab/bundle.ts';
import { noopImage } from './helpers/images.ts';

test('secret-looking environment variables and arguments are found, named, never quoted', (t) => {
  const found = findSecrets(
    ['PATH=/bin', 'API_TOKEN=abc', 'DB_PASSWORD=hunter2', 'EMPTY_SECRET=', 'NOTE=AKIAABCDEFGHIJKLMNOP', 'PASSAGE=ok'],
    ['python3', 'app.py', '--password=hunter2', '--port=8080', 'ghp_0123456789abcdef0123456789abcdef0123'],
  );
  t.deepEqual(found, [
    'env API_TOKEN looks like a secret',
    'env DB_PASSWORD looks like a secret',
    'env NOTE holds an AWS access key id',
    'argument 2 (--password=…) looks like a secret',
    'argument 4 holds a GitHub token',
  ]);
  t.false(found.join(' ').includes('hunter2'));
  t.deepEqual(findSecrets(['PATH=/bin', 'PORT=8080', 'HOME=/root'], ['python3', '/app/function.py']), []);
});

test('a bake whose environment holds a secret stops before anything is written; --allow-secrets bakes', async (t) => {
  const image = await noopImage();
  const dir = mkdtempSync(join(tmpdir(), 'prebake-secrets-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const build = (...extra: string[]) =>
    spawnSync(join(REPO, 'bin/prebake-build'), ['--quiet', '--target', 'runc', '--env', 'API_TOKEN=s3cr3t', ...extra, `oci:${image}:latest`, `oci:${dir}/out:baked`], { encoding: 'utf8' });
  const refused = build();
  t.is(refused.status, 1);
  t.regex(refused.stderr, /secrets .*env API_TOKEN looks like a secret; pass --allow-secrets/);
  t.notRegex(refused.stderr, /s3cr3t/);
  t.false(existsSync(join(dir, 'out')));
  const allowed = build('--allow-secrets');
  t.is(allowed.status, 0, allowed.stderr);
  t.true(existsSync(join(dir, 'out/index.json')));
});
