// The part of the OCI image-spec (v1.1: layout, index, manifest, config) and of the docker-archive
// manifest.json that prebake-build reads and writes.

export const MEDIA_TYPE = {
  index: 'application/vnd.oci.image.index.v1+json',
  manifest: 'application/vnd.oci.image.manifest.v1+json',
  config: 'application/vnd.oci.image.config.v1+json',
  layer: 'application/vnd.oci.image.layer.v1.tar',
  layerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  layerZstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayer: 'application/vnd.docker.image.rootfs.diff.tar',
  dockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
} as const;

/** index.json annotation that carries the tag of an image in an OCI layout. */
export const ANNOTATION_REF_NAME = 'org.opencontainers.image.ref.name';
/** index.json annotation that containerd (`ctr images import/export`) uses for the full image name. */
export const ANNOTATION_CONTAINERD_NAME = 'io.containerd.image.name';

export const OCI_LAYOUT_FILE = 'oci-layout';
export const OCI_LAYOUT_VERSION = '1.0.0';

export interface Platform {
  architecture: string;
  os: string;
  'os.version'?: string;
  'os.features'?: string[];
  variant?: string;
}

export interface Descriptor {
  mediaType: string;
  /** `sha256:<64 hex>` */
  digest: string;
  size: number;
  urls?: string[];
  annotations?: Record<string, string>;
  platform?: Platform;
  artifactType?: string;
}

/** index.json of a layout, or a multi-platform image index blob. */
export interface ImageIndex {
  schemaVersion: 2;
  mediaType?: string;
  manifests: Descriptor[];
  annotations?: Record<string, string>;
}

export interface ImageManifest {
  schemaVersion: 2;
  mediaType?: string;
  config: Descriptor;
  layers: Descriptor[];
  annotations?: Record<string, string>;
}

/** What the image asks of the container (Docker and OCI spell these keys the same way). */
export interface ContainerConfig {
  User?: string;
  ExposedPorts?: Record<string, object>;
  Env?: string[];
  Entrypoint?: string[] | null;
  Cmd?: string[] | null;
  Volumes?: Record<string, object>;
  WorkingDir?: string;
  Labels?: Record<string, string>;
  StopSignal?: string;
  [key: string]: unknown;
}

export interface HistoryEntry {
  created?: string;
  author?: string;
  created_by?: string;
  comment?: string;
  empty_layer?: boolean;
}

export interface ImageConfig {
  created?: string;
  author?: string;
  architecture: string;
  os: string;
  variant?: string;
  config?: ContainerConfig;
  rootfs: { type: 'layers'; diff_ids: string[] };
  history?: HistoryEntry[];
  /** Docker writes more (container, docker_version, …); kept as they are. */
  [key: string]: unknown;
}

/** oci-layout */
export interface ImageLayout {
  imageLayoutVersion: string;
}

/** One entry of a docker-archive's manifest.json (`docker save`, `docker load`). */
export interface DockerArchiveEntry {
  /** Path inside the archive of the config blob: `<hex>.json` or `blobs/sha256/<hex>`. */
  Config: string;
  /** `name:tag` references; may be null or absent for an untagged image. */
  RepoTags?: string[] | null;
  /** Paths inside the archive of the layer tars, lowest first: `<id>/layer.tar`, `<hex>.tar` or `blobs/sha256/<hex>`. */
  Layers: string[];
  /** Foreign layers, keyed by diffID. */
  LayerSources?: Record<string, Descriptor>;
}
