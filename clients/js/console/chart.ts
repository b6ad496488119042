// A line chart of the last 15 minutes in plain SVG: one point per second,
// the newest at the right edge, a gap where a second has no value (no
// latency without a delivery), the y axis from 0 to a round maximum.

const SVG = 'http://www.w3.org/2000/svg';
const W = 600;
const H = 150;
const PAD = { left: 56, right: 8, top: 8, bottom: 20 };
/** The window the x axis spans (seconds), whatever the data's length. */
export const WINDOW_SECS = 900;

export interface Series {
  label: string;
  color: string;
  values: (number | null)[];
}

function el<K extends keyof SVGElementTagNameMap>(name: K, attrs: Record<string, string | number>): SVGElementTagNameMap[K] {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  return e;
}

function text(x: number, y: number, s: string, anchor = 'end'): SVGTextElement {
  const t = el('text', { x, y, 'text-anchor': anchor, 'font-size': 11, fill: '#5a6570' });
  t.textContent = s;
  return t;
}

/** 1, 2 or 5 × a power of ten, at least `v` (and at least 1). */
export function niceMax(v: number): number {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

/** Draw `series` into `svg` (replacing what it held); `unit` labels the y axis. */
export function drawChart(svg: SVGSVGElement, series: Series[], unit: string): void {
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.replaceChildren();
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  let max = 0;
  for (const s of series) for (const v of s.values) if (v !== null && v > max) max = v;
  const top = niceMax(max);
  const x = (i: number, n: number) => PAD.left + plotW - ((n - 1 - i) / (WINDOW_SECS - 1)) * plotW;
  const y = (v: number) => PAD.top + plotH - (v / top) * plotH;
  // Axes and grid: 0, half and top; minutes ago along the bottom.
  for (const v of [0, top / 2, top]) {
    svg.append(el('line', { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v), stroke: '#e3e7eb' }));
    const label = `${+v.toPrecision(3)}${v === top ? ` ${unit}` : ''}`;
    svg.append(text(PAD.left - 4, y(v) + 4, label));
  }
  for (const ago of [15, 10, 5, 0]) {
    const px = PAD.left + plotW - (ago * 60 / (WINDOW_SECS - 1)) * plotW;
    svg.append(text(px, H - 4, ago === 0 ? 'now' : `−${ago} min`, ago === 15 ? 'start' : ago === 0 ? 'end' : 'middle'));
  }
  for (const s of series) {
    const n = s.values.length;
    let d = '';
    let pen = false;
    s.values.forEach((v, i) => {
      if (v === null) {
        pen = false;
        return;
      }
      const at = `${x(i, n).toFixed(1)},${y(v).toFixed(1)}`;
      // A point alone (a single second with a value) is drawn as a dot.
      const alone = !pen && (s.values[i + 1] ?? null) === null;
      d += pen ? `L${at}` : alone ? `M${at}l0.01,0` : `M${at}`;
      pen = true;
    });
    if (d) {
      svg.append(el('path', { d, fill: 'none', stroke: s.color, 'stroke-width': 1.5, 'stroke-linecap': 'round', 'stroke-linejoin': 'round' }));
    }
  }
}

/** The last value of `values` and the largest, `null` when there is none. */
export function lastAndPeak(values: (number | null)[]): { last: number | null; peak: number | null } {
  let peak: number | null = null;
  for (const v of values) if (v !== null && (peak === null || v > peak)) peak = v;
  const last = values.length > 0 ? values[values.length - 1] ?? null : null;
  return { last, peak };
}
