// The modelvault page: plain script, same-origin requests only, data set as text (never HTML).
"use strict";
const $ = (id) => document.getElementById(id);
const PAGE = 60;
const COLOR = /^#[0-9a-f]{6}$/;
let offset = 0;
let total = 0;
let shown = null; // the model in the detail panel

async function api(path, method = "GET", body = undefined) {
  const init = { method, headers: {} };
  if (method !== "GET") {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body || {});
  }
  const response = await fetch(path, init);
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function say(text) { $("message").textContent = text; }

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  for (const child of children) node.append(child);
  return node;
}

function tagChip(tag, onRemove) {
  const chip = el("li", { className: "tag", textContent: tag.name });
  if (tag.color && COLOR.test(tag.color)) chip.style.background = tag.color;
  if (onRemove) {
    chip.append(el("button", { type: "button", textContent: "×", title: "remove " + tag.name,
      ariaLabel: "remove tag " + tag.name, onclick: () => onRemove(tag.name) }));
  }
  return chip;
}

// -- the filters live in the address, so a view can be bookmarked or shared ----
const FILTERS = ["search", "tag", "type", "base", "sort"];

function readAddress() {
  const query = new URLSearchParams(location.search);
  for (const name of FILTERS) $(name).value = query.get(name) || (name === "sort" ? "name" : "");
  offset = Number(query.get("offset")) || 0;
}

function writeAddress() {
  const query = new URLSearchParams();
  for (const name of FILTERS) if ($(name).value && !(name === "sort" && $(name).value === "name")) query.set(name, $(name).value);
  if (offset) query.set("offset", offset);
  const text = query.toString();
  history.replaceState(null, "", location.pathname + (text ? "?" + text : ""));
  return query;
}

async function fillChoices() {
  const [tags, types, bases] = await Promise.all([api("api/tags"), api("api/types"), api("api/bases")]);
  const fill = (id, names) => {
    const keep = new URLSearchParams(location.search).get(id) || "";
    $(id).replaceChildren(el("option", { value: "", textContent: "any" }),
      ...names.map((n) => el("option", { value: n, textContent: n })));
    $(id).value = keep;
  };
  fill("tag", tags.map((t) => t.name));
  fill("type", Object.keys(types));
  fill("base", Object.keys(bases));
}

async function loadModels() {
  const query = writeAddress();
  query.set("limit", PAGE);
  query.set("offset", offset);
  try {
    const page = await api("api/models?" + query);
    total = page.total;
    $("grid").replaceChildren(...page.models.map(card));
    const last = Math.min(offset + PAGE, total);
    $("count").textContent = total ? `${offset + 1}–${last} of ${total} models` : "no models match";
    $("prev").disabled = offset === 0;
    $("next").disabled = last >= total;
  } catch (error) { say(error.message); }
}

function card(model) {
  const picture = model.previews.length
    ? el("img", { className: "thumb", loading: "lazy", alt: "", src: "thumbs/" + model.previews[0] })
    : el("div", { className: "thumb empty", textContent: "no preview" });
  const button = el("button", { type: "button", className: "card", onclick: () => openModel(model.sha256) },
    picture,
    el("div", { className: "text" },
      el("div", { className: "name", textContent: model.name }),
      el("div", { className: "kind", textContent: model.type + (model.base ? " · " + model.base : "") }),
      el("ul", { className: "tags" }, ...model.tags.map((t) => tagChip(t)))));
  button.dataset.sha256 = model.sha256;
  return el("li", {}, button);
}

// -- the detail panel ------------------------------------------------------
async function openModel(sha256) {
  try { showModel(await api("api/models/" + sha256)); } catch (error) { say(error.message); }
}

function showModel(model) {
  shown = model;
  $("d-name").textContent = model.name;
  $("d-previews").replaceChildren(...model.previews.map((file) =>
    el("img", { src: "previews/" + file, alt: "preview of " + model.name, loading: "lazy" })));
  const fields = [["SHA-256", model.sha256], ["path", model.path], ["type", model.type],
    ["base", model.base || "—"], ["size", model.size_bytes == null ? "—" : model.size_bytes.toLocaleString() + " bytes"],
    ["added", model.created_at], ["changed", model.updated_at]];
  for (const [key, value] of Object.entries(model.meta)) {
    if (key !== "previews" && key !== "description") fields.push([key, typeof value === "string" ? value : JSON.stringify(value)]);
  }
  $("d-fields").replaceChildren(...fields.flatMap(([k, v]) => [el("dt", { textContent: k }), el("dd", { textContent: v })]));
  $("d-note").value = model.note || "";
  $("d-tags").replaceChildren(...model.tags.map((t) => tagChip(t, untag)));
  const panel = $("detail-panel");
  panel.hidden = false;
  panel.focus();
}

