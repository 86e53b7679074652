// Readiness probes and warm-up requests, as given on the command line:
// http:PORT[/PATH], tcp:PORT, log:REGEX, delay:MS.

export type Probe =
  | { kind: 'http'; port: number; path: string }
  | { kind: 'tcp'; port: number }
  | { kind: 'log'; regex: RegExp }
  | { kind: 'delay'; ms: number };

function port(s: string, what: string): number {
  const n = Number(s);
  if (!Number.isInteger(n) || n < 1 || n > 65535) throw new Error(`${what}: ${JSON.stringify(s)} is not a TCP port`);
  return n;
}

export function parseProbe(text: string): Probe {
  const colon = text.indexOf(':');
  const kind = colon === -1 ? text : text.slice(0, colon);
  const arg = colon === -1 ? '' : text.slice(colon + 1);
  switch (kind) {
    case 'http': {
      const slash = arg.indexOf('/');
      return { kind, port: port(slash === -1 ? arg : arg.slice(0, slash), `--ready ${text}`), path: slash === -1 ? '/' : arg.slice(slash) };
    }
    case 'tcp':
      return { kind, port: port(arg, `--ready ${text}`) };
    case 'log':
      if (!arg) throw new Error(`--ready ${text}: log: needs a regular expression`);
      try {
        return { kind, regex: new RegExp(arg) };
      } catch (e) {
        throw new Error(`--ready ${text}: ${(e as Error).message}`);
      }
    case 'delay': {
      const ms = Number(arg);
      if (!Number.isFinite(ms) || ms < 0) throw new Error(`--ready ${text}: delay: needs milliseconds`);
      return { kind, ms };
    }
    default:
      throw new Error(`--ready ${text}: unknown probe "${kind}" (use http:PORT[/PATH], tcp:PORT, log:REGEX or delay:MS)`);
  }
}

export function probeText(p: Probe): string {
  switch (p.kind) {
    case 'http':
      return `http:${p.port}${p.path}`;
    case 'tcp':
      return `tcp:${p.port}`;
    case 'log':
      return `log:${p.regex.source}`;
    case 'delay':
      return `delay:${p.ms}`;
  }
}

export interface WarmupRequest {
  method: string;
  path: string;
  body?: Buffer;
}

/** 'POST /render' or '/path' (GET). */
export function parseWarmupRequest(text: string, body?: Buffer): WarmupRequest {
  const m = /^(?:([A-Z]+)\s+)?(\/\S*)$/.exec(text.trim());
  if (!m) throw new Error(`--warmup-request ${JSON.stringify(text)}: expected "METHOD /path"`);
  return { method: m[1] ?? (body ? 'POST' : 'GET'), path: m[2]!, ...(body ? { body } : {}) };
}
