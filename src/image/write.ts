// Writes an image to any transport of ref.ts: the source's layer blobs byte for byte, one added
// layer on top, a new config (diff_ids, history, Env, Labels) and manifest. Paths are written under
// a temp name beside the destination and renamed at the end; engines load a temp archive; skopeo
// pushes a temp OCI layout to a registry (docker://), the manifest last, so the tag moves only
// once every blob is there.

import { randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { copyFile, link, lstat, mkdir, mkdtemp, readFile, rename, rm, rmdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import {
  ANNOTATION_CONTAINERD_NAME,
  ANNOTATION_REF_NAME,
  type Descriptor,
  type DockerArchiveEntry,
  type HistoryEntry,
  type ImageConfig,
  type ImageIndex,
  type ImageManifest,
  MEDIA_TYPE,
  OCI_LAYOUT_FILE,
  OCI_LAYOUT_VERSION,
} from '../../oci/image-spec.ts';
import { blobPath, digestHex, ociLayerMediaType, sha256 } from './blob.ts';
import { ENGINE_ARCHIVE, importImage } from './engine.ts';
import { hostArch, type ImageLayer, skopeoCopy, type SourceImage, tlsFlag } from './read.ts';
import { formatImageRef, type ImageRef, parseImageRef, splitNameTag } from './ref.ts';

interface WriteOptions {
  /** The image to build on (readImage, or scratchImage for a base image). */
  source: Pick<SourceImage, 'manifest' | 'config' | 'layers'>;
  /** The layer to add on top (packLayer). */
  addLayer: ImageLayer;
  /** Environment variables to set in the config, replacing entries of the same name. */
  env?: Record<string, string>;
  /** Merged into the config's Labels. */
  labels?: Record<string, string>;
  /** Merged into the manifest's annotations. */
  annotations?: Record<string, string>;
  /** The history entry's created_by; default "prebake-build". */
  createdBy?: string;
  /** The config's and history entry's created time; default now. */
  created?: Date;
}

interface WrittenImage {
  manifest: ImageManifest;
  manifestDigest: string;
  config: ImageConfig;
  configDigest: string;
}

/** The image's blobs, serialised. */
interface Built extends WrittenImage {
  manifestBytes: Buffer;
  configBytes: Buffer;
  layers: ImageLayer[];
}

/** An image with no layers, to write a base image from a packed rootfs. */
export function scratchImage(config: ImageConfig['config'] = {}, arch = hostArch()): SourceImage {
  return {
    manifest: { schemaVersion: 2, mediaType: MEDIA_TYPE.manifest, config: { mediaType: MEDIA_TYPE.config, digest: '', size: 0 }, layers: [] },
    config: { architecture: arch, os: 'linux', config, rootfs: { type: 'layers', diff_ids: [] }, history: [] },
    configDigest: '',
    layers: [],
    cleanup: async () => {},
  };
}

/** Replaces the entries of the variables in `changes` where they stand; new ones go last. */
function setEnv(env: readonly string[], changes: Record<string, string>): string[] {
  const name = (entry: string) => entry.split('=', 1)[0]!;
  const out = env.map((e) => (Object.hasOwn(changes, name(e)) ? `${name(e)}=${changes[name(e)]}` : e));
  for (const [k, v] of Object.entries(changes)) if (!env.some((e) => name(e) === k)) out.push(`${k}=${v}`);
  return out;
}

function build(o: WriteOptions): Built {
  const { source, addLayer } = o;
  const created = (o.created ?? new Date()).toISOString();
  const container = { ...source.config.config };
  if (o.env) container.Env = setEnv(container.Env ?? [], o.env);
  if (o.labels) container.Labels = { ...container.Labels, ...o.labels };
  // Non-empty history entries pair with layers, so a source without history gets none.
  const entry: HistoryEntry = { created, created_by: o.createdBy ?? 'prebake-build' };
  const history = source.config.history ?? (source.layers.length === 0 ? [] : undefined);
  const config: ImageConfig = {
    ...source.config,
    created,
    config: container,
    rootfs: { type: 'layers', diff_ids: [...source.config.rootfs.diff_ids, addLayer.diffId] },
    ...(history && { history: [...history, entry] }),
  };
  const configBytes = Buffer.from(JSON.stringify(config));
  const configDigest = sha256(configBytes);
  const layers = [...source.layers, addLayer];
  const annotations = { ...source.manifest.annotations, ...o.annotations };
  const manifest: ImageManifest = {
    schemaVersion: 2,
    mediaType: MEDIA_TYPE.manifest,
    config: { mediaType: MEDIA_TYPE.config, digest: configDigest, size: configBytes.length },
    layers: layers.map((l) => ({ mediaType: ociLayerMediaType(l.mediaType), digest: l.digest, size: l.size })),
    ...(Object.keys(annotations).length > 0 && { annotations }),
  };
  const manifestBytes = Buffer.from(JSON.stringify(manifest));
  return { manifest, manifestBytes, manifestDigest: sha256(manifestBytes), config, configBytes, configDigest, layers };
}

const tempBeside = (path: string) => `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;

const manifestDescriptor = (b: Built, annotations: Record<string, string>): Descriptor => ({
  mediaType: MEDIA_TYPE.manifest,
  digest: b.manifestDigest,
  size: b.manifestBytes.length,
  ...(Object.keys(annotations).length > 0 && { annotations }),
});

/**
 * Copies a blob into a layout unless it is there already (blobs are named by their content);
 * `linkFiles`: a hard link to the file where it can be (a layout only read, then removed).
 */
async function putBlob(layout: string, digest: string, content: { file: string } | { bytes: Buffer }, linkFiles = false): Promise<void> {
  const dest = blobPath(layout, digest, 'blob');
  if (await lstat(dest).catch(() => undefined)) return;
  const temp = tempBeside(dest);
  if ('file' in content) {
    if (!linkFiles || !(await link(content.file, temp).then(() => true, () => false))) await copyFile(content.file, temp);
  } else await writeFile(temp, content.bytes);
  await rename(temp, dest);
}

/** Adds the image to the layout in `dir` (created if need be), tagged `tag` in index.json. */
async function writeLayout(dir: string, tag: string | undefined, b: Built, linkFiles = false): Promise<void> {
  const exists = (await lstat(join(dir, 'index.json')).catch(() => undefined)) !== undefined;
  // A new layout is built beside `dir` and renamed; an existing one gets blobs, then index.json renamed over.
  const layout = exists ? dir : tempBeside(dir);
  try {
    await mkdir(join(layout, 'blobs', 'sha256'), { recursive: true });
    if (!exists) await writeFile(join(layout, OCI_LAYOUT_FILE), JSON.stringify({ imageLayoutVersion: OCI_LAYOUT_VERSION }));
    for (const l of b.layers) await putBlob(layout, l.digest, { file: l.path }, linkFiles);
    await putBlob(layout, b.configDigest, { bytes: b.configBytes });
    await putBlob(layout, b.manifestDigest, { bytes: b.manifestBytes });
    const index: ImageIndex = exists
      ? (JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as ImageIndex)
      : { schemaVersion: 2, mediaType: MEDIA_TYPE.index, manifests: [] };
    const others = index.manifests.filter((d) => tag === undefined || d.annotations?.[ANNOTATION_REF_NAME] !== tag);
    index.manifests = [...others, manifestDescriptor(b, tag === undefined ? {} : { [ANNOTATION_REF_NAME]: tag })];
    const indexTemp = tempBeside(join(layout, 'index.json'));
    await writeFile(indexTemp, JSON.stringify(index));
    await rename(indexTemp, join(layout, 'index.json'));
    if (!exists) {
      // An empty directory left by someone else may stand in the way; anything more is an error.
      await rmdir(dir).catch(() => {});
      await rename(layout, dir);
    }
  } catch (e) {
    if (!exists) await rm(layout, { recursive: true, force: true });
    throw e;
  }
}

type Member = { name: string; bytes: Buffer } | { name: string; file: string };

/** Writes a tar of `members` to `dest` through a temp file beside it. */
async function writeTar(dest: string, members: Member[]): Promise<void> {
  await mkdir(dirname(dest), { recursive: true });
  const temp = tempBeside(dest);
  const pack = tar.pack();
  const writing = pipeline(pack, createWriteStream(temp, { flags: 'wx' }));
  const header = { mode: 0o644, mtime: new Date(0), uid: 0, gid: 0 };
  try {
    for (const m of members) {
      if ('bytes' in m) await new Promise<void>((resolve, reject) => pack.entry({ ...header, name: m.name }, m.bytes, (e) => (e ? reject(e) : resolve())));
      else {
        const { size } = await lstat(m.file);
        await pipeline(createReadStream(m.file), pack.entry({ ...header, name: m.name, size }));
      }
    }
    pack.finalize();
    await writing;
    await rename(temp, dest);
  } catch (e) {
    pack.destroy();
    await writing.catch(() => {});
    await rm(temp, { force: true });
    throw e;
  }
}

/** Each distinct layer blob once, in order. */
const distinctLayers = (b: Built) => [...new Map(b.layers.map((l) => [l.digest, l])).values()];

async function writeOciArchive(file: string, annotations: Record<string, string>, b: Built): Promise<void> {
  const index: ImageIndex = { schemaVersion: 2, mediaType: MEDIA_TYPE.index, manifests: [manifestDescriptor(b, annotations)] };
  const blob = (digest: string) => `blobs/sha256/${digestHex(digest, 'blob')}`;
  await writeTar(file, [
    { name: OCI_LAYOUT_FILE, bytes: Buffer.from(JSON.stringify({ imageLayoutVersion: OCI_LAYOUT_VERSION })) },
    { name: 'index.json', bytes: Buffer.from(JSON.stringify(index)) },
    { name: blob(b.manifestDigest), bytes: b.manifestBytes },
    { name: blob(b.configDigest), bytes: b.configBytes },
    ...distinctLayers(b).map((l) => ({ name: blob(l.digest), file: l.path })),
  ]);
}

/** The layout `docker save` writes and `docker load` reads; layers may stay compressed. */
async function writeDockerArchive(file: string, name: string | undefined, b: Built): Promise<void> {
  const layerName = (l: ImageLayer) => `${digestHex(l.digest, 'layer')}.tar`;
  const configName = `${digestHex(b.configDigest, 'config')}.json`;
  const entry: DockerArchiveEntry = { Config: configName, RepoTags: name ? [name] : [], Layers: b.layers.map(layerName) };
  await writeTar(file, [
    { name: configName, bytes: b.configBytes },
    ...distinctLayers(b).map((l) => ({ name: layerName(l), file: l.path })),
    { name: 'manifest.json', bytes: Buffer.from(JSON.stringify([entry])) },
  ]);
}

/** Writes the image described by `options` to `ref`. */
export async function writeImage(refOrText: ImageRef | string, options: WriteOptions): Promise<WrittenImage> {
  const ref = typeof refOrText === 'string' ? parseImageRef(refOrText) : refOrText;
  const b = build(options);
  try {
    switch (ref.transport) {
      case 'oci':
        await writeLayout(ref.path, ref.tag, b);
        break;
      case 'oci-archive':
        await writeOciArchive(ref.path, ref.tag === undefined ? {} : { [ANNOTATION_REF_NAME]: ref.tag }, b);
        break;
      case 'docker-archive':
        await writeDockerArchive(ref.path, ref.name, b);
        break;
      case 'docker': {
        // The layers are linked, not copied, into the temp layout; skopeo skips the blobs the
        // registry has already and pushes the manifest as it is (--preserve-digests: no conversion).
        const temp = await mkdtemp(join(tmpdir(), 'prebake-image-'));
        try {
          await writeLayout(join(temp, 'layout'), 'image', b, true);
          const digestFile = join(temp, 'digest');
          await skopeoCopy(['--preserve-digests', '--digestfile', digestFile, ...tlsFlag('dest', ref.tlsVerify), `oci:${join(temp, 'layout')}:image`, `docker://${ref.name}`]);
          const pushed = (await readFile(digestFile, 'utf8')).trim();
          if (pushed !== b.manifestDigest) throw new Error(`the registry holds manifest ${pushed}, prebake-build wrote ${b.manifestDigest}`);
        } finally {
          await rm(temp, { recursive: true, force: true });
        }
        break;
      }
      default: {
        const temp = await mkdtemp(join(tmpdir(), 'prebake-image-'));
        try {
          const file = join(temp, 'image.tar');
          const tag = splitNameTag(ref.name)!.tag;
          if (ENGINE_ARCHIVE[ref.transport] === 'docker-archive') await writeDockerArchive(file, ref.name, b);
          else await writeOciArchive(file, { [ANNOTATION_REF_NAME]: tag, [ANNOTATION_CONTAINERD_NAME]: ref.name }, b);
          await importImage(ref, file);
        } finally {
          await rm(temp, { recursive: true, force: true });
        }
      }
    }
  } catch (e) {
    throw new Error(`writing image ${formatImageRef(ref)}: ${(e as Error).message}`, { cause: e });
  }
  const { manifest, manifestDigest, config, configDigest } = b;
  return { manifest, manifestDigest, config, configDigest };
}
