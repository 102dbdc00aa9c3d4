// The invoice KIE browser UI: Extract, Batch, Review. Plain DOM, no dependencies, no CDN.
"use strict";

const $ = (sel, el = document) => el.querySelector(sel);
const el = (tag, attrs = {}, ...kids) => {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") n.className = v;
    else if (k === "text") n.textContent = v;
    else if (k.startsWith("on")) n.addEventListener(k.slice(2), v);
    else if (v !== false && v !== null && v !== undefined) n.setAttribute(k, v === true ? "" : v);
  }
  for (const kid of kids) if (kid !== null && kid !== undefined) n.append(kid);
  return n;
};

// ------------------------------------------------------------------ API and status

const keyInput = $("#api-key");
keyInput.value = sessionStorage.getItem("kie-key") || "";
keyInput.addEventListener("change", () => {
  sessionStorage.setItem("kie-key", keyInput.value);
  init();
});

function status(text, error = false) {
  const s = $("#status");
  s.textContent = text;
  s.classList.toggle("error", error);
}

async function api(path, opts = {}) {
  const headers = Object.assign({}, opts.headers || {});
  if (keyInput.value) headers["Authorization"] = "Bearer " + keyInput.value;
  const resp = await fetch(path, Object.assign({}, opts, { headers }));
  if (!resp.ok) {
    let msg = resp.status + " " + resp.statusText;
    try {
      const body = await resp.json();
      if (body.error && body.error.message) msg = body.error.message;
    } catch (_) { /* not JSON */ }
    const err = new Error(msg);
    err.status = resp.status;
    throw err;
  }
  return opts.raw ? resp : resp.json();
}

function download(name, blob) {
  const a = el("a", { href: URL.createObjectURL(blob), download: name });
  document.body.append(a);
  a.click();
  setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
}

// ------------------------------------------------------------------ tabs (arrow keys move)

const tabs = ["extract", "batch", "review"];
function showTab(name, focus = false) {
  for (const t of tabs) {
    const tab = $("#tab-" + t);
    const on = t === name;
    tab.setAttribute("aria-selected", on ? "true" : "false");
    tab.tabIndex = on ? 0 : -1;
    $("#page-" + t).hidden = !on;
    if (on && focus) tab.focus();
  }
  if (location.hash !== "#" + name) history.replaceState(null, "", "#" + name);
}
for (const t of tabs) {
  const tab = $("#tab-" + t);
  tab.addEventListener("click", () => showTab(t));
  tab.addEventListener("keydown", (e) => {
    const i = tabs.indexOf(t);
    if (e.key === "ArrowRight") showTab(tabs[(i + 1) % tabs.length], true);
    else if (e.key === "ArrowLeft") showTab(tabs[(i + tabs.length - 1) % tabs.length], true);
    else return;
    e.preventDefault();
  });
}
window.addEventListener("hashchange", () => {
  const h = location.hash.slice(1);
  if (tabs.includes(h)) showTab(h);
});

// ------------------------------------------------------------------ fields, flags, confidence

function leaves(value, path = [], out = []) {
  if (value && typeof value === "object" && !Array.isArray(value) && Object.keys(value).length) {
    for (const [k, v] of Object.entries(value)) leaves(v, path.concat([k]), out);
  } else if (Array.isArray(value) && value.length) {
    value.forEach((v, i) => leaves(v, path.concat([i]), out));
  } else if (path.length) {
    const v = value === null || value === undefined || (typeof value === "object") ? "" : String(value);
    out.push({ path, label: label(path), value: v });
  }
  return out;
}
function label(path) {
  let s = "";
  for (const p of path) s += typeof p === "number" ? `[${p}]` : (s ? "." + p : p);
  return s;
}
const fieldOf = (lbl) => lbl.replace(/\[\d+\]/g, "[]");

