// The study page's report panel: the signed history, the draft editor with templates and
// autosave, the preview, signing (and creating a signing key), the addendum and the claim.
// Loaded by study.html after viewer.js; study.js starts it. Uses STUDY and ``study``.
"use strict";
// ---------------------------------------------------------------- report
const R = { reports: [], draft: null, templates: [], dirty: false, holder: true };
const fields = ["findings", "impression", "advice"];
function notice(text, kind) {
  const n = $("report-notice");
  n.hidden = !text; n.className = `notice ${kind || "ok"}`; n.textContent = text || "";
}
function setSaveState(text) { $("save-state").textContent = text; }
function docView(r) {
  const kind = r.kind === "addendum" ? T.addendum_kind : T.report_kind;
  const h = el("h3", {}, `${kind} · ${T.revision.replace("{n}", r.revision)}`,
               el("span", { class: `badge ${r.status}` }, r.status === "signed" ? T.signed : T.draft),
               r.critical ? el("span", { class: "badge critical" }, T.critical) : null);
  const d = el("div", { class: "doc" }, h);
  if (r.signed_at) d.append(el("div", { class: "by" }, `${T.signed_at} ${fmt(r.signed_at)}`));
  for (const f of fields) if (r[f]) d.append(el("h4", {}, T[f]), el("p", {}, r[f]));
  d.dataset.status = r.status;
  return d;
}
function renderReports() {
  const signed = R.reports.filter((r) => r.status === "signed");
  $("history").replaceChildren(...signed.map(docView));
  $("editor").hidden = !R.draft;
  $("addendum").hidden = !!R.draft || !signed.length;  // any reader may add one; the server decides
  const badges = $("report-badges"); badges.replaceChildren();
  if (R.draft) badges.append(el("span", { class: "badge draft" }, T.draft));
  else if (signed.length) badges.append(el("span", { class: "badge signed" }, T.signed));
  if (R.draft) {
    for (const f of fields) $(f).value = R.draft[f];
    $("critical").checked = R.draft.critical;
    $("template").value = R.draft.template || ""; R.template = undefined;  // the template this draft came from
    R.dirty = false; setSaveState(T.saved);
  } else setSaveState("");
  $("critical-hint").hidden = !(R.draft && R.draft.critical);
}
async function loadReports() {
  R.reports = await api(`/api/studies/${enc(STUDY)}/reports`);
  R.draft = R.reports.find((r) => r.status === "draft") || null;
  if (!R.draft && !R.reports.length && R.canWrite) {
    R.draft = await api(`/api/studies/${enc(STUDY)}/reports`, { method: "POST", body: {} });
    R.reports.push(R.draft);
  }
  renderReports();
}
async function loadTemplates() {
  R.templates = await api(`/api/report-templates?study_uid=${enc(STUDY)}`);  // ranked for its modality and body part
  const sel = $("template");
  const mods = new Set(study.modality.split("\\"));
  for (const t of R.templates) {
    const fits = t.modalities.some((m) => mods.has(m));
    sel.append(el("option", { value: t.key }, fits ? t.name : `${t.name} (${t.modalities.join("/")})`));
  }
}
function applyTemplate() {
  const t = R.templates.find((x) => x.key === $("template").value);
  if (!t) return;
  const own = fields.some((f) => $(f).value.trim()) && !R.templates.some((x) => x.findings === $("findings").value);
  if (own && !confirm(T.template_replace)) { $("template").value = ""; return; }
  $("findings").value = t.findings; $("impression").value = t.impression; $("advice").value = t.advice;
  R.template = t.key;  // recorded on the draft with the next save
  changed();
  $("impression").focus();
}
let saveTimer = null;
function changed() {
  R.dirty = true; setSaveState(T.unsaved);
  clearTimeout(saveTimer); saveTimer = setTimeout(save, 2000);  // autosave while typing pauses
}
async function save() {
  clearTimeout(saveTimer);
  if (!R.draft || !R.dirty) return R.draft;
  setSaveState(T.saving);
  const body = { findings: $("findings").value, impression: $("impression").value, advice: $("advice").value,
                 critical: $("critical").checked, template: R.template };
  R.dirty = false;
  try {
    R.draft = await api(`/api/reports/${R.draft.id}`, { method: "PATCH", body });
    setSaveState(`${T.saved} ${clock()}`);
  } catch (e) { R.dirty = true; setSaveState(T.unsaved); notice(failure(e), "err"); throw e; }
  return R.draft;
}
function togglePreview() {
  const showing = !$("preview").hidden;
  if (!showing) {
    const r = { ...R.draft, findings: $("findings").value, impression: $("impression").value, advice: $("advice").value,
                critical: $("critical").checked };
    const head = el("div", { class: "by" }, `${study.name} · ${study.pid} · ${study.modality.replaceAll("\\", "/")} · ${study.desc} · ${study.date}`);
    $("preview").replaceChildren(head, ...docView(r).childNodes);
  }
  $("preview").hidden = showing; $("edit-fields").hidden = !showing; $("template").disabled = !showing;
  $("preview-btn").textContent = showing ? T.preview : T.edit;
}
function signMessage(text, kind) { const m = $("sign-msg"); m.hidden = !text; m.className = `notice ${kind || "err"}`; m.textContent = text || ""; }
async function sign() {
  const password = $("signing-password").value;
  $("sign-confirm").disabled = true;
  try {
    await save();
    const signed = await api(`/api/reports/${R.draft.id}/sign`, { method: "POST", body: { signing_password: password } });
    $("signing-password").value = ""; $("sign-box").hidden = true; signMessage("");
    R.draft = null;
    await loadReports();
    notice(T.signed_notice + (signed.critical ? ` ${T.critical_sent}` : ""), "ok");
  } catch (e) {
    if (e.status === 409 && /signing key/.test(e.message)) { signMessage(T.no_key, "warn"); $("create-key").hidden = false; }
    else if (e.status === 403 && /only readers/.test(e.message)) signMessage(T.only_readers_sign);
    else if (e.status === 403) signMessage(T.wrong_password);
    else if (e.status === 400 && /impression/.test(e.message)) signMessage(T.impression_empty);
    else signMessage(failure(e));
  } finally { $("sign-confirm").disabled = false; }
}
async function createKeyAndSign() {
  const password = $("signing-password").value;
  if (password.length < 8) { signMessage(T.password_short); return; }
  try {
    await api("/api/signing-keys", { method: "POST", body: { signing_password: password } });
    $("create-key").hidden = true;
    await sign();
  } catch (e) { signMessage(e.status === 403 ? T.only_readers_sign : failure(e)); }
}
function wireReport() {
  for (const f of fields) $(f).addEventListener("input", changed);
  $("critical").addEventListener("change", () => { $("critical-hint").hidden = !$("critical").checked; changed(); save(); });
  $("template").addEventListener("change", applyTemplate);
  $("save").addEventListener("click", () => { R.dirty = true; save(); });
  $("preview-btn").addEventListener("click", togglePreview);
  $("sign").addEventListener("click", () => { $("sign-box").hidden = false; signMessage(""); $("create-key").hidden = true;
                                             $("signing-password").focus(); });
  $("sign-cancel").addEventListener("click", () => { $("sign-box").hidden = true; $("signing-password").value = ""; });
  $("sign-box").addEventListener("submit", (e) => { e.preventDefault(); sign(); });
  $("create-key").addEventListener("click", createKeyAndSign);
  $("addendum").addEventListener("click", async () => {
    try {
      R.draft = await api(`/api/studies/${enc(STUDY)}/reports`, { method: "POST", body: {} });
      R.reports.push(R.draft); notice(""); renderReports(); $("findings").focus();
    } catch (e) { notice(failure(e), "err"); }
  });
  $("claim").addEventListener("click", async () => {
    try { await api(`/api/worklist/${enc(STUDY)}/claim`, { method: "POST" }); location.reload(); }
    catch (e) { notice(failure(e), "err"); }
  });
  window.addEventListener("beforeunload", (e) => { if (R.dirty) { save(); e.preventDefault(); e.returnValue = T.leave_unsaved; } });
}
