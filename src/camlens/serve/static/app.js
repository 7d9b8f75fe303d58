// camlens viewer: no framework, no build step, nothing fetched from outside this server.
// The server sends each map once as a grayscale PNG in [0, 1] (or a picture, for guided backprop);
// colour maps, opacity and overlays are computed here, so moving the slider never calls the server.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  options: null,
  run: null,          // the last /api/explain answer
  classId: null,      // the class shown
  base: null,         // the image's pixels at the maps' size (ImageData)
  decoded: {},        // class id -> method -> {pictures, data: ImageData}
  cards: [],          // [{canvas, kind, method}]
  timing: {},         // upload-to-first-overlay, model seconds
  busy: false,
};
window.camlens = state;

// ------------------------------------------------------------------ colour maps
// The tables come from the server (camlens.viz.annotate.colorize), so the page's colours are the CLI's.
const lutCache = {};
function lut(name) {
  if (!lutCache[name]) {
    const table = new Uint8ClampedArray(256 * 3);
    state.options.colormaps[name].forEach(([r, g, b], i) => table.set([r, g, b], 3 * i));
    lutCache[name] = table;
  }
  return lutCache[name];
}

// ------------------------------------------------------------------ messages
function say(text, kind = "") {
  const box = $("message");
  box.textContent = text;
  box.className = kind;
  document.body.dataset.state = kind || "ready";
}

