// plot.ts — loss curves as a standalone SVG file (no dependencies), for `sharedformer compare` and for users who want
// a picture of their runs. One chart: steps on x, loss on y; per series a thin line for the training loss (a trailing
// mean over 1/40 of the steps, in at most `maxPoints` buckets) and a thicker line with markers for the validation loss.

/** One run's curves: [step, loss] pairs, steps increasing. */
export interface LossSeries {
  /** The legend label. */
  name: string;
  /** Training loss per step (or per logged step). */
  train?: ReadonlyArray<readonly [number, number]>;
  /** Validation loss at evaluation steps. */
  val?: ReadonlyArray<readonly [number, number]>;
}

/** Options of {@link lossCurveSvg}. */
export interface LossPlotOptions {
  title?: string;
  /** Subtitle under the title (settings, date). */
  subtitle?: string;
  /** y-axis label (default 'loss (nats per character)'). */
  yLabel?: string;
  width?: number;
  height?: number;
  /** Training curves are averaged into at most this many points (default 300). */
  maxPoints?: number;
}

const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf', '#bcbd22', '#7f7f7f'];

/** Escapes text for an XML text node or attribute. */
export function xmlEscape(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#39;');
}

/** "Nice" tick values covering [lo, hi]: steps of 1, 2 or 5 times a power of ten, about `count` of them. */
export function niceTicks(lo: number, hi: number, count = 6): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / Math.max(1, count);
  const pow = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * pow).find((s) => s >= raw) ?? 10 * pow;
  const ticks: number[] = [];
  for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) ticks.push(Number(v.toPrecision(12)));
  return ticks;
}

/** Trailing moving average over `window` points (the first points average what there is). */
export function movingAverage(points: ReadonlyArray<readonly [number, number]>, window: number): [number, number][] {
  const out: [number, number][] = [];
  let sum = 0;
  for (let i = 0; i < points.length; i++) {
    sum += points[i][1];
    if (i >= window) sum -= points[i - window][1];
    out.push([points[i][0], sum / Math.min(i + 1, window)]);
  }
  return out;
}

/** Averages consecutive points into at most n buckets (x: the bucket's last step, y: the mean loss). */
export function bucketMeans(points: ReadonlyArray<readonly [number, number]>, n: number): [number, number][] {
  const finite = points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  if (finite.length <= n) return finite.map(([x, y]) => [x, y]);
  const out: [number, number][] = [];
  const size = finite.length / n;
  for (let b = 0; b < n; b++) {
    const from = Math.floor(b * size), to = Math.floor((b + 1) * size);
    let s = 0;
    for (let i = from; i < to; i++) s += finite[i][1];
    out.push([finite[to - 1][0], s / (to - from)]);
  }
  return out;
}

/** The drawn training curve: finite points, a trailing mean over 1/40 of them, at most maxPoints buckets. */
function trainCurve(points: ReadonlyArray<readonly [number, number]>, maxPoints: number): [number, number][] {
  const finite = points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  return bucketMeans(movingAverage(finite, Math.max(1, Math.round(finite.length / 40))), maxPoints);
}

const fmtTick = (v: number) => (Math.abs(v) >= 1000 ? Math.round(v).toLocaleString('en-US') : String(Number(v.toPrecision(6))));

/**
 * An SVG document (a string starting with `<?xml`) plotting every series' training and validation loss against
 * steps. Non-finite values are left out. Throws a TypeError when there is no finite point to plot.
 */
