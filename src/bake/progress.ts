// prebake-build's progress on stderr: a line when each step starts and one when it ends (plain),
// or on a terminal one line per step, rewritten each second while it runs (tty), or nothing.

export type ProgressMode = 'auto' | 'plain' | 'tty' | 'quiet';
export const PROGRESS_MODES: readonly ProgressMode[] = ['auto', 'plain', 'tty', 'quiet'];

export interface Progress {
  /** A step starts. */
  begin(step: string): void;
  /** The step that began last ends, after `ms`. */
  end(step: string, ms: number): void;
  /** A line of its own (a warning, a note). */
  line(text: string): void;
  /** Stops the clock of a step still running (the build failed). */
  close(): void;
}

export function progressFor(mode: ProgressMode, out: NodeJS.WriteStream = process.stderr): Progress {
  const write = (s: string) => void out.write(s);
  const tag = 'prebake-build: ';
  const done = (step: string, ms: number) => `${tag}${step.padEnd(22)} ${Math.round(ms)} ms\n`;
  if (mode === 'quiet') return { begin() {}, end() {}, line() {}, close() {} };
  if (mode === 'plain' || (mode === 'auto' && !out.isTTY))
    return { begin: (step) => write(`${tag}${step} ...\n`), end: (step, ms) => write(done(step, ms)), line: (text) => write(`${tag}${text}\n`), close() {} };
  // tty: the running step's line shows its seconds; it is replaced by the step's result.
  let running: { step: string; t0: number; timer: NodeJS.Timeout } | undefined;
  const show = () => running && write(`\r\x1b[K${tag}${running.step} ... ${Math.floor((performance.now() - running.t0) / 1000)} s`);
  const stop = () => {
    if (!running) return;
    clearInterval(running.timer);
    write('\r\x1b[K');
    running = undefined;
  };
  return {
    begin(step) {
      stop();
      running = { step, t0: performance.now(), timer: setInterval(show, 1000) };
      running.timer.unref();
      write(`${tag}${step} ...`);
    },
    end(step, ms) {
      stop();
      write(done(step, ms));
    },
    line(text) {
      const r = running;
      if (r) write('\r\x1b[K');
      write(`${tag}${text}\n`);
      if (r) show();
    },
    close: stop,
  };
}
