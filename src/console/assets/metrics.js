// The console's app view (`#app=NAME`, `&range=24h` for a day): charts of the app's
// metrics from the logs, from GET /v2/channels/NAME/metrics?since=1h&l2met=minutes,
// refreshed every minute while the page is visible. Every figure is also text (the
// figures list, each chart's legend and its per-minute table), and each chart has an
// accessible name that says what it shows. An app with metrics off gets a note with the
// CLI command and a button that turns them on (PATCH, with the console's key).

import { plot, barList, fmt, clock } from "./charts.js";

export const REFRESH_MS = 60000;
const RANGES = { "1h": "last hour", "24h": "last 24 hours" };
const CLASSES = ["2xx", "3xx", "4xx", "5xx"];
const QUANTILES = ["p50", "p95", "p99"];

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  e.append(...children.filter((c) => c !== null && c !== undefined));
  return e;
}

// The API's minutes, led by empty ones back to the start of the range (the API's rows
// start when counting started), so a chart always spans the whole range.
function padded(d) {
  const step = 60000;
  const first = d.minutes.length ? Date.parse(d.minutes[0].at) : Date.now();
  const lead = [];
  for (let t = Math.ceil(Date.parse(d.since) / step) * step; t < first; t += step) {
    lead.push({ at: new Date(t).toISOString().replace(".000Z", "Z"), requests: 0, "5xx": 0 });
  }
  return lead.length ? [...lead, ...d.minutes] : d.minutes;
}

const pct = (part, whole) => (whole > 0 ? (100 * part) / whole : null);
const pctText = (v) => (v === null ? "–" : `${v.toFixed(2)} %`);