export function lossCurveSvg(series: readonly LossSeries[], o: LossPlotOptions = {}): string {
  const W = o.width ?? 800, H = o.height ?? 480, maxPoints = o.maxPoints ?? 300;
  if (!Number.isInteger(W) || !Number.isInteger(H) || W < 200 || H < 150)
    throw new RangeError(`lossCurveSvg: width and height must be integers >= 200 and >= 150, got ${W} x ${H}`);
  const curves = series.map((s, i) => ({
    name: s.name,
    color: PALETTE[i % PALETTE.length],
    dash: i >= PALETTE.length ? '6 3' : '',
    train: trainCurve(s.train ?? [], maxPoints),
    val: (s.val ?? []).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y)),
  }));
  const all = curves.flatMap((c) => [...c.train, ...c.val]);
  if (all.length === 0) throw new TypeError('lossCurveSvg: no finite (step, loss) point to plot');
  const xs = all.map((p) => p[0]);
  // The y range leaves out the first tenth of the training curves (the steep start would flatten the rest); the
  // curves are clipped to the plot area.
  const lastStep = Math.max(...xs);
  const ranged = curves.flatMap((c) => [...c.train.filter(([x]) => x >= lastStep * 0.1), ...c.val]);
  const ys = (ranged.length ? ranged : all).map((p) => p[1]);
  const xMin = Math.min(0, ...xs), xMax = Math.max(...xs) > xMin ? Math.max(...xs) : xMin + 1;
  let yMin = Math.min(...ys), yMax = Math.max(...ys);
  if (yMax - yMin < 1e-6) [yMin, yMax] = [yMin - 0.5, yMax + 0.5];
  const pad = (yMax - yMin) * 0.05;
  yMin -= pad;
  yMax += pad;

  const legendW = Math.min(260, Math.max(170, 36 + 7 * Math.max(...curves.map((c) => c.name.length))));
  const m = { left: 64, right: legendW + 24, top: o.subtitle ? 58 : 42, bottom: 48 };
  const pw = W - m.left - m.right, ph = H - m.top - m.bottom;
  const X = (x: number) => m.left + ((x - xMin) / (xMax - xMin)) * pw;
  const Y = (y: number) => m.top + (1 - (y - yMin) / (yMax - yMin)) * ph;
  const pt = ([x, y]: readonly [number, number]) => `${X(x).toFixed(1)},${Y(y).toFixed(1)}`;

  const out: string[] = [];
  out.push('<?xml version="1.0" encoding="UTF-8"?>');
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif" font-size="12">`);
  out.push(`<rect x="0" y="0" width="${W}" height="${H}" fill="#ffffff"/>`);
  out.push(`<text x="${m.left}" y="22" font-size="15" font-weight="bold">${xmlEscape(o.title ?? 'Loss')}</text>`);
  if (o.subtitle) out.push(`<text x="${m.left}" y="40" fill="#555555">${xmlEscape(o.subtitle)}</text>`);
  // Grid and axes.
  out.push('<g stroke="#e5e5e5" stroke-width="1">');
  const yt = niceTicks(yMin, yMax, 6).filter((v) => v >= yMin && v <= yMax);
  const xt = niceTicks(xMin, xMax, 8).filter((v) => v >= xMin && v <= xMax);
  for (const v of yt) out.push(`<line x1="${m.left}" y1="${Y(v).toFixed(1)}" x2="${m.left + pw}" y2="${Y(v).toFixed(1)}"/>`);
  for (const v of xt) out.push(`<line x1="${X(v).toFixed(1)}" y1="${m.top}" x2="${X(v).toFixed(1)}" y2="${m.top + ph}"/>`);
  out.push('</g>');
  out.push(`<rect x="${m.left}" y="${m.top}" width="${pw}" height="${ph}" fill="none" stroke="#333333"/>`);
  out.push('<g fill="#333333">');
  for (const v of yt) out.push(`<text x="${m.left - 6}" y="${(Y(v) + 4).toFixed(1)}" text-anchor="end">${fmtTick(v)}</text>`);
  for (const v of xt) out.push(`<text x="${X(v).toFixed(1)}" y="${m.top + ph + 16}" text-anchor="middle">${fmtTick(v)}</text>`);
  out.push(`<text x="${m.left + pw / 2}" y="${H - 10}" text-anchor="middle">step</text>`);
  out.push(`<text transform="translate(16 ${m.top + ph / 2}) rotate(-90)" text-anchor="middle">${xmlEscape(o.yLabel ?? 'loss (nats per character)')}</text>`);
  out.push('</g>');
  // Curves, clipped to the plot area.
  out.push(`<clipPath id="plot"><rect x="${m.left}" y="${m.top}" width="${pw}" height="${ph}"/></clipPath>`);
  out.push('<g clip-path="url(#plot)" fill="none">');
  for (const c of curves) {
    const dash = c.dash ? ` stroke-dasharray="${c.dash}"` : '';
    if (c.train.length > 1)
      out.push(`<polyline class="train" data-series="${xmlEscape(c.name)}" stroke="${c.color}" stroke-width="1.2" stroke-opacity="0.55"${dash} points="${c.train.map(pt).join(' ')}"/>`);
    if (c.val.length > 1)
      out.push(`<polyline class="val" data-series="${xmlEscape(c.name)}" stroke="${c.color}" stroke-width="2.4"${dash} points="${c.val.map(pt).join(' ')}"/>`);
    for (const p of c.val) out.push(`<circle class="val" data-series="${xmlEscape(c.name)}" cx="${X(p[0]).toFixed(1)}" cy="${Y(p[1]).toFixed(1)}" r="3" fill="${c.color}"/>`);
  }
  out.push('</g>');
  // Legend.
  const lx = m.left + pw + 16;
  out.push(`<g class="legend">`);
  const keys = [
    ...(curves.some((c) => c.train.length > 1) ? ['thin: training (average)'] : []),
    ...(curves.some((c) => c.val.length) ? ['thick, dots: validation'] : []),
  ];
  keys.forEach((k, i) => out.push(`<text x="${lx}" y="${m.top + 4 + 16 * i}" fill="#555555">${k}</text>`));
  curves.forEach((c, i) => {
    const y = m.top + 12 + 16 * keys.length + i * 18;
    out.push(`<line x1="${lx}" y1="${y - 4}" x2="${lx + 22}" y2="${y - 4}" stroke="${c.color}" stroke-width="2.4"${c.dash ? ` stroke-dasharray="${c.dash}"` : ''}/>`);
    out.push(`<text x="${lx + 28}" y="${y}">${xmlEscape(c.name)}</text>`);
  });
  out.push('</g>');
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
