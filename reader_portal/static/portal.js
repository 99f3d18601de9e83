// What every logged-in portal page shares (loaded first by _base.html). The page's strings
// and facts come from the JSON blocks #portal-data and #page-data, never from inline code:
//   api(url, {method, body, accept, headers, raw}) -> parsed JSON | Blob (image/* accept) |
//     null (204) | the Response (raw); sends the session cookie and, on unsafe methods, the
//     X-CSRF-Token header from <meta name="csrf-token">; a plain object body goes as JSON;
//     401 goes to the login page; any other error throws ApiError(status, detail).
//   el(tag, attrs, ...children), $(id), enc(), fmt(iso), personName(pn), clock(), stamp(node),
//   dur(seconds), duration(seconds), failure(e), showError(box, e), poll(ms, task, {hidden}),
//   T (strings), LOCALE, ZONE, USER ({username, role, site_id}), PAGE (the page's own data).
"use strict";

function readJson(id) { const node = document.getElementById(id); return node ? JSON.parse(node.textContent) : {}; }
const { t: T, lang: LOCALE, zone: ZONE, user: USER } = readJson("portal-data");
const PAGE = readJson("page-data");
const $ = (id) => document.getElementById(id);
const enc = encodeURIComponent;
class ApiError extends Error { constructor(status, detail) { super(detail); this.status = status; } }
// Several requests can meet the ended session at once (a slice and its prefetched
// neighbours); a second assignment to location.href would abort the first navigation.
let leavingForLogin = false;
function toLogin() {
  if (leavingForLogin) return;
  leavingForLogin = true;
  location.href = "/portal/login?next=" + enc(location.pathname + location.search);
}
// The one way pages talk to the API: the session cookie goes by itself; unsafe methods add
// the page's CSRF token (the server refuses them without it). ``raw`` answers the Response
// itself (for its headers), after the same 401 and error handling.
async function api(url, { method = "GET", body, accept = "application/json", headers = {}, raw: whole = false } = {}) {
  const h = { Accept: accept, ...headers };
  if (!["GET", "HEAD"].includes(method.toUpperCase())) {
    h["X-CSRF-Token"] = document.querySelector('meta[name="csrf-token"]').content;
  }
  const raw = body === undefined || body instanceof FormData || body instanceof URLSearchParams || body instanceof Blob;
  if (!raw) h["Content-Type"] = "application/json";
  const r = await fetch(url, { method, headers: h, body: raw ? body : JSON.stringify(body),
                               credentials: "same-origin" });
  if (r.status === 401) { toLogin(); throw new ApiError(401, "login"); }
  if (!r.ok) {
    let detail = r.statusText;
    try { detail = (await r.json()).detail || detail; } catch (_) { /* not JSON */ }
    throw new ApiError(r.status, typeof detail === "string" ? detail : JSON.stringify(detail));
  }
  if (whole) return r;
  if (accept.startsWith("image/")) return r.blob();
  return r.status === 204 ? null : r.json();
}
function el(name, attrs = {}, ...children) {
  const e = document.createElement(name);
  for (const [k, v] of Object.entries(attrs)) { if (k === "class") e.className = v; else if (k in e) e[k] = v; else e.setAttribute(k, v); }
  e.append(...children.filter((c) => c !== null && c !== undefined));
  return e;
}
function fmt(iso) { return iso ? new Date(iso).toLocaleString(LOCALE, { timeZone: ZONE, hour12: false }) : ""; }
// A DICOM person name "Li^Na=李^娜" (or its DICOM JSON object) as people write it: 李娜 (Li Na).
// Ideographic names join family and given name without a space; alphabetic ones with one.
function personName(pn) {
  if (pn && typeof pn === "object") pn = [pn.Alphabetic, pn.Ideographic].filter(Boolean).join("=");
  const [alpha = "", ideo = ""] = (pn || "").split("=");
  const latin = alpha.split("^").filter(Boolean).join(" ");
  const han = ideo.split("^").filter(Boolean).join("");
  if (han) return latin ? `${han} (${latin})` : han;
  return /[\u3400-\u9fff]/.test(alpha) ? alpha.split("^").join("") : latin;
}
// The time of day now, on the county's clock: 14:05:09.
function clock() { return new Date().toLocaleTimeString(LOCALE, { timeZone: ZONE, hour12: false }); }
// "更新于 14:05:09" in the node that says when the page last had fresh figures.
function stamp(node) { node.textContent = T.updated_at.replace("{time}", clock()); }
// A countdown's length: "1 小时 5 分钟", "4 分钟 07 秒" (the sign is the caller's).
function duration(seconds) {
  const s = Math.floor(Math.abs(seconds)), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return h ? `${h} ${T.hours} ${m} ${T.minutes}` : `${m} ${T.minutes} ${String(s % 60).padStart(2, "0")} ${T.seconds}`;
}
// A duration in seconds as people say it: 45秒, 12分钟, 2.5小时, 1.5天.
function dur(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "—";
  const s = Math.abs(seconds);
  const num = (v) => (v >= 10 ? Math.round(v) : Math.round(v * 10) / 10).toLocaleString(LOCALE);
  if (s < 60) return `${Math.round(s)}${T.unit_s}`;
  if (s < 3600) return `${num(s / 60)}${T.unit_min}`;
  if (s < 86400 * 2) return `${num(s / 3600)}${T.unit_h}`;
  return `${num(s / 86400)}${T.unit_d}`;
}
// What went wrong, as a page says it: "出错: …".
function failure(e) { return `${T.error}: ${e && e.message ? e.message : e}`; }
// A failed load, said in the page's error box (a 401 is already on its way to the login page).
function showError(box, e) {
  if (e && e.status === 401) return;
  box.hidden = false;
  box.textContent = failure(e);
}
// Run ``task`` now and then ``ms`` after each run ends: one run at a time (a call to now()
// during a run is answered as soon as it returns), paused while the tab is hidden and run at
// once when it shows again (``hidden: true`` keeps polling in a hidden tab). The task reports
// its own errors; an ApiError 401 stops the polling (the page is on its way to the login).
// Polling (not a push channel) works behind any number of API replicas without shared state.
function poll(ms, task, { hidden = false } = {}) {
  let timer = null, inFlight = false, again = false, stopped = false;
  const schedule = () => { clearTimeout(timer); timer = document.hidden && !hidden ? null : setTimeout(now, ms); };
  async function now() {
    if (inFlight) { again = true; return; }
    inFlight = true; again = false; clearTimeout(timer);
    try { if ((await task()) === poll.AGAIN) again = true; }
    catch (e) { if (e && e.status === 401) stopped = true; else console.error(e); }
    finally { inFlight = false; }
    if (stopped) return;
    if (again) now(); else schedule();
  }
  if (!hidden) document.addEventListener("visibilitychange", () => { if (document.hidden) clearTimeout(timer); else now(); });
  now();
  return { now };
}
poll.AGAIN = "again";  // a task's answer when what it loaded is already out of date
