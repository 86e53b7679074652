// runc's command-line grammar: a parser, for the flag tables of src/contract.ts, that keeps every
// argument's original spelling.

import { type FlagSpec, GLOBAL_FLAGS } from '../contract.ts';

export interface ParsedFlag {
  name: string;
  /** `true` for a boolean flag given without a value. */
  value: string | true;
  /** The argument(s) exactly as given. */
  raw: string[];
}

export interface ParsedArgs {
  flags: ParsedFlag[];
  /** The arguments after the flags (the command, or the command's positional args). */
  rest: string[];
}

function lookup(table: readonly FlagSpec[], name: string): FlagSpec | undefined {
  return table.find((f) => f.name === name || f.aliases?.includes(name));
}

/**
 * Parses flags the way Go's flag package does: `-f`, `--f`, `-f=v`, `--f=v`, `-f v`;
 * stops at the first non-flag argument or after `--`. Unknown flags are an error.
 */
export function parseFlags(table: readonly FlagSpec[], argv: readonly string[], what: string): ParsedArgs {
  const flags: ParsedFlag[] = [];
  let i = 0;
  while (i < argv.length) {
    const arg = argv[i]!;
    if (arg === '--') {
      i++;
      break;
    }
    if (!arg.startsWith('-') || arg === '-') break;
    const body = arg.replace(/^--?/, '');
    const eq = body.indexOf('=');
    const name = eq === -1 ? body : body.slice(0, eq);
    const spec = lookup(table, name);
    if (!spec) throw new Error(`${what}: flag provided but not defined: -${name}`);
    if (eq !== -1) {
      flags.push({ name: spec.name, value: body.slice(eq + 1), raw: [arg] });
      i++;
    } else if (spec.takesValue) {
      const value = argv[i + 1];
      if (value === undefined) throw new Error(`${what}: flag needs an argument: -${name}`);
      flags.push({ name: spec.name, value, raw: [arg, value] });
      i += 2;
    } else {
      flags.push({ name: spec.name, value: true, raw: [arg] });
      i++;
    }
  }
  return { flags, rest: argv.slice(i) };
}

export function flagValue(parsed: ParsedArgs, name: string): string | undefined {
  const f = parsed.flags.findLast((x) => x.name === name);
  if (!f) return undefined;
  return f.value === true ? 'true' : f.value;
}

export function flagIsSet(parsed: ParsedArgs, name: string): boolean {
  const v = flagValue(parsed, name);
  return v !== undefined && v !== 'false' && v !== '0';
}

export interface RuntimeCall {
  global: ParsedArgs;
  command: string | undefined;
  /** Arguments after the command name. */
  args: string[];
}

export function parseRuntimeCall(argv: readonly string[]): RuntimeCall {
  const global = parseFlags(GLOBAL_FLAGS, argv, 'runc');
  const [command, ...args] = global.rest;
  return { global, command, args };
}
