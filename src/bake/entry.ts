// Process entry of the bundled prebake-build (dist/prebake-build.cjs).
import { main } from './cli.ts';

main(process.argv.slice(2)).then(
  (code) => (process.exitCode = code),
  (e: unknown) => {
    process.stderr.write(`prebake-build: ${(e as Error).stack ?? String(e)}\n`);
    process.exitCode = 1;
  },
);
