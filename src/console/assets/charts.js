// Charts drawn by hand in SVG for the console's app view: per-minute bars (stacked or not),
// step lines with gaps, min–max bands and horizontal bar lists. No library: each chart is
// a few <path> elements (one per series, whatever the number of minutes), with a <title>
// and an aria-label saying what it shows; the numbers are also given as text by the caller.

const NS = "http://www.w3.org/2000/svg";
const W = 640;
const L = 46;
const R = 8;
const T = 8;
const B = 20;

export function svg(tag, attrs = {}, text) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

// A number as text, as the API gave it (quantiles come rounded to 4 significant digits;
// samples and sums are shown whole), with thousands separators.
export function fmt(v, unit = "") {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  const s = Number.isInteger(v)
    ? v.toLocaleString("en-US")
    : v.toLocaleString("en-US", { maximumSignificantDigits: 15 });
  return unit ? `${s} ${unit}` : s;
}

// The smallest of 1, 2, 2.5, 5 × 10^k at or above `v` (1 for nothing).
function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v * 0.999999) return m * p;
  return 10 * p;
}

// Whole decades around [low, high]: `at(v)` places a value from 0 (bottom) to 1 (top).
function logScale(low, high) {
  const a = Math.floor(Math.log10(low));
  const b = Math.max(Math.ceil(Math.log10(high)), a + 1);
  const ticks = [];
  const every = Math.ceil((b - a) / 4);
  for (let k = a; k <= b; k += every) ticks.push(10 ** k);
  return {
    top: 10 ** b,
    ticks,
    at: (v) => (v <= 0 ? 0 : Math.min(Math.max((Math.log10(v) - a) / (b - a), 0), 1)),
  };
}

export function clock(iso) {
  return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
}

// A chart of per-minute values.
//
// - `times`: the minutes' starts (ISO), oldest first;
// - `series`: `{ name, cls, values, draw }` with `draw` one of `bar` (stacked on the bars
//   before it when `stacked`), `line` (a step line, broken where a value is null) or
//   `band` (`lo` and `hi` arrays);
// - `log`: a logarithmic scale (whole decades), for times whose quantiles lie far apart;
// - `label`: the chart's accessible name, a sentence with its figures.
export function plot({ times, series, stacked = false, unit = "", label, height = 150, log = false }) {
  const n = Math.max(times.length, 1);
  const H = height;
  let max = 0;
  if (stacked) {
    for (let i = 0; i < n; i++) {
      let sum = 0;
      for (const s of series) if (s.draw === "bar") sum += s.values[i] || 0;
      max = Math.max(max, sum);
    }
  }
  for (const s of series) {
    if (stacked && s.draw === "bar") continue;
    for (const v of s.draw === "band" ? s.hi : s.values) if (v !== null && v > max) max = v;
  }
  let low = Infinity;
  if (log) {
    for (const s of series) for (const v of s.values) if (v > 0 && v < low) low = v;
  }
  const scale = log && low < Infinity ? logScale(low, max) : null;
  const top = scale ? scale.top : niceMax(max);
  const bw = (W - L - R) / n;
  const x = (i) => L + i * bw;
  const y = scale
    ? (v) => T + (H - T - B) * (1 - scale.at(v))
    : (v) => T + (H - T - B) * (1 - Math.min(v, top) / top);
  const root = svg("svg", {
    viewBox: `0 0 ${W} ${H}`,
    class: "chart",
    role: "img",
    "aria-label": label,
    preserveAspectRatio: "none",
  });
  root.append(svg("title", {}, label));
  // Grid and y labels: 0, half and top (decades on a log scale).
  const ticks = scale ? scale.ticks : [0, top / 2, top];
  ticks.forEach((v, i) => {
    root.append(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }));
    root.append(svg("text", { x: L - 4, y: y(v) + 4, class: "ylabel", "text-anchor": "end" }, fmt(v, i === ticks.length - 1 ? unit : "")));
  });
  // Time labels: first, middle and last minute.
  if (times.length) {
    const marks = [...new Set([0, Math.floor((times.length - 1) / 2), times.length - 1])];
    for (const i of marks) {
      const anchor = i === 0 ? "start" : i === times.length - 1 ? "end" : "middle";
      const tx = i === times.length - 1 ? x(i + 1) : i === 0 ? x(i) : x(i) + bw / 2;
      root.append(svg("text", { x: tx, y: H - 5, class: "xlabel", "text-anchor": anchor }, clock(times[i])));
    }
  }
  const gap = bw > 4 ? 0.6 : 0;
  // Over a day a minute is under a pixel wide: a lone minute is drawn at least 2 units
  // wide (ending at its own place), so that it shows.
  const left = (i) => Math.min(x(i) + gap, x(i + 1) - 2);
  const base = new Array(n).fill(0);
  for (const s of series) {
    let d = "";
    if (s.draw === "bar" || s.draw === "band") {
      for (let i = 0; i < n; i++) {
        let lo;
        let hi;
        if (s.draw === "band") {
          if (s.lo[i] === null || s.hi[i] === null) continue;
          [lo, hi] = [s.lo[i], s.hi[i]];
        } else {
          const v = s.values[i] || 0;
          if (v <= 0) continue;
          lo = stacked ? base[i] : 0;
          hi = lo + v;
          if (stacked) base[i] = hi;
        }
        const y0 = y(lo);
        // A band of one value, or a tiny bar, still shows as a 1-pixel line.
        const y1 = Math.min(y(hi), y0 - 1);
        d += `M${left(i).toFixed(1)} ${y1.toFixed(1)}H${(x(i + 1) - gap).toFixed(1)}V${y0.toFixed(1)}H${left(i).toFixed(1)}Z`;
      }
    } else {
      let open = false;
      for (let i = 0; i < n; i++) {
        const v = s.values[i];
        if (v === null || v === undefined) {
          open = false;
          continue;
        }
        const yy = y(v).toFixed(1);
        // A run starts at least 4 units before its minute's end, so a lone minute shows.
        const from = Math.min(x(i), x(i + 1) - 4).toFixed(1);
        d += open ? `V${yy}H${x(i + 1).toFixed(1)}` : `M${from} ${yy}H${x(i + 1).toFixed(1)}`;
        open = true;
      }
    }
    if (d) root.append(svg("path", { d, class: `s-${s.draw} ${s.cls}`, "data-series": s.name }));
  }
  return root;
}

// Horizontal bars with their labels and counts as text: `[label, count]`, largest first.
export function barList(items, label) {
  const rowH = 20;
  const H = Math.max(items.length, 1) * rowH + 4;
  const max = Math.max(1, ...items.map(([, v]) => v));
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart bars", role: "img", "aria-label": label });
  root.append(svg("title", {}, label));
  items.forEach(([name, v], i) => {
    const yy = 2 + i * rowH;
    const w = ((W - L - 90) * v) / max;
    root.append(svg("text", { x: L - 4, y: yy + 14, class: "ylabel", "text-anchor": "end" }, name));
    root.append(svg("rect", { x: L, y: yy + 3, width: Math.max(w, 1).toFixed(1), height: rowH - 6, class: "hbar" }));
    root.append(svg("text", { x: L + w + 6, y: yy + 14, class: "count" }, fmt(v)));
  });
  return root;
}