async function getJSON(url, init) {
  const response = await fetch(url, init);
  let body = null;
  try { body = await response.json(); } catch (_) { /* not JSON */ }
  if (!response.ok) {
    const detail = body && body.detail ? (typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail)) : response.statusText;
    const error = new Error(detail || `HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("the browser could not decode a picture from the server"));
    img.src = src;
  });
}

async function pixels(src) {
  const img = await loadImage(src);
  const canvas = document.createElement("canvas");
  canvas.width = img.naturalWidth;
  canvas.height = img.naturalHeight;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(img, 0, 0);
  return ctx.getImageData(0, 0, canvas.width, canvas.height);
}

// ------------------------------------------------------------------ setup
async function init() {
  try {
    state.options = await getJSON("/api/options");
  } catch (error) {
    say(`The server did not answer: ${error.message}`, "error");
    return;
  }
  const opts = state.options;
  for (const net of opts.networks) {
    const option = new Option(net.unavailable ? `${net.name} (unavailable)` : net.name, net.name);
    $("network").add(option);
  }
  $("network").value = opts.network;
  for (const method of opts.methods) {
    const label = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.value = method;
    box.checked = opts.default_methods.includes(method);
    box.addEventListener("change", () => reexplain());
    label.append(box, ` ${method}`);
    $("methods").append(label);
  }
  for (const method of opts.text_methods.filter((m) => !opts.methods.includes(m))) {
    const label = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.value = method;
    box.addEventListener("change", () => reexplain());
    label.append(box, ` ${method} (prompts)`);
    $("text-methods").append(label);
  }
  for (const name of Object.keys(opts.colormaps)) $("colormap").add(new Option(name, name));
  $("colormap").value = "jet";
  for (const name of opts.examples) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = name;
    button.dataset.example = name;
    button.addEventListener("click", () => explain({ example: name, filename: name }));
    $("examples").append(button);
  }
  await loadLayers(opts.network);

  $("file").addEventListener("change", (event) => {
    const file = event.target.files[0];
    if (file) upload(file);
    event.target.value = "";
  });
  const drop = $("drop");
  for (const target of [document.body, drop]) {
    target.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
    target.addEventListener("dragleave", () => drop.classList.remove("over"));
    target.addEventListener("drop", (event) => {
      event.preventDefault();
      drop.classList.remove("over");
      const file = event.dataTransfer.files[0];
      if (file) upload(file);
    });
  }
  $("opacity").addEventListener("input", () => { $("opacity-value").textContent = `${$("opacity").value}%`; draw(); });
  $("colormap").addEventListener("change", draw);
  $("layer").addEventListener("change", () => reexplain());
  $("counterfactual").addEventListener("change", () => reexplain());
  $("network").addEventListener("change", async () => {
    const previous = state.run ? state.run.network : state.options.network;
    try {
      await loadLayers($("network").value);
    } catch (error) {  // e.g. no weights offline: say why and go back to the network that works
      say(error.message, "error");
      $("network").value = previous;
      await loadLayers(previous);
      return;
    }
    await reexplain();
  });
  $("prompts-run").addEventListener("click", () => reexplain());
  $("score-threshold").addEventListener("change", () => reexplain());
  $("faith-run").addEventListener("click", faithfulness);
  $("save-png").addEventListener("click", savePng);
  $("save-html").addEventListener("click", saveHtml);
  say("Drop an image, choose a file or pick an example.");
}

async function loadLayers(network) {
  const select = $("layer");
  select.innerHTML = "";
  const answer = await getJSON(`/api/layers?network=${encodeURIComponent(network)}`);
  for (const name of answer.layers) {
    select.add(new Option(name === answer.default ? `${name} (default)` : name, name));
  }
  select.value = answer.default;
  // an image-text model explains the prompts typed here; its layer is the image tower's, chosen by the server
  $("prompt-box").hidden = $("text-methods").hidden = !answer.prompts;
  // a detector explains each box it finds; its layer is the detector's (torchvision: every FPN level fused)
  $("box-options").hidden = !answer.detector;
  select.disabled = !answer.layers.length;
  if (!answer.layers.length) select.add(new Option(answer.detector ? "automatic (the detector's)" : "automatic (image tower)", ""));
}

function prompts() {
  if ($("prompt-box").hidden) return [];
  return $("prompts").value.split("\n").map((line) => line.trim()).filter((line) => line);
}

// ------------------------------------------------------------------ explaining
function upload(file) {
  const limit = state.options.max_upload_bytes;
  if (file.size > limit) {
    say(`${file.name} is too large (${(file.size / 1e6).toFixed(1)} MB; the limit is ${(limit / 1e6).toFixed(0)} MB)`, "error");
    return;
  }
  explain({ body: file, filename: file.name });
}

function reexplain() {
  if (state.run) return explain({ imageId: state.run.image_id, filename: state.run.image_name, keepClass: true });
}

async function explain({ body = null, example = null, imageId = null, filename = "the upload", keepClass = false }) {
  const started = performance.now();
  const methods = [...document.querySelectorAll("#methods input:checked, #text-methods input:checked")]
    .filter((box) => !box.closest("[hidden]"))
    .map((box) => box.value);
  const texts = prompts();
  if (!$("prompt-box").hidden && !texts.length) {
    say("Type at least one prompt.", "error");
    return;
  }
  if (!methods.length) {
    say("Pick at least one method.", "error");
    return;
  }
  const query = new URLSearchParams({
    network: $("network").value,
    layer: $("layer").value,
    methods: methods.join(","),
    counterfactual: $("counterfactual").checked,
    filename,
  });
  for (const text of texts) query.append("prompt", text);
  if (!$("box-options").hidden) query.set("score_threshold", $("score-threshold").value);
  if (example) query.set("example", example);
  if (imageId) query.set("image_id", imageId);
  state.busy = true;
  say(`Explaining ${filename} ...`, "busy");
  let run;
  try {
    run = await getJSON(`/api/explain?${query}`, {
      method: "POST",
      body,
      // always raw bytes: the server reads what the image is from its bytes, and refuses the types a form
      // on another site could send (text/plain, form encodings) with 415
      headers: { "Content-Type": "application/octet-stream" },
    });
  } catch (error) {
    state.busy = false;
    say(error.message, "error");
    return;
  }
  const previous = state.classId;
  state.run = run;
  state.decoded = {};
  state.base = await pixels(run.image);
  const classes = run.topk.map((entry) => entry.class_id);
  state.classId = keepClass && classes.includes(previous) ? previous : classes[0];
  if (!classes.length) {  // a detector that found no box at the threshold: the notes say so
    $("original").src = run.image;
    showChips();
    $("grid").innerHTML = "";
    state.cards = [];
    state.busy = false;
    say(`${filename}: no box to explain. ${run.notes.join(" ")}`, "error");
    return;
  }
  await ensureClass(state.classId);
  $("original").src = run.image;
  showChips();
  build();
  draw();
  const seconds = (performance.now() - started) / 1000;
  state.timing = { uploadToFirstOverlay: seconds, model: run.seconds.model };
  state.busy = false;
  const what = run.detector ? `${classes.length} boxes` : `top ${classes.length} classes`;
  const next = run.detector ? "Click a box (on a map or in the list) to see its maps." : "Click a class to see its maps.";
  say(`${filename}: ${what} explained in ${seconds.toFixed(2)} s (model ${run.seconds.model.toFixed(2)} s). ${next}`);
  $("save-png").disabled = $("save-html").disabled = false;
  prefetch(run);
}

async function ensureClass(classId) {
  if (state.decoded[classId]) return state.decoded[classId];
  const run = state.run;
  let maps = run.maps[String(classId)];
  if (!maps) {
    const answer = await getJSON(`/api/runs/${run.run_id}/classes/${classId}`);
    if (state.run !== run) return null;
    maps = answer.maps;
  }
  const decoded = {};
  for (const [method, entry] of Object.entries(maps)) {
    decoded[method] = { pictures: entry.pictures, data: await pixels(entry.png) };
  }
  if (state.run === run) state.decoded[classId] = decoded;
  return decoded;
}

async function prefetch(run) {
  for (const entry of run.topk) {
    if (state.run !== run) return;
    try { await ensureClass(entry.class_id); } catch (_) { return; }
  }
}

async function choose(classId) {
  try {
    await ensureClass(classId);
  } catch (error) {
    say(error.message, "error");
    return;
  }
  state.classId = classId;
  showChips();
  build();
  draw();
}

// ------------------------------------------------------------------ drawing
function showChips() {
  const run = state.run;
  const chips = $("chips");
  chips.innerHTML = "";
  for (const entry of run.topk) {
    const chip = document.createElement("button");
    chip.type = "button";
    chip.className = "chip" + (entry.class_id === state.classId ? " selected" : "");
    chip.dataset.class = entry.class_id;
    chip.setAttribute("role", "option");
    chip.setAttribute("aria-selected", entry.class_id === state.classId);
    chip.innerHTML = `<span></span><small></small><i class="bar"></i>`;
    chip.querySelector("span").textContent = entry.label;
    chip.querySelector("small").textContent = run.detector
      ? `${entry.score.toFixed(2)}  box ${entry.class_id}`
      : `${(100 * entry.probability).toFixed(1)}%  #${entry.class_id}`;
    if (run.detector) chip.dataset.box = entry.class_id;
    chip.querySelector(".bar").style.width = `${(100 * entry.probability).toFixed(1)}%`;
    chip.addEventListener("click", () => choose(entry.class_id));
    chips.append(chip);
  }
  $("summary").hidden = false;
  const mode = run.counterfactual ? ", counterfactual" : "";
  $("facts").textContent = `${run.network}, layer ${run.layer}${run.layer === run.default_layer ? " (default)" : ""}${mode}`;
  // what explain noted about this class's maps (e.g. a map that is zero everywhere): never silent
  const chosen = run.topk.find((entry) => entry.class_id === state.classId);
  const notes = $("notes");
  notes.innerHTML = "";
  for (const note of [...(run.notes || []), ...((chosen && chosen.notes) || [])]) {
    const item = document.createElement("li");
    item.textContent = note;
    notes.append(item);
  }
  notes.hidden = notes.children.length === 0;
}