function flagsFor(lbl, validation) {
  if (!validation) return [];
  return (validation.failed || []).filter((f) => (f.fields || []).some(
    (name) => name === lbl || name === fieldOf(lbl)));
}

function confBadge(c) {
  if (c === null || c === undefined) return null;
  const cls = c >= 0.9 ? "hi" : c >= 0.6 ? "mid" : "lo";
  return el("span", { class: "conf " + cls, title: "confidence (joint token probability)",
    text: (100 * c).toFixed(0) + "%" });
}

function validationBadge(v) {
  if (!v) return el("span", { class: "badge warn", text: "not validated" });
  return v.passed ? el("span", { class: "badge ok", text: "validation passed" })
    : el("span", { class: "badge bad", text: `validation: ${v.failed.length} failed` });
}

function fieldsTable(fields, validation, confidence) {
  const conf = (confidence && confidence.leaves) || {};
  const body = el("tbody");
  for (const leaf of leaves(fields || {})) {
    const flags = flagsFor(leaf.label, validation);
    const c = conf[leaf.label];
    const row = el("tr", { class: [flags.length ? "flagged" : "", c !== undefined && c !== null && c < 0.9 ? "low" : ""].join(" ").trim(),
      "data-field": leaf.label },
      el("td", { class: "path", text: leaf.label }),
      el("td", { class: "value", text: leaf.value }),
      el("td", {}, confBadge(c), ...flags.map((f) => el("span", { class: "flag", text: f.rule }))));
    body.append(row);
  }
  return el("table", { class: "grid fields" },
    el("thead", {}, el("tr", {}, el("th", { text: "field 字段" }), el("th", { text: "value 值" }),
      el("th", { text: "confidence / flags" }))), body);
}

function failureList(validation) {
  if (!validation || validation.passed) return null;
  return el("ul", { class: "failures" }, ...validation.failed.map((f) =>
    el("li", { text: `${f.rule} (${(f.fields || []).join(", ")}): ${f.message}` })));
}

// ------------------------------------------------------------------ Extract

let info = null;
let lastResult = null;

async function init() {
  try {
    info = await api("/ui/api/info");
  } catch (e) {
    status(e.status === 401 ? "This service needs an API key: enter it above." : "Cannot load the UI: " + e.message, true);
    return;
  }
  const list = $("#field-list");
  list.replaceChildren(...info.keys.map((k) => el("label", {},
    el("input", { type: "checkbox", name: "field", value: k.key, disabled: $("#all-fields").checked }),
    " " + k.key)));
  status(`Ready: ${info.backend} · ${info.model} · schema ${info.schema || "none"}`);
  loadSources();
}

$("#all-fields").addEventListener("change", (e) => {
  for (const box of document.querySelectorAll("#field-list input")) box.disabled = e.target.checked;
  $("#field-list").setAttribute("aria-disabled", e.target.checked ? "true" : "false");
});

function pickedFields() {
  if ($("#all-fields").checked) return "";
  return [...document.querySelectorAll("#field-list input:checked")].map((b) => b.value).join(",");
}

async function extractFile(file, { batch = "", pages = "" } = {}) {
  const form = new FormData();
  form.append("file", file, file.name);
  form.append("fields", pickedFields());
  if (pages) form.append("pages", pages);
  if (batch) form.append("batch", batch);
  return api("/ui/api/extract", { method: "POST", body: form });
}

$("#extract-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const file = $("#extract-file").files[0];
  if (!file) return;
  const button = $("#extract-run");
  button.disabled = true;
  status(`Extracting ${file.name} …`);
  try {
    const result = await extractFile(file, { pages: $("#extract-pages").value.trim() });
    lastResult = result;
    renderExtract(result);
    status(`${file.name}: ${result.pages.length} page(s) read`);
  } catch (err) {
    status(`${file.name}: ${err.message}`, true);
  } finally {
    button.disabled = false;
  }
});

