// Provenance of checkpoints: ed25519 signatures over manifest.json (which carries every
// checkpoint file's sha256), the bake key that makes them and the host's trust store that
// decides which keys count. A key is named by its id: the sha256 of its public key (SPKI DER).

import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject, sign, verify } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

/** Beside manifest.json in every checkpoint directory. */
export const SIGNATURE_FILE = 'manifest.sig';
/** A signature file larger than this is refused unread. */
export const SIGNATURE_MAX_BYTES = 4096;
export const DEFAULT_KEY = '/etc/prebake/keys/bake.key';
export const DEFAULT_TRUST_DIR = '/etc/prebake/trust';

interface Signature {
  format: 1;
  alg: 'ed25519';
  keyId: string;
  /** base64 of the ed25519 signature over the exact bytes of manifest.json. */
  signature: string;
}

export function keyIdOf(key: KeyObject): string {
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  return createHash('sha256').update(pub.export({ type: 'spki', format: 'der' })).digest('hex');
}

/** The first 16 hex digits of a key id, as logs and listings show it. */
export const shortId = (keyId: string) => keyId.slice(0, 16);

function writePrivate(file: string, text: string, mode: number): void {
  mkdirSync(dirname(file), { recursive: true, mode: 0o755 });
  writeFileSync(`${file}.tmp`, text, { mode });
  chmodSync(`${file}.tmp`, mode);
  renameSync(`${file}.tmp`, file);
}

/** Writes a new ed25519 key pair: `keyFile` (PKCS#8 PEM, 0600) and `keyFile` with .pub (SPKI PEM). */
export function generateKey(keyFile: string): { keyId: string; publicFile: string } {
  if (existsSync(keyFile)) throw new Error(`${keyFile} exists already: remove it first to replace the key`);
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const publicFile = publicFileOf(keyFile);
  writePrivate(keyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, 0o600);
  writePrivate(publicFile, publicKey.export({ type: 'spki', format: 'pem' }) as string, 0o644);
  return { keyId: keyIdOf(publicKey), publicFile };
}

export const publicFileOf = (keyFile: string) => `${keyFile.replace(/\.key$/, '')}.pub`;

export function loadSigningKey(keyFile: string): KeyObject {
  let text: string;
  try {
    text = readFileSync(keyFile, 'utf8');
  } catch (e) {
    throw new Error(`cannot read the bake key ${keyFile} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}): create one with 'prebake key generate', or name one with --key`);
  }
  const key = createPrivateKey(text);
  if (key.asymmetricKeyType !== 'ed25519') throw new Error(`${keyFile} is not an ed25519 key`);
  return key;
}

function signManifestBytes(manifest: Buffer, key: KeyObject): Signature {
  return { format: 1, alg: 'ed25519', keyId: keyIdOf(key), signature: sign(null, manifest, key).toString('base64') };
}

/** Signs dir/manifest.json into dir/manifest.sig. */
export function signCheckpoint(dir: string, key: KeyObject): Signature {
  const sig = signManifestBytes(readFileSync(join(dir, 'manifest.json')), key);
  writeFileSync(join(dir, SIGNATURE_FILE), `${JSON.stringify(sig)}\n`);
  return sig;
}

function parseSignature(text: string): Signature {
  let s: unknown;
  try {
    s = JSON.parse(text);
  } catch {
    throw new Error(`${SIGNATURE_FILE} is not valid JSON`);
  }
  const o = s as Partial<Signature>;
  if (!o || o.format !== 1 || o.alg !== 'ed25519' || typeof o.keyId !== 'string' || !/^[0-9a-f]{64}$/.test(o.keyId) || typeof o.signature !== 'string')
    throw new Error(`${SIGNATURE_FILE} is not a prebake ed25519 signature (format 1)`);
  return o as Signature;
}

/** The keys a host trusts: every *.pub (SPKI PEM) file in the trust directory, by key id. */
export function loadTrustStore(dir: string): Map<string, KeyObject> {
  const keys = new Map<string, KeyObject>();
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return keys;
  }
  for (const name of names.filter((n) => n.endsWith('.pub')).sort()) {
    try {
      const key = createPublicKey(readFileSync(join(dir, name), 'utf8'));
      if (key.asymmetricKeyType === 'ed25519') keys.set(keyIdOf(key), key);
    } catch {
      /* not a public key: not trusted */
    }
  }
  return keys;
}

/**
 * Checks `sigText` over `manifest` against the trusted keys; returns the signing key's id.
 * Throws `checkpoint not signed by a trusted key (…)` otherwise.
 */
export function verifyManifestSignature(manifest: Buffer, sigText: string | null, trusted: ReadonlyMap<string, KeyObject>): string {
  if (sigText === null) throw new Error('checkpoint not signed by a trusted key (no signature)');
  const sig = parseSignature(sigText);
  const key = trusted.get(sig.keyId);
  if (!key) throw new Error(`checkpoint not signed by a trusted key (key id ${shortId(sig.keyId)} is not in the trust store)`);
  if (!verify(null, manifest, key, Buffer.from(sig.signature, 'base64')))
    throw new Error(`checkpoint not signed by a trusted key (the signature by key id ${shortId(sig.keyId)} does not match manifest.json)`);
  return sig.keyId;
}

/** Adds a public key (PEM file) to the trust store as <key id>.pub; returns its id. */
export function trustAdd(dir: string, publicKeyFile: string): string {
  const key = createPublicKey(readFileSync(publicKeyFile, 'utf8'));
  if (key.asymmetricKeyType !== 'ed25519') throw new Error(`${publicKeyFile} is not an ed25519 public key`);
  const id = keyIdOf(key);
  writePrivate(join(dir, `${id}.pub`), key.export({ type: 'spki', format: 'pem' }) as string, 0o644);
  return id;
}

/** Removes every trusted key whose id starts with `prefix` (at least 8 hex digits); returns their ids. */
export function trustRemove(dir: string, prefix: string): string[] {
  if (!/^[0-9a-f]{8,64}$/.test(prefix)) throw new Error(`${JSON.stringify(prefix)} is not a key id (8 to 64 hex digits)`);
  const gone = [...loadTrustStore(dir).keys()].filter((id) => id.startsWith(prefix));
  for (const name of readdirSync(dir).filter((n) => n.endsWith('.pub'))) {
    try {
      if (gone.includes(keyIdOf(createPublicKey(readFileSync(join(dir, name), 'utf8'))))) rmSync(join(dir, name));
    } catch {
      /* not a key */
    }
  }
  return gone;
}
