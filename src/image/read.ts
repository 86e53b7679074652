// Reads an image from any transport of ref.ts into one in-memory description (manifest, parsed
// config, layer blobs on disk), checking every blob's sha256 on the way; archives and engine
// exports are unpacked into a private temp dir that cleanup() removes, and a registry's image
// (docker://) is copied by skopeo into an OCI layout there.

import { link, lstat, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { createReadStream, createWriteStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, posix } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { execa } from 'execa';
import tar from 'tar-stream';
import {
  ANNOTATION_REF_NAME,
  type Descriptor,
  type DockerArchiveEntry,
  type ImageConfig,
  type ImageIndex,
  type ImageManifest,
  MEDIA_TYPE,
  OCI_LAYOUT_FILE,
} from '../../oci/image-spec.ts';
import { isContainedRelativePath } from '../checkpoint/manifest.ts';
import { blobPath, layerMediaType, sha256, sha256File, sniffCompression, verifyBlob } from './blob.ts';
import { ENGINE_ARCHIVE, exportImage } from './engine.ts';
import { formatImageRef, type ImageRef, parseImageRef, qualifiedName } from './ref.ts';

export interface ImageLayer {
  /** sha256 of the blob as stored (compressed or not). */
  digest: string;
  /** sha256 of the uncompressed tar, from the config's rootfs.diff_ids (checked by unpackLayers). */
  diffId: string;
  mediaType: string;
  size: number;
  /** The blob on disk. */
  path: string;
}

export interface SourceImage {
  /** The index the manifest was selected from (OCI layouts only). */
  index?: ImageIndex;
  /** The image manifest; synthesised, OCI-shaped, for a docker-archive. */
  manifest: ImageManifest;
  config: ImageConfig;
  configDigest: string;
  /** Lowest first, one per rootfs.diff_ids entry. */
  layers: ImageLayer[];
  /** Removes the temp files the read made (none for an oci: directory). */
  cleanup(): Promise<void>;
}

type Image = Omit<SourceImage, 'cleanup'>;

const GOARCH: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ia32: '386', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64' };
/** This host's architecture as images name it (Go's GOARCH). */
export const hostArch = (): string => GOARCH[process.arch] ?? process.arch;
const isIndex = (mediaType: string | undefined) => mediaType === MEDIA_TYPE.index || mediaType === MEDIA_TYPE.dockerManifestList;

function parseJson<T>(bytes: Buffer, what: string): T {
  try {
    return JSON.parse(bytes.toString('utf8')) as T;
  } catch (e) {
    throw new Error(`${what} is not valid JSON (${(e as Error).message})`);
  }
}

async function readJsonBlob<T>(layout: string, d: Descriptor, what: string): Promise<T> {
  const path = blobPath(layout, d.digest, what);
  const bytes = await readFile(path).catch((e: Error) => {
    throw new Error(`${what} ${d.digest}: cannot read ${path} (${e.message})`);
  });
  if (sha256(bytes) !== d.digest) throw new Error(`${what}: blob ${path} has ${sha256(bytes)}, expected ${d.digest}`);
  if (bytes.length !== d.size) throw new Error(`${what}: blob ${path} is ${bytes.length} bytes, the descriptor says ${d.size}`);
  return parseJson<T>(bytes, `${what} ${d.digest}`);
}

/** The one entry tagged `tag` (compared after `normalize`), or the only entry when no tag is asked for. */
function select<T>(entries: T[], tag: string | undefined, tagsOf: (e: T) => string[], normalize = (t: string) => t): T {
  const present = entries.flatMap(tagsOf);
  const list = present.length ? present.map((t) => JSON.stringify(t)).join(', ') : 'none';
  if (tag === undefined) {
    if (entries.length === 1) return entries[0]!;
    throw new Error(`holds ${entries.length} images; name one by tag (tags present: ${list})`);
  }
  const found = entries.find((e) => tagsOf(e).some((t) => normalize(t) === normalize(tag)));
  if (!found) throw new Error(`has no image tagged ${JSON.stringify(tag)} (tags present: ${list})`);
  return found;
}

function checkDiffIds(config: ImageConfig, layers: number, what: string): string[] {
  const ids = config.rootfs?.diff_ids;
  if (!Array.isArray(ids)) throw new Error(`${what}: config has no rootfs.diff_ids`);
  if (ids.length !== layers) throw new Error(`${what}: ${layers} layers but ${ids.length} rootfs.diff_ids`);
  return ids;
}

/** An OCI image layout directory (`oci-layout`, `index.json`, `blobs/sha256/…`). */
async function readLayout(dir: string, tag: string | undefined): Promise<Image> {
  await readFile(join(dir, OCI_LAYOUT_FILE)).catch(() => {
    throw new Error(`${dir} is not an OCI image layout (no ${OCI_LAYOUT_FILE} file)`);
  });
  const index = parseJson<ImageIndex>(await readFile(join(dir, 'index.json')), `${dir}/index.json`);
  if (!Array.isArray(index.manifests)) throw new Error(`${dir}/index.json has no manifests list`);
  let desc = select(index.manifests, tag, (d) => (d.annotations?.[ANNOTATION_REF_NAME] ? [d.annotations[ANNOTATION_REF_NAME]] : []));
  // A multi-platform image: take this host's platform (only its blobs need be present).
  const arch = hostArch();
  while (isIndex(desc.mediaType)) {
    const sub = await readJsonBlob<ImageIndex>(dir, desc, 'image index');
    const match = sub.manifests?.find((d) => d.platform?.os === 'linux' && d.platform.architecture === arch);
    if (!match) {
      const present = (sub.manifests ?? []).map((d) => `${d.platform?.os}/${d.platform?.architecture}`).join(', ');
      throw new Error(`image index ${desc.digest} has no linux/${arch} image (platforms present: ${present})`);
    }
    desc = match;
  }
  const manifest = await readJsonBlob<ImageManifest>(dir, desc, 'manifest');
  if (!manifest.config || !Array.isArray(manifest.layers)) throw new Error(`manifest ${desc.digest} has no config or no layers list`);
  const config = await readJsonBlob<ImageConfig>(dir, manifest.config, 'config');
  const diffIds = checkDiffIds(config, manifest.layers.length, `manifest ${desc.digest}`);
  const layers = await Promise.all(
    manifest.layers.map(async (l, i) => {
      const what = `layer ${i} (${l.digest})`;
      const path = blobPath(dir, l.digest, what);
      await verifyBlob(path, l.digest, l.size, what);
      return { digest: l.digest, diffId: diffIds[i]!, mediaType: l.mediaType, size: l.size, path };
    }),
  );
  return { index, manifest, config, configDigest: manifest.config.digest, layers };
}

/** The digest a path inside a docker-archive names (`blobs/sha256/<hex>`, a config `<hex>.json`), if any. */
function namedDigest(path: string, isConfig: boolean): string | undefined {
  const m = /^blobs\/sha256\/([0-9a-f]{64})$/.exec(path) ?? (isConfig ? /^([0-9a-f]{64})\.json$/.exec(path) : null);
  return m ? `sha256:${m[1]}` : undefined;
}

/**
 * An unpacked docker-archive: the legacy `docker save` layout (manifest.json → `<hex>.json`,
 * `<id>/layer.tar`) and the OCI-in-docker-archive layout of docker 25+ (→ `blobs/sha256/<hex>`).
 * Layers carry no media type, so compression is read from their first bytes.
 */
async function readDockerArchive(dir: string, name: string | undefined): Promise<Image> {
  const entries = parseJson<DockerArchiveEntry[]>(await readFile(join(dir, 'manifest.json')).catch(() => {
    throw new Error('is not a docker-archive (no manifest.json)');
  }), 'manifest.json');
  if (!Array.isArray(entries)) throw new Error('manifest.json is not a list');
  // `busybox:1` and `docker.io/library/busybox:1` name the same image.
  const entry = select(entries, name, (e) => e.RepoTags ?? [], qualifiedName);
  const inside = (p: string, what: string): string => {
    if (typeof p !== 'string' || !isContainedRelativePath(p)) throw new Error(`manifest.json: ${what} path ${JSON.stringify(p)} is outside the archive`);
    return join(dir, p);
  };
  const configBytes = await readFile(inside(entry.Config, 'Config'));
  const configDigest = sha256(configBytes);
  const named = namedDigest(entry.Config, true);
  if (named && named !== configDigest) throw new Error(`config ${entry.Config} has ${configDigest}, its name says ${named}`);
  const config = parseJson<ImageConfig>(configBytes, `config ${entry.Config}`);
  if (!Array.isArray(entry.Layers)) throw new Error('manifest.json: Layers is not a list');
  const diffIds = checkDiffIds(config, entry.Layers.length, 'manifest.json');
  const layers = await Promise.all(
    entry.Layers.map(async (p, i): Promise<ImageLayer> => {
      const path = inside(p, 'layer');
      const { digest, size } = await sha256File(path);
      const compression = await sniffCompression(path);
      const what = `layer ${i} (${p})`;
      const expected = namedDigest(p, false) ?? (compression === 'none' ? diffIds[i] : undefined);
      if (expected && expected !== digest) throw new Error(`${what}: blob has ${digest}, expected ${expected}`);
      return { digest, diffId: diffIds[i]!, mediaType: layerMediaType(compression), size, path };
    }),
  );
  const manifest: ImageManifest = {
    schemaVersion: 2,
    mediaType: MEDIA_TYPE.manifest,
    config: { mediaType: MEDIA_TYPE.config, digest: configDigest, size: configBytes.length },
    layers: layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size })),
  };
  return { manifest, config, configDigest, layers };
}