function renderExtract(result) {
  $("#extract-result").hidden = false;
  $("#extract-summary").replaceChildren(
    el("strong", { text: result.document }), ` · ${result.kind} · ${result.n_pages} page(s) · `,
    validationBadge(result.validation));
  const out = $("#extract-pages-out");
  out.replaceChildren();
  if (result.pages.length > 1) {
    out.append(el("div", { class: "doc" },
      el("div", {}, el("h2", { text: "Document (pages merged)" }), failureList(result.validation)),
      el("div", { id: "merged-fields" }, fieldsTable(result.fields, result.validation, null))));
  }
  for (const page of result.pages) {
    out.append(el("div", { class: "doc", "data-page": page.page_id },
      el("div", { class: "page-view" },
        el("h2", { text: `Page ${page.page} of ${page.n_pages}` + (page.text_layer ? " · has a text layer" : "") }),
        el("img", { src: page.preview, alt: `page ${page.page} of ${result.document}` })),
      el("div", {},
        el("div", { class: "toolbar" }, validationBadge(page.validation),
          page.confidence ? el("span", { class: "badge ok", text: `min confidence ${(100 * page.confidence.min).toFixed(0)}%` })
            : el("span", { class: "badge warn", text: "no confidence (backend gives no log-probabilities)" }),
          el("span", { text: `${page.latency_s.toFixed(2)} s · parse ${page.parse.method}` })),
        failureList(page.validation),
        el("div", { class: "page-fields" }, fieldsTable(page.fields, page.validation, page.confidence)))));
  }
}

$("#extract-download").addEventListener("click", () => {
  if (!lastResult) return;
  const doc = {
    document: lastResult.document, sha256: lastResult.sha256, fields: lastResult.fields,
    validation: lastResult.validation,
    pages: lastResult.pages.map((p) => ({ page_id: p.page_id, page: p.page, fields: p.fields,
      validation: p.validation, confidence: p.confidence, parse: p.parse, prompt: p.prompt })),
  };
  download(lastResult.doc_id + ".json",
    new Blob([JSON.stringify(doc, null, 2)], { type: "application/json" }));
});

// ------------------------------------------------------------------ Batch

let batchRows = [];

function rowsOf(result) {
  return result.pages.map((p) => ({
    id: p.page_id, document: result.doc_id, image: result.document, system: result.system,
    prompt: p.prompt, raw_output: p.raw_output, prediction: p.fields, parse: p.parse,
    latency_s: p.latency_s, usage: p.usage, validation: p.validation, confidence: p.confidence,
    duplicate_of: result.duplicate ? result.duplicate.duplicate_of : null,
  }));
}

$("#batch-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const files = [...$("#batch-files").files];
  if (!files.length) return;
  const batch = "b-" + Date.now().toString(36) + Math.random().toString(36).slice(2, 8);
  const body = $("#batch-table tbody");
  body.replaceChildren();
  batchRows = [];
  const bar = $("#batch-progress");
  bar.max = files.length;
  bar.value = 0;
  $("#batch-run").disabled = $("#batch-excel").disabled = $("#batch-jsonl").disabled = true;
  const rows = files.map((f, i) => {
    const tr = el("tr", { "data-file": f.name }, el("td", { text: String(i + 1) }), el("td", { text: f.name }),
      el("td", { class: "state", text: "waiting" }), el("td"), el("td"), el("td"), el("td"), el("td"), el("td"));
    body.append(tr);
    return tr;
  });
  let done = 0;
  let failed = 0;
  // in order, one at a time: the service queues anyway, and duplicates point at the earlier file
  for (let i = 0; i < files.length; i++) {
    const tr = rows[i];
    tr.cells[2].textContent = "running";
    try {
      const r = await extractFile(files[i], { batch });
      batchRows.push(...rowsOf(r));
      const f = r.fields || {};
      tr.cells[2].replaceChildren(validationBadge(r.validation));
      tr.cells[3].textContent = f["发票代码"] || "";
      tr.cells[4].textContent = f["发票号码"] || "";
      tr.cells[5].textContent = f["价税合计（小写）"] || "";
      tr.cells[6].textContent = r.validation && !r.validation.passed
        ? r.validation.failed.map((x) => x.rule).join(", ") : "";
      tr.cells[7].textContent = r.duplicate ? `duplicate of ${r.duplicate.duplicate_of} (${r.duplicate.by})` : "";
      if (r.duplicate) tr.classList.add("flagged");
      tr.cells[8].textContent = r.pages.reduce((s, p) => s + p.latency_s, 0).toFixed(2);
    } catch (err) {
      failed++;
      tr.classList.add("flagged");
      tr.cells[2].replaceChildren(el("span", { class: "badge bad", text: "error" }));
      tr.cells[6].textContent = err.message;
    }
    done++;
    bar.value = done;
    $("#batch-count").textContent = `${done} / ${files.length}` + (failed ? ` (${failed} failed)` : "");
  }
  $("#batch-run").disabled = false;
  $("#batch-excel").disabled = $("#batch-jsonl").disabled = batchRows.length === 0;
  status(`Batch done: ${done - failed} of ${files.length} read` + (failed ? `, ${failed} failed` : ""), failed > 0);
});

