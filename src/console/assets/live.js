// The live log page of a session: streams the session from its own URL over Server-Sent
// Events (EventSource resumes with Last-Event-ID after a dropped connection), shows at most
// MAX lines (the oldest are trimmed) and touches the DOM once per animation frame, so it
// keeps up with thousands of lines a second. No key or other secret is used: the session
// URL is the secret.
//
// Lines are drawn into blocks of CHUNK lines: a new line invalidates the layout of its
// block only, and the browser lays out a hundred blocks instead of 10,000 lines per frame
// (measured: laying out a flat list of 10,000 lines took most of each frame at 2,000
// lines a second).

import { parseLine, formatTime, matches, readFragment, writeFragment } from "./lines.js";

const MAX = 10000;
const CHUNK = 100;

const $ = (id) => document.getElementById(id);
const body = document.body;
const logEl = $("log");
const connEl = $("conn");
const pauseBtn = $("pause");
const newBtn = $("newlines");
const followBtn = $("follow");
const tzBtn = $("tz");
const countsEl = $("counts");
const inputs = { source: $("f-source"), dyno: $("f-dyno"), text: $("f-text") };

// The lines kept (at most MAX, oldest first), each with its element while it is shown.
let lines = [];
// Received and not yet drawn (drawn at the next animation frame).
let queue = [];
// Received while paused, not drawn until resumed (the newest MAX), and how many came.
let held = [];
let heldCount = 0;
let paused = false;
let follow = true;
let filters = readFragment(location.hash);
let frame = 0;
let rerender = false;
// Line elements on the page.
let shown = 0;

// Numbers a test or a curious person can read from the console: lines received, frames
// drawn, the longest frame's work and all frames' work, and the longest wait of a key
// press for its handler, in ms.
const stats = { received: 0, frames: 0, maxFrameMs: 0, busyMs: 0, maxKeyDelayMs: 0 };
window.logplexLive = stats;

function setConn(text, kind) {
  connEl.textContent = text;
  connEl.dataset.state = kind;
}

function schedule() {
  if (!frame) frame = requestAnimationFrame(draw);
}

function lineElement(l) {
  const div = document.createElement("div");
  div.className = l.mark ? "line " + l.mark.kind : "line";
  if (l.seq !== null) div.dataset.seq = l.seq;
  if (l.ts) {
    const t = document.createElement("time");
    t.textContent = formatTime(l.ts, filters.utc);
    t.dateTime = l.ts;
    const src = document.createElement("span");
    src.className = "src";
    src.textContent = l.header;
    div.append(t, " ", src, " ");
  }
  if (l.mark) {
    const tag = document.createElement("span");
    tag.className = "tag";
    tag.textContent = l.mark.tag;
    div.append(tag, " ");
  }
  const msg = document.createElement("span");
  msg.className = "msg";
  msg.textContent = l.msg;
  div.append(msg);
  l.el = div;
  return div;
}

// Drops the oldest kept lines beyond MAX, with their elements (and blocks left empty).
function trim() {
  const over = lines.length - MAX;
  if (over <= 0) return;
  for (const l of lines.splice(0, over)) {
    if (l.el) {
      const block = l.el.parentNode;
      l.el.remove();
      l.el = null;
      shown--;
      if (block && !block.firstChild) block.remove();
    }
  }
}

function newBlock() {
  const b = document.createElement("div");
  b.className = "chunk";
  return b;
}

// Appends the lines that pass the filters, filling the last block, then new ones.
function appendLines(batch) {
  let block = logEl.lastElementChild;
  let room = block && block.className === "chunk" ? CHUNK - block.childElementCount : 0;
  let frag = document.createDocumentFragment();
  const blocks = [];
  for (const l of batch) {
    if (!matches(l, filters)) continue;
    if (room === 0) {
      if (block && frag.firstChild) block.append(frag);
      block = newBlock();
      blocks.push(block);
      frag = document.createDocumentFragment();
      room = CHUNK;
    }
    frag.append(lineElement(l));
    room--;
    shown++;
  }
  if (block && frag.firstChild) block.append(frag);
  if (blocks.length) logEl.append(...blocks);
}

function draw() {
  frame = 0;
  const t0 = performance.now();
  if (rerender) {
    rerender = false;
    for (const l of lines) l.el = null;
    logEl.replaceChildren();
    shown = 0;
    appendLines(lines);
  }
  if (!paused && queue.length) {
    let batch = queue;
    queue = [];
    if (batch.length > MAX) batch = batch.slice(batch.length - MAX);
    for (const l of batch) lines.push(l);
    appendLines(batch);
    trim();
  }
  if (follow && !paused) logEl.scrollTop = logEl.scrollHeight;
  showCounts();
  const ms = performance.now() - t0;
  stats.frames++;
  if (ms > stats.maxFrameMs) stats.maxFrameMs = ms;
  stats.busyMs += ms;
}

function showCounts() {
  let text = `${shown.toLocaleString()} shown of ${lines.length.toLocaleString()} kept`;
  if (lines.length >= MAX) text += ` (the newest ${MAX.toLocaleString()})`;
  text += ` · ${stats.received.toLocaleString()} received`;
  countsEl.textContent = text;
  if (paused) {
    newBtn.hidden = false;
    newBtn.textContent = `${heldCount.toLocaleString()} new ${heldCount === 1 ? "line" : "lines"}`;
  } else {
    newBtn.hidden = true;
  }
}

