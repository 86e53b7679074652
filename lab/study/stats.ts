// Statistics of the cold-start study: quantiles (R's default, type 7), medians with bootstrapped
// confidence intervals from a seeded PRNG (the same seed gives the same interval on every
// machine), the Wilcoxon rank-sum / Mann-Whitney test as R's wilcox.test computes it, and ECDFs.
//
// Conventions: every function takes plain arrays of finite numbers and never reorders them; an
// empty sample gives NaN (so a failed series shows as "no data" in a report instead of a crash);
// a NaN or an infinity in a sample is an error, since it has no place in an order statistic.

/** Checks a sample and returns a sorted copy. */
function sortedCopy(xs: readonly number[], what = 'sample'): Float64Array {
  const s = Float64Array.from(xs);
  for (const x of s) if (!Number.isFinite(x)) throw new RangeError(`${what} holds ${x}: only finite numbers can be ranked`);
  return s.sort();
}

/** Quantile of already sorted values, type 7: h = (n-1)p, interpolate between x[floor h] and the next. */
function quantileOfSorted(s: ArrayLike<number>, p: number): number {
  if (!(p >= 0 && p <= 1)) throw new RangeError(`quantile probability ${p} is not in [0, 1]`);
  const n = s.length;
  if (n === 0) return NaN;
  const h = (n - 1) * p;
  const lo = Math.floor(h);
  const a = s[lo]!;
  if (lo + 1 >= n) return a;
  return a + (h - lo) * (s[lo + 1]! - a);
}

/**
 * The p-quantile by linear interpolation between order statistics: R's `quantile(xs, p)` (type 7,
 * its default), numpy's default too. NaN for an empty sample.
 */
export function quantile(xs: readonly number[], p: number): number {
  return quantileOfSorted(sortedCopy(xs), p);
}

/** Several quantiles of one sample, sorting it once. */
export function quantiles(xs: readonly number[], ps: readonly number[]): number[] {
  const s = sortedCopy(xs);
  return ps.map((p) => quantileOfSorted(s, p));
}

export const median = (xs: readonly number[]): number => quantile(xs, 0.5);
export const p10 = (xs: readonly number[]): number => quantile(xs, 0.1);
export const p90 = (xs: readonly number[]): number => quantile(xs, 0.9);

export interface Summary {
  n: number;
  min: number;
  p10: number;
  /** First quartile (25th percentile). */
  q1: number;
  median: number;
  /** Third quartile (75th percentile). */
  q3: number;
  p90: number;
  max: number;
  mean: number;
  /** Sample standard deviation (n - 1 in the denominator); NaN below two values. */
  sd: number;
}

/** All the order statistics a report needs, plus mean and sd. Quantiles are type 7. */
export function summary(xs: readonly number[]): Summary {
  const s = sortedCopy(xs);
  const n = s.length;
  let sum = 0;
  for (const x of s) sum += x;
  const mean = n ? sum / n : NaN;
  let ss = 0;
  for (const x of s) ss += (x - mean) ** 2;
  const q = (p: number) => quantileOfSorted(s, p);
  return {
    n,
    min: n ? s[0]! : NaN,
    p10: q(0.1),
    q1: q(0.25),
    median: q(0.5),
    q3: q(0.75),
    p90: q(0.9),
    max: n ? s[n - 1]! : NaN,
    mean,
    sd: n > 1 ? Math.sqrt(ss / (n - 1)) : NaN,
  };
}

// ---------------------------------------------------------------------------------------------
// Seeded randomness and the bootstrap

/**
 * mulberry32: a small 32-bit PRNG, uniform in [0, 1). The same seed gives the same sequence on
 * every platform (integer arithmetic only), which is what makes a bootstrapped interval
 * reproducible. Not for anything that needs to be unpredictable.
 */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface BootstrapOptions {
  /** Number of bootstrap resamples (default 2000). */
  resamples?: number;
  /** Coverage of the interval (default 0.95). */
  level?: number;
  /** PRNG seed (default 1). The same seed and data give the same interval. */
  seed?: number;
}

export interface ConfidenceInterval {
  /** The statistic on the sample itself. */
  estimate: number;
  lo: number;
  hi: number;
  level: number;
  resamples: number;
  seed: number;
}

function bootstrapOptions(o: BootstrapOptions): Required<BootstrapOptions> {
  const resamples = o.resamples ?? 2000;
  const level = o.level ?? 0.95;
  const seed = o.seed ?? 1;
  if (!Number.isInteger(resamples) || resamples < 1) throw new RangeError(`resamples must be a positive integer, not ${resamples}`);
  if (!(level > 0 && level < 1)) throw new RangeError(`level must be in (0, 1), not ${level}`);
  return { resamples, level, seed };
}

/**
 * Medians of `resamples` resamples (with replacement) of the sorted sample s, drawn from rand.
 * A resample is kept as counts per index of s, already in order, so its median is found by a
 * walk through the counts instead of a sort: O(n) per resample.
 */
