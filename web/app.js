// The mdn dashboard: a page per hash route (#/ jobs, #/new, #/jobs/ID, #/models/ID), built
// from the service's JSON API and its event streams. Plain modules, no build step.

import * as api from "./api.js";
import { Chart } from "./chart.js";

// Errors the page meets are kept here too (the browser tests read them).
window.__mdnErrors = [];
window.addEventListener("error", (e) => window.__mdnErrors.push(String(e.message || e.target?.src || e.type)), true);
window.addEventListener("unhandledrejection", (e) => window.__mdnErrors.push(String(e.reason)));

const main = document.getElementById("main");
const live = document.getElementById("live");
let cleanup = [];

// ---- helpers ----

/// An element: h("tag.class#id", {attrs}, ...children).
function h(spec, attrs = {}, ...children) {
  const [, tag, rest] = spec.match(/^([a-z0-9]+)(.*)$/);
  const e = document.createElement(tag);
  for (const m of rest.matchAll(/([.#])([\w-]+)/g)) {
    if (m[1] === ".") e.classList.add(m[2]);
    else e.id = m[2];
  }
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) e.append(c);
  return e;
}

const num = (v, digits = 4) => (v === null || v === undefined || !Number.isFinite(v) ? "–" : v.toFixed(digits));

// Whether a job keeps its last epoch's model (a fixed number of epochs) rather than its best.
const keepsLast = (j) => Number.isInteger(j.request?.options?.epochs);

// The validation NLL of the model a job keeps, and whose it is: "2.6194 (7)" for the best
// epoch's, "2.7012 (last)" with a fixed number of epochs. `e` is the job or an epoch event.
const keptNll = (last, e) => {
  if (last) return e.val_nll != null ? `${num(e.val_nll)} (last)` : "–";
  return e.best_val_nll != null ? `${num(e.best_val_nll)} (${e.best_epoch})` : "–";
};
const rate = (v) =>
  !Number.isFinite(v) ? "–" : v >= 1e6 ? `${(v / 1e6).toFixed(2)}M` : v >= 1e3 ? `${(v / 1e3).toFixed(1)}k` : v.toFixed(0);
function eta(s) {
  if (!Number.isFinite(s) || s <= 0) return "–";
  if (s < 60) return `${Math.ceil(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}
/// A time as people read it: "14:05" today, "3 Dec 14:05" before.
function when(seconds) {
  if (!Number.isFinite(seconds)) return "–";
  const d = new Date(seconds * 1000);
  const time = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  if (d.toDateString() === new Date().toDateString()) return time;
  return `${d.toLocaleDateString([], { day: "numeric", month: "short" })} ${time}`;
}
const badge = (status) => h(`span.badge.status-${status}`, { text: status });
const FINAL = ["succeeded", "failed", "cancelled"];

function say(text) {
  live.textContent = text;
}

// What the next page says when it opens (the page that led to it is gone).
let sayNext = "";

function title(text) {
  document.title = `${text} · mdn`;
}

// ---- jobs ----

async function jobsPage(params) {
  title("Jobs");
  const status = params.get("status") || "";
  const filter = h(
    "select#status-filter",
    { onchange: (e) => (location.hash = e.target.value ? `#/?status=${e.target.value}` : "#/") },
    ...["", "queued", "running", "succeeded", "failed", "cancelled"].map((s) =>
      h("option", { value: s, selected: s === status, text: s || "all" }),
    ),
  );
  const body = h("tbody#jobs-body");
  const empty = h("p#jobs-empty", { hidden: true }, "No jobs yet. ", h("a", { href: "#/new", text: "Start one." }));
  main.replaceChildren(
    h("h1", { text: "Jobs" }),
    h("div.toolbar", {}, h("label", { for: "status-filter", text: "Status " }), filter, h("a.button", { href: "#/new", text: "New job" })),
    h(
      "div.scroll",
      {},
      h(
        "table.jobs",
        {},
        h("caption.visually-hidden", { text: "Training jobs, newest first" }),
        h(
          "thead",
          {},
          h("tr", {}, ...["Job", "Data set", "Submitted", "Status", "Progress", "Val. NLL (epoch)", "Rows/s", "ETA", "Device", ""].map((t) => h("th", { scope: "col", text: t }))),
        ),
        body,
      ),
    ),
    empty,
  );
  const rows = new Map();
  let names = new Map();
  function row(j) {
    const progress = h("progress", { max: j.max_epochs || 1, value: j.epoch || 0, "aria-label": `epoch ${j.epoch || 0} of ${j.max_epochs || "?"}` });
    const cancel = FINAL.includes(j.status)
      ? ""
      : h("button.small", {
          text: "Cancel",
          "aria-label": `Cancel job ${j.id}`,
          onclick: async (e) => {
            e.target.disabled = true;
            try {
              await api.post(`/v1/jobs/${j.id}/cancel`);
              say(`job ${j.id}: cancel requested`);
            } catch (err) {
              say(err.message);
            }
            refresh();
          },
        });
    const tr = h(
      "tr",
      { "data-job": j.id, "data-status": j.status, "data-keeps": keepsLast(j) ? "last" : "best" },
      h("td", {}, h("a", { href: `#/jobs/${j.id}`, text: j.id })),
      h("td.dataset", { text: names.get(j.dataset) || j.dataset, title: j.dataset }),
      h("td.submitted", { text: when(j.created), title: j.created_by ? `by ${j.created_by}` : "" }),
      h("td", {}, badge(j.status)),
      h("td.progress", {}, progress, h("span.epochs", { text: j.epoch ? ` ${j.epoch}/${j.max_epochs}` : "" })),
      h("td.num.best", { text: keptNll(keepsLast(j), j) }),
      h("td.num.rate", { text: rate(j.rows_per_sec) }),
      h("td.num.eta", { text: j.status === "running" ? eta(j.eta_seconds) : "–" }),
      h("td.device", { text: j.device || "–", title: j.worker ? `worker ${j.worker}` : "" }, j.worker ? h("small.worker", { text: ` on ${j.worker.split(":")[0]}` }) : null),
      h("td", {}, cancel),
    );
    rows.set(j.id, tr);
    return tr;
  }
  let pending = null;
  async function refresh() {
    const q = status ? `?status=${status}` : "";
    const [{ jobs }, { datasets }] = await Promise.all([api.get(`/v1/jobs${q}`), api.get("/v1/datasets")]);
    names = new Map(datasets.map((d) => [d.id, d.name]));
    rows.clear();
    body.replaceChildren(...jobs.reverse().map(row));
    empty.hidden = jobs.length > 0;
  }
  await refresh();
  cleanup.push(
    api.follow("/v1/events", (e) => {
      const tr = rows.get(e.job);
      if (e.type === "epoch" && tr) {
        tr.querySelector("progress").max = e.max_epochs;
        tr.querySelector("progress").value = e.epoch;
        tr.querySelector(".epochs").textContent = ` ${e.epoch}/${e.max_epochs}`;
        tr.querySelector(".best").textContent = keptNll(tr.dataset.keeps === "last", e);
        tr.querySelector(".rate").textContent = rate(e.rows_per_sec);
        tr.querySelector(".eta").textContent = eta(e.eta_seconds);
      } else if (e.type === "status" || e.type === "started") {
        clearTimeout(pending);
        pending = setTimeout(() => refresh().catch((err) => say(err.message)), 100);
      }
    }),
  );
  cleanup.push(() => clearTimeout(pending));
}

// ---- new job ----

/// Which form field a server message is about (`options.batch_size: ...`, `--batch-size ...`).
const FIELDS = ["components", "hidden", "covariance", "family", "batch_size", "epochs", "max_epochs", "lr", "device"];
function fieldOf(message) {
  for (const f of FIELDS) {
    const flag = `--${f.replace("_", "-")}`;
    if (message.includes(`options.${f}`) || new RegExp(`${flag}(?![\\w-])`).test(message)) return f;
  }
  if (/target|feature|column/.test(message)) return "columns";
  return "form";
}

function field(name, label, input, help) {
  return h(
    "div.field",
    {},
    h("label", { for: `f-${name}`, text: label }),
    input,
    help ? h("small", { id: `help-${name}`, text: help }) : null,
    h("p.field-error", { id: `err-${name}`, role: "alert" }),
  );
}

function newJobPage() {
  title("New job");
  let dataset = null;
  const file = h("input#f-file", { type: "file", accept: ".csv,.npy,text/csv", "aria-describedby": "help-file" });
  const info = h("p#dataset-info");
  const columns = h("fieldset#columns", { hidden: true });
  const input = (name, attrs) => h(`input#f-${name}`, { name, "aria-describedby": `help-${name}`, ...attrs });
  const select = (name, options) =>
    h(`select#f-${name}`, { name }, ...options.map(([v, t]) => h("option", { value: v, text: t })));
  const form = h(
    "form#new-job",
    { novalidate: true },
    h(
      "fieldset",
      {},
      h("legend", { text: "Data" }),
      field("file", "CSV (with a header row) or .npy file", file, "Uploaded and checked as soon as you pick it."),
      info,
    ),
    columns,
    h(
      "fieldset",
      {},
      h("legend", { text: "Model and training" }),
      h(
        "div.grid",
        {},
        field("components", "Components K", input("components", { type: "number", min: 1, placeholder: "auto" }), "Blank: 5, fewer below 100 rows."),
        field("hidden", "Hidden widths", input("hidden", { value: "64", placeholder: "64,64" }), "Comma-separated; none for a linear head."),
        field("covariance", "Covariance", select("covariance", [["diagonal", "diagonal"], ["full", "full (correlated targets)"]])),
        field("family", "Component family", select("family", [["gaussian", "Gaussian"], ["student-t", "Student's t (heavy tails)"]])),
        field("batch_size", "Batch size", input("batch_size", { type: "number", min: 1, placeholder: "auto" }), "Blank: adapts to the rows."),
        field("epochs", "Epochs", input("epochs", { type: "number", min: 1, placeholder: "early stopping" }), "Blank: stop when validation stops improving."),
        field("max_epochs", "Most epochs", input("max_epochs", { type: "number", min: 1, placeholder: "auto" })),
        field("lr", "Learning rate", input("lr", { type: "number", step: "any", min: 0, placeholder: "0.001" })),
        field("device", "Device", select("device", [["", "the server's default"], ["auto", "auto"], ["gpu", "GPU"], ["cpu", "CPU"], ["software", "software (lavapipe)"]])),
      ),
    ),
    h("p.field-error#err-form", { role: "alert" }),
    h("p.field-error#err-columns", { role: "alert" }),
    h("button#submit", { type: "submit", disabled: true, text: "Start training" }),
  );
  main.replaceChildren(h("h1", { text: "New job" }), form);

  const clearErrors = () => form.querySelectorAll(".field-error").forEach((p) => (p.textContent = ""));
  file.addEventListener("change", async () => {
    clearErrors();
    dataset = null;
    columns.hidden = true;
    form.querySelector("#submit").disabled = true;
    const f = file.files[0];
    if (!f) return;
    info.textContent = `Uploading ${f.name}…`;
    try {
      dataset = await api.post(`/v1/datasets?name=${encodeURIComponent(f.name)}`, f, "application/octet-stream");
    } catch (e) {
      info.textContent = "";
      form.querySelector("#err-file").textContent = e.message;
      file.setAttribute("aria-invalid", "true");
      return;
    }
    file.removeAttribute("aria-invalid");
    info.textContent = `${dataset.name}: ${dataset.rows} rows, ${dataset.columns.length} columns (dataset ${dataset.id})`;
    const last = dataset.columns.length - 1;
    columns.replaceChildren(
      h("legend", { text: "Columns" }),
      h(
        "table.columns",
        {},
        h("thead", {}, h("tr", {}, h("th", { scope: "col", text: "Column" }), h("th", { scope: "col", text: "Target" }), h("th", { scope: "col", text: "Feature" }))),
        h(
          "tbody",
          {},
          ...dataset.columns.map((c, i) =>
            h(
              "tr",
              {},
              h("th", { scope: "row", text: c }),
              h("td", {}, h("input.target", { type: "checkbox", value: c, checked: i === last, "aria-label": `${c} is a target` })),
              h("td", {}, h("input.feature", { type: "checkbox", value: c, checked: i !== last, "aria-label": `${c} is a feature` })),
            ),
          ),
        ),
      ),
    );
    columns.hidden = false;
    // A column is a target or a feature, not both.
    columns.addEventListener("change", (e) => {
      if (!e.target.checked) return;
      const other = e.target.classList.contains("target") ? "feature" : "target";
      const twin = columns.querySelector(`input.${other}[value="${CSS.escape(e.target.value)}"]`);
      if (twin) twin.checked = false;
    });
    form.querySelector("#submit").disabled = false;
  });

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearErrors();
    if (!dataset) {
      form.querySelector("#err-file").textContent = "Pick a data file first.";
      return;
    }
    const options = {};
    for (const name of FIELDS) {
      const v = form.querySelector(`#f-${name}`).value.trim();
      if (v === "") continue;
      options[name] = ["components", "batch_size", "epochs", "max_epochs"].includes(name) ? Number(v) : name === "lr" ? Number(v) : v;
    }
    const checked = (cls) => [...columns.querySelectorAll(`input.${cls}:checked`)].map((i) => i.value);
    const body = { dataset: dataset.id, target: checked("target"), features: checked("feature"), options };
    const button = form.querySelector("#submit");
    button.disabled = true;
    try {
      const job = await api.post("/v1/jobs", body);
      location.hash = `#/jobs/${job.id}`;
    } catch (err) {
      button.disabled = false;
      const f = fieldOf(err.message);
      const p = form.querySelector(`#err-${f}`);
      p.textContent = err.message;
      const inputEl = form.querySelector(`#f-${f}`);
      if (inputEl) {
        inputEl.setAttribute("aria-invalid", "true");
        inputEl.focus();
      }
    }
  });
}