/**
 * Unpacks an archive (oci-archive, docker-archive) into `dir`: regular files and directories only.
 * Symlinks and hardlinks between members (docker save links shared layers) become hardlinks to the
 * member they lead to; a member outside the archive, or of any other type, is refused.
 */
async function extractArchive(file: string, dir: string): Promise<void> {
  const links = new Map<string, string>(); // member → the member it leads to
  const extract = tar.extract();
  const piping = pipeline(createReadStream(file), extract).then(() => undefined, (e: Error) => e);
  for await (const entry of extract) {
    const { name, type, linkname } = entry.header;
    const rel = posix.normalize(name).replace(/\/+$/, '');
    const refuse = (why: string): never => {
      throw new Error(`member ${JSON.stringify(name)} ${why}`);
    };
    if (rel === '.') {
      entry.resume();
      continue;
    }
    if (!isContainedRelativePath(rel)) refuse('is outside the archive');
    if (type === 'file' || type === 'contiguous-file') {
      await mkdir(dirname(join(dir, rel)), { recursive: true });
      await pipeline(entry, createWriteStream(join(dir, rel), { flags: 'wx' }));
      continue;
    }
    entry.resume();
    if (type === 'directory') await mkdir(join(dir, rel), { recursive: true });
    else if (type === 'symlink' && linkname && !linkname.startsWith('/')) links.set(rel, posix.normalize(posix.join(posix.dirname(rel), linkname)));
    else if (type === 'link' && linkname) links.set(rel, posix.normalize(linkname).replace(/\/+$/, ''));
    else refuse(`is a ${type}${linkname ? ` to ${JSON.stringify(linkname)}` : ''}, not a file, directory or link inside the archive`);
  }
  const err = await piping;
  if (err) throw new Error(`cannot read ${file} as a tar archive (${err.message})`);
  for (const [member, leadsTo] of links) {
    let target = leadsTo;
    for (let hops = 0; links.has(target) && hops < 16; hops++) target = links.get(target)!;
    const st = isContainedRelativePath(target) ? await lstat(join(dir, target)).catch(() => undefined) : undefined;
    if (!st?.isFile()) throw new Error(`member ${JSON.stringify(member)} links to ${JSON.stringify(leadsTo)}, which is not a file in the archive`);
    await mkdir(dirname(join(dir, member)), { recursive: true });
    await link(join(dir, target), join(dir, member));
  }
}

