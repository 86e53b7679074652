// What the parts of prebake agree on, in one place: the names an image and an engine's spec use,
// the files of a container's state, the verdict the Node program hands bin/prebake, and runc's
// flags with what a restore does with each. bin/prebake's flag loops and the names
// bin/prebake-create.sh uses are generated from here (scripts/shell.ts, run by the build; a test
// checks the committed scripts match).

/** The annotation that names a container's checkpoint (a path inside its rootfs). */
export const CHECKPOINT_ANNOTATION = 'io.prebake.checkpoint';
/** The env variable that names it, or turns it off (`off`). */
export const CHECKPOINT_ENV = 'PREBAKE_CHECKPOINT';
/** Where prebake-build puts the checkpoint in an image, and what images name by default. */
export const IMAGE_CHECKPOINT_PATH = '/.prebake';
/** In a probe container's env: copy its spec for prebake-build (runtime/capture.ts). */
export const CAPTURE_ENV = 'PREBAKE_CAPTURE_SPEC';
/** The signal sent to a restored process so it renews what must differ per replica. */
export const RESTORE_SIGNAL_ANNOTATION = 'io.prebake.restore-signal';
export const RESTORE_SIGNAL_ENV = 'PREBAKE_RESTORE_SIGNAL';
/**
 * Beside a checkpoint's manifest.json, an empty file named this plus the manifest's sha256: the
 * shell finds the verified store's entry by it without reading the manifest.
 */
export const HINT_PREFIX = 'manifest.json.sha256-';

/**
 * A container's state, <state base><runc root>/<id> (runtime/config.ts): what bin/prebake makes
 * before runc restores, and the files in it.
 */
export const STATE_FILES = {
  /** Empty; its presence makes the engine's `start` a no-op (the container runs already). */
  restored: 'restored',
  /** CRIU's work dir (runc restore --work-path), with CRIU's restore.log. */
  criuWork: 'criu',
  criuLog: 'criu/restore.log',
  /** runc's JSON log of the restore. */
  runcLog: 'runc-restore.log',
  /** The restored init's pid, when the create names no pid file. */
  pid: 'pid',
  /** The FIFO the verdict comes on. */
  verdict: 'verdict',
  /** The FIFO the shell sends runc's pid and start stamp on, after a `restore` verdict. */
  go: 'go',
  /** CRIU's config (`leave-stopped`: nothing restored runs before the verdict), when
   *  dist/criu.conf does not say so. */
  criuConf: 'criu.conf',
  /** The pid of CRIU's lazy-pages daemon, for a checkpoint restored lazily. */
  lazyPid: 'lazy-pages.pid',
  /** A create handed to the resident verdict program: its working directory, environment and
   *  argv, each ended by a NUL, the environment's end marked by an empty one. */
  request: 'request',
} as const;

/**
 * In the state base: the resident verdict program (runtime/resident.ts), which gives the verdicts
 * of every create the shell hands it, so that a create pays no Node start. `fifo`: where the shell
 * writes a request's state dir (a line); `pid`: "<pid> <start time> <dist dir>" of the program
 * reading it, there only while it reads (a shell uses it only if that dist dir is its own).
 */
export const RESIDENT_FILES = {
  fifo: 'resident',
  pid: 'resident.pid',
} as const;

/**
 * The files of an entry of the verified store (checkpoint/store.ts) besides the checkpoint, its
 * manifest and signature.
 */
export const STORE_FILES = {
  /** Written last: the entry is whole. Its first line is the signing key's id, which the shell checks is still trusted. */
  ok: 'ok',
  /** Empty; there when the manifest says the checkpoint is restored lazily (memory.restore). */
  lazyPages: 'lazy-pages',
} as const;

/**
 * Read-only tmpfs of the host that a restore binds into the container where runc mounted a tmpfs
 * of its own, so that CRIU need not recreate them from the checkpoint (each a tar.gz, ~3 ms): the
 * key the bake gives such a mount (CRIU's `external mnt[<mount point>]:<key>`) and the host path
 * dist/criu.conf maps the key to. `mask`: every masked directory (runc's read-only, empty tmpfs);
 * `cgroupV1`: /sys/fs/cgroup under cgroup v1 (runc's tmpfs holding one directory per controller,
 * which the host's holds too). bin/prebake-create.sh mounts them when they are missing, at the
 * paths dist/criu.conf names, whatever PREBAKE_STATE_DIR says.
 */
export const HOST_MOUNTS = {
  mask: { key: 'prebake-mask', path: '/run/prebake/mask' },
  cgroupV1: { key: 'prebake-cgroup-v1', path: '/run/prebake/cgroup-v1' },
} as const;

/**
 * CRIU's config for every restore (dist/criu.conf, CRIU_CONFIG_FILE): the restored tasks stay
 * stopped until the runtime has checked them (`leave-stopped`, the first line: the shell reads
 * it), and the host mounts the bake's external mounts are bound from.
 */
export const RESTORE_CRIU_CONF = ['leave-stopped', ...Object.values(HOST_MOUNTS).map((m) => `external mnt[${m.key}]:${m.path}`)].join('\n') + '\n';

