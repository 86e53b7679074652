// A CRI client (Kubernetes' runtime.v1 API over gRPC on a unix socket), for prebake-build's cri
// target and the tests. The API definition is the cri-api api.proto: built into
// prebake-build.cjs by scripts/build.mjs, or read from where scripts/setup.sh unpacks it.

import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { existsSync } from 'node:fs';
import criApi from './cri-api.json' with { type: 'json' };

/** Where scripts/setup.sh unpacks the CRI API definition (package runtime.v1); scripts/build.mjs reads it from cri-api.json too. */
export const CRI_PROTO = criApi.proto;
/** Where the .proto files api.proto imports are (gogo.proto: bookworm's golang-github-gogo-protobuf-dev). */
const CRI_PROTO_INCLUDE = criApi.include;

declare const PREBAKE_CRI_API: string | undefined;

// Field names as in the .proto (snake_case, as crictl's JSON files have them), enums by name,
// int64 as strings (nanosecond times).
const OPTIONS: protoLoader.Options = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true };

type Services = { RuntimeService: grpc.ServiceClientConstructor; ImageService: grpc.ServiceClientConstructor };
let loaded: Services | undefined;

function services(): Services {
  if (loaded) return loaded;
  let def: protoLoader.PackageDefinition;
  if (typeof PREBAKE_CRI_API === 'string' && PREBAKE_CRI_API) def = protoLoader.fromJSON(JSON.parse(PREBAKE_CRI_API) as Parameters<typeof protoLoader.fromJSON>[0], OPTIONS);
  else if (existsSync(CRI_PROTO)) def = protoLoader.loadSync(CRI_PROTO, { ...OPTIONS, includeDirs: [CRI_PROTO_INCLUDE] });
  else throw new Error(`the CRI API definition is missing (${CRI_PROTO}): run scripts/setup.sh, which unpacks it, then npm run build`);
  loaded = (grpc.loadPackageDefinition(def) as unknown as { runtime: { v1: Services } }).runtime.v1;
  return loaded;
}

type Callback = (err: grpc.ServiceError | null, res: unknown) => void;
type Method = (req: object, options: grpc.CallOptions, cb: Callback) => grpc.ClientUnaryCall;

/** One unary CRI call; rejects with the method and the server's message. */
type CriCall = <R = Record<string, unknown>>(method: string, req?: object, timeoutMs?: number) => Promise<R>;

export interface CriClient {
  runtime: CriCall;
  image: CriCall;
  close(): void;
}

function caller(client: grpc.Client, service: string): CriCall {
  return <R>(method: string, req: object = {}, timeoutMs = 60_000) =>
    new Promise<R>((resolve, reject) => {
      const fn = (client as unknown as Record<string, Method | undefined>)[method];
      if (typeof fn !== 'function') return reject(new Error(`${service} has no method ${method}`));
      fn.call(client, req, { deadline: Date.now() + timeoutMs }, (err, res) => (err ? reject(new Error(`CRI ${method}: ${err.details || err.message}`, { cause: err })) : resolve(res as R)));
    });
}

/** A CRI client on the unix socket `socket`. */
export function criClient(socket: string): CriClient {
  const { RuntimeService, ImageService } = services();
  const rt = new RuntimeService(`unix://${socket}`, grpc.credentials.createInsecure());
  const im = new ImageService(`unix://${socket}`, grpc.credentials.createInsecure());
  return {
    runtime: caller(rt, 'RuntimeService'),
    image: caller(im, 'ImageService'),
    close: () => {
      rt.close();
      im.close();
    },
  };
}

/**
 * The CRI socket, as crictl finds it: CONTAINER_RUNTIME_ENDPOINT (unix://PATH or PATH), else
 * containerd's (CONTAINERD_ADDRESS, else /run/containerd/containerd.sock, where its CRI plugin serves).
 */
export function criEndpoint(env: NodeJS.ProcessEnv = process.env): string {
  const e = env.CONTAINER_RUNTIME_ENDPOINT;
  if (e) {
    if (e.startsWith('unix://')) return e.slice('unix://'.length);
    if (e.startsWith('/')) return e;
    throw new Error(`CONTAINER_RUNTIME_ENDPOINT=${e}: only a unix socket (unix:///path) is supported`);
  }
  return env.CONTAINERD_ADDRESS || '/run/containerd/containerd.sock';
}

/** Waits until CRI lists the image (it learns of `ctr images import` from containerd's events). */
export async function waitForImage(cri: CriClient, image: string, timeoutMs = 30_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const st = await cri.image<{ image: { id: string } | null }>('ImageStatus', { image: { image } });
    if (st.image?.id) return;
    if (Date.now() > end) throw new Error(`CRI does not know the image ${image} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
