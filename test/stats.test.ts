// Units of the cold-start study: the statistics against values R gives (derived by hand below),
// the SVG figures (well-formed, labelled), and the report (tables, targets met or missed).

import test from 'ava';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { consoleTable, evaluateTargets, markdownReport, type StudyResults, writeReport } from '../lab/study/report.ts';
import {
  bootstrapMedianCI,
  bootstrapMedianRatioCI,
  ecdf,
  median,
  mulberry32,
  normalCdf,
  p10,
  p90,
  quantile,
  quantiles,
  summary,
  wilcoxonRankSum,
} from '../lab/study/stats.ts';
import { boxplotSvg, boxStats, ecdfSvg, logTicks, niceTicks } from '../lab/study/svg.ts';

const close = (actual: number, expected: number, tolerance: number) => Math.abs(actual - expected) <= tolerance;

// ---------------------------------------------------------------------------------------------
// Quantiles

test("quantiles match R's default (type 7) on a small vector", (t) => {
  // R: quantile(c(3.1, 1, 4, 1.5, 9.2, 2.6, 5), c(0, .1, .25, .5, .75, .9, 1))
  //    0%   10%   25%   50%   75%   90%  100%
  //  1.00  1.30  2.05  3.10  4.50  6.68  9.20
  // By hand: sorted 1, 1.5, 2.6, 3.1, 4, 5, 9.2; h = (n-1)p = 6p; x[floor h] + frac(h) * gap:
  // p=.1: h=.6 -> 1 + .6*.5 = 1.3; p=.25: h=1.5 -> 1.5 + .5*1.1 = 2.05; p=.75: h=4.5 -> 4 + .5*1 = 4.5;
  // p=.9: h=5.4 -> 5 + .4*4.2 = 6.68.
  const v = [3.1, 1, 4, 1.5, 9.2, 2.6, 5];
  const expected = [1, 1.3, 2.05, 3.1, 4.5, 6.68, 9.2];
  quantiles(v, [0, 0.1, 0.25, 0.5, 0.75, 0.9, 1]).forEach((q, i) => t.true(close(q, expected[i]!, 1e-12), `${q} vs ${expected[i]}`));
  t.true(close(p10(v), 1.3, 1e-12));
  t.true(close(p90(v), 6.68, 1e-12));
  t.true(close(quantile(v, 0.25), 2.05, 1e-12));
  t.deepEqual(v, [3.1, 1, 4, 1.5, 9.2, 2.6, 5], 'the input is not reordered');
});

test('the median of an odd sample is its middle value, of an even one the mean of the two middle values', (t) => {
  t.is(median([5, 1, 3]), 3);
  t.is(median([4, 1, 3, 2]), 2.5);
  t.is(median([7]), 7);
  t.is(median([2, 2, 9, 9]), 5.5);
});

test('an empty sample gives NaN; NaN, infinities and probabilities outside [0, 1] are refused', (t) => {
  t.true(Number.isNaN(median([])));
  t.true(Number.isNaN(summary([]).p90));
  t.throws(() => median([1, NaN]), { message: /finite/ });
  t.throws(() => median([1, Infinity]), { message: /finite/ });
  t.throws(() => quantile([1, 2], 1.5), { message: /not in \[0, 1\]/ });
});

test('summary: order statistics, mean and sample sd', (t) => {
  const s = summary([2, 4, 4, 4, 5, 5, 7, 9]);
  t.is(s.n, 8);
  t.is(s.min, 2);
  t.is(s.max, 9);
  t.is(s.median, 4.5);
  t.is(s.q1, 4); // h = 7 * .25 = 1.75 -> 4 + .75*0
  t.is(s.q3, 5.5); // h = 5.25 -> 5 + .25*(7-5)
  t.is(s.mean, 5);
  t.true(close(s.sd, Math.sqrt(32 / 7), 1e-12)); // squared deviations sum to 32
});

