// The MADE demo page: plain JavaScript against the service's own API (no build step, no libraries).
// Every call goes through `call`, which sends the optional API key, retries a 503 after its
// Retry-After (bounded) and turns problem+json answers into readable errors.

const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const MAX_RETRIES = 3;
const MAX_SCALE = 16;  // the API's bound on `scale`
const GAP = 2;  // pixels between the cells of a PNG grid (and 2 more after a completion's input)

const state = { models: {}, model: null, chosen: null, urls: new Map(), busy: 0 };

function apiHeaders() {
  const key = $("api-key").value.trim();
  return key ? { "X-API-Key": key } : {};
}

async function problemError(r) {
  let text = `${r.status} ${r.statusText}`;
  try {
    const p = await r.json();
    text = `${p.title || r.status}: ${p.detail || ""}`;
  } catch (_) { /* not JSON: keep the status line */ }
  return new Error(text);
}

async function call(method, path, { json, form, params } = {}) {
  const url = new URL(path, window.location.origin);
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== "" && v !== null && v !== undefined && v !== false) url.searchParams.set(k, String(v));
  }
  const init = { method, headers: apiHeaders() };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["Content-Type"] = "application/json";
  }
  for (let attempt = 0; ; attempt++) {
    if (form !== undefined) init.body = form();  // a FormData body is built afresh for each attempt
    const r = await fetch(url, init);
    if (r.status === 503 && attempt < MAX_RETRIES) {
      const wait = Math.min(10, Number(r.headers.get("Retry-After")) || 1);
      status(`server busy, retrying in ${wait} s…`);
      await sleep(wait * 1000);
      continue;
    }
    if (!r.ok) throw await problemError(r);
    return r;
  }
}

function status(text) { $("status").textContent = text; }

function showError(err) {
  const box = $("error");
  if (!err) { box.hidden = true; box.textContent = ""; return; }
  box.textContent = err.message || String(err);
  box.hidden = false;
}

async function busy(label, work) {
  state.busy++;
  status(label);
  try {
    await work();
  } catch (err) {
    showError(err);
  } finally {
    state.busy--;
    if (state.busy === 0) status("");
  }
}

// The whole-pixel `scale` the server is asked for, so a picture `width` pixels wide comes out about
// maxWidth wide (the server enlarges it: the PNG a user saves is the one on screen).
function scaleFor(width, maxWidth) {
  return Math.max(1, Math.min(MAX_SCALE, Math.floor(maxWidth / width)));
}

// Widths of the server's pictures, at scale 1: a grid of `columns` cells, or one image.
function gridWidth(m, columns, inputFirst = false) {
  const w = m.shape ? m.shape[1] : m.data_dim;
  return columns * (w + GAP) + GAP + (inputFirst ? 2 * GAP : 0);
}

// Show a PNG blob in <img id=...>, scaled up by a whole factor (crisp pixels) to about maxWidth.
function showImage(id, blob, maxWidth) {
  const img = $(id);
  const old = state.urls.get(id);
  if (old) URL.revokeObjectURL(old);
  const url = URL.createObjectURL(blob);
  state.urls.set(id, url);
  img.dataset.loaded = "0";
  return new Promise((resolve) => {
    img.onload = () => {
      const scale = Math.max(1, Math.min(8, Math.floor(maxWidth / img.naturalWidth)));
      img.style.width = `${img.naturalWidth * scale}px`;
      img.classList.add("px");
      img.hidden = false;
      img.dataset.loaded = "1";
      resolve();
    };
    img.onerror = () => resolve();
    img.src = url;
  });
}

const value = (id) => $(id).value.trim();

// --- model choice ----------------------------------------------------------------------------------

function describe(m) {
  const shape = m.shape ? `${m.shape[0]}×${m.shape[1]} images` : `${m.data_dim}-dimensional vectors`;
  const levels = m.binary ? "binary pixels" : `gray levels ${m.value_range[0]}..${m.value_range[1]}`;
  const k = m.architecture && m.architecture.num_masks > 1 ? ` · ${m.architecture.num_masks} masks` : "";
  const test = m.metrics && m.metrics.test;
  const nll = test && test.nll_nats !== undefined
    ? ` · test NLL ${test.nll_nats.toFixed(2)} nats (${test.bits_per_dim.toFixed(3)} bits/dim)` : "";
  return `${shape} · ${levels}${k}${nll} · on ${m.device}. ${m.description || ""}`;
}

