// The resident verdict program: one Node process per state base that gives the verdicts of the
// creates bin/prebake-create.sh hands it, so that a create pays no Node start (~45 ms of CPU
// beside runc and CRIU, and most of a burst's). The shell starts it, detached, when none answers
// (`node dist/prebake.cjs --prebake-resident <state base> <dist>`); a create it did not answer
// goes to a one-shot program, as before there was one. It reads the state dir of a create (a
// line) on the FIFO <base>/resident and answers on that state's FIFOs exactly as a one-shot
// program answers on its stdout and stdin. It answers only a create whose caller shares its
// mount, pid and user namespaces and its root; it leaves a create unanswered (the shell asks a
// one-shot program) once its own code in dist/ has changed, and then goes. It goes after IDLE_MS
// without a create, and when its FIFO or its pid file is no longer its own; and on an error no
// create caught, which it first writes to <base>/resident.err (its stderr is /dev/null).

import { spawn, spawnSync } from 'node:child_process';
import { closeSync, constants, existsSync, fstatSync, linkSync, lstatSync, mkdirSync, openSync, readdirSync, readFileSync, realpathSync, renameSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import net from 'node:net';
import { join, resolve } from 'node:path';
import { EARLY_ENV, RESIDENT_FILES, STATE_FILES } from '../contract.ts';
import { mountInfo } from '../lib/mountinfo.ts';
import { fileId, procStat } from '../lib/proc.ts';
import { parseRuntimeCall } from './argv.ts';
import { loadRuntimeConfig } from './config.ts';
import { answerCreate, type Pause, type VerdictIo } from './create.ts';

/** Without a create for this long, it goes (the next create is a one-shot one and starts it again). */
const IDLE_MS = 10 * 60_000;
/** After it no longer announces itself: a shell that found it just before is still answered. */
const GRACE_MS = 2000;
/** How long a shell may take to open its verdict FIFO after its request (the request file there). */
const OPEN_MS = 120_000;
/** How long the shell may take to send runc's pid after a `restore` verdict. */
const GO_MS = 60_000;
/** A request file larger than this is no create's. */
const REQUEST_MAX = 1 << 20;
/** Where its uncaught errors go, in its state base, kept under ERR_MAX bytes (begun anew above). */
export const ERR_FILE = 'resident.err';
const ERR_MAX = 64 * 1024;

/**
 * Writes an error no create caught to <base>/resident.err: when, which program, the stack (its
 * control characters but the newline escaped, at most ERR_MAX / 4 bytes). Never through a
 * symlink; begun anew once it would pass ERR_MAX.
 */
export function noteError(base: string, e: unknown): void {
  const file = join(base, ERR_FILE);
  const text = (e instanceof Error ? (e.stack ?? e.message) : String(e)).slice(0, ERR_MAX / 4).replace(/[\x00-\x09\x0b-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
  const line = `${new Date().toISOString()} resident program ${process.pid}: ${text.replace(/\n(?=\d{4}-)/g, '\n ')}\n`;
  let fd: number | undefined;
  try {
    const anew = (lstatSync(file, { throwIfNoEntry: false })?.size ?? 0) + Buffer.byteLength(line) > ERR_MAX;
    fd = openSync(file, constants.O_WRONLY | constants.O_CREAT | constants.O_NOFOLLOW | (anew ? constants.O_TRUNC : constants.O_APPEND), 0o600);
    writeSync(fd, line);
  } catch {
    /* no room: the error is lost, the program goes all the same */
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** Set for the resident program its starter started (see leaveCallersBehind). */
const RESPAWNED = 'PREBAKE_RESIDENT_RESPAWNED';

const pause: Pause = (ms) => new Promise((r) => setTimeout(r, ms));

/** A file's identity: device, inode, size and mtime ('' if it is not there). */
function identity(path: string): string {
  try {
    const st = statSync(path);
    return `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}`;
  } catch {
    return '';
  }
}

/**
 * What the resident program must not keep of the create that started it: descriptors it
 * inherited (a pipe or socket of the engine's) and the create's cgroup (a pod's or a container's
 * scope, whose end would end it). Node marks the descriptors it inherits close-on-exec, so the
 * program the shell started starts the resident one anew, detached, with nothing but /dev/null
 * (respawn), which closes any it still has that are not close-on-exec (beyond Node's reach) and
 * moves to the root of each cgroup hierarchy (its mount point from mountinfo).
 */
function leaveCallersBehind(): void {
  for (const n of readdirSync('/proc/self/fd')) {
    const fd = Number(n);
    if (fd <= 2) continue;
    try {
      const flags = /^flags:\s*(\d+)/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))?.[1];
      if (flags !== undefined && (parseInt(flags, 8) & 0o2000000) === 0) closeSync(fd);
    } catch {
      /* closed meanwhile (the directory's own) */
    }
  }
  try {
    const mounts = mountInfo();
    for (const line of readFileSync('/proc/self/cgroup', 'utf8').trim().split('\n')) {
      const controllers = line.split(':')[1] ?? '';
      const m = controllers
        ? mounts.find((x) => x.fsType === 'cgroup' && controllers.split(',').every((c) => x.superOpts.includes(c)))
        : mounts.find((x) => x.fsType === 'cgroup2');
      try {
        // (r+: never made where it is not a cgroup's file.)
        if (m) writeFileSync(join(m.mountPoint, 'cgroup.procs'), String(process.pid), { flag: 'r+' });
      } catch {
        /* not this one */
      }
    }
  } catch {
    /* no cgroups */
  }
}

/** Whether "<pid> <start time> ..." (a pid file's) names a live process (a zombie is not). */
export function alive(who: string): boolean {
  const [pid, start] = who.trim().split(' ');
  const st = pid && /^\d+$/.test(pid) ? procStat(Number(pid)) : undefined;
  return st !== undefined && st.startTime === start && st.state !== 'Z' && st.state !== 'X';
}

/**
 * The creates a resident program before this one took and never answered (it was killed): each
 * shell still waiting in the open of its verdict FIFO (under `base`, a request older than
 * `since`) is told to ask a one-shot program. The host mounts and captures are not walked.
 */
function releaseOrphans(base: string, since: number, depth = 0): void {
  if (depth > 12) return;
  let names: string[];
  try {
    names = readdirSync(base);
  } catch {
    return;
  }
  if (names.includes(STATE_FILES.request) && names.includes(STATE_FILES.verdict)) {
    try {
      const st = lstatSync(join(base, STATE_FILES.request));
      // (A request the shell emptied was passed on already: a one-shot program answers it.)
      if (st.mtimeMs < since && st.size > 0) {
        const fd = openSync(join(base, STATE_FILES.verdict), constants.O_WRONLY | constants.O_NONBLOCK | constants.O_NOFOLLOW);
        try {
          if (fstatSync(fd).isFIFO()) writeSync(fd, 'pass\nthe resident program that took it went before it answered\n');
        } finally {
          closeSync(fd);
        }
      }
    } catch {
      /* no shell waits there */
    }
  }
  for (const n of names) {
    if (depth === 0 && (n === 'mask' || n === 'cgroup-v1' || n === 'captures')) continue;
    const p = join(base, n);
    try {
      if (lstatSync(p).isDirectory()) releaseOrphans(p, since, depth + 1);
    } catch {
      /* gone meanwhile */
    }
  }
}

/** Whether process `pid` sees the files and processes this one sees: the same mount, pid and user namespaces, and root. */
function sameWorld(pid: number): boolean {
  try {
    return ['ns/mnt', 'ns/pid', 'ns/user', 'root'].every((p) => fileId(`/proc/${pid}/${p}`) === fileId(`/proc/self/${p}`));
  } catch {
    return false;
  }
}

interface Request {
  /** The shell's $PWD (its directory is taken from /proc/<caller>/cwd). */
  cwd: string;
  env: Record<string, string>;
  argv: string[];
}

/** The request file of a state dir: root's, a regular file, NUL-ended fields (see STATE_FILES.request). */
function readRequest(file: string): Request | undefined {
  const st = lstatSync(file);
  if (!st.isFile() || st.uid !== 0 || st.size > REQUEST_MAX) return undefined;
  const f = readFileSync(file, 'utf8').split('\0');
  const end = f.indexOf('', 1);
  if (f.length < 3 || end < 0 || f[f.length - 1] !== '') return undefined;
  const env: Record<string, string> = {};
  for (const kv of f.slice(1, end)) {
    const i = kv.indexOf('=');
    if (i > 0) env[kv.slice(0, i)] = kv.slice(i + 1);
  }
  return { cwd: f[0]!, env, argv: f.slice(end + 1, -1) };
}

/**
 * Opens FIFO `path` for writing once its reader is there: the shell opens it right after its
 * request and waits in that open, so this waits as long as the request is there (up to
 * OPEN_MS): a shell that comes late must not wait for a writer that gave up. A descriptor, or
 * undefined.
 */
async function openWriter(path: string, request: string): Promise<number | undefined> {
  const deadline = performance.now() + OPEN_MS;
  for (let look = 0; ; look++) {
    try {
      const fd = openSync(path, constants.O_WRONLY | constants.O_NONBLOCK | constants.O_NOFOLLOW);
      if (fstatSync(fd).isFIFO()) return fd;
      closeSync(fd);
      return undefined;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENXIO' || performance.now() > deadline || !existsSync(request)) return undefined;
    }
    await pause(look < 100 ? 1 : 20);
  }
}

/** A line from FIFO descriptor `fd` (to its newline or the writer's close); '' if none comes within `ms`. */
function lineFrom(fd: number, ms: number): Promise<string> {
  return new Promise((done) => {
    const sock = new net.Socket({ fd, readable: true, writable: false });
    let text = '';
    const finish = () => {
      clearTimeout(timer);
      sock.destroy();
      done(text);
    };
    const timer = setTimeout(finish, ms);
    sock.on('data', (d) => {
      text += d.toString('utf8');
      if (text.includes('\n')) finish();
    });
    sock.on('end', finish);
    sock.on('error', finish);
  });
}

export async function resident(baseArg: string | undefined, dist: string | undefined): Promise<number> {
  if (process.getuid?.() !== 0 || !baseArg || !dist) return 2;
  if (process.env[RESPAWNED] !== '1') {
    spawn(process.execPath, [join(dist, 'prebake.cjs'), '--prebake-resident', baseArg, dist], {
      detached: true,
      stdio: 'ignore',
      cwd: '/',
      env: { ...process.env, [RESPAWNED]: '1' },
    }).unref();
    return 0;
  }
  delete process.env[RESPAWNED];
  const base = resolve(baseArg);
  process.chdir('/');
  process.umask(0o022);
  const code = () => ['prebake.cjs', 'prebake.blob'].map((f) => identity(join(dist, f))).join('|');
  const codeAtStart = code();
  // (With the dist dir as the shell names it: a shell of another install does not use it.)
  const me = `${process.pid} ${procStat(process.pid)?.startTime} ${dist}`;
  const fifo = join(base, RESIDENT_FILES.fifo);
  const pidFile = join(base, RESIDENT_FILES.pid);

  mkdirSync(base, { recursive: true, mode: 0o700 });
  const realBase = realpathSync(base);
  leaveCallersBehind();

  // Announced by the pid file, made by link(2) so that of two starting at once one stays; a
  // pid file of a process that is gone is replaced. The FIFO only after: the loser never touches it.
  const tmp = `${pidFile}.${process.pid}`;
  writeFileSync(tmp, `${me}\n`, { mode: 0o600 });
  let announced = false;
  const since = Date.now();
  for (let i = 0; i < 2 && !announced; i++) {
    try {
      linkSync(tmp, pidFile);
      announced = true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') break;
      let other = '';
      try {
        other = readFileSync(pidFile, 'utf8');
      } catch {
        /* gone meanwhile */
      }
      if (alive(other)) break;
      rmSync(pidFile, { force: true });
    }
  }
  rmSync(tmp, { force: true });
  if (!announced) return 0;

  // The FIFO (made by mkfifo(1): Node cannot), root's and no one else's, made anew under another
  // name and renamed into place (until then a shell finds none and asks a one-shot program: a
  // line written into an old one would be read by no one). Held open for reading and writing:
  // no EOF when a shell closes it, no block for a shell that opens it.
  const fresh = `${fifo}.${process.pid}`;
  rmSync(fifo, { force: true });
  rmSync(fresh, { force: true });
  spawnSync('mkfifo', ['-m', '600', fresh], { stdio: 'ignore' });
  let fd: number;
  try {
    const st = lstatSync(fresh);
    if (!st.isFIFO() || st.uid !== 0 || (st.mode & 0o077) !== 0) throw new Error('not our FIFO');
    fd = openSync(fresh, constants.O_RDWR | constants.O_NONBLOCK);
    renameSync(fresh, fifo);
  } catch {
    rmSync(fresh, { force: true });
    rmSync(pidFile, { force: true });
    return 1;
  }
  const fifoId = fileId(`/proc/self/fd/${fd}`);
  /** Whether the FIFO at its path is still the one it reads. */
  const fifoIsOurs = () => {
    try {
      return fileId(fifo) === fifoId;
    } catch {
      return false;
    }
  };
  releaseOrphans(base, since);

  let inFlight = 0;
  let last = performance.now();
  let retiring = false;
  let exit: (code: number) => void = () => {};
  const finished = new Promise<number>((r) => (exit = r));
  const announcedStill = () => {
    try {
      return readFileSync(pidFile, 'utf8') === `${me}\n`;
    } catch {
      return false;
    }
  };
  const retire = () => {
    if (retiring) return;
    retiring = true;
    // Found no more (pid file and FIFO gone, if still its own); the lines already written into
    // the FIFO are still read and answered until the end.
    if (announcedStill()) rmSync(pidFile, { force: true });
    if (fifoIsOurs()) rmSync(fifo, { force: true });
    const end = () => (inFlight === 0 ? exit(0) : setTimeout(end, 100));
    setTimeout(end, GRACE_MS);
  };
  const check = setInterval(() => {
    if (!fifoIsOurs() || !announcedStill() || code() !== codeAtStart || (inFlight === 0 && performance.now() - last > IDLE_MS)) retire();
  }, 5000);
  check.unref();
  process.on('uncaughtException', (e) => {
    noteError(base, e);
    retire();
    // (A create the error left unanswered would hold it for ever: it goes all the same, and the
    // shells at the end of their verdict FIFOs ask one-shot programs; those whose requests it
    // has not taken yet, sent before it went, are told to.)
    const wentAt = Date.now();
    setTimeout(() => {
      releaseOrphans(base, wentAt);
      exit(1);
    }, GRACE_MS + 1000);
  });
  // (Stopped by hand, or by `npm test` at its end: as when idle.)
  process.on('SIGTERM', retire);

  const serve = async (dir: string) => {
    inFlight++;
    last = performance.now();
    let vfd: number | undefined;
    let gfd: number | undefined;
    let efd: number | undefined;
    let wrote = false;
    try {
      const stale = code() !== codeAtStart;
      if (stale) retire();
      vfd = await openWriter(join(dir, STATE_FILES.verdict), join(dir, STATE_FILES.request));
      if (vfd === undefined) return;
      const out = vfd;
      // Not answered here: the shell asks a one-shot program, which logs why (at debug level).
      const pass = (why: string) => writeSync(out, `pass\n${why.replace(/\n/g, ' ')}\n`);
      if (stale) return pass('its code in dist/ has changed since it started');
      let real = '';
      try {
        real = realpathSync(dir);
      } catch {
        /* gone */
      }
      if (!real.startsWith(`${realBase}/`)) return pass(`the state dir ${dir} is not in its state base ${base}`);
      const request = join(dir, STATE_FILES.request);
      // Missing or empty: taken by another resident program, or passed on already and answered
      // by a one-shot program (which this one must not write into): nothing to say.
      if (!(statSync(request, { throwIfNoEntry: false })?.size ?? 0)) return;
      const req = readRequest(request);
      // Taken: a successor does not pass it on (releaseOrphans).
      rmSync(request, { force: true });
      if (!req) return pass('no request it could read');
      // bin/prebake as the engine started it: its pid and start time, which the shell read.
      const caller = Number(req.env[EARLY_ENV.caller]);
      const callerIs = () => Number.isInteger(caller) && procStat(caller)?.startTime === req.env[EARLY_ENV.callerStart];
      if (!callerIs() || !sameWorld(caller)) return pass('its caller is gone, or in another mount, pid or user namespace or root');
      if (req.env[EARLY_ENV.go] === '1') {
        gfd = openSync(join(dir, STATE_FILES.go), constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOFOLLOW);
        if (!fstatSync(gfd).isFIFO()) return pass('its channel is not a FIFO');
      }
      // The create's stderr is its caller's (bin/prebake's, which the engine reads): lines the
      // --log file cannot take go there, as a one-shot program's would. Only while the caller is
      // still that process (a pid taken anew could name any file).
      try {
        efd = openSync(`/proc/${caller}/fd/2`, constants.O_WRONLY | constants.O_APPEND | constants.O_NONBLOCK | constants.O_NOCTTY);
        if (!callerIs()) {
          closeSync(efd);
          efd = undefined;
        }
      } catch {
        /* a socket, say: those lines are lost */
      }
      const io: VerdictIo = {
        stderr: efd,
        write: (text) => {
          wrote = true;
          const buf = Buffer.from(text);
          for (let off = 0; off < buf.length; ) off += writeSync(out, buf, off);
        },
        readLine: () => (gfd === undefined ? Promise.resolve('') : lineFrom(gfd, GO_MS).finally(() => (gfd = undefined))),
        waits: { pause, watch: true },
        by: `the resident program (pid ${process.pid})`,
      };
      // Up to the first look at a restore under way, the create runs in its caller's directory
      // and with its PATH (where relative paths and `criu` are found), as a one-shot program would.
      let answered: Promise<void>;
      const path = process.env.PATH;
      try {
        // (The caller's directory itself, not its path, which may have been replaced since.)
        process.chdir(`/proc/${caller}/cwd`);
        process.env.PATH = req.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin';
        const call = parseRuntimeCall(req.argv);
        if (call.command !== 'create') return pass('not a create');
        answered = answerCreate(call, loadRuntimeConfig(req.env), req.env, io);
      } finally {
        process.chdir('/');
        process.env.PATH = path;
      }
      await answered;
    } catch (e) {
      // Passed on, unless a verdict was written (then the shell has what it needs, or reads an
      // incomplete one: a create that fails, as when a one-shot program dies).
      try {
        if (vfd !== undefined && !wrote) writeSync(vfd, `pass\n${String((e as Error).message).replace(/\n/g, ' ')}\n`);
      } catch {
        /* the shell is gone */
      }
    } finally {
      for (const f of [vfd, gfd, efd]) {
        try {
          if (f !== undefined) closeSync(f);
        } catch {
          /* closed by its socket */
        }
      }
      inFlight--;
      last = performance.now();
    }
  };

  const sock = new net.Socket({ fd, readable: true, writable: false });
  let pending = '';
  sock.on('data', (d) => {
    pending += d.toString('utf8');
    for (let i = pending.indexOf('\n'); i >= 0; i = pending.indexOf('\n')) {
      const line = pending.slice(0, i);
      pending = pending.slice(i + 1);
      void serve(line);
    }
    if (pending.length > 8192) pending = '';
  });
  return finished;
}