// ---- one job ----

async function jobPage(id) {
  title(`Job ${id}`);
  const j = await api.get(`/v1/jobs/${id}`);
  const facts = h("dl.facts");
  const status = h("span#job-status");
  const cancel = h("button#cancel", {
    text: "Cancel",
    onclick: async () => {
      cancel.disabled = true;
      try {
        await api.post(`/v1/jobs/${id}/cancel`);
        say("cancel requested: the job stops after its current epoch");
      } catch (err) {
        say(err.message);
      }
    },
  });
  // A finished job: deleted with its model (unless the registry holds it), after asking.
  const remove = h("button.small#delete", {
    text: "Delete",
    hidden: true,
    "aria-label": `Delete job ${id}`,
    onclick: async () => {
      const what = state.model ? ` and its model ${state.model} (unless it is registered)` : "";
      if (!confirm(`Delete job ${id}${what}? This cannot be undone.`)) return;
      remove.disabled = true;
      try {
        const r = await api.del(`/v1/jobs/${id}`);
        const said = r.deleted_model
          ? ` with its model ${r.deleted_model}`
          : r.kept_model
            ? `; its model ${r.kept_model} stays, registered`
            : "";
        sayNext = `job ${id} deleted${said}`;
        location.hash = "#/";
      } catch (err) {
        remove.disabled = false;
        say(err.message);
      }
    },
  });
  const error = h("p.error#job-error", { hidden: true, role: "alert" });
  const curve = h("div#curve");
  const epochs = h("tbody#epochs-body");
  const notes = h("ul#notes");
  const model = h("section#model", { hidden: true });
  main.replaceChildren(
    h("h1", {}, "Job ", h("code", { text: id }), " ", status),
    facts,
    h("div.actions", {}, cancel, remove),
    error,
    h("section", {}, h("h2", { text: "Training curve" }), curve),
    model,
    h(
      "section",
      {},
      h("h2", { text: "Epochs" }),
      h(
        "div.scroll.epochs",
        {},
        h(
          "table",
          {},
          h("thead", {}, h("tr", {}, ...["Epoch", "Train NLL", "Val. NLL", "Best", "Rows/s", "Seconds"].map((t) => h("th", { scope: "col", text: t })))),
          epochs,
        ),
      ),
    ),
    h("section", {}, h("h2", { text: "Messages" }), notes),
  );
  const chart = new Chart(curve, `Training and validation NLL per epoch of job ${id}`);
  let state = j;
  function showFacts() {
    const rows = [
      ["Status", badge(state.status)],
      ["Device", state.device || "–"],
      ["Dataset", state.dataset],
      ["Epoch", state.epoch ? `${state.epoch} of ${state.max_epochs}` : "–"],
      keepsLast(state)
        ? ["Val. NLL of the model", state.val_nll != null ? `${num(state.val_nll)} (epoch ${state.epoch}, the last: --epochs keeps the last, not the best)` : "–"]
        : ["Best val. NLL", state.best_val_nll != null ? `${num(state.best_val_nll)} (epoch ${state.best_epoch}, the model kept)` : "–"],
      ["Speed", state.rows_per_sec ? `${rate(state.rows_per_sec)} rows/s` : "–"],
      ["ETA", state.status === "running" ? eta(state.eta_seconds) : "–"],
      ["Attempts", String(state.attempts)],
    ];
    facts.replaceChildren(...rows.map(([k, v]) => h("div", {}, h("dt", { text: k }), h("dd", {}, v))));
    status.replaceChildren(badge(state.status));
    cancel.hidden = FINAL.includes(state.status);
    remove.hidden = !FINAL.includes(state.status);
    if (state.error) {
      error.textContent = `Failed: ${state.error}`;
      error.hidden = false;
    }
  }
  showFacts();
  let shown = false;
  cleanup.push(
    api.follow(`/v1/jobs/${id}/events`, async (e) => {
      if (e.type === "epoch") {
        chart.add(e);
        epochs.prepend(
          h(
            "tr",
            {},
            h("td.num", { text: e.epoch }),
            h("td.num", { text: num(e.train_nll) }),
            h("td.num", { text: num(e.val_nll) }),
            h("td.num", { text: `${num(e.best_val_nll)} (${e.best_epoch})` }),
            h("td.num", { text: rate(e.rows_per_sec) }),
            h("td.num", { text: e.seconds.toFixed(3) }),
          ),
        );
        Object.assign(state, { status: "running", epoch: e.epoch, max_epochs: e.max_epochs, val_nll: e.val_nll, best_val_nll: e.best_val_nll, best_epoch: e.best_epoch, rows_per_sec: e.rows_per_sec, eta_seconds: e.eta_seconds });
        showFacts();
      } else if (e.type === "status") {
        state = await api.get(`/v1/jobs/${id}`);
        showFacts();
        if (FINAL.includes(e.status)) {
          say(`job ${id} ${e.status}`);
          if (state.model && !shown) {
            shown = true;
            showModel(model, state.model).catch((err) => notes.prepend(h("li.warning", { text: err.message })));
          }
        }
      } else if (e.type === "started") {
        const p = e.plan;
        notes.append(h("li", { text: `training on ${p.backend}: [${p.features.join(", ")}] → [${p.targets.join(", ")}], hidden [${p.hidden.join(", ")}], K=${p.components}, batch ${p.batch_size}, at most ${p.max_epochs} epochs${p.adapted.length ? ` (chosen for the data: ${p.adapted.join(", ")})` : ""}` }));
      } else if (e.type === "warning") {
        notes.append(h("li.warning", { text: `warning: ${e.message}` }));
      } else if (e.type === "note") {
        notes.append(h("li", { text: e.message }));
      } else if (e.type === "resuming") {
        notes.append(h("li", { text: `resumed after epoch ${e.epoch} (the service restarted)` }));
      } else if (e.type === "recovered") {
        notes.append(h("li.warning", { text: `epoch ${e.epoch}: a numerical fault was rolled back; learning rate now ${e.lr}` }));
      }
    }),
  );
}

