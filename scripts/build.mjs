// Builds the runtime into one CommonJS file (dist/prebake.cjs) and a V8 startup snapshot of it
// (dist/prebake.blob); prebake-build (dist/prebake-build.cjs) and prebake install/uninstall
// (dist/prebake-admin.cjs), which are not on any engine's hot path, as plain bundles.
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';

const { version } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
const common = { bundle: true, platform: 'node', target: 'node20', format: 'cjs', define: { PREBAKE_VERSION: JSON.stringify(version) }, logLevel: 'warning', legalComments: 'none' };

await build({ ...common, entryPoints: ['src/runtime/entry.ts'], outfile: 'dist/prebake.cjs', minify: true });
// CRIU's config for every restore (CRIU_CONFIG_FILE): the restored tasks stay stopped until the
// runtime has checked them. A file of the package, so a restore writes no data for it.
writeFileSync('dist/criu.conf', 'leave-stopped\n');
rmSync('dist/prebake.blob', { force: true });
execFileSync(process.execPath, ['--no-warnings', '--snapshot-blob', 'dist/prebake.blob', '--build-snapshot', 'dist/prebake.cjs'], {
  stdio: 'inherit',
  env: { ...process.env, NODE_OPTIONS: '', NODE_EXTRA_CA_CERTS: '' },
});

// These find bin/prebake from their own location (import.meta.url, which CommonJS lacks).
const tool = (entry, outfile) =>
  build({
    ...common,
    entryPoints: [entry],
    outfile,
    banner: { js: 'const __import_meta_url = require("url").pathToFileURL(__filename).href;' },
    define: { ...common.define, 'import.meta.url': '__import_meta_url' },
  });
await tool('src/build/entry.ts', 'dist/prebake-build.cjs');
await tool('src/install/main.ts', 'dist/prebake-admin.cjs');