function build() {
  $("faithfulness").hidden = !state.options.faithfulness || Boolean(state.run.prompts) || state.run.detector;
  $("faith-charts").innerHTML = "";
  const grid = $("grid");
  grid.innerHTML = "";
  state.cards = [];
  const decoded = state.decoded[state.classId];
  for (const method of state.run.methods) {
    const entry = decoded[method];
    for (const picture of entry.pictures) {
      const card = document.createElement("figure");
      card.className = "card";
      card.dataset.method = method;
      card.dataset.kind = picture.kind;
      const head = document.createElement("header");
      const title = document.createElement("h2");
      title.textContent = picture.title;
      const download = document.createElement("button");
      download.type = "button";
      download.textContent = "download";
      const canvas = document.createElement("canvas");
      canvas.width = entry.data.width;
      canvas.height = entry.data.height;
      canvas.setAttribute("aria-label", picture.title);
      download.addEventListener("click", () => downloadCanvas(canvas, picture.suffix));
      if (state.run.detector) canvas.addEventListener("click", (event) => clickBox(canvas, event));
      head.append(title, download);
      card.append(head, canvas);
      grid.append(card);
      card.dataset.suffix = picture.suffix;
      state.cards.push({ canvas, kind: picture.kind, method, title: picture.title, suffix: picture.suffix });
    }
  }
}

