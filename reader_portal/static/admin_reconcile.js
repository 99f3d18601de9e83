// 身份核对: the studies whose identity contradicts their order (GET /api/reconcile), the
// images' identity beside the order's with the differing fields marked, and the two
// decisions (关联 link, 拆分 split), each confirmed first. Refreshed every 30 s.
"use strict";
const REFRESH_MS = 30000;
const ROWS = [["name", "field_name"], ["patient_id", "field_patient_id"], ["issuer", "field_issuer"],
              ["sex", "field_sex"], ["birth_date", "field_birth_date"]];
function shown(key, value) {
  if (!value) return "—";
  if (key === "name") return personName(value);
  if (key === "sex") return T["sex_" + value] || value;
  if (key === "birth_date" && value.length === 8) return `${value.slice(0, 4)}-${value.slice(4, 6)}-${value.slice(6)}`;
  return value;
}
function identity(who, fields, extra = []) {
  const dl = el("dl", {});
  for (const [key, label] of ROWS) {
    dl.append(el("dt", {}, T[label]), el("dd", { class: fields.includes(key) ? "diff" : "", "data-field": key },
                                          shown(key, who[key])));
  }
  for (const [label, value] of extra) dl.append(el("dt", {}, label), el("dd", {}, value || "—"));
  return dl;
}
function studyCell(it) {
  const date = it.study_date ? `${it.study_date.slice(0, 4)}-${it.study_date.slice(4, 6)}-${it.study_date.slice(6)}` : "";
  return el("td", {}, el("div", {}, `${it.site} · ${date} · ${it.modalities.replaceAll("\\", "/")}`),
            el("div", { class: "muted" }, `${T.accession} ${it.accession_number || "—"}`),
            el("div", { class: "uid" }, it.study_instance_uid));
}
async function decide(it, action) {
  const order = it.order ? it.order.placer_order_number : "";
  const question = action === "link" ? T.rc_link_confirm.replace("{order}", order) : T.rc_split_confirm;
  if (!confirm(question)) return;
  const box = $("action-msg");
  try {
    await api(`/api/reconcile/studies/${enc(it.study_instance_uid)}/${action}`, { method: "POST", body: {} });
    box.className = "ok-box";
    box.textContent = (action === "link" ? T.rc_linked : T.rc_split_done).replace("{uid}", it.study_instance_uid);
  } catch (e) {
    if (e.status === 401) return;
    box.className = "bad-box"; box.textContent = failure(e);
  }
  box.hidden = false;
  reconcile.now();
}
function row(it) {
  const tr = el("tr", {});
  tr.dataset.study = it.study_instance_uid;
  const o = it.order;
  const orderCell = o ? el("td", {}, identity({ ...o.identity, name: o.identity.name }, it.fields,
                                              [[T.pinyin, o.identity.pinyin], [T.placer_no, o.placer_order_number],
                                               [T.requested_procedure, o.procedure_description]]))
    : el("td", { class: "muted" }, T.rc_no_order);
  const link = el("button", { type: "button", class: "btn", disabled: !o }, T.rc_link);
  link.dataset.action = "link";
  link.addEventListener("click", () => decide(it, "link"));
  const split = el("button", { type: "button", class: "btn secondary" }, T.rc_split);
  split.dataset.action = "split";
  split.addEventListener("click", () => decide(it, "split"));
  tr.append(studyCell(it), el("td", {}, identity(it.dicom, it.fields)), orderCell,
            el("td", {}, ...it.fields.map((f) => el("span", { class: "badge " + (["name_unverified", "order_cancelled"].includes(f) ? "amber" : "red"),
                                                               "data-field": f }, T["field_" + f] || f))),
            el("td", { class: "actions" }, link, split));
  return tr;
}
async function load() {
  let items;
  try { items = await api("/api/reconcile"); $("load-error").hidden = true; } catch (e) { showError($("load-error"), e); return; }
  const body = $("reconcile").querySelector("tbody");
  body.replaceChildren(...items.map(row));
  if (!items.length) body.append(el("tr", { class: "empty-row" }, el("td", { colSpan: 5 }, T.rc_empty)));
  document.body.dataset.loaded = String(Date.now());
  stamp($("updated"));
}
const reconcile = poll(REFRESH_MS, load);
