// Process entry of the bundled runtime (dist/prebake.cjs) and of its V8 startup snapshot.

import v8 from 'node:v8';
import { main } from './main.ts';

function run(argv: readonly string[]): void {
  main(argv).then(
    (code) => {
      // At once: waiting for the event loop to drain and tearing down costs ~10 ms a call, which
      // an engine waits for. Everything written is written: prebake writes synchronously.
      process.exit(code);
    },
    (e: unknown) => {
      process.stderr.write(`prebake: ${(e as Error).stack ?? String(e)}\n`);
      process.exitCode = 1;
    },
  );
}

if (v8.startupSnapshot?.isBuildingSnapshot()) {
  // `node --snapshot-blob B -- ARGS`: argv[1] is the first ARG.
  v8.startupSnapshot.setDeserializeMainFunction(() => run(process.argv.slice(1)));
} else {
  run(process.argv.slice(2));
}