function closePanel() {
  $("detail-panel").hidden = true;
  const back = shown && document.querySelector(`[data-sha256="${shown.sha256}"]`);
  if (back) back.focus();
}

async function change(work, done) {
  try { const model = await work(); showModel(model); say(done); loadModels(); fillChoices(); }
  catch (error) { say(error.message); }
}

const saveNote = () => change(() => api("api/models/" + shown.sha256, "PATCH", { note: $("d-note").value }), "note saved");
const untag = (name) => change(() => api(`api/models/${shown.sha256}/tags/${encodeURIComponent(name)}`, "DELETE"), "tag removed");
function addTag(event) {
  event.preventDefault();
  const name = $("d-tag").value.trim();
  if (!name) return;
  $("d-tag").value = "";
  change(() => api(`api/models/${shown.sha256}/tags`, "POST", { names: [name] }), "tag added");
}

// -- the run: live status from the server's event stream ----------------------
function showStatus(status) {
  $("state").textContent = status.state + (status.stage && status.state === "paused" ? ` (${status.stage})` : "");
  const bar = $("progress");
  if (status.fraction == null) bar.removeAttribute("value"); else bar.value = status.fraction;
  if (status.state === "done") bar.value = 1;
  const parts = [];
  if (status.files_total) parts.push(`${status.files_done} of ${status.files_total} files`);
  if (status.eta_seconds != null && status.state === "processing") parts.push(`about ${Math.ceil(status.eta_seconds)} s left`);
  if (status.error) parts.push(status.error);
  $("detail").textContent = parts.join(" · ");
  const counts = Object.entries(status.staging_counts || {}).map(([k, v]) => `${v} ${k}`);
  $("queue").textContent = counts.length ? "Queue: " + counts.join(", ") : "Queue: empty";
  const running = ["scanning", "importing", "processing", "paused"].includes(status.state);
  $("pause").disabled = !running || status.state === "paused";
  $("resume").disabled = status.state !== "paused";
  $("stop").disabled = !running;
  const was = document.body.dataset.state; // a run this page watched has just ended: show its work
  if (["done", "stopped", "failed"].includes(status.state) && was && was !== status.state) {
    fillChoices().then(loadModels);
  }
  document.body.dataset.state = status.state;
}

// The event stream brings every change in order; a run's answer is shown only if no
// event came while it was on its way (an answer that lost the race, "processing"
// after "stopped", would otherwise stay on the page: no later event corrects it).
let eventsSeen = 0;

async function run(path, body) {
  const seen = eventsSeen;
  try {
    const status = await api("api/run/" + path, "POST", body);
    if (eventsSeen === seen) showStatus(status);
    say("");
  } catch (error) { say(error.message); }
}

function listen() {
  const events = new EventSource("api/events");
  events.onmessage = (event) => { eventsSeen += 1; showStatus(JSON.parse(event.data)); };
}

// -- wiring -------------------------------------------------------------------
function wire() {
  let typing = null;
  $("search").addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(() => { offset = 0; loadModels(); }, 200); });
  for (const id of ["tag", "type", "base", "sort"]) $(id).addEventListener("change", () => { offset = 0; loadModels(); });
  $("filters").addEventListener("submit", (event) => event.preventDefault());
  $("prev").onclick = () => { offset = Math.max(0, offset - PAGE); loadModels(); };
  $("next").onclick = () => { offset += PAGE; loadModels(); };
  $("close").onclick = closePanel;
  $("d-save").onclick = saveNote;
  $("d-tag-form").addEventListener("submit", addTag);
  $("pause").onclick = () => run("pause");
  $("resume").onclick = () => run("resume");
  $("stop").onclick = () => run("stop");
  $("process").onclick = () => run("process");
  $("migrate").onclick = () => run("migrate", { legacy: $("legacy").value });
  $("scan").onclick = () => run("scan", { roots: [$("root").value] });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !$("detail-panel").hidden) closePanel();
    if (event.key === "/" && !["INPUT", "TEXTAREA"].includes(document.activeElement.tagName)) {
      event.preventDefault();
      $("search").focus();
    }
  });
}

readAddress();
wire();
fillChoices().then(loadModels).catch((error) => say(error.message));
listen();
