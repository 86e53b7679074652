// Builds the runtime into one CommonJS file (dist/prebake.cjs) and a V8 startup snapshot of it
// (dist/prebake.blob); prebake-build (dist/prebake-build.cjs) and prebake install/uninstall
// (dist/prebake-admin.cjs), which are not on any engine's hot path, as plain bundles.
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import protobuf from 'protobufjs';
import { createRequire } from 'node:module';

const { version } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
const common = { bundle: true, platform: 'node', target: 'node20', format: 'cjs', define: { PREBAKE_VERSION: JSON.stringify(version) }, logLevel: 'warning', legalComments: 'none' };

// bin/prebake's flag loops and bin/prebake-create.sh's names, from src/contract.ts (scripts/shell.ts).
const shell = await build({ entryPoints: ['scripts/shell.ts'], bundle: true, platform: 'node', format: 'esm', write: false, logLevel: 'warning' });
const { generateShell, GENERATED_SCRIPTS, RESTORE_CRIU_CONF } = await import(`data:text/javascript;base64,${Buffer.from(shell.outputFiles[0].text).toString('base64')}`);
for (const file of GENERATED_SCRIPTS) {
  const text = readFileSync(file, 'utf8');
  if (generateShell(text) !== text) {
    writeFileSync(file, generateShell(text));
    console.warn(`build: ${file} made anew from src/contract.ts`);
  }
}

await build({ ...common, entryPoints: ['src/runtime/entry.ts'], outfile: 'dist/prebake.cjs', minify: true });
// CRIU's config for every restore (CRIU_CONFIG_FILE): the restored tasks stay stopped until the
// runtime has checked them, and the host mounts the checkpoint's external mounts are bound from
// (src/contract.ts). A file of the package, so a restore writes no data for it.
writeFileSync('dist/criu.conf', RESTORE_CRIU_CONF);
rmSync('dist/prebake.blob', { force: true });
execFileSync(process.execPath, ['--no-warnings', '--snapshot-blob', 'dist/prebake.blob', '--build-snapshot', 'dist/prebake.cjs'], {
  stdio: 'inherit',
  env: { ...process.env, NODE_OPTIONS: '', NODE_EXTRA_CA_CERTS: '' },
});

// prebake-build's cri target talks CRI: the API definition (Kubernetes' cri-api api.proto, which
// scripts/setup.sh unpacks) is built into it. Without it the target says how to get it.
// Where it is and where the files it imports are: src/lib/cri-api.json, which the CRI client reads too.
const { proto: CRI_PROTO, include: CRI_PROTO_INCLUDE } = JSON.parse(readFileSync(new URL('../src/lib/cri-api.json', import.meta.url), 'utf8'));
let criApi = '';
if (existsSync(CRI_PROTO)) {
  // google/protobuf/descriptor.proto, which gogo.proto imports: protobufjs's copy.
  protobuf.common('descriptor', createRequire(import.meta.url)('protobufjs/google/protobuf/descriptor.json').nested.google.nested.protobuf.nested);
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => (isAbsolute(target) || !existsSync(join(CRI_PROTO_INCLUDE, target)) ? target : join(CRI_PROTO_INCLUDE, target));
  root.loadSync(CRI_PROTO, { keepCase: true });
  criApi = JSON.stringify(root.toJSON());
} else console.warn(`build: ${CRI_PROTO} is missing (scripts/setup.sh unpacks it): prebake-build is built without the CRI target`);

// These find bin/prebake from their own location (import.meta.url, which CommonJS lacks).
const tool = (entry, outfile) =>
  build({
    ...common,
    entryPoints: [entry],
    outfile,
    banner: { js: 'const __import_meta_url = require("url").pathToFileURL(__filename).href;' },
    define: { ...common.define, 'import.meta.url': '__import_meta_url', PREBAKE_CRI_API: JSON.stringify(criApi) },
  });
await tool('src/bake/entry.ts', 'dist/prebake-build.cjs');
await tool('src/install/main.ts', 'dist/prebake-admin.cjs');