$("#batch-jsonl").addEventListener("click", () => {
  const text = batchRows.map((r) => JSON.stringify(r)).join("\n") + "\n";
  download("predictions.jsonl", new Blob([text], { type: "application/jsonl" }));
});

$("#batch-excel").addEventListener("click", async () => {
  try {
    const resp = await api("/ui/api/excel", { method: "POST", raw: true,
      headers: { "Content-Type": "application/json" }, body: JSON.stringify({ rows: batchRows }) });
    download("predictions.xlsx", await resp.blob());
  } catch (err) {
    status("Excel: " + err.message, true);
  }
});

// ------------------------------------------------------------------ Review

let review = { source: "", items: [], index: -1 };

async function loadSources() {
  const select = $("#review-source");
  try {
    const s = await api("/ui/api/review/sources");
    if (!s.enabled) {
      select.replaceChildren(el("option", { value: "", text: "review is off (start the service with KIE_REVIEW_ROOT=<folder>)" }));
      $("#review-open").disabled = true;
      return;
    }
    select.replaceChildren(...s.sources.map((p) => el("option", { value: p, text: p })));
    $("#review-open").disabled = s.sources.length === 0;
  } catch (err) {
    status("Review sources: " + err.message, true);
  }
}

$("#review-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const source = $("#review-source").value;
  if (!source) return;
  try {
    const q = new URLSearchParams({ source, threshold: $("#review-threshold").value || "0.9" });
    const r = await api("/ui/api/review/items?" + q);
    review = { source, items: r.items, index: -1 };
    $("#review-file").textContent = `${r.items.length} to review · saves to ${r.reviewed_file}`;
    const list = $("#review-list");
    list.replaceChildren(...r.items.map((it, i) => el("li", {},
      el("button", { type: "button", class: it.reviewed ? "done" : "", "data-id": it.id,
        onclick: () => openItem(i), text: it.id }))));
    if (r.items.length) openItem(0);
    else $("#review-detail").hidden = true;
  } catch (err) {
    status("Review: " + err.message, true);
  }
});

$("#review-list").addEventListener("keydown", (e) => {
  if (e.key !== "ArrowDown" && e.key !== "ArrowUp") return;
  e.preventDefault();
  const next = review.index + (e.key === "ArrowDown" ? 1 : -1);
  if (next >= 0 && next < review.items.length) {
    openItem(next);
    document.querySelectorAll("#review-list button")[next].focus();
  }
});