/// The finished job's model: figures, component usage, download and predict links.
async function showModel(section, modelId) {
  const m = await api.get(`/v1/models/${modelId}`);
  const panels = [
    ["pit", "PIT histogram: flat when the predicted distributions are calibrated"],
    ["reliability", "Reliability: the predicted quantile levels against how often they were reached"],
  ];
  if (m.features.length === 1) panels.unshift(["density", `Conditional density of ${m.targets[0]} given ${m.features[0]}, with the data`]);
  const download = h("a.button#download", { text: "Download the model", download: `${modelId}.json`, href: "#" });
  const figs = h("div.figures");
  const usage = m.training?.components;
  section.replaceChildren(
    h("h2", { text: "Model" }),
    h("p", {}, h("code", { text: modelId }), `: [${m.features.join(", ")}] → [${m.targets.join(", ")}], K=${m.arch.components}. `, h("a#predict-link", { href: `#/models/${modelId}`, text: "Predict with it" })),
    h("div.actions", {}, download),
    figs,
    usage
      ? h(
          "div",
          {},
          h("h3", { text: "Component usage" }),
          h(
            "table.usage#usage",
            {},
            h("thead", {}, h("tr", {}, h("th", { scope: "col", text: "Component" }), h("th", { scope: "col", text: "Average weight" }), h("th", { scope: "col", text: "" }))),
            h(
              "tbody",
              {},
              ...usage.weights.map((w, k) =>
                h("tr", {}, h("td.num", { text: k }), h("td.num", { text: w.toFixed(3) }), h("td", {}, h("meter", { min: 0, max: 1, value: w, "aria-label": `component ${k} weight` }), usage.unused.includes(k) ? " unused" : "")),
              ),
            ),
          ),
        )
      : null,
  );
  section.hidden = false;
  download.href = await api.blobUrl(`/v1/models/${modelId}`);
  for (const [panel, caption] of panels) {
    const img = h("img", { alt: caption, "data-panel": panel });
    figs.append(h("figure", {}, img, h("figcaption", { text: caption })));
    api
      .blobUrl(`/v1/models/${modelId}/plot/${panel}`)
      .then((url) => (img.src = url))
      .catch((err) => img.replaceWith(h("p.warning", { text: err.message })));
  }
}

