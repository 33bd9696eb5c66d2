// The console: asks for the admin key once (kept in sessionStorage, for this tab only),
// then shows the apps a page at a time (by name, PAGE_APPS a page, as GET /v2/stats pages
// them) with their line rate, drains and alert rules from the JSON API, refreshed every
// few seconds, and opens the live page of any app (a tail session made through
// POST /v2/sessions). An app's name opens its view (`#app=NAME`, see metrics.js): charts
// of its metrics from the logs; "Open an app" opens any app's view by name.

import { AppView } from "./metrics.js";

const KEY = "logplex.adminKey";
const REFRESH_MS = 5000;
// Apps a page: each refresh asks for the drains of each app shown, one request per app.
const PAGE_APPS = 50;
const SVG = "http://www.w3.org/2000/svg";

const $ = (id) => document.getElementById(id);
let key = sessionStorage.getItem(KEY) || "";
let busy = false;
let timer = 0;
// Live pages opened from this tab, by app: shown as links so they can be found again.
const liveUrls = new Map();
// The page of apps shown: those after `after` by name ("" for the first), where the
// pages before it started, and whether more follow (the API's Link header).
// `last`: the last app of the page shown, null while a turn's page is on its way.
const page = { after: "", starts: [], more: false, last: null };
// A refresh asked for while one was under way: it runs when that one ends.
let again = false;

class Refused extends Error {}

async function api(path, init = {}) {
  return (await apiWithLink(path, init)).body;
}

// An API call's JSON body, and whether its answer has a Link to a next page.
async function apiWithLink(path, init = {}) {
  const headers = { Authorization: `Bearer ${key}` };
  if (init.body) headers["Content-Type"] = "application/json";
  // No credentials mode: a refused key must come back as a 401 to this code, never as
  // the browser's own password prompt (the API answers 401 with WWW-Authenticate: Basic).
  const r = await fetch(path, { ...init, headers, cache: "no-store", credentials: "omit" });
  if (r.status === 401) throw new Refused("refused");
  const body = await r.json().catch(() => null);
  if (!r.ok) {
    const e = new Error(body && body.message ? body.message : `${path}: HTTP ${r.status}`);
    e.status = r.status;
    throw e;
  }
  return { body, next: /rel="next"/.test(r.headers.get("Link") || "") };
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("data-") || k.startsWith("aria-") || k === "title" || k === "scope" ||
      k === "type" || k === "href" || k === "target" || k === "rel" || k === "role") e.setAttribute(k, v);
    else e[k] = v;
  }
  e.append(...children.filter((c) => c !== null && c !== undefined));
  return e;
}

function ago(iso) {
  if (!iso) return "";
  const s = Math.round((Date.now() - Date.parse(iso)) / 1000);
  if (Number.isNaN(s)) return iso;
  if (s < 60) return `${Math.max(s, 0)} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return new Date(iso).toLocaleString();
}

function when(iso) {
  return iso ? el("time", { dateTime: iso, title: iso, text: ago(iso) }) : el("span", { class: "dim", text: "never" });
}

function badge(state, text) {
  return el("span", { class: `badge ${state}`, text: text || state });
}

function sparkline(counts) {
  const w = 150;
  const h = 24;
  const max = Math.max(1, ...counts);
  const bw = w / counts.length;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.setAttribute("width", w);
  svg.setAttribute("height", h);
  svg.setAttribute("class", "spark");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `Lines per minute, oldest first: ${counts.join(", ")}`);
  counts.forEach((c, i) => {
    const bh = c === 0 ? 1 : Math.max(2, Math.round((c / max) * (h - 2)));
    const r = document.createElementNS(SVG, "rect");
    r.setAttribute("x", (i * bw + 1).toFixed(1));
    r.setAttribute("y", h - bh);
    r.setAttribute("width", (bw - 2).toFixed(1));
    r.setAttribute("height", bh);
    r.setAttribute("class", c === 0 ? "zero" : i === counts.length - 1 ? "now" : "bar");
    svg.append(r);
  });
  return svg;
}

async function openLive(app) {
  try {
    const s = await api("v2/sessions", {
      method: "POST",
      body: JSON.stringify({ channel: app, num: 200, tail: true }),
    });
    liveUrls.set(app, s.url);
    // No opener and no referrer: the new tab has neither this tab's storage nor the key.
    window.open(s.url, "_blank", "noopener,noreferrer");
    refresh();
  } catch (e) {
    failed(e);
  }
}

function rules(alerts, app) {
  return alerts.filter((r) => r.app === app || r.app === "*");
}

function appRow(c, drains, alerts) {
  const list = Array.isArray(drains) ? drains : [];
  const failing = list.filter((d) => d.status && d.status.state === "failing").length;
  const ok = list.filter((d) => d.status && d.status.state === "connected").length;
  const other = list.length - failing - ok;
  const drainCell = el("td", { class: "drains-sum" });
  if (!list.length) drainCell.append(el("span", { class: "dim", text: "none" }));
  if (ok) drainCell.append(badge("connected", `${ok} connected`), " ");
  if (other) drainCell.append(badge("connecting", `${other} connecting`), " ");
  if (failing) drainCell.append(badge("failing", `${failing} failing`));
  const mine = rules(alerts, c.name);
  const firing = mine.filter((r) => r.state && r.state.firing_apps.includes(c.name));
  const alertCell = el("td", { class: "alerts-sum" });
  if (firing.length) alertCell.append(badge("firing", `${firing.length} firing`), " ");
  alertCell.append(el("span", { class: "dim", text: mine.length ? `${mine.length} ${mine.length === 1 ? "rule" : "rules"}` : "none" }));
  const perMin = c.lines_per_minute;
  const live = el("td", { class: "actions" },
    el("button", {
      type: "button",
      class: "tail",
      "data-focus": `tail:${c.name}`,
      "aria-label": `Open the live page of ${c.name}`,
      text: "Live tail",
      onclick: () => openLive(c.name),
    }));
  if (liveUrls.has(c.name)) {
    live.append(" ", el("a", { href: liveUrls.get(c.name), target: "_blank", rel: "noopener noreferrer", text: "opened ↗" }));
  }
  return el("tr", { "data-app": c.name, class: firing.length || failing ? "attention" : "" },
    el("th", { scope: "row" }, el("a", {
      href: `#app=${encodeURIComponent(c.name)}`,
      "data-focus": `app:${c.name}`,
      title: `Metrics of ${c.name}`,
      text: c.name,
    })),
    el("td", {}, sparkline(perMin)),
    el("td", { class: "num", text: perMin[perMin.length - 1].toLocaleString() }),
    el("td", { class: "num", text: c.history_lines.toLocaleString() }),
    drainCell,
    alertCell,
    live);
}