// ---------------------------------------------------------------------------------------------
// Wilcoxon rank-sum

test("Wilcoxon rank-sum with ties matches R's wilcox.test(x, y, exact=FALSE, correct=TRUE)", (t) => {
  // R's ?wilcox.test data. Pooled ranks (18 values, 1.06 and 1.29 each tied twice, midranks 5.5 and 7.5):
  //   x: 1.83->13, 0.50->1, 1.62->11, 2.48->16, 1.68->12, 1.88->14, 1.55->10, 3.06->17, 1.30->9; sum 103
  //   W = 103 - 9*10/2 = 58. E[W] = 9*9/2 = 40.5.
  //   Var W = (9*9/12) * (19 - sum(t^3 - t) / (18*17)) = 6.75 * (19 - 12/306) = 127.985294...
  //   z = (58 - 40.5 - 0.5) / sqrt(127.985294) = 17 / 11.313058 = 1.502688
  //   p = 2 * (1 - pnorm(1.502688)) = 0.1329195   (R: W = 58, p-value = 0.1329)
  //   Without the continuity correction: z = 17.5 / 11.313058 = 1.546885, p = 0.1218910.
  const x = [1.83, 0.5, 1.62, 2.48, 1.68, 1.88, 1.55, 3.06, 1.3];
  const y = [0.878, 0.647, 0.598, 2.05, 1.06, 1.29, 1.06, 3.14, 1.29];
  const r = wilcoxonRankSum(x, y, { method: 'normal', correct: true });
  t.is(r.W, 58);
  t.true(r.ties);
  t.true(close(r.z, 1.502688, 1e-6), String(r.z));
  t.true(close(r.p, 0.1329195, 1e-6), String(r.p));
  t.true(close(wilcoxonRankSum(x, y, { correct: false }).p, 0.121891, 1e-6));
  // With ties, 'auto' (R's default) cannot be exact either.
  t.is(wilcoxonRankSum(x, y).method, 'normal');
  // Two-sided: swapping the samples mirrors W (81 - 58) and keeps p.
  const swapped = wilcoxonRankSum(y, x);
  t.is(swapped.W, 23);
  t.true(close(swapped.p, r.p, 1e-12));
});

test("Wilcoxon rank-sum is exact for small samples without ties, as R's default", (t) => {
  // x below every y: W = 0, and exactly 1 of the C(7,3) = 35 arrangements has W <= 0, so
  // p = 2 * 1/35 = 0.05714 (R: wilcox.test(c(1,2,3), c(4,5,6,7)) gives W = 0, p-value = 0.05714).
  const a = wilcoxonRankSum([1, 2, 3], [4, 5, 6, 7]);
  t.is(a.method, 'exact');
  t.is(a.W, 0);
  t.true(close(a.p, 2 / 35, 1e-12));
  // W = 2 (2.5 and 3.3... only 3.3 > 2.5 and 4.4 > 2.5): arrangements with W <= 2 of C(9,4) = 126 are
  // 1 (W=0) + 1 (W=1) + 2 (W=2) = 4, so p = 8/126 = 0.06349.
  const b = wilcoxonRankSum([1.1, 2.2, 3.3, 4.4], [2.5, 5.5, 6.6, 7.7, 8.8]);
  t.is(b.W, 2);
  t.true(close(b.p, 8 / 126, 1e-12));
  // Identical samples: p = 1; 50 values or more: the normal approximation.
  t.is(wilcoxonRankSum([1, 2, 3], [1, 2, 3]).p, 1);
  const big = Array.from({ length: 50 }, (_, i) => i);
  t.is(wilcoxonRankSum(big, big.map((v) => v + 0.5)).method, 'normal');
});

test('the normal tail used for p-values is accurate far out', (t) => {
  t.true(close(normalCdf(-1.959964), 0.025, 1e-8));
  t.true(close(normalCdf(0), 0.5, 1e-15));
  t.true(close(normalCdf(-5) / 2.866515718791939e-7, 1, 1e-10));
  t.true(close(normalCdf(-8) / 6.220960574271784e-16, 1, 1e-10));
  t.true(close(normalCdf(3) + normalCdf(-3), 1, 1e-15));
});

