// Session lines in the browser: parsing `TIMESTAMP SOURCE[PROCID]: MSG`, the marks of
// lines worth seeing (5xx, at=error, H codes, L10/L11/L14 notices), time in UTC or local
// time, and the filters kept in the page's URL fragment.

// Marks, first match wins: [pattern, tag (or a function of the match), kind].
const MARKS = [
  [/\bError (L1[014])\b/, (m) => m[1], "notice"],
  [/\b(H\d\d)\b/, (m) => m[1], "error"],
  [/\bstatus=([5-9]\d\d)\b/, (m) => m[1], "error"],
  [/\bat=error\b/, () => "error", "error"],
];

// One line of a session as the page keeps it.
export function parseLine(text, id) {
  const line = {
    seq: id === "" || id === undefined ? null : Number(id),
    text,
    ts: "",
    source: "",
    dyno: "",
    header: "",
    msg: text,
    mark: null,
    lower: null,
    el: null,
  };
  const sp = text.indexOf(" ");
  if (sp > 0) {
    const rest = text.slice(sp + 1);
    const sp2 = rest.indexOf(" ");
    const header = sp2 < 0 ? rest : rest.slice(0, sp2);
    if (header.length > 1 && header.endsWith(":")) {
      const h = header.slice(0, -1);
      const open = h.indexOf("[");
      if (open > 0 && h.endsWith("]")) {
        line.source = h.slice(0, open);
        line.dyno = h.slice(open + 1, -1);
      } else {
        line.source = h;
      }
      line.ts = text.slice(0, sp);
      line.header = header;
      line.msg = sp2 < 0 ? "" : rest.slice(sp2 + 1);
    }
  }
  line.mark = markOf(line.msg);
  return line;
}

// `{tag, kind}` for a message worth marking, else null.
export function markOf(msg) {
  for (const [re, tag, kind] of MARKS) {
    const m = re.exec(msg);
    if (m) return { tag: tag(m), kind };
  }
  return null;
}

const pad = (n, w = 2) => String(n).padStart(w, "0");

// An RFC 3339 timestamp shown in UTC or in the browser's time zone, keeping its fraction
// of a second as sent; anything else is shown as it came.
export function formatTime(ts, utc) {
  const m = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$/i.exec(ts);
  if (!m) return ts;
  const d = new Date(m[1] + m[3].toUpperCase());
  if (Number.isNaN(d.getTime())) return ts;
  const frac = m[2] || "";
  if (utc) {
    return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}T` +
      `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}${frac}+00:00`;
  }
  const off = -d.getTimezoneOffset();
  const sign = off < 0 ? "-" : "+";
  const a = Math.abs(off);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}${frac}` +
    `${sign}${pad(Math.floor(a / 60))}:${pad(a % 60)}`;
}

// Does a line pass the filters? Source is exact; dyno `web` matches `web`, `web.1`,
// `web.2`, … (as `logplex logs -d`); text is found anywhere in the line, in any case.
export function matches(line, f) {
  if (f.source && line.source !== f.source) return false;
  if (f.dyno && line.dyno !== f.dyno && !line.dyno.startsWith(f.dyno + ".")) return false;
  if (f.text) {
    if (line.lower === null) line.lower = line.text.toLowerCase();
    if (!line.lower.includes(f.textLower)) return false;
  }
  return true;
}

// The filters of a URL fragment: `#source=app&dyno=web&q=timeout` (and `tz=local`).
export function readFragment(hash) {
  const p = new URLSearchParams(hash.replace(/^#/, ""));
  const text = p.get("q") || "";
  return {
    source: (p.get("source") || "").trim(),
    dyno: (p.get("dyno") || "").trim(),
    text,
    textLower: text.toLowerCase(),
    utc: p.get("tz") !== "local",
  };
}

// The fragment of filters; empty ones are left out.
export function writeFragment(f) {
  const p = new URLSearchParams();
  if (f.source) p.set("source", f.source);
  if (f.dyno) p.set("dyno", f.dyno);
  if (f.text) p.set("q", f.text);
  if (!f.utc) p.set("tz", "local");
  const s = p.toString();
  return s ? "#" + s : "";
}