async function openItem(i) {
  review.index = i;
  const it = review.items[i];
  document.querySelectorAll("#review-list button").forEach((b, j) =>
    b.setAttribute("aria-current", j === i ? "true" : "false"));
  $("#review-detail").hidden = false;
  $("#review-title").textContent = it.id + (it.reviewed ? " (reviewed)" : "");
  $("#review-reasons").replaceChildren(...it.reasons.map((r) => el("li", { text: r })));
  const body = $("#review-fields tbody");
  body.replaceChildren(...it.leaves.map((leaf, j) => {
    const input = el("input", { class: "value", value: leaf.value, "data-path": JSON.stringify(leaf.path),
      "aria-label": leaf.label, id: "rv-" + j });
    const cands = (leaf.candidates || []).filter((v, k, a) => a.indexOf(v) === k).map((v) =>
      el("button", { type: "button", class: "cand", title: "use this vote",
        onclick: () => { input.value = v; input.focus(); }, text: v === "" ? "(empty)" : v }));
    const flags = (leaf.flags || []).map((f) => el("span", { class: "flag", title: f, text: f.split(":")[0] }));
    return el("tr", { class: leaf.flags && leaf.flags.length ? "flagged" : "" },
      el("td", { class: "path" }, el("label", { for: "rv-" + j, text: leaf.label })),
      el("td", {}, input), el("td", {}, confBadge(leaf.confidence), ...cands, ...flags));
  }));
  const img = $("#review-image");
  img.removeAttribute("src");
  try {
    const q = new URLSearchParams({ source: review.source, id: it.id });
    const resp = await api("/ui/api/review/image?" + q, { raw: true });
    img.src = URL.createObjectURL(await resp.blob());
  } catch (err) {
    status(`${it.id}: image: ${err.message}`, true);
  }
}

function setPath(obj, path, value) {
  let node = obj;
  for (let i = 0; i < path.length - 1; i++) {
    if (node[path[i]] === undefined || node[path[i]] === null || typeof node[path[i]] !== "object") {
      node[path[i]] = typeof path[i + 1] === "number" ? [] : {};
    }
    node = node[path[i]];
  }
  node[path[path.length - 1]] = value;
}

async function saveItem(action) {
  const it = review.items[review.index];
  if (!it) return;
  const fields = JSON.parse(JSON.stringify(it.fields));
  if (action === "edit") {
    for (const input of document.querySelectorAll("#review-fields input.value")) {
      setPath(fields, JSON.parse(input.dataset.path), input.value);
    }
  }
  try {
    const r = await api("/ui/api/review/save", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ source: review.source, id: it.id, fields, action,
        threshold: $("#review-threshold").value || "0.9" }) });
    it.reviewed = true;
    it.fields = fields;
    document.querySelectorAll("#review-list button")[review.index].classList.add("done");
    const v = r.validation;
    status(`${it.id}: saved (${action}) to ${r.reviewed_file}` + (v && !v.passed ? ` — still fails ${v.failed.map((f) => f.rule).join(", ")}` : ""));
    $("#review-title").textContent = it.id + " (reviewed)";
  } catch (err) {
    status(`${it.id}: not saved: ${err.message}`, true);
  }
}

$("#review-edit").addEventListener("submit", (e) => { e.preventDefault(); saveItem("edit"); });
$("#review-accept").addEventListener("click", () => saveItem("accept"));
// Alt+A accept, Alt+S save, Alt+N next (also the buttons' access keys)
document.addEventListener("keydown", (e) => {
  if (!e.altKey || $("#page-review").hidden || review.index < 0) return;
  const k = e.key.toLowerCase();
  if (k === "s") saveItem("edit");
  else if (k === "a") saveItem("accept");
  else if (k === "n") $("#review-next").click();
  else return;
  e.preventDefault();
});
$("#review-next").addEventListener("click", () => {
  if (review.index + 1 < review.items.length) openItem(review.index + 1);
});

// ------------------------------------------------------------------ start

const start = location.hash.slice(1);
showTab(tabs.includes(start) ? start : "extract");
init();