// ---- one model ----

async function modelPage(id) {
  title(`Model ${id}`);
  const m = await api.get(`/v1/models/${id}`);
  const rows = h("textarea#rows", { rows: 6, "aria-describedby": "help-rows" });
  rows.value = m.features.map(() => "0.5").join(", ");
  const qs = h("input#quantiles", { value: "0.5", "aria-describedby": "help-quantiles" });
  const interval = h("input#interval", { value: "0.9", "aria-describedby": "help-interval" });
  const rowsFile = h("input#rows-file", { type: "file", accept: ".csv,text/csv,text/plain" });
  rowsFile.addEventListener("change", async () => {
    const f = rowsFile.files[0];
    if (f) rows.value = (await f.text()).trim();
  });
  const out = h("div#predictions");
  const form = h(
    "form#predict-form",
    {},
    h("label", { for: "rows", text: "Rows" }),
    rows,
    h("small#help-rows", { text: `One row per line: ${m.features.join(", ")} (a header line with the names is allowed).` }),
    h("p.field-error#err-rows", { role: "alert" }),
    h("label", { for: "rows-file", text: "…or load them from a CSV file" }),
    rowsFile,
    h("label", { for: "interval", text: "Central interval" }),
    interval,
    h("small#help-interval", { text: "Probability of the central interval whose ends are shown (blank: none)." }),
    h("p.field-error#err-interval", { role: "alert" }),
    h("label", { for: "quantiles", text: "Quantiles" }),
    qs,
    h("small#help-quantiles", { text: "Levels between 0 and 1, comma-separated." }),
    h("p.field-error#err-quantiles", { role: "alert" }),
    h("button", { type: "submit", text: "Predict" }),
  );
  main.replaceChildren(
    h("h1", {}, "Model ", h("code", { text: id })),
    h("p", { text: `[${m.features.join(", ")}] → [${m.targets.join(", ")}], K=${m.arch.components}${m.arch.family === "student-t" ? " Student's t components" : ""}, ${m.arch.covariance || "diagonal"} covariance${m.members && m.members.length ? `; a deep ensemble of ${m.members.length + 1} networks (its standard deviation is split into the noise the networks see, aleatoric, and where they disagree, epistemic)` : ""}` }),
    form,
    out,
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    form.querySelectorAll(".field-error").forEach((p) => (p.textContent = ""));
    const lines = rows.value.split("\n").map((l) => l.trim()).filter(Boolean);
    let header = null;
    if (lines.length && lines[0].split(/[,\s]+/).some((c) => c !== "" && Number.isNaN(Number(c)))) header = lines.shift().split(/\s*,\s*|\s+/);
    const table = lines.map((l) => l.split(/\s*,\s*|\s+/).map(Number));
    let body;
    if (header) {
      const columns = {};
      header.forEach((name, i) => (columns[name] = table.map((r) => r[i])));
      body = { columns };
    } else body = { rows: table };
    body.quantiles = qs.value.split(",").map((s) => s.trim()).filter(Boolean).map(Number);
    if (interval.value.trim()) body.interval = Number(interval.value);
    try {
      const p = await api.post(`/v1/models/${id}/predict`, body);
      out.replaceChildren(predictionTable(m, p, table, header));
      say(`${p.rows.length} predictions`);
    } catch (err) {
      const target = /interval/.test(err.message) ? "#err-interval" : /quantile/.test(err.message) ? "#err-quantiles" : "#err-rows";
      form.querySelector(target).textContent = err.message;
    }
  });
}