// ---------------------------------------------------------------------------------------------
// Bootstrap

function lognormal(n: number, seed: number, med = 100, sigma = 0.3): number[] {
  const rand = mulberry32(seed);
  return Array.from({ length: n }, () => med * Math.exp(sigma * Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand())));
}

test('mulberry32 is deterministic per seed and uniform in [0, 1)', (t) => {
  const a = mulberry32(7);
  const b = mulberry32(7);
  const xs = Array.from({ length: 10000 }, () => a());
  t.deepEqual(Array.from({ length: 10000 }, () => b()), xs);
  t.true(xs.every((x) => x >= 0 && x < 1));
  t.true(close(xs.reduce((s, x) => s + x, 0) / xs.length, 0.5, 0.02));
  t.not(mulberry32(8)(), mulberry32(7)());
});

test('the bootstrap CI of the median is reproducible with a seed, contains the median and narrows with more data', (t) => {
  const small = lognormal(20, 1);
  const large = lognormal(2000, 2);
  const a = bootstrapMedianCI(small, { seed: 42 });
  t.deepEqual(bootstrapMedianCI(small, { seed: 42 }), a, 'same seed, same interval');
  t.notDeepEqual(bootstrapMedianCI(small, { seed: 43 }), a, 'another seed, another interval');
  t.deepEqual(bootstrapMedianCI(small), bootstrapMedianCI(small), 'the default seed is fixed');
  t.is(a.estimate, median(small));
  t.true(a.lo <= a.estimate && a.estimate <= a.hi);
  t.is(a.resamples, 2000);
  t.is(a.level, 0.95);
  const b = bootstrapMedianCI(large, { seed: 42 });
  t.true(b.lo <= b.estimate && b.estimate <= b.hi);
  t.true(b.hi - b.lo < (a.hi - a.lo) / 3, `n=2000 width ${b.hi - b.lo} vs n=20 width ${a.hi - a.lo}`);
  // Both contain the population median (100) here, and a lower level gives a narrower interval.
  t.true(b.lo < 100 && 100 < b.hi);
  const c = bootstrapMedianCI(large, { seed: 42, level: 0.5 });
  t.true(c.hi - c.lo < b.hi - b.lo);
  t.true(Number.isNaN(bootstrapMedianCI([]).lo));
});

test('the bootstrap CI of a ratio of medians contains the ratio', (t) => {
  const a = lognormal(200, 3, 50);
  const b = lognormal(200, 4, 100);
  const r = bootstrapMedianRatioCI(a, b, { seed: 5 });
  t.is(r.estimate, median(a) / median(b));
  t.true(r.lo <= r.estimate && r.estimate <= r.hi);
  t.true(r.lo < 0.5 && 0.5 < r.hi);
  t.deepEqual(bootstrapMedianRatioCI(a, b, { seed: 5 }), r);
});

// ---------------------------------------------------------------------------------------------
// ECDF

test('the ECDF has one point per distinct value, rises monotonically and ends at 1', (t) => {
  t.deepEqual(ecdf([3, 1, 2, 2]), [
    { x: 1, p: 0.25 },
    { x: 2, p: 0.75 },
    { x: 3, p: 1 },
  ]);
  const pts = ecdf(lognormal(500, 9));
  for (let i = 1; i < pts.length; i++) t.true(pts[i]!.x > pts[i - 1]!.x && pts[i]!.p > pts[i - 1]!.p);
  t.is(pts[pts.length - 1]!.p, 1);
  t.deepEqual(ecdf([]), []);
});

// ---------------------------------------------------------------------------------------------
// SVG