async function loadModels() {
  const listing = await (await call("GET", "/models")).json();
  const select = $("model");
  select.innerHTML = "";
  for (const m of listing.models) {
    state.models[m.name] = m;
    select.add(new Option(m.name, m.name, false, m.name === listing.default_model));
  }
  if (!listing.models.length) throw new Error("the server has no models loaded");
  if (!(listing.default_model in state.models)) select.value = listing.models[0].name;
}

async function selectModel() {
  const m = state.models[$("model").value];
  state.model = m;
  state.chosen = null;
  $("model-card").textContent = describe(m);
  $("threshold-box").hidden = !m.binary;
  for (const id of ["input-img", "completions-img", "heatmap-img", "samples-img"]) $(id).hidden = true;
  $("colorbar").hidden = true;
  for (const id of ["completions-caption", "heatmap-caption", "samples-caption"]) $(id).textContent = "";
  $("run-btn").disabled = true;
  $("resize").checked = false;  // the API's default: an image of another size is an error unless resized
  $("resize-note").textContent = "";
  $("complete-note").textContent = m.completion && m.completion.supported
    ? `The top ${m.completion.default_known_rows} rows are kept by default; the rest is drawn from the model.`
    : "This model cannot complete images (its ordering does not start with the top rows); the heat map still works.";
  await Promise.all([loadExamples(m), drawSamples()]);
}

// --- samples ---------------------------------------------------------------------------------------

// A caption's note of the temperature, when it is not the model's own (1).
function temperatureNote(t) {
  return t === undefined || t === "" || Number(t) === 1 ? "" : ` · temperature ${t}`;
}

async function drawSamples() {
  const m = state.model;
  await busy("drawing samples…", async () => {
    const n = Number(value("sample-n") || 16);
    const body = { model: m.name, n, format: "png", scale: scaleFor(gridWidth(m, Math.ceil(Math.sqrt(n))), 720) };
    if (value("sample-seed") !== "") body.seed = Number(value("sample-seed"));
    // sent as typed (a number if it reads as one), so the server's problem names a bad value
    const t = value("sample-temperature");
    if (t !== "") body.temperature = Number.isNaN(Number(t)) ? t : Number(t);
    const r = await call("POST", "/sample", { json: body });
    await showImage("samples-img", await r.blob(), 720);
    $("samples-caption").textContent =
      `${body.n} samples from ${m.name} · seed ${r.headers.get("X-Seed")}` + temperatureNote(body.temperature);
  });
}

// --- examples, uploads, completion and heat map -----------------------------------------------------

async function loadExamples(m) {
  const box = $("examples");
  box.innerHTML = "";
  $("examples-note").textContent = "";
  try {
    const list = await (await call("GET", `/models/${encodeURIComponent(m.name)}/examples`)).json();
    $("examples-note").textContent = list.source === "held-out"
      ? "Examples: held-out images shipped with the model."
      : "Examples: this model ships no held-out images, so these are the model's own samples (model sample).";
    for (const ex of list.examples) {
      const blob = await (await call("GET", ex.url)).blob();
      const button = document.createElement("button");
      button.type = "button";
      button.title = list.source === "held-out" ? ex.name : `${ex.name} (model sample)`;
      button.className = "example";
      const img = document.createElement("img");
      img.alt = button.title;
      img.src = URL.createObjectURL(blob);
      button.append(img);
      button.addEventListener("click", () => {
        for (const b of box.querySelectorAll("button")) b.classList.remove("chosen");
        button.classList.add("chosen");
        showError(null);
        choose(blob, `${ex.name}.png`);
      });
      box.append(button);
    }
  } catch (err) {
    $("examples-note").textContent = `No examples (${err.message}).`;
  }
}

async function choose(blob, name) {
  state.chosen = { blob, name };
  $("run-btn").disabled = false;
  showImage("input-img", blob, 256);
  await fitToModel(state.model, blob);
  runImage();
}