function predictionTable(m, p, table, header) {
  const levels = p.rows.length && p.rows[0].quantiles ? Object.keys(p.rows[0].quantiles) : [];
  const inputs = header || m.features;
  // A deep ensemble's rows carry the two parts of each target's variance.
  const split = p.rows.length > 0 && !!p.rows[0].epistemic_variance;
  const sd = (v) => num(Math.sqrt(Math.max(v, 0)));
  const parts = (t) => (split ? [`${t} aleatoric sd`, `${t} epistemic sd`] : []);
  const head = [...inputs, ...m.targets.flatMap((t) => [`${t} mean`, `${t} mode`, ...parts(t), ...levels.map((q) => `${t} q${q}`)]), "mixture (π, μ, σ)"];
  return h(
    "div.scroll",
    {},
    h(
      "table.predictions",
      {},
      h("thead", {}, h("tr", {}, ...head.map((t) => h("th", { scope: "col", text: t })))),
      h(
        "tbody",
        {},
        ...p.rows.map((r, i) =>
          h(
            "tr",
            {},
            ...table[i].map((v) => h("td.num", { text: v })),
            ...m.targets.flatMap((_, d) => [
              h("td.num", { text: num(r.mean[d]) }),
              h("td.num", { text: num(r.mode[d]) }),
              ...(split ? [h("td.num", { text: sd(r.aleatoric_variance[d]) }), h("td.num", { text: sd(r.epistemic_variance[d]) })] : []),
              ...levels.map((q) => h("td.num", { text: num(r.quantiles[q][d]) })),
            ]),
            h("td.mixture", { text: r.pi.map((w, k) => `${w.toFixed(2)}·N(${r.mu[k].map((v) => v.toFixed(3)).join(",")}; ${r.sigma[k].map((v) => v.toFixed(3)).join(",")})`).join(" + ") }),
          ),
        ),
      ),
    ),
  );
}

