// The study's figures as standalone SVG, without dependencies: boxplots of startup times, a pair
// of boxes (cold, prebaked) per function ("Figure 1"), and ECDFs of the request latency after
// startup ("Figure 2"). Fixed size, fonts every renderer has, every text escaped. A series keeps
// its colour across panels and figures (by order of first appearance of its label).

import { ecdf, quantile, summary } from './stats.ts';

interface Series {
  label: string;
  values: readonly number[];
}

/** One panel of the boxplot figure: a function, with one box per series (e.g. cold, prebaked). */
interface BoxplotPanel {
  label: string;
  series: readonly Series[];
  /** A short line under the panel's label, e.g. "prebaked/cold 0.41x". */
  note?: string;
}

interface PlotOptions {
  title: string;
  /** Unit of the values, e.g. "ms". */
  unit: string;
  /** What the values are, for the axis label: "<axisLabel> (<unit>)". Default: "value". */
  axisLabel?: string;
  /** A smaller line under the title (machine, runs, …). */
  subtitle?: string;
  width?: number;
  height?: number;
}

interface BoxplotOptions extends PlotOptions {
  /** Start every panel's axis at zero, so that box heights compare as ratios (default true). */
  zero?: boolean;
}

interface EcdfOptions extends PlotOptions {
  /**
   * Cut the x axis at this quantile of the pooled values (default 1: show everything). Points
   * beyond it are counted in a note on the figure, never dropped silently.
   */
  xMaxQuantile?: number;
  /** A logarithmic x axis (default false); ignored when a value is not positive. */
  log?: boolean;
}

/** Okabe-Ito colours, safe for colour-blind readers: vermillion, blue, green, orange, purple, … */
const PALETTE = ['#D55E00', '#0072B2', '#009E73', '#E69F00', '#CC79A7', '#56B4E9', '#000000'];
const FONT = 'DejaVu Sans, Helvetica, Arial, sans-serif';
const INK = '#222222';
const MUTED = '#666666';
const GRID = '#e4e4e4';

/** Text or attribute value made safe for XML: entities escaped, characters XML 1.0 forbids removed. */
function escapeXml(s: string): string {
  return s
    .replace(/[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]/g, '')
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&apos;');
}

interface Ticks {
  lo: number;
  hi: number;
  step: number;
  ticks: number[];
}

/** Round tick values (steps of 1, 2 or 5 times a power of ten) covering [lo, hi], about `count` of them. */
export function niceTicks(lo: number, hi: number, count = 5): Ticks {
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) [lo, hi] = [0, 1];
  if (hi < lo) [lo, hi] = [hi, lo];
  if (hi === lo) [lo, hi] = lo === 0 ? [0, 1] : [lo - Math.abs(lo) * 0.1, hi + Math.abs(hi) * 0.1];
  const raw = (hi - lo) / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / mag;
  const step = (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * mag;
  const first = Math.floor(lo / step + 1e-9);
  const last = Math.ceil(hi / step - 1e-9);
  const ticks: number[] = [];
  for (let i = first; i <= last; i++) ticks.push(Number((i * step).toPrecision(12)));
  return { lo: ticks[0]!, hi: ticks[ticks.length - 1]!, step, ticks };
}

/**
 * Ticks of a logarithmic axis covering [lo, hi] (both > 0): 1, 2 and 5 times powers of ten, or
 * powers of ten alone across more than three decades. `step` is the smallest gap, for labels.
 */
export function logTicks(lo: number, hi: number): Ticks {
  if (!(lo > 0) || !(hi >= lo)) throw new RangeError(`a log axis needs 0 < lo <= hi, not ${lo}, ${hi}`);
  const kLo = Math.floor(Math.log10(lo) + 1e-9);
  const kHi = Math.max(kLo + 1, Math.ceil(Math.log10(hi) - 1e-9));
  const mantissas = kHi - kLo > 3 ? [1] : [1, 2, 5];
  const all: number[] = [];
  for (let k = kLo; k <= kHi; k++) for (const m of mantissas) all.push(Number((m * 10 ** k).toPrecision(12)));
  const first = all.filter((v) => v <= lo * (1 + 1e-9)).pop() ?? all[0]!;
  const last = all.find((v) => v >= hi * (1 - 1e-9)) ?? all[all.length - 1]!;
  const ticks = all.filter((v) => v >= first && v <= last);
  return { lo: first, hi: last, step: ticks[0]!, ticks };
}