function drainRows(app, drains) {
  if (drains instanceof Error) {
    return [el("tr", {}, el("th", { scope: "row", text: app }), el("td", { colSpan: 6, class: "error", text: drains.message }))];
  }
  return drains.map((d) => {
    const st = d.status || { state: "connecting", sent: 0, dropped: 0, lag_lines: 0 };
    const err = st.last_error
      ? el("span", {}, el("span", { class: "errtext", text: st.last_error }), " ", when(st.last_error_at))
      : el("span", { class: "dim", text: "—" });
    return el("tr", { "data-drain": d.token, class: st.state === "failing" ? "attention" : "" },
      el("th", { scope: "row", text: app }),
      el("td", { class: "url", text: d.url, title: d.token }),
      el("td", {}, badge(st.state)),
      el("td", {}, err),
      el("td", { class: "num", text: st.sent.toLocaleString() }),
      el("td", { class: "num", text: st.dropped.toLocaleString() }),
      el("td", { class: "num", text: st.lag_lines.toLocaleString() }));
  });
}

function alertRow(r) {
  const cond = [];
  if (r.where) cond.push(r.where);
  if (r.regex) cond.push(`/${r.regex}/`);
  if (r.source) cond.push(`source ${r.source}`);
  if (r.dyno) cond.push(`dyno ${r.dyno}`);
  const st = r.state || { firing: false, count: 0, last_fired_at: null, firing_apps: [] };
  const state = st.firing
    ? el("span", {}, badge("firing"), r.app === "*" ? ` on ${st.firing_apps.join(", ")}` : "")
    : badge("quiet");
  return el("tr", { "data-alert": `${r.app}/${r.name}`, class: st.firing ? "attention" : "" },
    el("th", { scope: "row", text: r.name }),
    el("td", { text: r.app === "*" ? "every app" : r.app }),
    el("td", { class: "cond", text: cond.join(" · ") }),
    el("td", { text: `${r.threshold} in ${r.window}` }),
    el("td", {}, state),
    el("td", { class: "num", text: st.count.toLocaleString() }),
    el("td", {}, when(st.last_fired_at)));
}

function fill(id, rows) {
  $(id).tBodies[0].replaceChildren(...rows);
  $(id).hidden = rows.length === 0;
  $(`${id}-empty`).hidden = rows.length !== 0;
}

function render(stats, alerts, drains) {
  // Rows are rebuilt on each refresh; keep the keyboard focus where it was.
  const focused = document.activeElement && document.activeElement.dataset
    ? document.activeElement.dataset.focus
    : undefined;
  const byApp = new Map(drains);
  fill("apps", stats.channels.map((c) => appRow(c, byApp.get(c.name), alerts)));
  fill("drains", stats.channels.flatMap((c) => drainRows(c.name, byApp.get(c.name) || [])));
  fill("alerts", alerts.map(alertRow));
  if (focused) {
    const again = [...document.querySelectorAll("[data-focus]")].find((e) => e.dataset.focus === focused);
    if (again) again.focus();
  }
  renderPager(stats.channels);
  $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  $("updated").dataset.state = "ok";
  $("error").textContent = "";
}

