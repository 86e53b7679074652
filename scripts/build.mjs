// Builds the runtime into one CommonJS file (dist/prebake.cjs) and a V8 startup snapshot of it
// (dist/prebake.blob), and prebake-build into dist/prebake-build.mjs.
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';

const { version } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
const common = { bundle: true, platform: 'node', target: 'node20', define: { PREBAKE_VERSION: JSON.stringify(version) }, logLevel: 'warning', legalComments: 'none' };

await build({ ...common, entryPoints: ['src/runtime/entry.ts'], outfile: 'dist/prebake.cjs', format: 'cjs', minify: true });
rmSync('dist/prebake.blob', { force: true });
execFileSync(process.execPath, ['--no-warnings', '--snapshot-blob', 'dist/prebake.blob', '--build-snapshot', 'dist/prebake.cjs'], {
  stdio: 'inherit',
  env: { ...process.env, NODE_OPTIONS: '', NODE_EXTRA_CA_CERTS: '' },
});
await build({
  ...common,
  entryPoints: ['src/build/entry.ts'],
  outfile: 'dist/prebake-build.cjs',
  format: 'cjs',
  // The CLI finds bin/prebake from its own location.
  banner: { js: 'const __import_meta_url = require("url").pathToFileURL(__filename).href;' },
  define: { ...common.define, 'import.meta.url': '__import_meta_url' },
});
// prebake install/uninstall: not on any engine's hot path, so not in the snapshot.
await build({
  ...common,
  entryPoints: ['src/install/main.ts'],
  outfile: 'dist/prebake-admin.cjs',
  format: 'cjs',
  banner: { js: 'const __import_meta_url = require("url").pathToFileURL(__filename).href;' },
  define: { ...common.define, 'import.meta.url': '__import_meta_url' },
});
