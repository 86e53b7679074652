// The runtime's logger, in runc's log contract: with `--log F --log-format json` JSON lines with
// string level, msg and time go to F (engines show the last error's msg); text lines otherwise.
// A log file that cannot take a line (no space left) costs the line, never the call (as in runc):
// the line goes to stderr instead.

import { closeSync, openSync, writeSync } from 'node:fs';
import pino, { type Logger } from 'pino';

export type { Logger };

const levelLabel: Record<number, string> = { 10: 'trace', 20: 'debug', 30: 'info', 40: 'warning', 50: 'error', 60: 'fatal' };

/** logrus's text format, as runc writes it: time="…" level=… msg="…" key=value. */
function textLine(json: string): string {
  const o = JSON.parse(json) as Record<string, unknown>;
  const q = (v: unknown) => JSON.stringify(typeof v === 'string' ? v : JSON.stringify(v));
  let line = `time=${q(o.time)} level=${o.level} msg=${q(o.msg)}`;
  for (const [k, v] of Object.entries(o)) if (k !== 'time' && k !== 'level' && k !== 'msg') line += ` ${k}=${q(v)}`;
  return `${line}\n`;
}

/** Writes all of `s` to `fd`; throws if the descriptor does not take it. */
function writeAll(fd: number, s: string): void {
  const buf = Buffer.from(s);
  for (let off = 0; off < buf.length; ) {
    const n = writeSync(fd, buf, off);
    if (n <= 0) throw new Error('short write');
    off += n;
  }
}

function toStderr(s: string, fd = 2): void {
  try {
    writeAll(fd, s);
  } catch {
    /* nowhere left to say it */
  }
}

interface LogOptions {
  file?: string;
  format?: string;
  debug?: boolean;
  /** Where stderr is (the resident program's creates: their caller's; undefined: nowhere). */
  stderr?: number | undefined;
}

/** Per logger: why the --log file could not be opened, or the descriptor it writes to. */
interface Sink {
  openError?: Error;
  fd?: number;
}
const sinks = new WeakMap<Logger, Sink>();

/**
 * Why the --log file given to this logger could not be opened (runc fails the call then, with
 * that reason), or undefined. Such a logger writes to stderr.
 */
export function logFileError(log: Logger): Error | undefined {
  return sinks.get(log)?.openError;
}

/** Closes the --log file of a logger that will write no more (the resident program's, per create). */
export function closeLogger(log: Logger): void {
  const sink = sinks.get(log);
  if (sink?.fd === undefined) return;
  try {
    closeSync(sink.fd);
  } catch {
    /* closed already */
  }
  delete sink.fd;
}

export function createLogger(opts: LogOptions): Logger {
  let fd: number | undefined;
  let openError: Error | undefined;
  if (opts.file) {
    try {
      // runc opens its log the same way: created if missing, appended to.
      fd = openSync(opts.file, 'a', 0o644);
    } catch (e) {
      openError = e as Error;
    }
  }
  const line = (s: string) => (opts.format === 'json' ? s : textLine(s));
  const sink: Sink = openError ? { openError } : fd !== undefined ? { fd } : {};
  const stream = {
    write: (s: string) => {
      // (Through the sink: once closeLogger has closed the file, lines go to stderr.)
      const err = 'stderr' in opts ? opts.stderr : 2;
      if (sink.fd === undefined) return err === undefined ? undefined : toStderr(line(s), err);
      try {
        writeAll(sink.fd, line(s));
      } catch {
        if (err !== undefined) toStderr(line(s), err);
      }
    },
  };
  const log = pino(
    {
      base: undefined,
      // runc's levels are logrus's: without --debug, info and above; on a terminal, warnings only.
      level: opts.debug ? 'debug' : opts.file ? 'info' : 'warn',
      timestamp: () => `,"time":"${new Date().toISOString()}"`,
      formatters: { level: (_label, n) => ({ level: levelLabel[n] ?? String(n) }) },
    },
    stream,
  );
  sinks.set(log, sink);
  return log;
}