function bootstrapMedians(s: Float64Array, resamples: number, rand: () => number): Float64Array {
  const n = s.length;
  const counts = new Uint32Array(n);
  const out = new Float64Array(resamples);
  const h = (n - 1) / 2; // type 7 median: rank h (0-based), between ranks lo and lo + 1
  const lo = Math.floor(h);
  const frac = h - lo;
  for (let b = 0; b < resamples; b++) {
    counts.fill(0);
    for (let i = 0; i < n; i++) counts[Math.floor(rand() * n)]!++;
    let j = 0;
    let below = 0; // resampled values at indices < j
    while (below + counts[j]! <= lo) below += counts[j++]!;
    const a = s[j]!;
    let next = a;
    if (frac > 0 && below + counts[j]! <= lo + 1) {
      do j++;
      while (counts[j] === 0);
      next = s[j]!;
    }
    out[b] = a + frac * (next - a);
  }
  return out;
}

function percentileInterval(estimate: number, stats: Float64Array, o: Required<BootstrapOptions>): ConfidenceInterval {
  stats.sort();
  const alpha = (1 - o.level) / 2;
  return { estimate, lo: quantileOfSorted(stats, alpha), hi: quantileOfSorted(stats, 1 - alpha), ...o };
}

/**
 * Percentile-bootstrap confidence interval of the median: the (1-level)/2 and (1+level)/2
 * quantiles of the medians of `resamples` resamples drawn with replacement. Deterministic for a
 * given seed. NaN bounds for an empty sample.
 */
export function bootstrapMedianCI(xs: readonly number[], options: BootstrapOptions = {}): ConfidenceInterval {
  const o = bootstrapOptions(options);
  const s = sortedCopy(xs);
  if (s.length === 0) return { estimate: NaN, lo: NaN, hi: NaN, ...o };
  return percentileInterval(quantileOfSorted(s, 0.5), bootstrapMedians(s, o.resamples, mulberry32(o.seed)), o);
}

/**
 * Percentile-bootstrap confidence interval of median(a) / median(b), the two samples resampled
 * independently (as two independent series of runs are). NaN bounds if either sample is empty.
 */
export function bootstrapMedianRatioCI(a: readonly number[], b: readonly number[], options: BootstrapOptions = {}): ConfidenceInterval {
  const o = bootstrapOptions(options);
  const sa = sortedCopy(a, 'first sample');
  const sb = sortedCopy(b, 'second sample');
  if (sa.length === 0 || sb.length === 0) return { estimate: NaN, lo: NaN, hi: NaN, ...o };
  const rand = mulberry32(o.seed);
  const ma = bootstrapMedians(sa, o.resamples, rand);
  const mb = bootstrapMedians(sb, o.resamples, rand);
  const ratios = ma.map((x, i) => x / mb[i]!);
  return percentileInterval(quantileOfSorted(sa, 0.5) / quantileOfSorted(sb, 0.5), ratios, o);
}

// ---------------------------------------------------------------------------------------------
// Wilcoxon rank-sum (Mann-Whitney U)

/** erfc(x) for x >= 0, to near double precision: a series for erf below 2.5, a continued fraction above. */
function erfc(x: number): number {
  if (x < 2.5) {
    // erf(x) = 2/sqrt(pi) e^(-x^2) sum_n x (2x^2)^n / (1*3*...*(2n+1)); every term is positive.
    let term = x;
    let sum = x;
    for (let n = 1; term > sum * 1e-17; n++) {
      term *= (2 * x * x) / (2 * n + 1);
      sum += term;
    }
    return 1 - ((2 / Math.sqrt(Math.PI)) * Math.exp(-x * x) * sum);
  }
  // erfc(x) = e^(-x^2)/sqrt(pi) / (x + (1/2)/(x + 1/(x + (3/2)/(x + ...)))), evaluated backwards.
  let f = x;
  for (let n = 120; n >= 1; n--) f = x + n / 2 / f;
  return Math.exp(-x * x) / (Math.sqrt(Math.PI) * f);
}

/** Standard normal lower tail P(Z <= z). */
export function normalCdf(z: number): number {
  return z < 0 ? 0.5 * erfc(-z / Math.SQRT2) : 1 - 0.5 * erfc(z / Math.SQRT2);
}

/**
 * Exact null distribution of W for sizes m and n without ties: counts[w] = number of the C(m+n, m)
 * equally likely arrangements with W = w. Built by placing the m+n ranks in order, each either an
 * a (which adds the number of b's already placed to W) or a b.
 */
