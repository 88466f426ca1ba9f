// The pixdiff page (every URL relative, so it works behind a proxy under a sub-path): a form whose defaults come from /v1/models, a live view fed by the job's
// server-sent events, a gallery, and a brush-drawn mask for inpainting. Plain JS, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { info: null, models: {}, job: null, abort: null, input: null, steps: [] };
window.pixdiff = state; // the browser test reads state.steps

// ------------------------------------------------------------------ API with the bearer token

function headers(extra = {}) {
  const token = sessionStorage.getItem("pixdiff-token");
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers(options.headers) });
  if (response.status === 401) {
    await askToken();
    return api(path, options);
  }
  return response;
}

function askToken() {
  const dialog = $("token-dialog");
  return new Promise((resolve) => {
    $("token-form").onsubmit = () => {
      sessionStorage.setItem("pixdiff-token", $("token").value);
      resolve();
    };
    dialog.showModal();
    $("token").focus();
  });
}

async function detail(response) {
  try { return (await response.json()).detail; } catch { return response.statusText; }
}

// ------------------------------------------------------------------ the form

function option(value, text, selected = false) {
  const o = document.createElement("option");
  o.value = value; o.textContent = text; o.selected = selected;
  return o;
}

async function loadModels() {
  const response = await api("v1/models");
  if (!response.ok) return say(`cannot list the models: ${await detail(response)}`, true);
  state.info = await response.json();
  const select = $("model");
  select.replaceChildren();
  for (const m of state.info.models) {
    state.models[m.name] = m;
    const o = option(m.name, m.available ? `${m.name} (${m.kind})` : `${m.name} (unavailable)`);
    o.disabled = !m.available;
    if (!m.available) o.title = m.error;
    select.append(o);
  }
  $("grid").replaceChildren(option("", "by schedule", true),
    ...state.info.grids.map((g) => option(g, g)));
  $("n").max = state.info.caps.max_n;
  $("steps").max = state.info.caps.max_steps;
  const first = state.info.models.find((m) => m.available);
  if (first) select.value = first.name;
  modelChanged();
}

function modelChanged() {
  const m = state.models[$("model").value];
  if (!m) return;
  const cls = m.kind === "class", text = m.kind === "text" || m.kind === "cascade";
  document.querySelector("[data-for=class]").hidden = !cls;
  document.querySelector("[data-for=text]").hidden = !text;
  if (cls) {
    $("class").replaceChildren(option("", "none (unconditional)"), option("all", "all classes"),
      ...m.classes.map((c, i) => option(c, c, i === 0)));
    $("negative_class").replaceChildren(option("", "none"), ...m.classes.map((c) => option(c, c)));
  }
  $("sampler").replaceChildren(...Object.keys(state.info.samplers).map(
    (s) => option(s, s, s === m.defaults.sampler)));
  $("steps").value = Math.min(m.defaults.steps, state.info.caps.max_steps);
  $("guidance").value = m.defaults.guidance;
  const size = m.low_res_size || m.image_shape[2];
  $("image-size").textContent = `(${size}×${size})`;
  $("model-info").textContent = `${m.image_shape[1]}×${m.image_shape[2]}, ${m.kind}` +
    (m.stages ? `, ${m.stages.length} stages` : "");
  const sr = m.kind === "super-resolution";
  for (const radio of document.querySelectorAll("input[name=task]")) {
    const fits = radio.value === "upscale" ? sr : radio.value === "generate" ? !sr :
      !sr && m.kind !== "cascade";
    radio.disabled = !fits;
  }
  const checked = document.querySelector("input[name=task]:checked");
  if (checked.disabled) document.querySelector("input[name=task]:not(:disabled)").checked = true;
  taskChanged();
}

function task() { return document.querySelector("input[name=task]:checked").value; }

function taskChanged() {
  const t = task();
  for (const el of document.querySelectorAll("[data-task]")) {
    el.hidden = !el.dataset.task.split(" ").includes(t);
  }
  $("run").textContent = { generate: "Generate", edit: "Edit", inpaint: "Inpaint",
    upscale: "Upscale" }[t];
  if (t === "inpaint") resetMask();
}

function number(id) {
  const v = $(id).value;
  return v === "" ? null : Number(v);
}

function fields() {
  const m = state.models[$("model").value];
  const f = {
    model: m.name, sampler: $("sampler").value, steps: number("steps"),
    guidance: number("guidance"), seed: number("seed") ?? 0, n: number("n") ?? 1,
    grid: $("grid").value || null, eta: number("eta"), cfg_rescale: number("cfg_rescale") ?? 0,
    threshold: $("threshold").value, threshold_percentile: number("threshold_percentile"),
  };
  if (m.kind === "class") {
    f.class = $("class").value === "" ? null : $("class").value;
    f.negative_class = $("negative_class").value === "" ? null : $("negative_class").value;
  } else if (m.kind === "text" || m.kind === "cascade") {
    f.prompt = $("prompt").value || null;
    f.negative_prompt = $("negative_prompt").value || null;
  }
  const steers = [f.class, f.negative_class, f.prompt, f.negative_prompt].some((v) => v != null);
  if (!steers) f.guidance = null; // guidance needs a class or prompt to steer by
  const lo = number("interval_lo"), hi = number("interval_hi");
  if (lo !== null && hi !== null) f.guidance_interval = [lo, hi];
  const t = task();
  if (t === "edit") f.strength = number("strength");
  if (t === "inpaint") f.resample = number("resample");
  if (t === "upscale") f.aug_level = number("aug_level");
  return Object.fromEntries(Object.entries(f).filter(([, v]) => v !== null && v !== undefined));
}

