// Image references in the transport syntax users know from skopeo and podman
// (`oci:DIR:TAG`, `docker-archive:FILE:NAME:TAG`, `docker-daemon:NAME:TAG`,
// `docker://HOST[:PORT]/NAME[:TAG]`, …): parsing and printing.

export type ImageRef =
  | { transport: 'oci'; path: string; tag?: string }
  | { transport: 'oci-archive'; path: string; tag?: string }
  /** `name` is `NAME:TAG` (RepoTags of the archive). */
  | { transport: 'docker-archive'; path: string; name?: string }
  | { transport: 'docker-daemon'; name: string }
  /** `name` is fully qualified (`docker.io/library/busybox:latest`), as containerd stores it. */
  | { transport: 'containerd'; namespace: string; name: string }
  | { transport: 'containers-storage'; name: string }
  /**
   * An image in a registry, read and written through skopeo (with its default auth file). `name`
   * is `NAME:TAG` as written (`:latest` added when no tag is given, as skopeo does). `tlsVerify`
   * false talks plain HTTP or unverified HTTPS (skopeo's --src/--dest-tls-verify=false); undefined
   * leaves it to skopeo (HTTPS, or registries.conf).
   */
  | { transport: 'docker'; name: string; tlsVerify?: boolean };

export const TRANSPORTS = [
  'oci:DIR[:TAG]',
  'oci-archive:FILE[:TAG]',
  'docker-archive:FILE[:NAME:TAG]',
  'docker-daemon:NAME:TAG',
  'containerd:[NAMESPACE/]NAME:TAG',
  'containers-storage:NAME:TAG',
  'docker://[HOST[:PORT]/]NAME[:TAG]',
] as const;

// Docker's reference grammar (distribution/reference), restricted to NAME:TAG (no digests).
const LABEL = '[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?';
const DOMAIN = `(?:${LABEL}(?:\\.${LABEL})*(?::[0-9]+)?)`;
const COMPONENT = '[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*';
const NAME_TAG = new RegExp(`^((?:${DOMAIN}/)?${COMPONENT}(?:/${COMPONENT})*):([\\w][\\w.-]{0,127})$`);
const NAMESPACE = /^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$/;

/** The first component of a name is a registry when it has a dot or a port, or is `localhost`. */
const isDomain = (c: string) => c.includes('.') || c.includes(':') || c === 'localhost';

/** Splits `NAME:TAG`; undefined when it is not one. */
export function splitNameTag(text: string): { name: string; tag: string } | undefined {
  const m = NAME_TAG.exec(text);
  return m ? { name: m[1]!, tag: m[2]! } : undefined;
}

/** `busybox:1` → `docker.io/library/busybox:1`, the way containerd names what docker pulls. */
export function qualifiedName(nameTag: string): string {
  const slash = nameTag.indexOf('/');
  if (slash > 0 && isDomain(nameTag.slice(0, slash))) return nameTag;
  return slash > 0 ? `docker.io/${nameTag}` : `docker.io/library/${nameTag}`;
}

function malformed(text: string, why: string): never {
  throw new Error(`image reference ${JSON.stringify(text)}: ${why}; supported: ${TRANSPORTS.join(', ')}`);
}

export function parseImageRef(text: string): ImageRef {
  const colon = text.indexOf(':');
  if (colon < 0) malformed(text, 'no transport');
  const transport = text.slice(0, colon);
  const rest = text.slice(colon + 1);
  const nameTag = (s: string): string => {
    if (!splitNameTag(s)) malformed(text, `${JSON.stringify(s)} is not NAME:TAG`);
    return s;
  };
  // Paths end at the first colon, as in skopeo: a path with a colon in it cannot be named.
  const pathAnd = (): [string, string | undefined] => {
    const i = rest.indexOf(':');
    const [path, after] = i < 0 ? [rest, undefined] : [rest.slice(0, i), rest.slice(i + 1)];
    if (path === '') malformed(text, 'the path is empty');
    if (after === '') malformed(text, 'the part after the path is empty');
    return [path, after];
  };
  switch (transport) {
    case 'oci':
    case 'oci-archive': {
      const [path, tag] = pathAnd();
      return tag === undefined ? { transport, path } : { transport, path, tag };
    }
    case 'docker-archive': {
      const [path, name] = pathAnd();
      return name === undefined ? { transport, path } : { transport, path, name: nameTag(name) };
    }
    case 'docker-daemon':
    case 'containers-storage':
      return { transport, name: nameTag(rest) };
    case 'containerd': {
      // `k8s.io/docker.io/library/x:1` has a namespace; `docker.io/library/x:1` and `x:1` do not:
      // a NAMESPACE/ prefix is recognised only before a name that starts with a registry.
      const parts = rest.split('/');
      const hasNamespace = parts.length >= 3 && NAMESPACE.test(parts[0]!) && isDomain(parts[1]!);
      const name = hasNamespace ? parts.slice(1).join('/') : rest;
      return { transport, namespace: hasNamespace ? parts[0]! : 'default', name: qualifiedName(nameTag(name)) };
    }
    case 'docker': {
      // As skopeo names it: docker://NAME[:TAG]; no digests (DEST is written by tag).
      if (!rest.startsWith('//')) malformed(text, 'docker: is followed by //, as in docker://HOST[:PORT]/NAME[:TAG]');
      const ref = rest.slice(2);
      if (splitNameTag(ref)) return { transport, name: ref };
      if (splitNameTag(`${ref}:latest`)) return { transport, name: `${ref}:latest` };
      malformed(text, `${JSON.stringify(ref)} is not [HOST[:PORT]/]NAME[:TAG]`);
    }
    default:
      malformed(text, `unknown transport ${JSON.stringify(transport)}`);
  }
}

export function formatImageRef(ref: ImageRef): string {
  switch (ref.transport) {
    case 'oci':
    case 'oci-archive':
      return `${ref.transport}:${ref.path}${ref.tag === undefined ? '' : `:${ref.tag}`}`;
    case 'docker-archive':
      return `${ref.transport}:${ref.path}${ref.name === undefined ? '' : `:${ref.name}`}`;
    case 'containerd':
      return `containerd:${ref.namespace}/${ref.name}`;
    case 'docker':
      return `docker://${ref.name}`;
    default:
      return `${ref.transport}:${ref.name}`;
  }
}
