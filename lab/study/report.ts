// The cold-start study's report: per function, startup times and the latency of the requests
// after startup, cold vs prebaked (medians with bootstrapped 95% CIs, p10/p90, the prebaked/cold
// ratio, a Wilcoxon rank-sum p-value), the study's targets met or missed and by how much, and
// the figures (Figure 1: startup boxplots; Figure 2: latency ECDFs) as SVG files beside it.
//
//   writeReport(dir, results)  ->  dir/report.md, dir/startup.svg, dir/latency-<function>.svg
//   consoleTable(results)      ->  the same numbers as a plain-text table for the terminal

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { bootstrapMedianCI, bootstrapMedianRatioCI, type ConfidenceInterval, median, summary, type Summary, wilcoxonRankSum } from './stats.ts';
import { boxplotSvg, ecdfSvg } from './svg.ts';

// ---------------------------------------------------------------------------------------------
// Input

/** One series of measurements of both modes, in milliseconds, one value per observation. */
interface ColdPrebaked {
  cold: number[];
  prebaked: number[];
}

export interface FunctionResults {
  /** The function's name: "noop", "markdown", "resize", "ml", … The default targets go by it. */
  name: string;
  /** Startup time of each run (e.g. create -> first HTTP 200), ms. */
  startupMs: ColdPrebaked;
  /** Latency of each request served after startup (all runs pooled), ms. */
  latencyMs: ColdPrebaked;
  /** What each replica reported after its startup, in the order they ran (not used by the report). */
  replicas?: ReplicaRecord[];
}

/** One replica as it reported itself (functions on images/common/serve.py say replica and restored). */
export interface ReplicaRecord {
  mode: 'cold' | 'prebaked';
  startupMs: number;
  /** The request count of its first answer: 1 for a cold start, more for a restored replica. */
  served: number;
  /** The replica id it reports after its startup. */
  replica?: string;
  /** Whether it says it was restored (it got the runtime's restore signal). */
  restored?: boolean;
  /** Where its startup went (bundle runs only). */
  parts?: StartupParts;
  /** Its processes' resident memory after the first request of the function's work, kB (bundle runs only). */
  residentKB?: number;
}

/** One replica's startup, split (ms): the runtime calls, and for a restore what runc and CRIU logged. */
export interface StartupParts {
  /** Spawn of `prebake create` to its exit. */
  create: number;
  /** The `start` call. */
  start: number;
  /** From start's exit to the first HTTP 200. */
  firstResponse: number;
  /** The runc restore, as prebake logged it (restored replicas). */
  runcRestore?: number;
  /** CRIU's restore.log, first to last line, and its phases. */
  criu?: number;
  criuStartup?: number;
  criuRestore?: number;
  criuResume?: number;
}

interface StudyMeta {
  /** Runs per function and mode. */
  runs: number;
  /** The machine, e.g. "Debian 12, 2 vCPU (Xeon E5-2680 v4), 4 GiB". */
  machine: string;
  /** Versions of what was measured, e.g. { prebake: "0.1.0", runc: "1.1.5", criu: "4.2.1", kernel: "6.1.0" }. */
  versions: Record<string, string>;
  /** The command that produced the results. */
  command: string;
  /** When the study ran (ISO 8601). */
  date?: string;
  /** What "startup" and "latency" measure, how requests were sent, anything a reader needs. */
  notes?: string[];
}

export interface StudyResults {
  meta: StudyMeta;
  functions: FunctionResults[];
}

// ---------------------------------------------------------------------------------------------
// Targets

interface Target {
  /** The function it applies to. */
  fn: string;
  metric: 'startup' | 'latency';
  stat: 'median' | 'p90';
  /** Met when stat(prebaked) <= maxRatio * stat(cold). */
  maxRatio: number;
  /** How the ratio is best read: a ratio ("0.40x"), a speed-up ("14x faster") or a change ("+2.0%"). */
  style: 'ratio' | 'speedup' | 'percent';
}

/**
 * The study's targets: startup of prebaked <= 0.5x cold for noop, markdown, resize and node,
 * <= 0.2x for java, >= 10x faster (<= 0.1x) for ml; latency after startup of prebaked within 5%
 * of cold at the median and at p90, for every function. "Within 5%" is one-sided: prebaked being faster is not a miss.
 */