async function request() {
  const t = task(), f = fields();
  if (t === "generate") {
    return { body: JSON.stringify(f), headers: { "Content-Type": "application/json" } };
  }
  const image = await inputImage();
  if (!image) throw new Error("choose an input image first");
  const form = new FormData();
  for (const [k, v] of Object.entries(f)) {
    if (Array.isArray(v)) v.forEach((x) => form.append(k, x)); else form.append(k, v);
  }
  form.append("image", image, "input.png");
  if (t === "inpaint") form.append("mask", await maskBlob(), "mask.png");
  return { body: form, headers: {} };
}

// ------------------------------------------------------------------ running a job, live

async function run(event) {
  event.preventDefault();
  if (state.abort) return;
  let req;
  try { req = await request(); } catch (e) { return say(e.message, true); }
  state.abort = new AbortController();
  state.steps = [];
  busy(true);
  say("sending…");
  try {
    const response = await api(`v1/${task()}?stream=true`, { method: "POST",
      body: req.body, headers: req.headers, signal: state.abort.signal });
    if (!response.ok) {
      const wait = response.headers.get("Retry-After");
      say(`${response.status}: ${await detail(response)}` + (wait ? ` (retry in ${wait} s)` : ""), true);
    } else {
      await readEvents(response);
    }
  } catch (e) {
    if (e.name !== "AbortError") say(`failed: ${e.message}`, true);
  } finally {
    state.abort = null; state.job = null;
    busy(false);
  }
}

async function readEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const type = /^event: (.*)$/m.exec(block), data = /^data: (.*)$/m.exec(block);
      if (type && data) handle(type[1], JSON.parse(data[1]));
    }
  }
}

function handle(type, data) {
  if (type === "queued") {
    state.job = data.id;
    say(data.place > 1 ? `queued, place ${data.place}` : "queued");
  } else if (type === "started") {
    say(data.batch > 1 ? `running, in one pass with ${data.batch - 1} other job(s)` : "running");
  } else if (type === "step") {
    state.steps.push(data.step);
    $("xt").src = `data:image/png;base64,${data.x_t}`;
    if (data.x0) $("x0").src = `data:image/png;base64,${data.x0}`;
    $("step-counter").textContent = `step ${data.step} / ${data.total}`;
    $("progress").value = Math.min(1, data.step / Math.max(1, data.total));
  } else if (type === "done") {
    say(`done in ${data.seconds.toFixed(2)} s (${data.nfe} NFE)`);
    $("x0").src = `data:image/png;base64,${data.grid}`;
    addResult(data);
  } else if (type === "error") {
    say(`${data.state}: ${data.detail}`, true);
  }
}

async function cancel() {
  if (!state.abort) return;
  const id = state.job;
  state.abort.abort();
  if (id) await api(`v1/jobs/${id}`, { method: "DELETE" });
  say("cancelled");
}

function busy(on) {
  $("run").disabled = on;
  $("cancel").disabled = !on;
}

function say(text, error = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
}

// ------------------------------------------------------------------ the gallery

function addResult(result) {
  const s = result.settings;
  const li = document.createElement("li");
  li.className = "card";
  const what = s.prompt ? `“${s.prompt}”` : s.class !== null ? `class ${classLabel(s)}` : "";
  const img = document.createElement("img");
  img.src = `data:image/png;base64,${result.grid}`;
  img.alt = `${s.task} with ${s.model} ${what}`;
  const text = document.createElement("p");
  text.className = "settings";
  text.textContent = `${s.task} · ${s.model} ${what} · ${s.sampler} ${s.steps} steps ` +
    `(${result.nfe} NFE) · guidance ${s.guidance ?? "run's"} · seed ${s.seed} · n ${s.n}`;
  const code = document.createElement("code");
  code.textContent = result.command;
  const buttons = document.createElement("div");
  buttons.className = "buttons";
  const copy = button("Copy CLI command", () => copyText(result.command, copy));
  const download = document.createElement("a");
  download.href = img.src;
  download.download = `pixdiff-${result.id}.png`;
  download.textContent = "Download PNG";
  const use = button("Use as input", () => useAsInput(result.images[0]));
  buttons.append(copy, download, use);
  li.append(img, text, code, buttons);
  $("gallery").prepend(li);
}

function classLabel(s) {
  const m = state.models[s.model];
  const i = Number(s.class);
  return m && m.classes && Number.isInteger(i) && m.classes[i] ? m.classes[i] : s.class;
}

function button(text, onclick) {
  const b = document.createElement("button");
  b.type = "button"; b.textContent = text; b.onclick = onclick;
  return b;
}