/** A tick label with as many decimals as the step needs. */
function tickLabel(v: number, step: number): string {
  const decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
  return v.toFixed(Math.min(decimals, 10));
}

/** [min, max] of values without spreading them into arguments (which overflows on large samples). */
function extent(values: readonly number[], fallback: [number, number]): [number, number] {
  if (values.length === 0) return fallback;
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return [lo, hi];
}

const num = (v: number) => (Math.round(v * 100) / 100).toString();

interface TextOptions {
  size?: number;
  anchor?: 'start' | 'middle' | 'end';
  weight?: 'bold';
  fill?: string;
  rotate?: number;
  /** Centre the text vertically on y (dy, which every renderer honours, unlike dominant-baseline). */
  middle?: boolean;
}

function text(x: number, y: number, s: string, o: TextOptions = {}): string {
  const attrs = [`x="${num(x)}"`, `y="${num(y)}"`, `font-size="${o.size ?? 12}"`, `fill="${o.fill ?? INK}"`];
  if (o.anchor && o.anchor !== 'start') attrs.push(`text-anchor="${o.anchor}"`);
  if (o.weight) attrs.push(`font-weight="${o.weight}"`);
  if (o.middle) attrs.push('dy="0.35em"');
  if (o.rotate) attrs.push(`transform="rotate(${o.rotate} ${num(x)} ${num(y)})"`);
  return `<text ${attrs.join(' ')}>${escapeXml(s)}</text>`;
}

function line(x1: number, y1: number, x2: number, y2: number, stroke: string, width = 1, extra = ''): string {
  return `<line x1="${num(x1)}" y1="${num(y1)}" x2="${num(x2)}" y2="${num(y2)}" stroke="${stroke}" stroke-width="${width}"${extra}/>`;
}

/** Rough width of a DejaVu Sans string, enough to lay out a legend. */
const textWidth = (s: string, size: number) => s.length * size * 0.6;

/** s shortened with an ellipsis to fit about `width` pixels at `size` (bold text is wider). */
function fit(s: string, width: number, size: number, bold = false): string {
  const max = Math.max(1, Math.floor(width / (size * (bold ? 0.65 : 0.55))));
  return s.length <= max ? s : `${s.slice(0, max - 1)}…`;
}

/** Colours by series label, in order of first appearance. */
function colourMap(labels: Iterable<string>): Map<string, string> {
  const m = new Map<string, string>();
  for (const l of labels) if (!m.has(l)) m.set(l, PALETTE[m.size % PALETTE.length]!);
  return m;
}