function defaultTargets(functions: readonly string[]): Target[] {
  const out: Target[] = [];
  for (const fn of functions) {
    if (fn === 'noop' || fn === 'markdown' || fn === 'resize' || fn === 'node') out.push({ fn, metric: 'startup', stat: 'median', maxRatio: 0.5, style: 'ratio' });
    if (fn === 'java') out.push({ fn, metric: 'startup', stat: 'median', maxRatio: 0.2, style: 'ratio' });
    if (fn === 'ml') out.push({ fn, metric: 'startup', stat: 'median', maxRatio: 0.1, style: 'speedup' });
  }
  for (const fn of functions)
    for (const stat of ['median', 'p90'] as const) out.push({ fn, metric: 'latency', stat, maxRatio: 1.05, style: 'percent' });
  return out;
}

interface TargetOutcome {
  target: Target;
  cold: number;
  prebaked: number;
  /** prebaked / cold. */
  ratio: number;
  /** The largest prebaked value that meets the target: maxRatio * cold. */
  limitMs: number;
  /** limitMs - prebaked: what is left to spare (>= 0) or how much it is missed by (< 0), ms. */
  marginMs: number;
  /** null when either side has no data. */
  met: boolean | null;
  /** One Markdown line that says it all. */
  line: string;
}

const metricName = { startup: 'startup', latency: 'latency after startup' } as const;

export function evaluateTargets(results: StudyResults, targets: readonly Target[] = defaultTargets(results.functions.map((f) => f.name))): TargetOutcome[] {
  return targets.map((target) => {
    const f = results.functions.find((x) => x.name === target.fn);
    const data = f ? (target.metric === 'startup' ? f.startupMs : f.latencyMs) : { cold: [], prebaked: [] };
    const pick = (s: Summary) => (target.stat === 'median' ? s.median : s.p90);
    const cold = pick(summary(data.cold));
    const prebaked = pick(summary(data.prebaked));
    const ratio = prebaked / cold;
    const limitMs = target.maxRatio * cold;
    const marginMs = limitMs - prebaked;
    // A value exactly on the limit meets it, whatever the last bit of the multiplication says.
    const met = Number.isNaN(marginMs) ? null : marginMs >= -1e-9 * Math.abs(limitMs);
    return { target, cold, prebaked, ratio, limitMs, marginMs, met, line: targetLine(target, { cold, prebaked, ratio, limitMs, marginMs, met }) };
  });
}

function targetLine(t: Target, o: Omit<TargetOutcome, 'target' | 'line'>): string {
  const what = `${md(t.fn)}, ${metricName[t.metric]}, ${t.stat}`;
  if (o.met === null) return `- **NOT EVALUATED** — ${what}: no data for ${Number.isNaN(o.cold) ? 'cold' : 'prebaked'}.`;
  let observed: string;
  let asked: string;
  let short: string;
  switch (t.style) {
    case 'speedup':
      observed = `${fmtFactor(1 / o.ratio)} faster`;
      asked = `≥ ${fmtFactor(1 / t.maxRatio)} faster`;
      short = `${fmtFactor(1 / o.ratio)} of the ${fmtFactor(1 / t.maxRatio)} asked`;
      break;
    case 'percent':
      observed = fmtPercent(o.ratio - 1);
      asked = `≤ ${sig3((t.maxRatio - 1) * 100).replace(/^(?!-)/, '+')}%`;
      short = `${fmtPoints(o.ratio - t.maxRatio)} over`;
      break;
    default:
      observed = `${fmtRatio(o.ratio)}×`;
      asked = `≤ ${fmtRatio(t.maxRatio)}×`;
      short = `${fmtRatio(o.ratio - t.maxRatio)}× over`;
  }
  const head = `${what}: prebaked ${fmtMs(o.prebaked)} ms vs cold ${fmtMs(o.cold)} ms = ${observed} (target ${asked}, i.e. ≤ ${fmtMs(o.limitMs)} ms)`;
  return o.met ? `- **MET** — ${head}; ${fmtMs(Math.max(0, o.marginMs))} ms to spare.` : `- **MISSED** — ${head}; missed by ${fmtMs(-o.marginMs)} ms (${short}).`;
}

// ---------------------------------------------------------------------------------------------
// Numbers

interface ReportOptions {
  targets?: Target[];
  /** Bootstrap resamples for the confidence intervals (default 2000). */
  resamples?: number;
  /** Bootstrap seed (default 1): the same results give the same report. */
  seed?: number;
  /** Where the latency ECDFs cut their x axis (quantile of the pooled values; default 0.99). */
  latencyAxisQuantile?: number;
  /** The latency ECDFs' x axis (default 'linear', which shows 5% apart best; 'log' shows the whole tail). */
  latencyAxis?: 'linear' | 'log';
}