/**
 * Runs `skopeo copy` (its default auth file, registries.conf and policy.json apply); a failure
 * names the command and skopeo's own message.
 */
export async function skopeoCopy(args: string[]): Promise<void> {
  try {
    await execa('skopeo', ['copy', '--quiet', ...args], { stdin: 'ignore' });
  } catch (e) {
    const err = e as { code?: string; stderr?: unknown; shortMessage?: string; message: string };
    const stderr = typeof err.stderr === 'string' ? err.stderr.trim() : '';
    // skopeo logs `time="…" level=fatal msg="…"`: the message is what matters.
    const msg = /level=fatal msg="((?:[^"\\]|\\.)*)"/.exec(stderr)?.[1]?.replace(/\\n/g, ' ').replace(/\\(.)/g, '$1') ?? stderr.split('\n').slice(-3).join(' | ');
    const detail = err.code === 'ENOENT' ? 'skopeo is not installed' : msg || err.shortMessage || err.message;
    const hint = /server gave HTTP response to HTTPS client/.test(detail) ? ' (a registry on plain HTTP needs --tls-verify=false)' : '';
    throw new Error(`\`skopeo copy ${args.join(' ')}\` failed: ${detail}${hint}`);
  }
}

/** skopeo's --src-tls-verify/--dest-tls-verify for a docker:// reference; none when it is left to skopeo. */
export const tlsFlag = (side: 'src' | 'dest', tlsVerify: boolean | undefined): string[] => (tlsVerify === undefined ? [] : [`--${side}-tls-verify=${tlsVerify}`]);

