// What bin/prebake and bin/prebake-create.sh take from src/contract.ts, generated between a
// `# >>> <block> (generated` line and the next `# <<<`: the flag loops' case arms (from the flag
// tables) and the names (state files, the hint, the verdict's lines, the Node program's env). The
// build rewrites both scripts; test/argv.test.ts checks the committed files are what this makes.

/** The scripts with generated blocks, relative to the repository. */
export const GENERATED_SCRIPTS = ['bin/prebake', 'bin/prebake-create.sh'];

import { CREATE_FLAGS, EARLY_ENV, type FlagSpec, GLOBAL_FLAGS, HINT_PREFIX, HOST_MOUNTS, RESIDENT_FILES, STATE_FILES, STORE_FILES, VERDICT_LINES } from '../src/contract.ts';

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

/** One line per flag: the bare spelling's arm, then the `=value` spelling's. */
const armPair = (f: FlagSpec, bare: string, eq: string) => `  ${spellings(f, false)}) ${bare} ;; ${spellings(f, true)}) ${eq} ;;`;

function globalArms(): string[] {
  const vars = GLOBAL_FLAGS.flatMap((f) => (f.shell ? [f.shell] : []));
  const arms: string[] = [];
  for (const f of GLOBAL_FLAGS) {
    // `--help` is a command to bin/prebake (runc's help, then prebake's); `--version` is Node's.
    if (f.name === 'help') continue;
    if (f.name === 'version') arms.push(`  ${spellings(f, false)}) cmd=--version; break ;;`);
    else if (f.takesValue) arms.push(armPair(f, `want=${f.shell ?? 'skip'}`, f.shell ? `${f.shell}=\${a#*=}` : ':'));
    else arms.push(armPair(f, ':', ':'));
  }
  return [...valueArm(vars), 'case $a in', ...arms, '  *) cmd=$a; break ;;', 'esac'];
}

function createArms(): string[] {
  const vars = CREATE_FLAGS.flatMap((f) => (f.shell && f.takesValue ? [f.shell] : []));
  const arms = CREATE_FLAGS.map((f) => {
    const late = f.early === false ? '; late=1' : '';
    // Refused unless 0 (`--preserve-fds 0` hands nothing on).
    if (f.onRestore === 'refuse') return armPair(f, 'want=refuse', '[ "${a#*=}" = 0 ] || refuse=1');
    if (!f.shell) return armPair(f, ':', ':');
    return armPair(f, f.takesValue ? `want=${f.shell}${late}` : `${f.shell}=1${late}`, `${f.shell}=\${a#*=}${late}`);
  });
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

/** camelCase to snake_case, for shell variable names. */
const snake = (k: string) => k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

/**
 * bin/prebake-create.sh's names: f_<file> for the state's files, s_<file> for a store entry's, r_<file> for the resident
 * program's, the hint's prefix, n_<word> for
 * the lines a verdict takes (its word included), e_<name> for the environment the Node program
 * reads, k_<mount> and p_<mount> for the host mounts' keys and default paths.
 */
function names(): string[] {
  return [
    Object.entries(STATE_FILES).map(([k, v]) => `f_${snake(k)}=${v}`).join(' '),
    Object.entries(STORE_FILES).map(([k, v]) => `s_${snake(k)}=${v}`).join(' '),
    Object.entries(RESIDENT_FILES).map(([k, v]) => `r_${snake(k)}=${v}`).join(' '),
    `hint=${HINT_PREFIX}`,
    Object.entries(VERDICT_LINES).map(([k, v]) => `n_${k}=${v + 1}`).join(' '),
    Object.entries(EARLY_ENV).map(([k, v]) => `e_${snake(k)}=${v}`).join(' '),
    Object.entries(HOST_MOUNTS).map(([k, v]) => `k_${snake(k)}=${v.key} p_${snake(k)}=${v.path}`).join(' '),
  ];
}

const BLOCKS: Record<string, () => string[]> = {
  "runc's global flags": globalArms,
  "runc create's flags": createArms,
  'the names of src/contract.ts': names,
  'the state files bin/prebake reads': () => [`f_restored=${STATE_FILES.restored} f_lazy_pid=${STATE_FILES.lazyPid} f_criu_work=${STATE_FILES.criuWork}`],
};

/** `text` (one of GENERATED_SCRIPTS) with every generated block made anew from src/contract.ts. */
export function generateShell(text: string): string {
  const lines = text.split('\n');
  const out: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    out.push(line);
    const m = /^(\s*)# >>> (.*?) \(generated/.exec(line);
    if (!m) continue;
    const make = BLOCKS[m[2]!];
    if (!make) throw new Error(`no generator for the block "${m[2]}"`);
    const end = lines.findIndex((l, j) => j > i && /^\s*# <<<$/.test(l));
    if (end < 0) throw new Error(`the block "${m[2]}" has no end (# <<<)`);
    out.push(...make().map((l) => `${m[1]}${l}`));
    i = end - 1;
  }
  return out.join('\n');
}