// The view: `api(path, init)` calls the JSON API with the console's key (and throws an
// Error with the answer's `.status` when it is not a success), `failed(e)` reports an error
// the console handles (a refused key asks for the key again).
export class AppView {
  constructor(api, failed) {
    this.api = api;
    this.failed = failed;
    this.app = null;
    this.range = "1h";
    this.timer = 0;
    this.busy = false;
    this.loadedAt = 0;
    this.root = document.getElementById("appview");
    for (const b of this.root.querySelectorAll("[data-range]")) {
      b.addEventListener("click", () => {
        location.hash = `app=${encodeURIComponent(this.app)}${b.dataset.range === "1h" ? "" : `&range=${b.dataset.range}`}`;
      });
    }
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden && this.app && Date.now() - this.loadedAt >= REFRESH_MS) this.refresh();
    });
  }

  // Shows the app named in the URL's fragment (true), or closes the view (false).
  route() {
    const p = new URLSearchParams(location.hash.slice(1));
    const app = p.get("app");
    if (!app) {
      this.close();
      return false;
    }
    const range = RANGES[p.get("range")] ? p.get("range") : "1h";
    const changed = app !== this.app || range !== this.range;
    this.app = app;
    this.range = range;
    this.root.hidden = false;
    document.getElementById("appview-name").textContent = app;
    document.title = `${app} · logplex console`;
    for (const b of this.root.querySelectorAll("[data-range]")) {
      b.setAttribute("aria-pressed", b.dataset.range === range ? "true" : "false");
    }
    if (changed) {
      document.getElementById("charts").replaceChildren(el("p", { class: "dim", text: "Loading…" }));
    }
    if (!this.timer) {
      this.timer = setInterval(() => { if (!document.hidden) this.refresh(); }, REFRESH_MS);
    }
    if (changed || Date.now() - this.loadedAt >= REFRESH_MS) this.refresh();
    return true;
  }

  close() {
    this.app = null;
    this.root.hidden = true;
    document.title = "logplex console";
    clearInterval(this.timer);
    this.timer = 0;
  }

  async refresh() {
    if (!this.app || this.busy) return;
    this.busy = true;
    const app = this.app;
    const range = this.range;
    const status = document.getElementById("appview-updated");
    try {
      const data = await this.api(`v2/channels/${encodeURIComponent(app)}/metrics?since=${range}&l2met=minutes`);
      if (app !== this.app || range !== this.range) return;
      this.loadedAt = Date.now();
      this.render(data);
      status.textContent = `updated ${new Date().toLocaleTimeString()} · refreshes every minute`;
    } catch (e) {
      if (app !== this.app) return;
      if (e.status === 409) {
        this.loadedAt = Date.now();
        this.renderOff(app);
        status.textContent = "";
      } else if (e.status === 404) {
        document.getElementById("charts").replaceChildren(
          el("p", { class: "error", role: "alert", text: `No app named ${app}.` }));
      } else {
        this.failed(e);
      }
    } finally {
      this.busy = false;
      // Another app or range was asked for while this one loaded: load that one now.
      if (this.app && (app !== this.app || range !== this.range)) this.refresh();
    }
  }

  renderOff(app) {
    const cmd = `logplex metrics:enable -a ${app}`;
    const button = el("button", { type: "button", id: "metrics-enable", class: "primary", text: "Turn metrics on" });
    const said = el("p", { class: "error", role: "alert" });
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        await this.api(`v2/channels/${encodeURIComponent(app)}`, {
          method: "PATCH",
          body: JSON.stringify({ metrics: true }),
        });
        this.refresh();
      } catch (e) {
        said.textContent = `Could not turn metrics on: ${e.message}`;
        button.disabled = false;
      }
    });
    document.getElementById("charts").replaceChildren(el("div", { id: "metrics-off", class: "off" },
      el("p", { text: `Metrics from the logs are off for ${app}: no requests, errors or latency are counted from its router lines, nor l2met values from its own.` }),
      el("p", {}, "Turn them on from a terminal with ", el("code", { text: cmd }), ", or here:"),
      button,
      said,
      el("p", { class: "dim", text: "Counting starts when they are turned on; nothing from before is counted." })));
  }

  render(d) {
    const when = RANGES[this.range];
    const m = padded(d);
    const times = m.map((r) => r.at);
    const span = m.length ? `${clock(m[0].at)} to ${clock(m[m.length - 1].at)}` : "";
    const r = d.router;
    // As the CLI: over the minutes the API counted (since metrics were turned on).
    const perMin = r.requests / Math.max(d.minutes.length, 1);
    const share5xx = pct(r.by_status["5xx"], r.requests);
    const parts = [];

    // The figures, as text.
    const figure = (key, name, value) => el("div", { class: "fig" },
      el("dt", { text: name }), el("dd", { "data-figure": key, text: value }));
    parts.push(el("dl", { class: "figures", "aria-label": `Figures, ${when}` },
      figure("requests", "Requests", fmt(r.requests)),
      figure("requests_per_min", "Requests/min", perMin.toFixed(1)),
      figure("5xx_pct", "5xx", pctText(share5xx)),
      ...QUANTILES.map((q) => figure(`service_${q}`, `Service ${q}`, fmt(r.service_ms[q], "ms"))),
      figure("connect_p95", "Connect p95", fmt(r.connect_ms.p95, "ms")),
      figure("bytes", "Bytes", fmt(r.bytes))));

    // Requests per minute by status class, stacked.
    const busiest = m.reduce((b, row) => (row.requests > b.requests ? row : b), { requests: 0, at: null });
    parts.push(this.card({
      id: "requests",
      title: "Requests per minute by status class",
      legend: CLASSES.map((c) => [c, `cls${c[0]}`, fmt(r.by_status[c])]),
      chart: plot({
        times,
        stacked: true,
        series: CLASSES.map((c) => ({ name: c, cls: `cls${c[0]}`, draw: "bar", values: m.map((row) => row[c] || 0) })),
        label: `Requests per minute by status class, ${when} (${span}): ${CLASSES.map((c) => `${c} ${r.by_status[c]}`).join(", ")}; ` +
          (busiest.at ? `busiest minute ${busiest.requests} requests at ${clock(busiest.at)}.` : "no requests."),
      }),
      columns: ["Requests", ...CLASSES],
      rows: () => m.filter((row) => row.requests > 0).map((row) => [row.at, row.requests, ...CLASSES.map((c) => row[c] || 0)]),
    }));

    // 5xx share per minute.
    const ratios = m.map((row) => pct(row["5xx"], row.requests));
    const worst = m.reduce((b, row, i) => (ratios[i] !== null && ratios[i] > b.v ? { v: ratios[i], at: row.at } : b), { v: -1, at: null });
    parts.push(this.card({
      id: "errors",
      title: "5xx % of requests per minute",
      legend: [["5xx %", "cls5", pctText(share5xx)]],
      chart: plot({
        times,
        unit: "%",
        series: [{ name: "5xx %", cls: "cls5", draw: "line", values: ratios }],
        label: `5xx share of requests per minute, ${when}: ${pctText(share5xx)} over the range` +
          (worst.at ? `; highest ${pctText(worst.v)} at ${clock(worst.at)}.` : "; no requests."),
      }),
      columns: ["Requests", "5xx", "5xx %"],
      rows: () => m.filter((row) => row.requests > 0).map((row) => [row.at, row.requests, row["5xx"], pctText(pct(row["5xx"], row.requests))]),
    }));

    // Service time quantiles per minute.
    const key = (q) => `service_${q}_ms`;
    parts.push(this.card({
      id: "service",
      title: "Service time per minute (p50, p95, p99; log scale)",
      legend: QUANTILES.map((q) => [q, q, fmt(r.service_ms[q], "ms")]),
      chart: plot({
        times,
        unit: "ms",
        log: true,
        series: QUANTILES.map((q) => ({ name: q, cls: q, draw: "line", values: m.map((row) => row[key(q)] ?? null) })),
        label: `Service time per minute, ${when}: over the range p50 ${fmt(r.service_ms.p50, "ms")}, p95 ${fmt(r.service_ms.p95, "ms")}, p99 ${fmt(r.service_ms.p99, "ms")}.`,
      }),
      columns: QUANTILES.map((q) => `${q} ms`),
      rows: () => m.filter((row) => row.service_p95_ms != null).map((row) => [row.at, ...QUANTILES.map((q) => fmt(row[key(q)]))]),
    }));

    // Top H-codes.
    const codes = Object.entries(r.h_codes).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])).slice(0, 8);
    const codeCard = el("figure", { class: "card", "data-chart": "h_codes" },
      el("figcaption", { text: `Top H-codes, ${when}` }));
    if (codes.length) {
      codeCard.append(barList(codes, `Top H-codes, ${when}: ${codes.map(([c, n]) => `${c} ${n}`).join(", ")}.`));
      codeCard.append(el("ul", { class: "legend" }, ...codes.map(([c, n]) =>
        el("li", { "data-hcode": c }, el("span", { class: "name", text: c }), " ", el("span", { class: "value", text: fmt(n) })))));
    } else {
      codeCard.append(el("p", { class: "dim", text: "No H-codes." }));
    }
    parts.push(codeCard);

    parts.push(...this.l2met(d, times, when));
    document.getElementById("charts").replaceChildren(el("div", { class: "cards" }, ...parts));
  }

  // One chart with its caption, legend (the range's figures as text) and a per-minute
  // table drawn when opened.
  card({ id, title, legend, chart, columns, rows }) {
    const table = el("details", { class: "minutes" }, el("summary", { text: "Per-minute values" }));
    const draw = () => {
      const body = rows();
      table.querySelector("table")?.remove();
      table.append(el("table", { class: "grid" },
        el("thead", {}, el("tr", {}, el("th", { scope: "col", text: "Minute" }),
          ...columns.map((c) => el("th", { scope: "col", class: "num", text: c })))),
        el("tbody", {}, ...(body.length ? body : [[null, "none"]]).map(([at, ...cells]) =>
          el("tr", at ? { "data-at": at } : {},
            el("th", { scope: "row" }, at ? el("time", { datetime: at, text: clock(at) }) : null),
            ...cells.map((c) => el("td", { class: "num", text: typeof c === "number" ? fmt(c) : c })))))));
    };
    table.addEventListener("toggle", () => { if (table.open) draw(); });
    const open = document.querySelector(`[data-chart="${CSS.escape(id)}"] details.minutes`)?.open;
    if (open) {
      table.open = true;
      draw();
    }
    return el("figure", { class: "card", "data-chart": id },
      el("figcaption", { text: title }),
      chart,
      el("ul", { class: "legend" }, ...legend.map(([name, cls, value]) =>
        el("li", { "data-legend": name }, el("span", { class: `key ${cls}`, "aria-hidden": "true" }),
          el("span", { class: "name", text: name }), " ", el("span", { class: "value", text: value })))),
      table);
  }

  // One chart per l2met name: counts per minute as bars, samples as their min–max band
  // with the last value as a line, measures as p50/p95/p99 lines.
  l2met(d, times, when) {
    const m = padded(d);
    const per = (kind, name) => m.map((row) => row.l2met?.[kind]?.[name] ?? null);
    const out = [];
    const names = [
      ...Object.keys(d.l2met.count).map((n) => ["count", n]),
      ...Object.keys(d.l2met.sample).map((n) => ["sample", n]),
      ...Object.keys(d.l2met.measure).map((n) => ["measure", n]),
    ];
    if (!names.length) {
      out.push(el("figure", { class: "card", "data-chart": "l2met" },
        el("figcaption", { text: "l2met" }),
        el("p", { class: "dim", text: "No count#, sample# or measure# values from this app's lines in this range." })));
      return out;
    }
    for (const [kind, name] of names) {
      const id = `${kind}#${name}`;
      const vals = per(kind, name);
      if (kind === "count") {
        const total = d.l2met.count[name];
        out.push(this.card({
          id,
          title: `count#${name} per minute`,
          legend: [["total", "count", fmt(total)]],
          chart: plot({
            times,
            series: [{ name, cls: "count", draw: "bar", values: vals.map((v) => v ?? 0) }],
            label: `count#${name} per minute, ${when}: ${fmt(total)} in all.`,
          }),
          columns: ["Sum"],
          rows: () => m.filter((row, i) => vals[i] !== null).map((row, i) => [row.at, row.l2met.count[name]]),
        }));
      } else if (kind === "sample") {
        const s = d.l2met.sample[name];
        out.push(this.card({
          id,
          title: `sample#${name} per minute (last, with min–max)`,
          legend: [["last", "last", fmt(s.last)], ["min", "band", fmt(s.min)], ["max", "band", fmt(s.max)]],
          chart: plot({
            times,
            series: [
              { name: "min–max", cls: "band", draw: "band", lo: vals.map((v) => v?.min ?? null), hi: vals.map((v) => v?.max ?? null) },
              { name: "last", cls: "last", draw: "line", values: vals.map((v) => v?.last ?? null) },
            ],
            label: `sample#${name} per minute, ${when}: last ${fmt(s.last)}, min ${fmt(s.min)}, max ${fmt(s.max)}.`,
          }),
          columns: ["Last", "Min", "Max"],
          rows: () => m.filter((row) => row.l2met?.sample?.[name]).map((row) => {
            const v = row.l2met.sample[name];
            return [row.at, v.last, v.min, v.max];
          }),
        }));
      } else {
        const q = d.l2met.measure[name];
        out.push(this.card({
          id,
          title: `measure#${name} per minute (p50, p95, p99; log scale)`,
          legend: [["count", "count", fmt(q.count)], ...QUANTILES.map((k) => [k, k, fmt(q[k])])],
          chart: plot({
            times,
            log: true,
            series: QUANTILES.map((k) => ({ name: k, cls: k, draw: "line", values: vals.map((v) => v?.[k] ?? null) })),
            label: `measure#${name} per minute, ${when}: ${fmt(q.count)} values, p50 ${fmt(q.p50)}, p95 ${fmt(q.p95)}, p99 ${fmt(q.p99)}.`,
          }),
          columns: ["Count", ...QUANTILES],
          rows: () => m.filter((row) => row.l2met?.measure?.[name]).map((row) => {
            const v = row.l2met.measure[name];
            return [row.at, v.count, ...QUANTILES.map((k) => fmt(v[k]))];
          }),
        }));
      }
    }
    return out;
  }
}