/**
 * The environment bin/prebake gives the Node program: for a restore it started, the state dir,
 * the image dir runc restores from, runc's pid and CLOCK_MONOTONIC (ns) when runc started; the
 * pid of bin/prebake as the engine started it (the create's caller waits for that process); and
 * `go` when, after a `restore` verdict, the Node program is to read "<runc pid> <start stamp>" on
 * its stdin (the FIFO `go` of the state) and check that restore itself.
 */
export const EARLY_ENV = {
  state: 'PREBAKE_EARLY',
  image: 'PREBAKE_EARLY_IMAGE',
  runc: 'PREBAKE_EARLY_RUNC',
  t0: 'PREBAKE_EARLY_T0',
  caller: 'PREBAKE_CALLER',
  /** The caller's start time (/proc/<pid>/stat): the resident program acts for it only while its pid names it. */
  callerStart: 'PREBAKE_CALLER_START',
  go: 'PREBAKE_GO',
  /** Why the resident verdict program passed this create on (its `pass` verdict), for the log. */
  passed: 'PREBAKE_PASSED',
  /** runc's exit status, when the shell has reaped runc already. */
  status: 'PREBAKE_EARLY_STATUS',
  /** bin/prebake's subshell's pid (runc's parent): runc may be gone, reaped by it, when the Node program looks. */
  shell: 'PREBAKE_EARLY_SHELL',
} as const;

/**
 * The Node program's verdict, on its stdout: a word, then a fixed number of lines (read, never
 * evaluated); then it exits, or after `restore` on its channel (EARLY_ENV.go), waits for the
 * restore to check and gives a second verdict. bin/prebake executes it.
 * - accept: resume what runc restored (the Node program has logged it). Lines: the restore
 *   signal's number (or empty), "1" if the loopback must be brought up, the hostname to set (or
 *   empty), the restored init's start time (/proc/<pid>/stat: the shell acts on the pid only
 *   while it names that process).
 * - restore: clear away any restore under way, then restore from the image dir on the next line
 *   (in the verified store) and ask again.
 * - cold: clear away any restore under way (unlocking CRIU's network lock in the netns path on
 *   the next line, if any), then exec `runc create` with the caller's argv and descriptors.
 * - abandon: the engine has given up on the create (killed bin/prebake): clear away, log it,
 *   create nothing. The next line is as cold's.
 * - pass: the resident verdict program does not answer this create (the next line says why):
 *   ask a one-shot program, about the restore under way if there is one.
 */
export const VERDICT_LINES = { accept: 4, restore: 1, cold: 1, abandon: 1, pass: 1 } as const;
export type VerdictWord = keyof typeof VERDICT_LINES;

export interface FlagSpec {
  /** Long name without dashes; Go's flag package also accepts one dash and `=value`. */
  name: string;
  takesValue: boolean;
  aliases?: string[];
  /** The shell variable bin/prebake keeps the value in (or sets to 1, for a boolean). */
  shell?: string;
}

/** runc's global flags (runc 1.1). `help` and `version` are commands to bin/prebake. */
export const GLOBAL_FLAGS: readonly FlagSpec[] = [
  { name: 'debug', takesValue: false },
  { name: 'log', takesValue: true, shell: 'log' },
  { name: 'log-format', takesValue: true, shell: 'logfmt' },
  { name: 'root', takesValue: true, shell: 'root' },
  { name: 'criu', takesValue: true, shell: 'criu' },
  { name: 'systemd-cgroup', takesValue: false },
  { name: 'rootless', takesValue: true },
  { name: 'help', takesValue: false, aliases: ['h'] },
  { name: 'version', takesValue: false, aliases: ['v'] },
];

/**
 * `runc create` flags and what a restore does with each: `map` (runc restore takes it), `drop`
 * (nothing to do: a restored process has it already), `refuse` (a restore cannot honour it,
 * unless its value is 0: cold start). `early: false`: bin/prebake starts no restore before the
 * Node program has checked the checkpoint (a console socket takes one connection, which a
 * refused restore would use up).
 */
export const CREATE_FLAGS: readonly (FlagSpec & { onRestore: 'map' | 'drop' | 'refuse'; early?: false })[] = [
  { name: 'bundle', takesValue: true, aliases: ['b'], onRestore: 'map', shell: 'bundle' },
  { name: 'console-socket', takesValue: true, onRestore: 'map', shell: 'console', early: false },
  { name: 'pid-file', takesValue: true, onRestore: 'map', shell: 'pidfile' },
  { name: 'no-pivot', takesValue: false, onRestore: 'map', shell: 'nopivot' },
  // A restored process already holds its session keyring.
  { name: 'no-new-keyring', takesValue: false, onRestore: 'drop' },
  // Descriptors handed to a new process cannot be given to a restored one: cold start.
  { name: 'preserve-fds', takesValue: true, onRestore: 'refuse' },
  // runc >= 1.2 sends a pidfd of the new process; restore has no such flag: cold start.
  { name: 'pidfd-socket', takesValue: true, onRestore: 'refuse' },
];
