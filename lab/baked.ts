// A baked Python function for the runtime tests and benchmarks: the noop function checkpointed (real runc + CRIU)
// after it has served requests, as an image layer holding /.prebake above the app and Python layers.

import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { parseManifest } from '../src/checkpoint/manifest.ts';
import { importCheckpoint, storeEntry } from '../src/checkpoint/store.ts';
import { loadTrustStore, verifyManifestSignature } from '../src/checkpoint/trust.ts';
import { readSigned } from '../src/checkpoint/verify.ts';
import { loadRuntimeConfig } from '../src/runtime/config.ts';
import { hostFacts } from '../src/lib/host.ts';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Spec } from '../oci/runtime-spec.ts';
import { bake } from '../src/bake/bake.ts';
import { functionSpec } from '../src/bake/spec.ts';
import type { CheckpointManifest, MemoryRestore } from '../src/checkpoint/manifest.ts';
import { pythonRootfs } from './rootfs.ts';
import { overlayBundle, REPO, uniqueName } from './bundle.ts';
import { startConsole } from './console.ts';

export const PORT = 8080;
export const WARMUP = 3;

/**
 * A Python program for bakeNoop's `source`: `setup` at start, then an HTTP server on PORT (one
 * thread per request with `threads`) whose every GET answers 200 with str() of the Python
 * expression `body`.
 */
export function pythonHttpFunction(setup: string, body: string, opts: { threads?: boolean } = {}): string {
  return `${setup.trim()}
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = str(${body}).encode()
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.${opts.threads ? 'ThreadingHTTPServer' : 'HTTPServer'}(('0.0.0.0', ${PORT}), H).serve_forever()
`;
}

export interface BakedFunction {
  /** Layers, top first: the checkpoint layer, the app, Python. */
  layers: string[];
  /** The layers without the checkpoint (the image before baking). */
  baseLayers: string[];
  manifest: CheckpointManifest;
  /** The spec a container of this image gets, in `netns`. */
  spec(netns: string, change?: (s: Spec) => void): Spec;
  /**
   * Imports the checkpoint into the host's verified store, as a first create would: later
   * creates take the early restore (runc started beside the Node program).
   */
  importToStore(): void;
  cleanup(): void;
}

/** Bakes images/noop (or `source`, a Python program serving HTTP on PORT) after WARMUP requests (with `runc`, another runc; `memory`, prebake-build's --memory). */
export async function bakeNoop(opts: { terminal?: boolean; source?: string; env?: string[]; runc?: string; memory?: MemoryRestore | 'auto' } = {}): Promise<BakedFunction> {
  const python = await pythonRootfs();
  const tmp = mkdtempSync(join(tmpdir(), 'prebake-baked-'));
  const app = join(tmp, 'app-layer');
  mkdirSync(join(app, 'app'), { recursive: true });
  if (opts.source !== undefined) writeFileSync(join(app, 'app/function.py'), opts.source);
  else {
    copyFileSync(join(REPO, 'images/noop/function.py'), join(app, 'app/function.py'));
    copyFileSync(join(REPO, 'images/common/serve.py'), join(app, 'app/serve.py'));
  }
  const baseLayers = [app, python];
  const specFor = (netns: string, change?: (s: Spec) => void) => {
    const s = functionSpec({ args: ['python3', '/app/function.py'], env: ['PREBAKE_CHECKPOINT=/.prebake', `PORT=${PORT}`, ...(opts.env ?? [])], netns, terminal: opts.terminal ?? false });
    change?.(s);
    return s;
  };
  const b = overlayBundle(baseLayers);
  const receiver = opts.terminal ? await startConsole(join(tmp, 'bake-console.sock')) : undefined;
  let manifest: CheckpointManifest;
  try {
    b.writeSpec(specFor(b.netnsPath));
    ({ manifest } = await bake({
      bundle: b.dir,
      id: uniqueName('bake'),
      netns: b.netns,
      ready: { kind: 'http', port: PORT, path: '/' },
      warmup: { count: WARMUP, port: PORT, request: { method: 'GET', path: '/' } },
      outDir: join(b.rootfs, '.prebake'),
      prebakeVersion: 'test',
      ...(opts.runc ? { runc: opts.runc } : {}),
      ...(opts.memory ? { memory: opts.memory } : {}),
      ...(receiver ? { consoleSocket: receiver.socket } : {}),
    }));
  } catch (e) {
    b.cleanup();
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  } finally {
    receiver?.close();
  }
  // Keep the upper dir (the checkpoint layer), drop the rest of the bake bundle.
  const layer = join(tmp, 'checkpoint-layer');
  const { execFileSync } = await import('node:child_process');
  execFileSync('umount', [b.rootfs]);
  execFileSync('mv', [b.upper, layer]);
  b.cleanup();
  return {
    layers: [layer, ...baseLayers],
    baseLayers,
    manifest,
    spec: specFor,
    importToStore: () => {
      const dir = join(layer, '.prebake');
      const { manifest: bytes, signature } = readSigned(dir);
      const cfg = loadRuntimeConfig();
      const keyId = verifyManifestSignature(bytes, signature, loadTrustStore(cfg.trustDir));
      importCheckpoint(cfg.store, dir, bytes, signature, parseManifest(bytes.toString()), keyId, hostFacts('criu', cfg.stateBase).lazyPages === true);
    },
    cleanup: () => {
      // What a restore imported of this bake into the host's verified store goes with it.
      rmSync(storeEntry(loadRuntimeConfig().store, readFileSync(join(layer, '.prebake/manifest.json'))), { recursive: true, force: true });
      rmSync(tmp, { recursive: true, force: true });
    },
  };
}
