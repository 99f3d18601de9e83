// The audit trail: search, page backwards by id, verify the hash chain, export for ATNA.
"use strict";
// Paging backwards by id (before_id = the last id shown), so events arriving meanwhile
// never shift a page.
const PAGE_ROWS = 50;
let filters = {}, cursors = [null], pageNo = 0;

function readForm() {
  const f = {};
  for (const [k, id] of [["actor", "f-actor"], ["action", "f-action"], ["object_id", "f-object"]]) {
    const v = $(id).value.trim(); if (v) f[k] = v;
  }
  if ($("f-since").value) f.since = localToIso($("f-since").value);
  if ($("f-until").value) f.until = localToIso($("f-until").value);
  return f;
}
async function fetchPage(beforeId) {
  const q = new URLSearchParams({ ...filters, limit: PAGE_ROWS + 1 });
  if (beforeId) q.set("before_id", beforeId);
  const rows = await api(`/api/audit?${q}`);
  return { rows: rows.slice(0, PAGE_ROWS), more: rows.length > PAGE_ROWS };
}
function objectCell(r) {
  if (!r.object_id && !r.object_type) return el("td", {}, "");
  return el("td", {}, r.object_type ? el("span", { class: "muted" }, `${T["obj_" + r.object_type] || r.object_type} `) : null,
            r.object_id ? el("span", { class: "uid", title: r.object_id }, r.object_id) : null);
}
async function show() {
  let result;
  try { result = await fetchPage(cursors[pageNo]); $("load-error").hidden = true; }
  catch (e) { showError($("load-error"), e); return; }
  const body = $("audit").querySelector("tbody"); body.replaceChildren();
  for (const r of result.rows) {
    const failed = r.outcome !== "success" || r.action.endsWith(".failed");
    const tr = el("tr", { class: failed ? "failed" : "" }); tr.dataset.id = r.id; tr.dataset.action = r.action;
    tr.append(el("td", { class: "when" }, fmt(r.at)), el("td", {}, r.actor),
              el("td", {}, T["role_" + r.role] || r.role),
              el("td", {}, el("span", { class: "badge " + (failed ? "amber" : "grey") }, T["act_" + r.action] || r.action)),
              objectCell(r),
              el("td", {}, r.outcome === "success" ? T.outcome_success : r.outcome),
              el("td", {}, r.source), el("td", { class: "detail", title: r.detail }, r.detail));
    body.append(tr);
  }
  if (!result.rows.length) body.append(el("tr", { class: "empty-row" }, el("td", { colSpan: 8 }, T.no_audit)));
  const last = result.rows[result.rows.length - 1];
  cursors[pageNo + 1] = result.more && last ? last.id : undefined;
  $("prev").disabled = pageNo === 0;
  $("next").disabled = !cursors[pageNo + 1];
  $("page-no").textContent = T.page_n.replace("{n}", pageNo + 1);
  $("result-hint").textContent = result.rows.length
    ? T.rows_shown.replace("{a}", pageNo * PAGE_ROWS + 1).replace("{b}", pageNo * PAGE_ROWS + result.rows.length) : "";
  document.body.dataset.loaded = `${pageNo}|${JSON.stringify(filters)}`;
}
function search() {
  filters = readForm(); cursors = [null]; pageNo = 0;
  // The ATNA export takes the same filters (the server's default period: the last 24 hours).
  if ($("atna-export")) $("atna-export").href = `${$("atna-export").dataset.base}?${new URLSearchParams(filters)}`;
  show();
}
$("search").addEventListener("submit", (e) => { e.preventDefault(); search(); });
$("search").addEventListener("reset", () => setTimeout(search, 0));
$("prev").addEventListener("click", () => { if (pageNo > 0) { pageNo -= 1; show(); } });
$("next").addEventListener("click", () => { if (cursors[pageNo + 1]) { pageNo += 1; show(); } });
$("verify").addEventListener("click", async () => {
  const box = $("verify-result");
  $("verify").disabled = true;
  box.hidden = false; box.className = "muted"; box.textContent = T.verifying;
  try {
    const v = await api("/api/audit/verify");
    box.className = v.ok ? "ok-box" : "bad-box";
    const n = v.checked.toLocaleString(LOCALE);
    const anchor = v.checkpoints ? T.chain_anchored.replace("{k}", v.checkpoints)
      .replace("{at}", new Date(v.latest_checkpoint_at).toLocaleString(LOCALE)) : T.chain_unanchored;
    box.textContent = v.ok ? `${T.chain_ok.replace("{n}", n)} ${anchor}`
      : v.missing_count ? T.chain_cut.replace("{missing}", v.missing_count).replace("{id}", v.missing_after_id ?? "?")
        .replace("{reason}", v.reason).replace("{n}", n)
      : T.chain_bad.replace("{id}", v.first_bad_id ?? "?").replace("{reason}", v.reason).replace("{n}", n);
    box.dataset.ok = String(v.ok);
    for (const tr of document.querySelectorAll("#audit tr.tampered")) tr.classList.remove("tampered");
    if (!v.ok && v.first_bad_id) $("audit").querySelector(`tr[data-id="${v.first_bad_id}"]`)?.classList.add("tampered");
  } catch (e) { box.className = "bad-box"; box.textContent = failure(e); }
  finally { $("verify").disabled = false; }
});
search();