function draw() {
  if (!state.run || !state.cards.length) return;
  const decoded = state.decoded[state.classId];
  const alpha = Number($("opacity").value) / 100;
  const table = lut($("colormap").value);
  const base = state.base.data;
  for (const card of state.cards) {
    const source = decoded[card.method].data;
    const ctx = card.canvas.getContext("2d");
    if (card.kind === "picture") {
      ctx.putImageData(source, 0, 0);
      continue;
    }
    const out = ctx.createImageData(source.width, source.height);
    const src = source.data;
    const dst = out.data;
    const blend = card.kind === "overlay" && base.length === src.length;
    for (let p = 0; p < src.length; p += 4) {
      const v = src[p] * 3;
      if (blend) {
        dst[p] = (1 - alpha) * base[p] + alpha * table[v];
        dst[p + 1] = (1 - alpha) * base[p + 1] + alpha * table[v + 1];
        dst[p + 2] = (1 - alpha) * base[p + 2] + alpha * table[v + 2];
      } else {
        dst[p] = table[v];
        dst[p + 1] = table[v + 1];
        dst[p + 2] = table[v + 2];
      }
      dst[p + 3] = 255;
    }
    ctx.putImageData(out, 0, 0);
    if (state.run.detector) drawBoxes(ctx);
  }
  document.body.dataset.drawn = String(Number(document.body.dataset.drawn || 0) + 1);
}

// ------------------------------------------------------------------ a detector's boxes
// The boxes come at the view's size (view_box), the size of the maps and so of the canvases.
function drawBoxes(ctx) {
  const selected = state.run.topk.find((entry) => entry.class_id === state.classId);
  const others = state.run.topk.filter((entry) => entry !== selected);
  ctx.save();
  ctx.lineWidth = 1;
  ctx.strokeStyle = "rgba(255, 255, 255, 0.8)";
  for (const entry of others) outline(ctx, entry.view_box);
  if (selected) {
    ctx.lineWidth = 3;
    ctx.strokeStyle = "#ffd400";
    outline(ctx, selected.view_box);
  }
  ctx.restore();
}

function outline(ctx, [x1, y1, x2, y2]) {
  ctx.strokeRect(x1, y1, Math.max(1, x2 - x1), Math.max(1, y2 - y1));
}

// A click on a map picks the smallest box under it (boxes nest and overlap).
function boxAt(x, y) {
  let best = null;
  for (const entry of state.run.topk) {
    const [x1, y1, x2, y2] = entry.view_box;
    if (x < x1 || x > x2 || y < y1 || y > y2) continue;
    const area = (x2 - x1) * (y2 - y1);
    if (!best || area < best.area) best = { id: entry.class_id, area };
  }
  return best && best.id;
}

function clickBox(canvas, event) {
  const rect = canvas.getBoundingClientRect();
  const x = ((event.clientX - rect.left) * canvas.width) / rect.width;
  const y = ((event.clientY - rect.top) * canvas.height) / rect.height;
  const id = boxAt(x, y);
  if (id !== null && id !== state.classId) choose(id);
}

// ------------------------------------------------------------------ faithfulness
const PALETTE = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"];

async function faithfulness() {
  const run = state.run, classId = state.classId;
  $("faith-run").disabled = true;
  say("Computing deletion and insertion curves ...", "busy");
  try {
    const answer = await getJSON(`/api/runs/${run.run_id}/classes/${classId}/faithfulness`);
    if (state.run !== run || state.classId !== classId) return;
    const charts = $("faith-charts");
    charts.innerHTML = "";
    for (const name of ["deletion", "insertion"]) charts.append(chart(name, answer.fractions, answer[name]));
    say(`Deletion and insertion curves of class ${classId}.`);
  } catch (error) {
    say(error.message, "error");
  } finally {
    $("faith-run").disabled = false;
  }
}

function chart(name, fractions, metric) {
  const width = 360, height = 230, left = 40, right = 10, top = 24, bottom = 60;
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  canvas.dataset.metric = name;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, width, height);
  const methods = Object.keys(metric.curve);
  const high = Math.max(1e-6, ...methods.flatMap((m) => metric.curve[m]));
  const px = (f) => left + f * (width - left - right);
  const py = (v) => top + (1 - v / high) * (height - top - bottom);
  ctx.strokeStyle = "#888";
  ctx.beginPath();
  ctx.moveTo(left, top);
  ctx.lineTo(left, py(0));
  ctx.lineTo(width - right, py(0));
  ctx.stroke();
  ctx.fillStyle = "#1d2330";
  ctx.font = "13px sans-serif";
  ctx.fillText(`${name} (${metric.higher_is_better ? "higher" : "lower"} area is better)`, left, 16);
  ctx.font = "11px sans-serif";
  ctx.fillText(high.toFixed(2), 4, top + 4);
  ctx.fillText("0", 28, py(0) + 4);
  ctx.fillText(`fraction of pixels ${name === "deletion" ? "removed" : "restored"}`, left + 80, py(0) + 16);
  methods.forEach((method, k) => {
    ctx.strokeStyle = ctx.fillStyle = PALETTE[k % PALETTE.length];
    ctx.lineWidth = 2;
    ctx.beginPath();
    metric.curve[method].forEach((v, t) => (t ? ctx.lineTo(px(fractions[t]), py(v)) : ctx.moveTo(px(fractions[t]), py(v))));
    ctx.stroke();
    ctx.fillText(`${method}: area ${metric.auc[method].toFixed(3)}`, left + (k % 2) * 150, py(0) + 32 + Math.floor(k / 2) * 13);
  });
  return canvas;
}