/** Reads the image `ref` names. The caller must call cleanup() on the result. */
export async function readImage(refOrText: ImageRef | string): Promise<SourceImage> {
  const ref = typeof refOrText === 'string' ? parseImageRef(refOrText) : refOrText;
  let temp: string | undefined;
  const cleanup = async () => {
    if (temp) await rm(temp, { recursive: true, force: true });
  };
  const unpacked = async (archive: string): Promise<string> => {
    temp ??= await mkdtemp(join(tmpdir(), 'prebake-image-'));
    const dir = join(temp, 'archive');
    await extractArchive(archive, dir);
    return dir;
  };
  try {
    let image: Image;
    switch (ref.transport) {
      case 'oci':
        image = await readLayout(ref.path, ref.tag);
        break;
      case 'oci-archive':
        image = await readLayout(await unpacked(ref.path), ref.tag);
        break;
      case 'docker-archive':
        image = await readDockerArchive(await unpacked(ref.path), ref.name);
        break;
      case 'docker': {
        // Without --all skopeo copies this host's platform of a multi-platform image; blobs as
        // the registry has them (a docker v2s2 manifest becomes OCI, its layers unchanged).
        temp = await mkdtemp(join(tmpdir(), 'prebake-image-'));
        const layout = join(temp, 'layout');
        await skopeoCopy([...tlsFlag('src', ref.tlsVerify), `docker://${ref.name}`, `oci:${layout}:image`]);
        image = await readLayout(layout, 'image');
        break;
      }
      default: {
        // An engine exports just this one image, so no tag is selected inside the archive.
        temp = await mkdtemp(join(tmpdir(), 'prebake-image-'));
        const file = join(temp, 'export.tar');
        await exportImage(ref, file);
        const dir = await unpacked(file);
        await rm(file);
        image = ENGINE_ARCHIVE[ref.transport] === 'docker-archive' ? await readDockerArchive(dir, undefined) : await readLayout(dir, undefined);
      }
    }
    return { ...image, cleanup };
  } catch (e) {
    await cleanup();
    throw new Error(`reading image ${formatImageRef(ref)}: ${(e as Error).message}`, { cause: e });
  }
}
