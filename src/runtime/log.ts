// The runtime's logger, in runc's log contract: with `--log F --log-format json` JSON lines with
// string level, msg and time go to F (engines show the last error's msg); text lines otherwise.

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

export interface LogOptions {
  file?: string;
  format?: string;
  debug?: boolean;
}

export function createLogger(opts: LogOptions): Logger {
  const fd = opts.file ? pino.destination({ dest: opts.file, sync: true, append: true, mkdir: false }) : pino.destination({ fd: 2, sync: true });
  const stream = opts.format === 'json' ? fd : { write: (s: string) => fd.write(textLine(s)) };
  return pino(
    {
      base: undefined,
      // runc's levels are logrus's: without --debug, info and above; on a terminal, warnings only.
      level: opts.debug ? 'debug' : opts.file ? 'info' : 'warn',
      timestamp: () => `,"time":"${new Date().toISOString()}"`,
      formatters: { level: (_label, n) => ({ level: levelLabel[n] ?? String(n) }) },
    },
    stream,
  );
}