// The API resizes only when asked (resize=true); the page asks for it when the chosen image is not of
// the model's size, and says so. Unticking the box sends resize=false, and the server's error shows.
async function fitToModel(m, blob) {
  $("resize-note").textContent = "";
  if (!m.shape) return;
  let size;
  try {
    const bitmap = await createImageBitmap(blob);
    size = [bitmap.width, bitmap.height];
    bitmap.close();
  } catch (_) {
    return;  // not an image the browser reads: the server's answer names the problem
  }
  const [h, w] = m.shape;
  if (size[0] === w && size[1] === h) return;
  $("resize").checked = true;
  $("resize-note").textContent =
    `This image is ${size[0]}×${size[1]}; ${m.name} takes ${w}×${h}, so it is resized to fit (untick resize to refuse it instead).`;
}

function imageParams(m) {
  // resize is always sent, true or false, so the page never leans on a default
  const p = { model: m.name, format: "png", resize: String($("resize").checked), invert: $("invert").checked };
  if (m.binary) p.threshold = value("threshold");
  return p;
}

async function runImage() {
  const m = state.model;
  const chosen = state.chosen;
  if (!chosen) return;
  const jobs = [heatmap(m, chosen)];
  if (m.completion && m.completion.supported) jobs.push(complete(m, chosen));
  await Promise.all(jobs);
}

async function complete(m, chosen) {
  await busy("completing…", async () => {
    const n = Number(value("complete-n") || 4);
    const params = {
      ...imageParams(m), n, known_rows: value("known-rows"), seed: value("complete-seed"),
      temperature: value("complete-temperature"),
      scale: scaleFor(gridWidth(m, n + 1, true), 900),
    };
    const form = () => { const f = new FormData(); f.append("file", chosen.blob, chosen.name); return f; };
    const r = await call("POST", "/complete", { params, form });
    await showImage("completions-img", await r.blob(), 900);
    $("completions-caption").textContent =
      `${params.n} completions · top ${r.headers.get("X-Known-Rows")} rows kept · seed ${r.headers.get("X-Seed")}` +
      temperatureNote(params.temperature);
  });
}

async function heatmap(m, chosen) {
  await busy("scoring…", async () => {
    const form = () => { const f = new FormData(); f.append("files", chosen.blob, chosen.name); return f; };
    const w = m.shape ? m.shape[1] : m.data_dim;
    const r = await call("POST", "/log-prob", { params: { ...imageParams(m), scale: scaleFor(w, 256) }, form });
    await showImage("heatmap-img", await r.blob(), 256);
    const lp = Number(r.headers.get("X-Log-Prob"));
    const bpd = Number(r.headers.get("X-Bits-Per-Dim"));
    const top = Number(r.headers.get("X-Heatmap-Max-Nats"));
    $("colorbar-max").textContent = `${top.toFixed(2)} nats`;
    $("colorbar").hidden = false;
    $("heatmap-caption").textContent = `log p(x) = ${lp.toFixed(2)} nats · ${bpd.toFixed(4)} bits/dim`;
  });
}

// --- wiring ------------------------------------------------------------------------------------------

function init() {
  $("api-key").value = window.localStorage.getItem("made-api-key") || "";
  $("key-form").addEventListener("submit", (ev) => { ev.preventDefault(); $("api-key").blur(); });
  $("api-key").addEventListener("change", () => {
    window.localStorage.setItem("made-api-key", $("api-key").value.trim());
    start();
  });
  $("model").addEventListener("change", () => { showError(null); selectModel(); });
  $("sample-btn").addEventListener("click", () => { showError(null); drawSamples(); });
  $("run-btn").addEventListener("click", () => { showError(null); runImage(); });
  $("upload").addEventListener("change", (ev) => {
    const file = ev.target.files && ev.target.files[0];
    if (!file) return;
    for (const b of $("examples").querySelectorAll("button")) b.classList.remove("chosen");
    showError(null);
    choose(file, file.name);
  });
  start();
}

async function start() {
  showError(null);
  let loaded = false;
  await busy("loading models…", async () => { await loadModels(); loaded = true; });
  if (loaded) await selectModel();
}

init();