interface Comparison {
  cold: Summary;
  prebaked: Summary;
  coldCI: ConfidenceInterval;
  prebakedCI: ConfidenceInterval;
  /** median(prebaked) / median(cold), with its bootstrapped CI. */
  ratioCI: ConfidenceInterval;
  /** Two-sided Wilcoxon rank-sum p, prebaked vs cold. */
  p: number;
}

function compare(data: ColdPrebaked, options: ReportOptions = {}): Comparison {
  const b = { resamples: options.resamples ?? 2000, seed: options.seed ?? 1 };
  return {
    cold: summary(data.cold),
    prebaked: summary(data.prebaked),
    coldCI: bootstrapMedianCI(data.cold, b),
    prebakedCI: bootstrapMedianCI(data.prebaked, b),
    ratioCI: bootstrapMedianRatioCI(data.prebaked, data.cold, b),
    p: wilcoxonRankSum(data.prebaked, data.cold).p,
  };
}

const DASH = '—';

/** Milliseconds with about three significant digits, never in exponent notation. */
function fmtMs(v: number): string {
  if (!Number.isFinite(v)) return DASH;
  const a = Math.abs(v);
  if (a === 0) return '0';
  if (a < 0.01) return v.toPrecision(2);
  return v.toFixed(a >= 1000 ? 0 : a >= 10 ? 1 : a >= 1 ? 2 : 3);
}
function fmtRatio(v: number): string {
  if (!Number.isFinite(v)) return DASH;
  return Math.abs(v) >= 0.1 ? v.toFixed(2) : v.toPrecision(2);
}
/** Three significant digits, trailing zeros dropped: 13.6, 10, 2.5. */
const sig3 = (v: number) => String(Number(v.toPrecision(3)));
function fmtFactor(v: number): string {
  return Number.isFinite(v) ? `${sig3(v)}×` : DASH;
}
/** A relative change, with two decimals so that a value just over a limit never prints as the limit. */
function fmtPercent(v: number, decimals = 2): string {
  return Number.isFinite(v) ? `${v >= 0 ? '+' : '−'}${Math.abs(v * 100).toFixed(decimals)}%` : DASH;
}
function fmtPoints(v: number): string {
  const pts = v * 100;
  return `${Math.abs(pts) >= 0.1 ? pts.toFixed(2) : pts.toPrecision(2)} percentage points`;
}
function fmtP(p: number): string {
  if (!Number.isFinite(p)) return DASH;
  return p < 1e-4 ? p.toExponential(1) : p.toFixed(4);
}
const fmtCI = (ci: ConfidenceInterval, f: (v: number) => string) => (Number.isFinite(ci.lo) ? `${f(ci.lo)} – ${f(ci.hi)}` : DASH);