function exactWCounts(m: number, n: number): Float64Array {
  const maxW = m * n;
  // ways[j][w] after t ranks: j of them a's, statistic w so far.
  let ways: Float64Array[] = Array.from({ length: m + 1 }, () => new Float64Array(maxW + 1));
  ways[0]![0] = 1;
  for (let t = 0; t < m + n; t++) {
    const next = Array.from({ length: m + 1 }, () => new Float64Array(maxW + 1));
    for (let j = 0; j <= Math.min(t, m); j++) {
      const bs = t - j;
      if (bs > n) continue;
      const row = ways[j]!;
      const asB = next[j]!;
      const asA = next[j + 1];
      for (let w = 0; w <= maxW; w++) {
        const c = row[w]!;
        if (c === 0) continue;
        if (bs < n) asB[w] = asB[w]! + c; // rank t+1 is a b
        if (asA) asA[w + bs] = asA[w + bs]! + c; // rank t+1 is an a, above the bs b's placed so far
      }
    }
    ways = next;
  }
  return ways[m]!;
}

interface WilcoxonOptions {
  /**
   * 'auto' (default, as R): exact when both samples have fewer than 50 values and there are no
   * ties, else the normal approximation. 'exact' falls back to 'normal' when there are ties.
   */
  method?: 'auto' | 'exact' | 'normal';
  /** Continuity correction of the normal approximation (default true, as R's `correct=TRUE`). */
  correct?: boolean;
}

interface WilcoxonResult {
  /** R's W: the rank sum of a minus nA(nA+1)/2, i.e. Mann-Whitney U of a (pairs a > b, ties count 1/2). */
  W: number;
  /** Two-sided p-value; NaN when a sample is empty. */
  p: number;
  method: 'exact' | 'normal';
  /** The standardised statistic of the normal approximation (after the continuity correction); NaN for exact. */
  z: number;
  nA: number;
  nB: number;
  /** Whether any values were tied (across or within samples). */
  ties: boolean;
}

/**
 * Two-sided Wilcoxon rank-sum test (Mann-Whitney U) of a against b, as R's
 * `wilcox.test(a, b, exact=, correct=)`: midranks for ties; the normal approximation with the tie
 * correction of the variance and (by default) the continuity correction; or the exact null
 * distribution when it is small and tie-free. When every value is the same, p is 1.
 */
export function wilcoxonRankSum(a: readonly number[], b: readonly number[], options: WilcoxonOptions = {}): WilcoxonResult {
  const method = options.method ?? 'auto';
  const correct = options.correct ?? true;
  const nA = a.length;
  const nB = b.length;
  sortedCopy(a, 'first sample');
  sortedCopy(b, 'second sample');
  if (nA === 0 || nB === 0) return { W: NaN, p: NaN, method: 'normal', z: NaN, nA, nB, ties: false };

  // Midranks of the pooled sample; the tie groups' sizes for the variance.
  const pooled = [...a.map((v) => ({ v, fromA: true })), ...b.map((v) => ({ v, fromA: false }))].sort((x, y) => x.v - y.v);
  const N = pooled.length;
  let rankSumA = 0;
  let tieTerm = 0; // sum over tie groups of t^3 - t
  for (let i = 0; i < N; ) {
    let j = i;
    while (j + 1 < N && pooled[j + 1]!.v === pooled[i]!.v) j++;
    const t = j - i + 1;
    const midrank = (i + 1 + (j + 1)) / 2;
    for (let k = i; k <= j; k++) if (pooled[k]!.fromA) rankSumA += midrank;
    tieTerm += t ** 3 - t;
    i = j + 1;
  }
  const W = rankSumA - (nA * (nA + 1)) / 2;
  const ties = tieTerm > 0;

  const exact = !ties && (method === 'exact' || (method === 'auto' && nA < 50 && nB < 50));
  if (exact) {
    const counts = exactWCounts(nA, nB);
    let total = 0;
    let below = 0; // P(W' <= W)
    let above = 0; // P(W' >= W)
    counts.forEach((c, w) => {
      total += c;
      if (w <= W) below += c;
      if (w >= W) above += c;
    });
    return { W, p: Math.min(1, (2 * Math.min(below, above)) / total), method: 'exact', z: NaN, nA, nB, ties };
  }

  const d = W - (nA * nB) / 2;
  const sigma = Math.sqrt(((nA * nB) / 12) * (N + 1 - tieTerm / (N * (N - 1))));
  if (sigma === 0) return { W, p: 1, method: 'normal', z: 0, nA, nB, ties };
  const z = (d - (correct ? Math.sign(d) * 0.5 : 0)) / sigma;
  return { W, p: Math.min(1, 2 * normalCdf(-Math.abs(z))), method: 'normal', z, nA, nB, ties };
}

// ---------------------------------------------------------------------------------------------
// ECDF

interface EcdfPoint {
  /** A distinct value of the sample, ascending. */
  x: number;
  /** The fraction of the sample <= x. */
  p: number;
}

/** The empirical CDF: one point per distinct value, ascending in x and p, the last p being 1. */
export function ecdf(xs: readonly number[]): EcdfPoint[] {
  const s = sortedCopy(xs);
  const n = s.length;
  const out: EcdfPoint[] = [];
  for (let i = 0; i < n; i++) {
    if (i + 1 < n && s[i + 1] === s[i]) continue;
    out.push({ x: s[i]!, p: (i + 1) / n });
  }
  return out;
}