async function copyText(text, b) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const area = document.createElement("textarea");
    area.value = text; document.body.append(area); area.select();
    document.execCommand("copy"); area.remove();
  }
  b.textContent = "Copied"; setTimeout(() => { b.textContent = "Copy CLI command"; }, 1500);
}

async function useAsInput(b64) {
  state.input = await (await fetch(`data:image/png;base64,${b64}`)).blob();
  $("image").value = "";
  say("the result is the input image now");
  if (task() === "inpaint") resetMask();
}

async function inputImage() {
  const file = $("image").files[0];
  return file || state.input;
}

// ------------------------------------------------------------------ the inpainting mask

const mask = { size: 28, bits: null, cursor: [14, 14], picture: null };
state.mask = mask;

async function resetMask() {
  const m = state.models[$("model").value];
  mask.size = m ? m.image_shape[2] : 28;
  mask.bits = new Uint8Array(mask.size * mask.size);
  mask.cursor = [mask.size >> 1, mask.size >> 1];
  const image = await inputImage();
  mask.picture = image ? await createImageBitmap(image) : null;
  drawMask();
}

function paint(x, y) {
  const r = Number($("brush").value) / 2;
  for (let j = Math.floor(y - r); j <= y + r; j++) {
    for (let i = Math.floor(x - r); i <= x + r; i++) {
      if (i >= 0 && j >= 0 && i < mask.size && j < mask.size && (i - x) ** 2 + (j - y) ** 2 <= r * r + 0.5) {
        mask.bits[j * mask.size + i] = 1;
      }
    }
  }
  drawMask();
}

function drawMask() {
  const canvas = $("mask"), ctx = canvas.getContext("2d"), k = canvas.width / mask.size;
  ctx.imageSmoothingEnabled = false;
  ctx.fillStyle = "#eceef2";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  if (mask.picture) ctx.drawImage(mask.picture, 0, 0, canvas.width, canvas.height);
  ctx.fillStyle = "rgba(220, 30, 60, 0.55)";
  for (let j = 0; j < mask.size; j++) {
    for (let i = 0; i < mask.size; i++) {
      if (mask.bits && mask.bits[j * mask.size + i]) ctx.fillRect(i * k, j * k, k, k);
    }
  }
  if (document.activeElement === canvas) {
    ctx.strokeStyle = "#f2a900"; ctx.lineWidth = 2;
    const r = (Number($("brush").value) / 2) * k;
    ctx.beginPath();
    ctx.arc((mask.cursor[0] + 0.5) * k, (mask.cursor[1] + 0.5) * k, Math.max(r, k / 2), 0, 7);
    ctx.stroke();
  }
}

function maskBlob() {
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = mask.size;
  const ctx = canvas.getContext("2d"), data = ctx.createImageData(mask.size, mask.size);
  mask.bits.forEach((bit, p) => {
    data.data.set([bit ? 255 : 0, bit ? 255 : 0, bit ? 255 : 0, 255], 4 * p);
  });
  ctx.putImageData(data, 0, 0);
  return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
}

function pointerPaint(event) {
  if (!(event.buttons & 1)) return;
  const rect = event.target.getBoundingClientRect();
  const x = ((event.clientX - rect.left) / rect.width) * mask.size - 0.5;
  const y = ((event.clientY - rect.top) / rect.height) * mask.size - 0.5;
  mask.cursor = [Math.round(x), Math.round(y)];
  paint(x, y);
}

function keyPaint(event) {
  const moves = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
  if (moves[event.key]) {
    const [dx, dy] = moves[event.key];
    mask.cursor = [Math.min(mask.size - 1, Math.max(0, mask.cursor[0] + dx)),
      Math.min(mask.size - 1, Math.max(0, mask.cursor[1] + dy))];
    if (event.shiftKey) paint(...mask.cursor); else drawMask();
  } else if (event.key === " " || event.key === "Enter") {
    paint(...mask.cursor);
  } else if (event.key === "c" || event.key === "C") {
    mask.bits.fill(0); drawMask();
  } else {
    return;
  }
  event.preventDefault();
}

// ------------------------------------------------------------------ wiring

function start() {
  $("form").addEventListener("submit", run);
  $("cancel").addEventListener("click", cancel);
  $("model").addEventListener("change", modelChanged);
  for (const radio of document.querySelectorAll("input[name=task]")) {
    radio.addEventListener("change", taskChanged);
  }
  $("image").addEventListener("change", () => { state.input = null; resetMask(); });
  $("strength").addEventListener("input", () => { $("strength-out").value = $("strength").value; });
  $("brush").addEventListener("input", () => { $("brush-out").value = $("brush").value; drawMask(); });
  $("clear-mask").addEventListener("click", () => { mask.bits.fill(0); drawMask(); });
  const canvas = $("mask");
  canvas.addEventListener("pointerdown", pointerPaint);
  canvas.addEventListener("pointermove", pointerPaint);
  canvas.addEventListener("keydown", keyPaint);
  canvas.addEventListener("focus", drawMask);
  canvas.addEventListener("blur", drawMask);
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") cancel(); });
  loadModels();
}

start();