/** Text for Markdown prose and table cells: the characters Markdown would act on, escaped. */
function md(s: string): string {
  return s.replace(/[\\`*_[\]<|]/g, (c) => `\\${c}`).replace(/\r?\n/g, ' ');
}

// ---------------------------------------------------------------------------------------------
// Figures

/** The file name of a function's latency figure: latency-<name>.svg, the name made safe and unique. */
function figureFiles(results: StudyResults): { startup: string; latency: Map<string, string> } {
  const latency = new Map<string, string>();
  const used = new Set<string>();
  for (const f of results.functions) {
    const base = `latency-${f.name.replace(/[^A-Za-z0-9_-]+/g, '_') || 'function'}`;
    let name = `${base}.svg`;
    for (let i = 2; used.has(name); i++) name = `${base}-${i}.svg`;
    used.add(name);
    latency.set(f.name, name);
  }
  return { startup: 'startup.svg', latency };
}

function subtitle(meta: StudyMeta): string {
  return `${meta.machine} · ${meta.runs} runs per function and mode`;
}

/** Figure 1: startup time, a cold and a prebaked box per function. */
function startupFigure(results: StudyResults): string {
  return boxplotSvg(
    results.functions.map((f) => {
      const ratio = summary(f.startupMs.prebaked).median / summary(f.startupMs.cold).median;
      return {
        label: f.name,
        note: Number.isFinite(ratio) ? `prebaked/cold ${fmtRatio(ratio)}×` : undefined,
        series: [
          { label: 'cold', values: f.startupMs.cold },
          { label: 'prebaked', values: f.startupMs.prebaked },
        ],
      };
    }),
    { title: 'Figure 1: startup time, cold vs prebaked', subtitle: subtitle(results.meta), unit: 'ms', axisLabel: 'startup time' },
  );
}

/** Figure 2 for one function: ECDF of the latency of requests after startup, cold and prebaked. */
function latencyFigure(f: FunctionResults, meta: StudyMeta, options: ReportOptions = {}): string {
  return ecdfSvg(
    [
      { label: 'cold', values: f.latencyMs.cold },
      { label: 'prebaked', values: f.latencyMs.prebaked },
    ],
    { title: `Figure 2 (${f.name}): latency of requests after startup`, subtitle: subtitle(meta), unit: 'ms', axisLabel: 'request latency', xMaxQuantile: options.latencyAxisQuantile ?? 0.99, log: options.latencyAxis === 'log' },
  );
}

// ---------------------------------------------------------------------------------------------
// Markdown

function comparisonTable(caption: string, c: Comparison): string[] {
  const row = (cells: string[]) => `| ${cells.join(' | ')} |`;
  return [
    row([caption, 'n', 'median', '95% CI of median', 'p10', 'p90', 'Wilcoxon p']),
    row([':--', '--:', '--:', '--:', '--:', '--:', '--:']),
    row(['cold', String(c.cold.n), fmtMs(c.cold.median), fmtCI(c.coldCI, fmtMs), fmtMs(c.cold.p10), fmtMs(c.cold.p90), '']),
    row(['prebaked', String(c.prebaked.n), fmtMs(c.prebaked.median), fmtCI(c.prebakedCI, fmtMs), fmtMs(c.prebaked.p10), fmtMs(c.prebaked.p90), '']),
    row([
      '**prebaked / cold**',
      '',
      `**${fmtRatio(c.ratioCI.estimate)}**`,
      fmtCI(c.ratioCI, fmtRatio),
      fmtRatio(c.prebaked.p10 / c.cold.p10),
      fmtRatio(c.prebaked.p90 / c.cold.p90),
      fmtP(c.p),
    ]),
  ];
}

/** The prebaked replicas' startup split, medians, in a sentence (undefined without the data). */
function prebakedParts(f: FunctionResults | undefined): string | undefined {
  if (!f?.replicas?.some((r) => r.mode === 'prebaked' && r.parts)) return undefined;
  const m = (k: keyof StartupParts) => partMedian(f, 'prebaked', k);
  const create = m('create');
  const runc = m('runcRestore');
  const criu = m('criu');
  return (
    `create ${fmtMs(create)} ms (runc restore ${fmtMs(runc)}, of it CRIU ${fmtMs(criu)} with ${fmtMs(m('criuRestore'))} restoring ` +
    `namespaces, mounts, memory and tasks; runc outside CRIU ${fmtMs(runc - criu)}; prebake's own ${fmtMs(create - runc)}), ` +
    `start ${fmtMs(m('start'))} ms, first response ${fmtMs(m('firstResponse'))} ms`
  );
}

/** The median of one part of the startup over a mode's replicas that recorded it (NaN: none did). */
function partMedian(f: FunctionResults, mode: 'cold' | 'prebaked', k: keyof StartupParts): number {
  const xs = (f.replicas ?? []).filter((r) => r.mode === mode).map((r) => r.parts?.[k]).filter((x): x is number => typeof x === 'number');
  return xs.length ? median(xs) : NaN;
}

/** Where the startup time goes, medians per mode, for the replicas that recorded it. */
/** The medians of the replicas' resident memory after their first request, cold and prebaked. */
function residentLine(f: FunctionResults): string[] {
  const of = (mode: 'cold' | 'prebaked') => (f.replicas ?? []).filter((r) => r.mode === mode && r.residentKB !== undefined).map((r) => r.residentKB!);
  const cold = of('cold');
  const prebaked = of('prebaked');
  if (!cold.length || !prebaked.length) return [];
  const mib = (kb: number) => (kb / 1024).toFixed(1);
  const c = median(cold);
  const p = median(prebaked);
  return [`Resident memory after the first request (median VmRSS of the replica's processes): cold ${mib(c)} MiB, prebaked ${mib(p)} MiB (${fmtRatio(p / c)}×).`, ''];
}

function startupParts(f: FunctionResults): string[] {
  const of = (mode: 'cold' | 'prebaked', k: keyof StartupParts) => {
    const v = partMedian(f, mode, k);
    return Number.isNaN(v) ? '' : fmtMs(v);
  };
  if (!(f.replicas ?? []).some((r) => r.parts)) return [];
  const row = (cells: string[]) => `| ${cells.join(' | ')} |`;
  const line = (label: string, k: keyof StartupParts) => row([label, of('cold', k), of('prebaked', k)]);
  return [
    row(['where the startup goes (median ms)', 'cold', 'prebaked']),
    row([':--', '--:', '--:']),
    line('`prebake create`, spawn to exit', 'create'),
    line('&nbsp;&nbsp;of it, the runc restore (prebake\'s log)', 'runcRestore'),
    line('&nbsp;&nbsp;&nbsp;&nbsp;of it, CRIU (restore.log, first to last line)', 'criu'),
    line('&nbsp;&nbsp;&nbsp;&nbsp;&nbsp;&nbsp;start-up and kernel probing', 'criuStartup'),
    line('&nbsp;&nbsp;&nbsp;&nbsp;&nbsp;&nbsp;namespaces, mounts, files, memory, tasks', 'criuRestore'),
    line('&nbsp;&nbsp;&nbsp;&nbsp;&nbsp;&nbsp;network unlock to tasks resumed, and after', 'criuResume'),
    line('`prebake start`', 'start'),
    line('start to the first HTTP 200 (cold: the function initialising)', 'firstResponse'),
    '',
    'The rest of a restoring create is prebake\'s own (its shell entry point and Node start-up run beside runc; what remains is ' +
      'the entry point before runc starts and the bookkeeping after it), and runc outside CRIU is the runc restore minus CRIU.',
    '',
  ];
}

/** The whole report as Markdown; figures are linked by the names writeReport gives them. */
export function markdownReport(results: StudyResults, options: ReportOptions = {}): string {
  const { meta } = results;
  const files = figureFiles(results);
  const outcomes = evaluateTargets(results, options.targets);
  const evaluated = outcomes.filter((o) => o.met !== null);
  const fence = '`'.repeat(Math.max(3, ...[...meta.command.matchAll(/`+/g)].map((m) => m[0].length + 1)));

  const out: string[] = ['# Cold-start study: prebaked vs cold', ''];
  if (meta.date) out.push(`- Date: ${md(meta.date)}`);
  out.push(`- Machine: ${md(meta.machine)}`);
  out.push(`- Runs: ${meta.runs} per function and mode`);
  const versions = Object.entries(meta.versions);
  if (versions.length) out.push(`- Versions: ${versions.map(([k, v]) => `${md(k)} ${md(v)}`).join(', ')}`);
  out.push('- Command:', '', fence + 'sh', meta.command, fence, '');
  for (const n of meta.notes ?? []) out.push(`> ${md(n)}`, '');

  out.push('## Targets', '');
  out.push(`${evaluated.filter((o) => o.met).length} of ${outcomes.length} met${evaluated.length < outcomes.length ? ` (${outcomes.length - evaluated.length} not evaluated for lack of data)` : ''}.`, '');
  for (const o of outcomes) {
    out.push(o.line);
    if (o.met === false && o.target.metric === 'startup') {
      const where = prebakedParts(results.functions.find((f) => f.name === o.target.fn));
      if (where) out.push(`  Where the prebaked startup goes (medians): ${where}.`);
    }
  }
  out.push('');

  out.push('## Figure 1: startup time', '', `![Figure 1: startup time per function, cold vs prebaked](${files.startup})`, '');
  // What a restore costs beyond the floor (runc and CRIU's fixed part): each function's prebaked
  // startup against noop's, the function that restores the least.
  const noop = results.functions.find((f) => f.name === 'noop');
  const others = results.functions.filter((f) => f !== noop && f.startupMs.prebaked.length);
  if (noop?.startupMs.prebaked.length && others.length) {
    const floor = median(noop.startupMs.prebaked);
    out.push(`Prebaked startup against noop's (median ${fmtMs(floor)} ms): ${others.map((f) => `${md(f.name)} ${fmtRatio(median(f.startupMs.prebaked) / floor)}×`).join(', ')}.`, '');
  }
  out.push('## Per function', '');
  for (const f of results.functions) {
    out.push(`### ${md(f.name)}`, '');
    out.push(...comparisonTable('startup (ms)', compare(f.startupMs, options)), '');
    out.push(...comparisonTable('latency after startup (ms)', compare(f.latencyMs, options)), '');
    out.push(...startupParts(f));
    out.push(...residentLine(f));
    const file = files.latency.get(f.name)!;
    out.push(`Figure 2 (${md(f.name)}): [${file}](${file})`, '', `![Figure 2 (${md(f.name)}): ECDF of request latency after startup](${file})`, '');
  }

  out.push('## Method', '');
  out.push(
    `Quantiles interpolate linearly between order statistics (type 7, R's default). Confidence intervals are percentile-bootstrap intervals ` +
      `of the median, ${options.resamples ?? 2000} resamples, seed ${options.seed ?? 1}; the ratio's interval resamples both modes independently. ` +
      `p is the two-sided Wilcoxon rank-sum (Mann–Whitney) test of prebaked against cold, as R's \`wilcox.test\`: exact for fewer than 50 ` +
      `values per mode without ties, otherwise the normal approximation with tie and continuity corrections. A target is met when ` +
      `the prebaked statistic is at most the cold one times the target ratio; "within 5%" counts prebaked being faster as met.`,
    '',
  );
  return out.join('\n');
}

/** Writes report.md, startup.svg and latency-<function>.svg into dir (created if missing); returns the paths written. */
export function writeReport(dir: string, results: StudyResults, options: ReportOptions = {}): string[] {
  mkdirSync(dir, { recursive: true });
  const files = figureFiles(results);
  const written: string[] = [];
  const put = (name: string, content: string) => {
    const path = join(dir, name);
    writeFileSync(path, content);
    written.push(path);
  };
  put('report.md', markdownReport(results, options));
  // Every measured value with the machine, versions and command: to re-plot or compare two runs.
  put('results.json', `${JSON.stringify({ format: 1, ...results, summary: evaluateTargets(results, options.targets).map((o) => ({ ...o })) }, null, 2)}\n`);
  put(files.startup, startupFigure(results));
  for (const f of results.functions) put(files.latency.get(f.name)!, latencyFigure(f, results.meta, options));
  return written;
}

// ---------------------------------------------------------------------------------------------
// Terminal

/** A plain-text table for the terminal: medians per mode, ratios, p-values and targets per function. */
export function consoleTable(results: StudyResults, options: ReportOptions = {}): string {
  const outcomes = evaluateTargets(results, options.targets);
  const header = ['function', 'startup cold', 'prebaked', 'ratio', 'p', 'latency cold', 'prebaked', 'ratio', 'p90 ratio', 'p', 'targets'];
  const rows = results.functions.map((f) => {
    const s = { cold: summary(f.startupMs.cold), prebaked: summary(f.startupMs.prebaked) };
    const l = { cold: summary(f.latencyMs.cold), prebaked: summary(f.latencyMs.prebaked) };
    const mine = outcomes.filter((o) => o.target.fn === f.name);
    const missed = mine.filter((o) => o.met === false).map((o) => `${o.target.metric} ${o.target.stat}`);
    const targets = mine.length === 0 ? '-' : `${mine.filter((o) => o.met).length}/${mine.length} met${missed.length ? `, missed: ${missed.join(', ')}` : ''}`;
    return [
      f.name,
      `${fmtMs(s.cold.median)} ms`,
      `${fmtMs(s.prebaked.median)} ms`,
      `${fmtRatio(s.prebaked.median / s.cold.median)}x`,
      fmtP(wilcoxonRankSum(f.startupMs.prebaked, f.startupMs.cold).p),
      `${fmtMs(l.cold.median)} ms`,
      `${fmtMs(l.prebaked.median)} ms`,
      `${fmtRatio(l.prebaked.median / l.cold.median)}x`,
      `${fmtRatio(l.prebaked.p90 / l.cold.p90)}x`,
      fmtP(wilcoxonRankSum(f.latencyMs.prebaked, f.latencyMs.cold).p),
      targets,
    ];
  });
  const footer = 'medians unless said otherwise; ratio = prebaked/cold; p = two-sided Wilcoxon rank-sum, prebaked vs cold';
  return `${textTable(header, rows, [0, header.length - 1])}\n${footer}\n`;
}

/**
 * A plain-text table: the head, a rule of dashes, the rows; columns two spaces apart, the ones in
 * `left` aligned left, the others right; no line ends in spaces.
 */
export function textTable(head: string[], rows: string[][], left: readonly number[] = [0]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) =>
    r
      .map((c, i) => (left.includes(i) ? c.padEnd(widths[i]!) : c.padStart(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}