// ------------------------------------------------------------------ saving
function stem() {
  const name = (state.run.image_name || "image").replace(/\.[^.]*$/, "").replace(/[^A-Za-z0-9_-]+/g, "_");
  return `${name}-class${state.classId}-${state.run.network}`;
}

function save(href, name) {
  const link = document.createElement("a");
  link.href = href;
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
}

function downloadCanvas(canvas, suffix) {
  canvas.toBlob((blob) => {
    const url = URL.createObjectURL(blob);
    save(url, `${stem()}-${suffix}.png`);
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }, "image/png");
}

// The row label of `camlens compare`: the network's prediction, the class explained, the layer.
function labels() {
  const top = state.run.topk[0];
  const chosen = state.run.topk.find((e) => e.class_id === state.classId);
  const lines = [
    `${top.label} (${top.probability.toFixed(2)})`,
    `explained: class ${chosen.class_id} (${chosen.label})`,
    `layer ${state.run.layer}`,
  ];
  if (state.run.counterfactual) lines.push("counterfactual");
  return lines;
}

function originalCanvas() {
  const canvas = document.createElement("canvas");
  canvas.width = state.base.width;
  canvas.height = state.base.height;
  canvas.getContext("2d").putImageData(state.base, 0, 0);
  return canvas;
}

// The same table as `camlens compare`: a label column, then the original and each picture.
function savePng() {
  const cell = 160, pad = 4, labelWidth = 220, headerHeight = 28;
  const pictures = [{ title: "original", canvas: originalCanvas() }, ...state.cards];
  const out = document.createElement("canvas");
  out.width = labelWidth + pictures.length * (cell + pad) + pad;
  out.height = headerHeight + cell + 2 * pad;
  const ctx = out.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, out.width, out.height);
  ctx.fillStyle = "#000";
  ctx.font = "15px sans-serif";
  pictures.forEach((p, c) => ctx.fillText(p.title, labelWidth + c * (cell + pad) + pad, 20));
  ctx.fillText(state.run.network, 6, headerHeight + 18, labelWidth - 10);
  ctx.font = "13px sans-serif";
  labels().forEach((line, i) => ctx.fillText(line, 6, headerHeight + 35 + i * 17, labelWidth - 10));
  pictures.forEach((p, c) => {
    const scale = Math.min(cell / p.canvas.width, cell / p.canvas.height);
    const w = p.canvas.width * scale, h = p.canvas.height * scale;
    const left = labelWidth + c * (cell + pad) + pad;
    ctx.drawImage(p.canvas, left + (cell - w) / 2, headerHeight + pad + (cell - h) / 2, w, h);
  });
  save(out.toDataURL("image/png"), `${stem()}-compare.png`);
}

function saveHtml() {
  const esc = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
  const pictures = [{ title: "original", canvas: originalCanvas() }, ...state.cards];
  const head = ["network", ...pictures.map((p) => p.title)].map((t) => `<th>${esc(t)}</th>`).join("");
  const cells = pictures.map((p) => `<td><img src="${p.canvas.toDataURL("image/jpeg", 0.9)}"></td>`).join("");
  const notes = labels().map((line) => `<br><small>${esc(line)}</small>`).join("");
  const html = "<!doctype html><html><head><meta charset='utf-8'><title>camlens: " + esc(state.run.image_name) + "</title>"
    + "<style>body{font-family:sans-serif}td img{width:160px}th{text-align:left;vertical-align:top}</style></head>"
    + `<body><h1>camlens comparison: ${esc(state.run.image_name)}</h1><table><tr>${head}</tr>`
    + `<tr><th>${esc(state.run.network)}${notes}</th>${cells}</tr>`
    + "</table></body></html>\n";
  const url = URL.createObjectURL(new Blob([html], { type: "text/html" }));
  save(url, `${stem()}-compare.html`);
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

document.addEventListener("DOMContentLoaded", init);
