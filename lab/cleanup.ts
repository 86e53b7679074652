// Clean-up that also runs on Ctrl-C, for scripts whose replicas hold mounts, network namespaces
// and containers: each registered function runs once, the latest first, by its own handle, by
// cleanupAll() or on SIGINT/SIGTERM (then the process exits 130).

const cleanups = new Set<() => void>();
let report: (line: string) => void = (l) => process.stderr.write(`${l}\n`);

/** Registers `f`; the function returned runs it now (once) and unregisters it. A throw is reported, not raised. */
export function onCleanup(f: () => void): () => void {
  const once = () => {
    if (!cleanups.delete(once)) return;
    try {
      f();
    } catch (e) {
      report(`cleanup: ${(e as Error).message}`);
    }
  };
  cleanups.add(once);
  return once;
}

/** Runs every registered clean-up, the latest first. */
export function cleanupAll(): void {
  for (const f of [...cleanups].reverse()) f();
}

/** On SIGINT or SIGTERM: cleanupAll(), then exit 130. Call it once; `log` gets the progress lines. */
export function cleanupOnSignal(log: (line: string) => void = report): void {
  report = log;
  for (const sig of ['SIGINT', 'SIGTERM'] as const)
    process.on(sig, () => {
      log(`\n${sig}: cleaning up`);
      cleanupAll();
      process.exit(130);
    });
}
