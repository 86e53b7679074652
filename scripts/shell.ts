// bin/prebake's flag loops, generated from the tables in src/contract.ts: the case arms between a
// `# >>> runc's global flags` (or `runc create's flags`) line and the next `# <<<`. The build
// rewrites bin/prebake with them; test/argv.test.ts checks the committed file is what this makes.

import { CREATE_FLAGS, type FlagSpec, GLOBAL_FLAGS } from '../src/contract.ts';

// dist/criu.conf's text, for the build.
export { RESTORE_CRIU_CONF } from '../src/contract.ts';

/** Every spelling Go's flag package accepts for a flag, bare (`-f`, `--f`) or with `=value`. */
const spellings = (f: FlagSpec, eq: boolean) => [f.name, ...(f.aliases ?? [])].flatMap((n) => [`--${n}${eq ? '=*' : ''}`, `-${n}${eq ? '=*' : ''}`]).join('|');

/** The `if [ -n "$want" ]` block that stores a flag's value given as the next argument. */
function valueArm(vars: string[], extra = ''): string[] {
  return [
    'if [ -n "$want" ]; then',
    `  case $want in ${[...vars.map((v) => `${v}) ${v}=$a ;;`), extra].filter(Boolean).join(' ')} esac`,
    '  want=; continue',
    'fi',
  ];
}

function globalArms(): string[] {
  const vars = GLOBAL_FLAGS.flatMap((f) => (f.shell ? [f.shell] : []));
  const arms: string[] = [];
  for (const f of GLOBAL_FLAGS) {
    // `--help` is a command to bin/prebake (runc's help, then prebake's); `--version` is Node's.
    if (f.name === 'help') continue;
    if (f.name === 'version') {
      arms.push(`  ${spellings(f, false)}) cmd=--version; break ;;`);
      continue;
    }
    if (f.takesValue) {
      arms.push(`  ${spellings(f, false)}) want=${f.shell ?? 'skip'} ;;`);
      arms.push(`  ${spellings(f, true)}) ${f.shell ? `${f.shell}=\${a#*=} ` : ''};;`);
    } else arms.push(`  ${spellings(f, false)}|${spellings(f, true)}) ;;`);
  }
  return [...valueArm(vars), 'case $a in', ...arms, '  *) cmd=$a; break ;;', 'esac'];
}

function createArms(): string[] {
  const vars = CREATE_FLAGS.flatMap((f) => (f.shell && f.takesValue ? [f.shell] : []));
  const arms: string[] = [];
  for (const f of CREATE_FLAGS) {
    const late = f.early === false ? '; late=1' : '';
    if (f.onRestore === 'refuse') {
      // Refused unless 0 (`--preserve-fds 0` hands nothing on).
      arms.push(`  ${spellings(f, false)}) want=refuse ;;`);
      arms.push(`  ${spellings(f, true)}) [ "\${a#*=}" = 0 ] || refuse=1 ;;`);
    } else if (!f.shell) arms.push(`  ${spellings(f, false)}|${spellings(f, true)}) ;;`);
    else if (f.takesValue) {
      arms.push(`  ${spellings(f, false)}) want=${f.shell}${late} ;;`);
      arms.push(`  ${spellings(f, true)}) ${f.shell}=\${a#*=}${late} ;;`);
    } else {
      arms.push(`  ${spellings(f, false)}) ${f.shell}=1${late} ;;`);
      arms.push(`  ${spellings(f, true)}) ${f.shell}=\${a#*=}${late} ;;`);
    }
  }
  return [
    ...valueArm(vars, 'refuse) [ "$a" = 0 ] || refuse=1 ;;'),
    'case $a in',
    ...arms,
    // A flag this table does not know: the Node program tells runc's error from a restore's.
    '  -*) refuse=1 ;;',
    // The container id; anything after it is runc's usage error.
    '  *) id=$a; [ $i -lt $# ] && refuse=1; break ;;',
    'esac',
  ];
}

const BLOCKS: Record<string, () => string[]> = { "runc's global flags": globalArms, "runc create's flags": createArms };

/** `text` (bin/prebake) with every generated block made anew from src/contract.ts. */
export function generateShell(text: string): string {
  const lines = text.split('\n');
  const out: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    out.push(line);
    const m = /^(\s*)# >>> (.*?) \(generated/.exec(line);
    if (!m) continue;
    const make = BLOCKS[m[2]!];
    if (!make) throw new Error(`bin/prebake: no generator for the block "${m[2]}"`);
    const end = lines.findIndex((l, j) => j > i && /^\s*# <<<$/.test(l));
    if (end < 0) throw new Error(`bin/prebake: the block "${m[2]}" has no end (# <<<)`);
    out.push(...make().map((l) => `${m[1]}${l}`));
    i = end - 1;
  }
  return out.join('\n');
}