function svgDocument(width: number, height: number, title: string, body: string[]): string {
  return [
    `<?xml version="1.0" encoding="UTF-8"?>`,
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="${FONT}">`,
    `<title>${escapeXml(title)}</title>`,
    `<rect x="0" y="0" width="${width}" height="${height}" fill="#ffffff"/>`,
    ...body,
    `</svg>`,
    '',
  ].join('\n');
}

function header(width: number, o: PlotOptions): string[] {
  const out = [text(width / 2, 28, o.title, { size: 18, weight: 'bold', anchor: 'middle' })];
  if (o.subtitle) out.push(text(width / 2, 48, o.subtitle, { size: 12, fill: MUTED, anchor: 'middle' }));
  return out;
}

/** A legend of box swatches and labels in one row, centred on (centre, y). */
function boxLegend(entries: { label: string; colour: string }[], centre: number, y: number): string[] {
  const size = 13;
  const widths = entries.map((e, i) => 22 + textWidth(e.label, size) + (i < entries.length - 1 ? 24 : 0));
  let x = centre - widths.reduce((a, b) => a + b, 0) / 2;
  const out: string[] = [];
  entries.forEach((e, i) => {
    out.push(`<rect x="${num(x)}" y="${num(y - 6)}" width="14" height="12" fill="${e.colour}" fill-opacity="0.35" stroke="${e.colour}" stroke-width="1.5"/>`);
    out.push(text(x + 22, y, e.label, { size, middle: true }));
    x += widths[i]!;
  });
  return out;
}

// ---------------------------------------------------------------------------------------------
// Boxplots

interface BoxStats {
  n: number;
  q1: number;
  median: number;
  q3: number;
  /** Whisker ends: the most extreme values within 1.5 IQR of the box. */
  low: number;
  high: number;
  outliers: number[];
}

/** Tukey's boxplot: quartiles (type 7), whiskers to the furthest values within 1.5 IQR, the rest outliers. */
export function boxStats(values: readonly number[]): BoxStats | null {
  if (values.length === 0) return null;
  const s = summary(values);
  const iqr = s.q3 - s.q1;
  const lowFence = s.q1 - 1.5 * iqr;
  const highFence = s.q3 + 1.5 * iqr;
  let low = Infinity;
  let high = -Infinity;
  const outliers: number[] = [];
  for (const v of values) {
    if (v < lowFence || v > highFence) outliers.push(v);
    else {
      low = Math.min(low, v);
      high = Math.max(high, v);
    }
  }
  return { n: s.n, q1: s.q1, median: s.median, q3: s.q3, low, high, outliers };
}

/**
 * Figure 1: one panel per function, side by side, each with its own value axis (functions differ by
 * orders of magnitude), and in each panel one box per series, coloured by series label.
 */
export function boxplotSvg(panels: readonly BoxplotPanel[], options: BoxplotOptions): string {
  const width = options.width ?? 960;
  const height = options.height ?? 480;
  const zero = options.zero ?? true;
  const colours = colourMap(panels.flatMap((p) => p.series.map((s) => s.label)));
  const body = header(width, options);
  body.push(...boxLegend([...colours].map(([label, colour]) => ({ label, colour })), width / 2, options.subtitle ? 68 : 52));

  const top = options.subtitle ? 96 : 80;
  const bottom = height - 58;
  const axisTitleX = 20;
  const left = 34;
  const right = width - 16;
  body.push(text(axisTitleX, (top + bottom) / 2, `${options.axisLabel ?? 'value'} (${options.unit})`, { size: 13, anchor: 'middle', rotate: -90 }));
  if (panels.length === 0) body.push(text(width / 2, (top + bottom) / 2, 'no data', { size: 14, fill: MUTED, anchor: 'middle' }));

  const pw = (right - left) / Math.max(1, panels.length);
  const gutter = 50; // room for the tick labels
  panels.forEach((panel, pi) => {
    const px = left + pi * pw;
    const axisX = px + gutter;
    const areaRight = px + pw - 10;
    const stats = panel.series.map((s) => boxStats(s.values));
    const all = panel.series.flatMap((s) => s.values);
    const [lo, hi] = extent(all, [0, 1]);
    const t = niceTicks(zero ? Math.min(0, lo) : lo, hi, 5);
    const y = (v: number) => bottom - ((v - t.lo) / (t.hi - t.lo)) * (bottom - top);

    for (const v of t.ticks) {
      body.push(line(axisX, y(v), areaRight, y(v), GRID));
      body.push(line(axisX - 4, y(v), axisX, y(v), INK));
      body.push(text(axisX - 7, y(v), tickLabel(v, t.step), { size: 12, anchor: 'end', middle: true }));
    }
    body.push(line(axisX, top, axisX, bottom, INK));
    body.push(line(axisX, bottom, areaRight, bottom, INK));

    const slot = (areaRight - axisX) / Math.max(1, panel.series.length);
    const bw = Math.min(56, slot * 0.55);
    panel.series.forEach((series, si) => {
      const cx = axisX + slot * (si + 0.5);
      const colour = colours.get(series.label)!;
      const b = stats[si];
      body.push(text(cx, bottom + 16, fit(series.label, slot + 6, 11), { size: 11, anchor: 'middle', fill: MUTED }));
      if (!b) {
        if (all.length) body.push(text(cx, (top + bottom) / 2, 'no data', { size: 11, anchor: 'middle', fill: MUTED }));
        return;
      }
      const g = [`<g>`, `<title>${escapeXml(`${panel.label} ${series.label}: n=${b.n}, median ${b.median}`)}</title>`];
      g.push(line(cx, y(b.high), cx, y(b.q3), INK, 1.2));
      g.push(line(cx, y(b.q1), cx, y(b.low), INK, 1.2));
      g.push(line(cx - bw / 4, y(b.high), cx + bw / 4, y(b.high), INK, 1.2));
      g.push(line(cx - bw / 4, y(b.low), cx + bw / 4, y(b.low), INK, 1.2));
      const boxH = Math.max(1, y(b.q1) - y(b.q3));
      g.push(`<rect x="${num(cx - bw / 2)}" y="${num(y(b.q3))}" width="${num(bw)}" height="${num(boxH)}" fill="${colour}" fill-opacity="0.35" stroke="${colour}" stroke-width="1.5"/>`);
      g.push(line(cx - bw / 2, y(b.median), cx + bw / 2, y(b.median), colour, 3));
      for (const o of b.outliers) g.push(`<circle cx="${num(cx)}" cy="${num(y(o))}" r="2.5" fill="none" stroke="${colour}" stroke-width="1.2"/>`);
      g.push(`</g>`);
      body.push(...g);
    });

    const mid = (axisX + areaRight) / 2;
    if (all.length === 0) body.push(text(mid, (top + bottom) / 2, 'no data', { size: 12, anchor: 'middle', fill: MUTED }));
    const labelWidth = pw - 8; // labels are pw apart; the last one ends at the figure's edge
    body.push(`<g><title>${escapeXml(panel.label)}</title>${text(mid, bottom + 36, fit(panel.label, labelWidth, 14, true), { size: 14, weight: 'bold', anchor: 'middle' })}</g>`);
    if (panel.note) body.push(text(mid, bottom + 52, fit(panel.note, labelWidth, 11), { size: 11, anchor: 'middle', fill: MUTED }));
  });
  return svgDocument(width, height, options.title, body);
}

// ---------------------------------------------------------------------------------------------
// ECDFs

/**
 * Figure 2: the empirical CDF of each series as a step line, with reference lines at the median
 * and the 90th percentile. Series are coloured by label in order.
 */
export function ecdfSvg(series: readonly Series[], options: EcdfOptions): string {
  const width = options.width ?? 720;
  const height = options.height ?? 440;
  const cut = options.xMaxQuantile ?? 1;
  if (!(cut > 0 && cut <= 1)) throw new RangeError(`xMaxQuantile must be in (0, 1], not ${cut}`);
  const colours = colourMap(series.map((s) => s.label));
  const body = header(width, options);

  const top = options.subtitle ? 64 : 50;
  const left = 70;
  const right = width - 56;
  const bottom = height - 70;

  const pooled = series.flatMap((s) => s.values);
  const [lo, max] = extent(pooled, [0, 1]);
  const hiWanted = cut < 1 && pooled.length ? quantile(pooled, cut) : max;
  const log = options.log === true && lo > 0;
  const t = log ? logTicks(lo, hiWanted) : niceTicks(lo, hiWanted, 6);
  const x = log
    ? (v: number) => left + (Math.log10(v / t.lo) / Math.log10(t.hi / t.lo)) * (right - left)
    : (v: number) => left + ((v - t.lo) / (t.hi - t.lo)) * (right - left);
  const y = (p: number) => bottom - p * (bottom - top);

  // Grid and axes.
  for (const v of t.ticks) {
    body.push(line(x(v), top, x(v), bottom, GRID));
    body.push(line(x(v), bottom, x(v), bottom + 4, INK));
    body.push(text(x(v), bottom + 18, log ? String(v) : tickLabel(v, t.step), { size: 12, anchor: 'middle' }));
  }
  for (let i = 0; i <= 10; i++) {
    const p = i / 10;
    body.push(line(left, y(p), right, y(p), GRID));
    if (i % 2 === 0) {
      body.push(line(left - 4, y(p), left, y(p), INK));
      body.push(text(left - 7, y(p), p.toFixed(1), { size: 12, anchor: 'end', middle: true }));
    }
  }
  for (const [p, name] of [
    [0.5, 'median'],
    [0.9, 'p90'],
  ] as const) {
    body.push(line(left, y(p), right, y(p), '#999999', 1, ' stroke-dasharray="5 4"'));
    body.push(text(right + 5, y(p), name, { size: 11, fill: MUTED, middle: true }));
  }
  body.push(line(left, top, left, bottom, INK));
  body.push(line(left, bottom, right, bottom, INK));
  body.push(text((left + right) / 2, bottom + 40, `${options.axisLabel ?? 'value'} (${options.unit}${log ? ', log scale' : ''})`, { size: 13, anchor: 'middle' }));
  body.push(text(22, (top + bottom) / 2, 'fraction ≤ x', { size: 13, anchor: 'middle', rotate: -90 }));

  // The step lines, clipped to the plot area.
  body.push(`<clipPath id="plot-area"><rect x="${left}" y="${num(top - 2)}" width="${num(right - left)}" height="${num(bottom - top + 4)}"/></clipPath>`);
  body.push(`<g clip-path="url(#plot-area)" fill="none" stroke-width="2" stroke-linejoin="miter">`);
  for (const s of series) {
    if (s.values.length === 0) continue;
    const pts = ecdf(s.values);
    const d = [`M${num(x(t.lo))},${num(y(0))}`];
    for (const pt of pts) d.push(`H${num(x(pt.x))}`, `V${num(y(pt.p))}`);
    d.push(`H${num(Math.max(x(t.hi), x(max)))}`);
    body.push(`<path d="${d.join('')}" stroke="${colours.get(s.label)!}"><title>${escapeXml(`${s.label}: n=${s.values.length}`)}</title></path>`);
  }
  body.push(`</g>`);

  // Legend, bottom right inside the plot (the empty corner of a CDF).
  const entries = series.map((s) => `${s.label} (n = ${s.values.length})`);
  const lw = Math.max(...entries.map((e) => textWidth(e, 13)), 60) + 40;
  const lh = 10 + entries.length * 20;
  const lx = right - lw - 10;
  const ly = bottom - lh - 10;
  body.push(`<rect x="${num(lx)}" y="${num(ly)}" width="${num(lw)}" height="${lh}" fill="#ffffff" fill-opacity="0.9" stroke="#cccccc"/>`);
  series.forEach((s, i) => {
    const ry = ly + 15 + i * 20;
    body.push(line(lx + 10, ry, lx + 28, ry, colours.get(s.label)!, 2.5));
    body.push(text(lx + 34, ry, entries[i]!, { size: 13, middle: true }));
  });
  if (series.length === 0 || pooled.length === 0) body.push(text((left + right) / 2, (top + bottom) / 2, 'no data', { size: 14, fill: MUTED, anchor: 'middle' }));

  const beyond = pooled.filter((v) => v > t.hi).length;
  if (beyond > 0)
    body.push(text(right, height - 8, `axis cut at the ${Math.round(cut * 1000) / 10}th percentile; ${beyond} of ${pooled.length} values beyond (max ${max.toPrecision(4)})`, { size: 11, anchor: 'end', fill: MUTED }));
  return svgDocument(width, height, options.title, body);
}