function renderPager(channels) {
  page.last = channels.length ? channels[channels.length - 1].name : null;
  const paged = page.after !== "" || page.more;
  $("first").hidden = page.starts.length < 2;
  $("previous").hidden = page.after === "";
  $("next").hidden = !page.more;
  $("drains-h").textContent = paged ? "Drains of the apps on this page" : "Drains";
  $("page").textContent = paged && page.last !== null
    ? `apps ${channels[0].name} to ${page.last}`
    : "";
}

// Moves to the next page (1), the previous one (-1) or the first (0).
function turn(to) {
  if (to > 0) {
    // A second Next before the page came: one page, not two of the same.
    if (!page.more || page.last === null) return;
    page.starts.push(page.after);
    page.after = page.last;
    page.last = null;
  } else if (to < 0 && page.starts.length) {
    page.after = page.starts.pop();
  } else {
    page.starts = [];
    page.after = "";
  }
  refresh();
}

function failed(e) {
  if (e instanceof Refused) {
    showLogin("The server refused this key. Check it and try again.");
    return;
  }
  $("error").textContent = `Could not refresh: ${e.message}`;
  $("updated").dataset.state = "warn";
}

async function refresh() {
  if (!key) return;
  if (busy) {
    again = true;
    return;
  }
  if (route()) {
    view.refresh();
    return;
  }
  busy = true;
  try {
    const statsPage = () => apiWithLink(`v2/stats?limit=${PAGE_APPS}` +
      (page.after ? `&after=${encodeURIComponent(page.after)}` : ""));
    let [answer, alerts] = await Promise.all([statsPage(), api("v2/alerts")]);
    // Every app of this page and after it was destroyed: back to the first page.
    if (!answer.body.channels.length && page.after) {
      page.after = "";
      page.starts = [];
      answer = await statsPage();
    }
    const stats = answer.body;
    page.more = answer.next;
    const drains = await Promise.all(stats.channels.map((c) =>
      api(`v2/channels/${encodeURIComponent(c.name)}/drains`)
        .then((list) => [c.name, list])
        .catch((e) => {
          if (e instanceof Refused) throw e;
          return [c.name, e];
        })));
    render(stats, alerts, drains);
    showMain();
  } catch (e) {
    failed(e);
  } finally {
    busy = false;
    if (again) {
      again = false;
      refresh();
    }
  }
}

const view = new AppView(api, failed);

// Shows an app's view when the URL's fragment names one (true), else the overview.
function route() {
  if (!key || $("main").hidden) return false;
  const shown = view.route();
  $("overview").hidden = shown;
  return shown;
}

function showLogin(message) {
  key = "";
  sessionStorage.removeItem(KEY);
  clearInterval(timer);
  timer = 0;
  $("main").hidden = true;
  view.close();
  $("refresh").hidden = true;
  $("signout").hidden = true;
  $("login").hidden = false;
  $("keyerror").textContent = message || "";
  $("updated").textContent = "";
  const input = $("key");
  input.value = "";
  input.setAttribute("aria-invalid", message ? "true" : "false");
  input.focus();
}

function showMain() {
  if (!$("main").hidden) return;
  $("login").hidden = true;
  $("main").hidden = false;
  route();
  $("refresh").hidden = false;
  $("signout").hidden = false;
  // The overview refreshes every few seconds while shown; an app's view every minute.
  if (!timer) timer = setInterval(() => { if (!document.hidden && !view.app) refresh(); }, REFRESH_MS);
}

async function signIn(e) {
  e.preventDefault();
  const k = $("key").value.trim();
  if (!k) return;
  key = k;
  $("signin").disabled = true;
  try {
    // One call to check the key before it is kept.
    await api("v2/stats");
    sessionStorage.setItem(KEY, key);
    await refresh();
  } catch (err) {
    failed(err);
  } finally {
    $("signin").disabled = false;
  }
}

function start() {
  $("keyform").addEventListener("submit", signIn);
  $("signout").addEventListener("click", () => showLogin(""));
  $("refresh").addEventListener("click", () => refresh());
  $("next").addEventListener("click", () => turn(1));
  $("previous").addEventListener("click", () => turn(-1));
  $("first").addEventListener("click", () => turn(0));
  $("findform").addEventListener("submit", (e) => {
    e.preventDefault();
    const name = $("find").value.trim();
    if (name) location.hash = `app=${encodeURIComponent(name)}`;
  });
  window.addEventListener("hashchange", () => {
    if (!route()) refresh();
  });
  document.addEventListener("keydown", (e) => {
    const t = e.target;
    if (t instanceof HTMLInputElement || e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key === "r" && key) refresh();
  });
  if (key) refresh();
  else showLogin("");
}

start();