function receive(e) {
  stats.received++;
  const l = parseLine(e.data, e.lastEventId);
  if (paused) {
    held.push(l);
    heldCount++;
    if (held.length > 2 * MAX) held = held.slice(held.length - MAX);
  } else {
    queue.push(l);
    if (queue.length > 2 * MAX) queue = queue.slice(queue.length - MAX);
  }
  schedule();
}

function setPaused(p) {
  if (p === paused) return;
  paused = p;
  pauseBtn.setAttribute("aria-pressed", String(p));
  pauseBtn.textContent = p ? "Resume" : "Pause";
  body.classList.toggle("paused", p);
  if (!p) {
    queue = queue.concat(held);
    held = [];
    heldCount = 0;
  }
  schedule();
}

function setFollow(f) {
  follow = f;
  followBtn.setAttribute("aria-pressed", String(f));
  if (f) schedule();
}

function setFilters(f, updateUrl) {
  filters = f;
  if (!updateUrl) {
    // From the URL: show it in the inputs (typing in them updates the URL instead).
    inputs.source.value = f.source;
    inputs.dyno.value = f.dyno;
    inputs.text.value = f.text;
  }
  tzBtn.textContent = f.utc ? "UTC" : "Local time";
  tzBtn.setAttribute("aria-label", f.utc ? "Times in UTC; switch to local time" : "Times in local time; switch to UTC");
  if (updateUrl) {
    const frag = writeFragment(f);
    history.replaceState(null, "", location.pathname + location.search + frag);
  }
  rerender = true;
  schedule();
}

function filtersFromInputs() {
  const text = inputs.text.value;
  return {
    source: inputs.source.value.trim(),
    dyno: inputs.dyno.value.trim(),
    text,
    textLower: text.toLowerCase(),
    utc: filters.utc,
  };
}

function describeScope() {
  const d = body.dataset;
  const parts = [];
  if (d.source) parts.push(`source ${d.source}`);
  if (d.dyno) parts.push(`dyno ${d.dyno}`);
  if (d.grep) parts.push(`containing “${d.grep}”`);
  if (!parts.length) return;
  const scope = $("scope");
  scope.textContent = `This session shows only lines of ${parts.join(", ")}.`;
  scope.hidden = false;
}

function connect() {
  const tail = body.dataset.tail === "true";
  const es = new EventSource(location.pathname);
  // Without a tail the stream ends after the history; EventSource then reconnects with
  // Last-Event-ID, and a connection that brings no line means the history is complete.
  let sinceOpen = 0;
  es.onopen = () => {
    sinceOpen = 0;
    setConn(tail ? "live" : "history", "ok");
  };
  es.onmessage = (e) => {
    sinceOpen++;
    receive(e);
  };
  es.onerror = () => {
    if (es.readyState === EventSource.CLOSED) {
      setConn("session ended or expired", "bad");
      return;
    }
    if (!tail) {
      if (sinceOpen === 0) {
        es.close();
        setConn("end of history", "done");
      } else {
        setConn("loading the rest…", "warn");
      }
      sinceOpen = 0;
      return;
    }
    setConn("reconnecting…", "warn");
  };
}

function onKey(e) {
  stats.maxKeyDelayMs = Math.max(stats.maxKeyDelayMs, performance.now() - e.timeStamp);
  const t = e.target;
  const typing = t instanceof HTMLInputElement || t instanceof HTMLTextAreaElement;
  if (e.key === "Escape" && typing) {
    t.blur();
    logEl.focus();
    return;
  }
  if (typing || e.ctrlKey || e.metaKey || e.altKey) return;
  if (e.key === " " && !(t instanceof HTMLButtonElement)) {
    e.preventDefault();
    setPaused(!paused);
  } else if (e.key === "/") {
    e.preventDefault();
    inputs.text.focus();
    inputs.text.select();
  } else if (e.key === "End") {
    e.preventDefault();
    setFollow(true);
  } else if (e.key === "t") {
    setFilters({ ...filters, utc: !filters.utc }, true);
  }
}

function start() {
  if (body.dataset.tail === "gone") {
    setConn("unknown or expired session", "bad");
    document.title = "Unknown session · logplex";
    const p = document.createElement("p");
    p.className = "gone";
    p.textContent = "This session is unknown or has expired (a session lasts 5 minutes after its last stream ends). Open a new one with logplex logs --web.";
    logEl.append(p);
    return;
  }
  describeScope();
  setFilters(filters, false);
  pauseBtn.addEventListener("click", () => setPaused(!paused));
  newBtn.addEventListener("click", () => setPaused(false));
  followBtn.addEventListener("click", () => setFollow(!follow));
  tzBtn.addEventListener("click", () => setFilters({ ...filters, utc: !filters.utc }, true));
  $("clear").addEventListener("click", () => {
    lines = [];
    logEl.replaceChildren();
    shown = 0;
    showCounts();
  });
  $("filters").addEventListener("submit", (e) => e.preventDefault());
  for (const input of Object.values(inputs)) {
    input.addEventListener("input", () => setFilters(filtersFromInputs(), true));
  }
  window.addEventListener("hashchange", () => setFilters(readFragment(location.hash), false));
  // Scrolling away from the newest line stops following; scrolling back to it resumes.
  logEl.addEventListener("scroll", () => {
    const atEnd = logEl.scrollHeight - logEl.scrollTop - logEl.clientHeight < 8;
    if (atEnd !== follow) setFollow(atEnd);
  });
  document.addEventListener("keydown", onKey);
  connect();
  logEl.focus();
}

start();