/**
 * A small XML well-formedness check: declaration, comments, tags with quoted attributes, text;
 * tags balanced with one root; no duplicate attributes; every & an entity. Returns the text
 * content (entities decoded) for checking labels.
 */
function checkXml(xml: string): string[] {
  const texts: string[] = [];
  const stack: string[] = [];
  let roots = 0;
  const entity = /&(?!(?:amp|lt|gt|quot|apos|#\d+|#x[0-9a-fA-F]+);)/;
  const decode = (s: string) => s.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"').replace(/&apos;/g, "'").replace(/&amp;/g, '&');
  const token = /<\?xml[^?]*\?>|<!--[\s\S]*?-->|<\/([A-Za-z][\w:.-]*)\s*>|<([A-Za-z][\w:.-]*)((?:\s+[\w:.-]+\s*=\s*(?:"[^"<]*"|'[^'<]*'))*)\s*(\/?)>|([^<]+)/y;
  let m: RegExpExecArray | null;
  while (token.lastIndex < xml.length) {
    const at = token.lastIndex;
    m = token.exec(xml);
    if (!m) throw new Error(`not well-formed at ${at}: ${JSON.stringify(xml.slice(at, at + 60))}`);
    const [all, close, open, attrs, selfClosing, text] = m;
    if (all.startsWith('<?xml') && at !== 0) throw new Error('XML declaration not at the start');
    if (close) {
      const top = stack.pop();
      if (top !== close) throw new Error(`</${close}> closes <${top}>`);
    } else if (open) {
      if (stack.length === 0 && ++roots > 1) throw new Error(`second root element <${open}>`);
      const names = [...attrs!.matchAll(/([\w:.-]+)\s*=\s*("[^"]*"|'[^']*')/g)].map((a) => {
        if (entity.test(a[2]!)) throw new Error(`bare & in attribute ${a[1]} of <${open}>`);
        return a[1]!;
      });
      if (new Set(names).size !== names.length) throw new Error(`duplicate attribute in <${open}>`);
      if (!selfClosing) stack.push(open);
    } else if (text !== undefined) {
      if (stack.length === 0 && text.trim()) throw new Error(`text outside the root: ${text.trim().slice(0, 40)}`);
      if (entity.test(text)) throw new Error(`bare & in text ${JSON.stringify(text)}`);
      if (text.trim()) texts.push(decode(text));
    }
  }
  if (stack.length) throw new Error(`unclosed <${stack.join('> <')}>`);
  if (roots !== 1) throw new Error('no root element');
  return texts;
}

test('the XML check itself rejects what is not well-formed', (t) => {
  t.notThrows(() => checkXml('<?xml version="1.0"?>\n<svg a="1"><g><text>a &amp; b</text></g><rect/></svg>\n'));
  for (const bad of ['<svg><g></svg>', '<svg>a & b</svg>', '<svg a="1" a="2"/>', '<svg><text>a < b</text></svg>', '<svg/><svg/>', '<svg a=1/>'])
    t.throws(() => checkXml(bad), undefined, bad);
});

test('the boxplot SVG is well-formed and shows the title, unit, functions, series and escaped text', (t) => {
  const svg = boxplotSvg(
    [
      { label: 'noop', note: 'prebaked/cold 0.44×', series: [{ label: 'cold', values: lognormal(30, 1, 160) }, { label: 'prebaked', values: lognormal(30, 2, 70) }] },
      { label: 'a<b & "c"', series: [{ label: 'cold', values: [1, 2, 3] }, { label: 'prebaked', values: [] }] },
    ],
    { title: 'Startup <Figure 1>', unit: 'ms', axisLabel: 'startup time', width: 800, height: 400 },
  );
  const texts = checkXml(svg);
  for (const label of ['Startup <Figure 1>', 'startup time (ms)', 'noop', 'a<b & "c"', 'cold', 'prebaked', 'prebaked/cold 0.44×', 'no data'])
    t.true(texts.includes(label), label);
  t.regex(svg, /<svg [^>]*width="800" height="400"/);
  // The legend names each series once, in its colour, even though it appears in two panels.
  t.is(texts.filter((s) => s === 'cold').length, 1 + 2);
});

test('boxes: quartiles type 7, whiskers to the furthest values within 1.5 IQR, outliers drawn as dots', (t) => {
  // 1..9 and 100: q1 = 3.25 (h = 2.25), q3 = 7.75 (h = 6.75), IQR 4.5, fences -3.5 and 14.5.
  const b = boxStats([1, 2, 3, 4, 5, 6, 7, 8, 9, 100])!;
  t.is(b.q1, 3.25);
  t.is(b.q3, 7.75);
  t.is(b.median, 5.5);
  t.is(b.low, 1);
  t.is(b.high, 9);
  t.deepEqual(b.outliers, [100]);
  // -8 and 20 lie just beyond 1.5 IQR of the box (q1 2.5, q3 7.5: fences -5 and 15), though within 3 IQR.
  const c = boxStats([20, 1, 2, 3, 4, 5, 6, 7, 8, 9, -8])!;
  t.deepEqual([c.low, c.high, c.outliers], [1, 9, [20, -8]]);
  t.is(boxStats([]), null);
  const svg = boxplotSvg([{ label: 'f', series: [{ label: 's', values: [1, 2, 3, 4, 5, 6, 7, 8, 9, 100, -50] }] }], { title: 'T', unit: 'ms' });
  t.is(svg.match(/<circle /g)?.length, 2);
});

test('the ECDF SVG is well-formed, draws a step line per series, and says where its axis is cut', (t) => {
  const cold = lognormal(1000, 1, 2);
  const prebaked = [...lognormal(990, 2, 2.1), 50, 60, 70, 80, 90, 100, 110, 120, 130, 140];
  const svg = ecdfSvg(
    [
      { label: 'cold', values: cold },
      { label: 'prebaked', values: prebaked },
    ],
    { title: 'Figure 2 (noop) & co', unit: 'ms', axisLabel: 'request latency', xMaxQuantile: 0.99 },
  );
  const texts = checkXml(svg);
  for (const label of ['Figure 2 (noop) & co', 'request latency (ms)', 'cold (n = 1000)', 'prebaked (n = 1000)', 'median', 'p90'])
    t.true(texts.includes(label), label);
  t.is(svg.match(/<path /g)?.length, 2);
  t.true(texts.some((s) => /axis cut at the 99th percentile; \d+ of 2000 values beyond \(max 140\.0\)/.test(s)));
  // Uncut, nothing is beyond the axis.
  t.false(ecdfSvg([{ label: 'cold', values: prebaked }], { title: 'x', unit: 'ms' }).includes('axis cut'));
  const log = ecdfSvg([{ label: 'cold', values: prebaked }], { title: 'x', unit: 'ms', log: true });
  t.true(checkXml(log).includes('value (ms, log scale)'));
});

test('figures without data are still well-formed and say so', (t) => {
  t.true(checkXml(boxplotSvg([], { title: 'empty', unit: 'ms' })).includes('no data'));
  t.true(checkXml(ecdfSvg([{ label: 'cold', values: [] }], { title: 'empty', unit: 'ms' })).includes('no data'));
});

test('axis ticks are round numbers covering the range', (t) => {
  t.deepEqual(niceTicks(0, 97, 5).ticks, [0, 20, 40, 60, 80, 100]);
  t.deepEqual(niceTicks(1.03, 3.4, 6).ticks, [1, 1.5, 2, 2.5, 3, 3.5]);
  t.true(niceTicks(5, 5).ticks.length > 1);
  t.deepEqual(logTicks(12, 270).ticks, [10, 20, 50, 100, 200, 500]);
  t.deepEqual(logTicks(0.5, 2000).ticks, [0.1, 1, 10, 100, 1000, 10000]);
});

// ---------------------------------------------------------------------------------------------
// Report

const rep = (v: number, n = 5) => Array.from({ length: n }, () => v);
// cold latencies 1..11: median 6, p90 10 (h = 9). prebaked: +4% up to the median, p90 value 10.6 (+6%).
const coldLatency = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
const prebakedLatency = [1, 2, 3, 4, 5, 6, 7, 8, 9].map((v) => v * 1.04).concat([10.6, 12]);

function crafted(): StudyResults {
  return {
    meta: {
      runs: 5,
      machine: 'test box | 2 vCPU',
      versions: { prebake: '0.1.0', runc: '1.1.5', criu: '4.2.1' },
      command: 'npm run -s bench:study -- --runs 5',
      date: '2026-01-01T00:00:00Z',
      notes: ['startup: create -> first HTTP 200'],
    },
    functions: [
      // Exactly 0.5x: met, with nothing to spare.
      { name: 'noop', startupMs: { cold: rep(100), prebaked: rep(50) }, latencyMs: { cold: coldLatency, prebaked: prebakedLatency } },
      // 0.6x: missed by 10 ms.
      { name: 'markdown', startupMs: { cold: rep(100), prebaked: rep(60) }, latencyMs: { cold: rep(4), prebaked: rep(3.9) } },
      // 0.51x: missed by 2 ms (limit 100 ms).
      { name: 'resize', startupMs: { cold: rep(200), prebaked: rep(102) }, latencyMs: { cold: rep(20), prebaked: rep(21) } },
      // 12.5x faster: met with 20 ms to spare (limit 100 ms).
      { name: 'ml', startupMs: { cold: rep(1000), prebaked: rep(80) }, latencyMs: { cold: rep(50), prebaked: rep(53) } },
    ],
  };
}

test('targets: startup <= 0.5x cold (noop, markdown, resize), >= 10x faster (ml), latency within 5% at median and p90', (t) => {
  const outcomes = evaluateTargets(crafted());
  const get = (fn: string, metric: string, stat: string) => outcomes.find((o) => o.target.fn === fn && o.target.metric === metric && o.target.stat === stat)!;
  t.is(outcomes.length, 4 + 4 * 2);
  t.is(outcomes.filter((o) => o.target.metric === 'startup').length, 4);

  t.true(get('noop', 'startup', 'median').met);
  t.is(get('noop', 'startup', 'median').marginMs, 0);
  t.false(get('markdown', 'startup', 'median').met);
  t.true(close(get('markdown', 'startup', 'median').marginMs, -10, 1e-9));
  t.false(get('resize', 'startup', 'median').met);
  t.true(close(get('resize', 'startup', 'median').marginMs, -2, 1e-9));
  const ml = get('ml', 'startup', 'median');
  t.true(ml.met);
  t.true(close(ml.limitMs, 100, 1e-9));
  t.true(close(ml.marginMs, 20, 1e-9));
  t.is(ml.target.maxRatio, 0.1);

  // noop latency: median 6.24 vs 6 (+4%) met; p90 10.6 vs 10 (+6%) missed by 0.1 ms.
  t.true(get('noop', 'latency', 'median').met);
  const p90Noop = get('noop', 'latency', 'p90');
  t.false(p90Noop.met);
  t.true(close(p90Noop.marginMs, -0.1, 1e-9));
  // Faster is not a miss; +5% exactly is met; +6% is not.
  t.true(get('markdown', 'latency', 'median').met);
  t.true(get('resize', 'latency', 'p90').met);
  t.false(get('ml', 'latency', 'median').met);

  const md = markdownReport(crafted());
  t.true(md.includes('7 of 12 met.'));
  t.true(md.includes('- **MET** — noop, startup, median: prebaked 50.0 ms vs cold 100.0 ms = 0.50× (target ≤ 0.50×, i.e. ≤ 50.0 ms); 0 ms to spare.'));
  t.true(md.includes('- **MISSED** — markdown, startup, median: prebaked 60.0 ms vs cold 100.0 ms = 0.60× (target ≤ 0.50×, i.e. ≤ 50.0 ms); missed by 10.0 ms (0.10× over).'));
  t.true(md.includes('- **MET** — ml, startup, median: prebaked 80.0 ms vs cold 1000 ms = 12.5× faster (target ≥ 10× faster, i.e. ≤ 100.0 ms); 20.0 ms to spare.'));
  t.true(md.includes('- **MISSED** — noop, latency after startup, p90: prebaked 10.6 ms vs cold 10.0 ms = +6.00% (target ≤ +5%, i.e. ≤ 10.5 ms); missed by 0.100 ms (1.00 percentage points over).'));
  t.true(md.includes('- **MET** — markdown, latency after startup, median: prebaked 3.90 ms vs cold 4.00 ms = −2.50%'));
});

test('a target with a 10x speed-up asked says how far short it fell', (t) => {
  const r = crafted();
  r.functions[3]!.startupMs.prebaked = rep(125);
  t.true(markdownReport(r).includes('= 8× faster (target ≥ 10× faster, i.e. ≤ 100.0 ms); missed by 25.0 ms (8× of the 10× asked).'));
});

test('the report has per-function tables of startup and latency, with CIs, ratios, Wilcoxon p and figure links', (t) => {
  const r = crafted();
  r.functions[0]!.startupMs = { cold: [100, 104, 98, 110, 101, 99, 103], prebaked: [50, 52, 49, 55, 51, 48, 53] };
  const md = markdownReport(r);
  t.true(md.includes('| startup (ms) | n | median | 95% CI of median | p10 | p90 | Wilcoxon p |'));
  t.true(md.includes('| latency after startup (ms) | n | median | 95% CI of median | p10 | p90 | Wilcoxon p |'));
  // noop startup: cold sorted 98 99 100 101 103 104 110: median 101, p10 98 + .6*1 = 98.6, p90 104 + .4*6 = 106.4.
  const coldRow = md.split('\n').find((l) => l.startsWith('| cold | 7 | 101.0 |'))!;
  t.truthy(coldRow);
  t.regex(coldRow, /\| 98\.6 \| 106\.4 \|/);
  const ci = bootstrapMedianCI([100, 104, 98, 110, 101, 99, 103]);
  t.true(coldRow.includes(`| ${ci.lo.toFixed(1)} – ${ci.hi.toFixed(1)} |`));
  // All 7 prebaked below all 7 cold: exact p = 2/C(14,7) = 2/3432 = 5.8e-4.
  t.true(md.includes(`| **prebaked / cold** |  | **${(51 / 101).toFixed(2)}** |`));
  t.true(md.includes('| 0.0006 |'));
  for (const fn of ['noop', 'markdown', 'resize', 'ml']) {
    t.true(md.includes(`### ${fn}`));
    t.true(md.includes(`[latency-${fn}.svg](latency-${fn}.svg)`));
  }
  t.true(md.includes('](startup.svg)'));
  t.true(md.includes('- Machine: test box \\| 2 vCPU'), 'table-breaking characters are escaped');
  t.true(md.includes('- Runs: 5 per function and mode'));
  t.true(md.includes('prebake 0.1.0, runc 1.1.5, criu 4.2.1'));
  t.true(md.includes('```sh\nnpm run -s bench:study -- --runs 5\n```'));
  t.true(md.includes('> startup: create -> first HTTP 200'));
});

test('missing data is reported as not evaluated, not as a crash', (t) => {
  const r = crafted();
  r.functions[1]!.startupMs.prebaked = [];
  const md = markdownReport(r);
  t.true(md.includes('- **NOT EVALUATED** — markdown, startup, median: no data for prebaked.'));
  t.true(md.includes('(1 not evaluated for lack of data)'));
  t.true(md.includes('| prebaked | 0 | — | — | — | — |  |'));
  t.notThrows(() => consoleTable(r));
});

test('writeReport writes report.md, startup.svg and a well-formed latency figure per function', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'prebake-study-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const r = crafted();
  r.functions.push({ name: '../evil name', startupMs: { cold: rep(10), prebaked: rep(5) }, latencyMs: { cold: rep(1), prebaked: rep(1) } });
  r.functions.push({ name: '../evil/name', startupMs: { cold: rep(10), prebaked: rep(5) }, latencyMs: { cold: rep(1), prebaked: rep(1) } });
  const out = join(dir, 'new', 'dir');
  const written = writeReport(out, r);
  t.deepEqual(written.map((p) => basename(p)), ['report.md', 'results.json', 'startup.svg', 'latency-noop.svg', 'latency-markdown.svg', 'latency-resize.svg', 'latency-ml.svg', 'latency-_evil_name.svg', 'latency-_evil_name-2.svg']);
  t.true(written.every((p) => p.startsWith(out + '/')));
  const startup = checkXml(readFileSync(join(out, 'startup.svg'), 'utf8'));
  for (const fn of ['noop', 'markdown', 'resize', 'ml', '../evil name']) t.true(startup.includes(fn), fn);
  t.true(checkXml(readFileSync(join(out, 'latency-ml.svg'), 'utf8')).includes('Figure 2 (ml): latency of requests after startup'));
  t.true(readFileSync(join(out, 'report.md'), 'utf8').includes('[latency-_evil_name-2.svg](latency-_evil_name-2.svg)'));
  // results.json: every measured value, as measured, with the machine, versions and command.
  const json = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as { format: number; meta: typeof r.meta; functions: typeof r.functions; summary: unknown[] };
  t.is(json.format, 1);
  t.deepEqual(json.meta, r.meta);
  t.deepEqual(json.functions, JSON.parse(JSON.stringify(r.functions)));
  t.true(json.summary.length > 0);
});

test('the console table has a row per function with medians, ratios and targets', (t) => {
  const lines = consoleTable(crafted()).trimEnd().split('\n');
  t.is(lines.length, 2 + 4 + 1);
  t.regex(lines[6]!, /ratio = prebaked\/cold/);
  t.regex(lines[0]!, /^function/);
  const noop = lines.find((l) => l.startsWith('noop'))!;
  t.regex(noop, /100\.0 ms\s+50\.0 ms\s+0\.50x/);
  t.regex(noop, /2\/3 met, missed: latency p90$/);
  t.regex(lines.find((l) => l.startsWith('ml'))!, /80\.0 ms\s+0\.080x.*1\/3 met/);
});

test('targets of the java and node functions: startup <= 0.2x and <= 0.5x cold, latency within 5%', (t) => {
  const results = {
    meta: crafted().meta,
    functions: [
      // 0.25x: missed by 5 ms (limit 0.2 x 100 ms).
      { name: 'java', startupMs: { cold: rep(100), prebaked: rep(25) }, latencyMs: { cold: rep(10), prebaked: rep(2) } },
      // 0.4x: met with 10 ms to spare.
      { name: 'node', startupMs: { cold: rep(100), prebaked: rep(40) }, latencyMs: { cold: rep(10), prebaked: rep(10) } },
    ],
  };
  const outcomes = evaluateTargets(results);
  t.is(outcomes.length, 2 + 2 * 2);
  const java = outcomes.find((o) => o.target.fn === 'java' && o.target.metric === 'startup')!;
  t.is(java.target.maxRatio, 0.2);
  t.false(java.met);
  t.true(close(java.marginMs, -5, 1e-9));
  const node = outcomes.find((o) => o.target.fn === 'node' && o.target.metric === 'startup')!;
  t.is(node.target.maxRatio, 0.5);
  t.true(node.met);
  t.true(outcomes.filter((o) => o.target.metric === 'latency').every((o) => o.met), 'a faster restored JVM meets "within 5%"');
});