// ---- the model registry ----

function table(caption, heads, rows, cls) {
  return h(
    "div.scroll",
    {},
    h(
      `table.${cls}`,
      {},
      h("caption.visually-hidden", { text: caption }),
      h("thead", {}, h("tr", {}, ...heads.map((t) => h("th", { scope: "col", text: t })))),
      h("tbody", {}, ...rows),
    ),
  );
}

async function registryPage() {
  title("Models");
  const { models } = await api.get("/v1/registry");
  const rows = models.map((m) =>
    h(
      "tr",
      { "data-name": m.name },
      h("td", {}, h("a", { href: `#/registry/${encodeURIComponent(m.name)}`, text: m.name })),
      h("td.num", { text: String(m.latest) }),
      h("td.num", { text: String(m.versions) }),
      h("td.aliases", { text: Object.entries(m.aliases).map(([a, v]) => `${a} → ${v}`).join(", ") || "–" }),
      h("td", { text: when(m.created) }),
    ),
  );
  main.replaceChildren(
    h("h1", { text: "Models" }),
    models.length
      ? table("Registered models", ["Name", "Latest", "Versions", "Aliases", "Registered"], rows, "registry")
      : h(
          "p#registry-empty",
          {},
          "No registered models yet: a job registers its model with ",
          h("code", { text: "\"register\": \"NAME\"" }),
          " (or mdn submit --register NAME).",
        ),
  );
}

async function registeredPage(name) {
  title(name);
  const r = await api.get(`/v1/registry/${encodeURIComponent(name)}`);
  const rows = [...r.versions].reverse().map((v) =>
    h(
      "tr",
      { "data-version": v.version },
      h("td.num", { text: String(v.version) }),
      h("td", {}, h("a", { href: `#/models/${v.model}`, text: v.model })),
      h("td", {}, v.job ? h("a", { href: `#/jobs/${v.job}`, text: v.job }) : "–"),
      h("td.aliases", { text: v.aliases.join(", ") || "–" }),
      h("td.tags", { text: v.tags.join(", ") || "–" }),
      h("td", { text: when(v.created), title: v.created_by ? `by ${v.created_by}` : "" }),
    ),
  );
  main.replaceChildren(
    h("h1", { text: name }),
    h("p", {}, "Predict with ", h("code", { text: `/v1/models/${name}` }), " (the newest version), ", h("code", { text: `${name}:VERSION` }), " or ", h("code", { text: `${name}@ALIAS` }), "."),
    table(`Versions of ${name}, newest first`, ["Version", "Model", "Job", "Aliases", "Tags", "Registered"], rows, "versions"),
  );
}

// ---- routing ----

async function route() {
  cleanup.forEach((f) => f());
  cleanup = [];
  say(sayNext);
  sayNext = "";
  const [path, query] = (location.hash.slice(1) || "/").split("?");
  const params = new URLSearchParams(query || "");
  document.querySelectorAll("nav a").forEach((a) => a.removeAttribute("aria-current"));
  try {
    let m;
    if (path === "/" || path === "") {
      document.getElementById("nav-jobs").setAttribute("aria-current", "page");
      await jobsPage(params);
    } else if (path === "/new") {
      document.getElementById("nav-new").setAttribute("aria-current", "page");
      newJobPage();
    } else if ((m = path.match(/^\/jobs\/([\w]+)$/))) {
      await jobPage(m[1]);
    } else if ((m = path.match(/^\/models\/([\w]+)$/))) {
      await modelPage(m[1]);
    } else if (path === "/registry") {
      document.getElementById("nav-registry").setAttribute("aria-current", "page");
      await registryPage();
    } else if ((m = path.match(/^\/registry\/([^/]+)$/))) {
      document.getElementById("nav-registry").setAttribute("aria-current", "page");
      await registeredPage(decodeURIComponent(m[1]));
    } else {
      main.replaceChildren(h("h1", { text: "Not found" }), h("p", {}, "No such page. ", h("a", { href: "#/", text: "Jobs" })));
    }
  } catch (e) {
    if (e.status === 401) return;
    main.replaceChildren(h("h1", { text: "Something went wrong" }), h("p.error", { role: "alert", text: e.message }));
  }
}

const dialog = document.getElementById("token-dialog");
api.onUnauthorized(() => {
  if (!dialog.open) {
    document.getElementById("token-error").textContent = api.token() ? "That key was refused." : "";
    dialog.showModal();
  }
});
document.getElementById("token-form").addEventListener("submit", () => {
  api.setToken(document.getElementById("token-input").value.trim());
  route();
});

window.addEventListener("hashchange", route);
route();
