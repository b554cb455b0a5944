// var-fast serve page: a client of the same JSON API that scripts use (/api/info, /api/generate, /api/edit).
"use strict";
const $ = (id) => document.getElementById(id);
let INFO = null;

function png(b64) { return "data:image/png;base64," + b64; }

function setStatus(id, text, isError) {
  const el = $(id);
  el.textContent = text;
  el.classList.toggle("error", !!isError);
}

// "3: triangle" (the list's form), a bare number, or a unique part of a name -> class id; "" -> null
function resolveClass(text) {
  const t = text.trim();
  if (t === "") return null;
  const m = /^(-?\d+)(:|$)/.exec(t);
  if (m) return parseInt(m[1], 10);
  const low = t.toLowerCase();
  const exact = INFO.class_names.findIndex((n) => n.toLowerCase() === low);
  if (exact >= 0) return exact;
  const hits = INFO.class_names.map((n, i) => [n, i]).filter(([n]) => n.toLowerCase().includes(low));
  if (hits.length === 1) return hits[0][1];
  throw new Error(hits.length ? `"${t}" matches ${hits.length} classes: pick one from the list`
                              : `no class named "${t}"`);
}

function numberOrDefault(id, fallback, integer) {
  const v = $(id).value.trim();
  if (v === "") return fallback;
  return integer ? parseInt(v, 10) : parseFloat(v);
}

function samplingFields(prefix) {
  const body = {
    cfg: numberOrDefault(prefix + "cfg", INFO.defaults.cfg, false),
    top_k: numberOrDefault(prefix + "top_k", INFO.defaults.top_k, true),
    top_p: numberOrDefault(prefix + "top_p", INFO.defaults.top_p, false),
  };
  const seed = $(prefix + "seed").value.trim();
  if (seed !== "") {
    if (!/^\d+$/.test(seed) || Number(seed) > Number.MAX_SAFE_INTEGER)
      throw new Error(`seed must be an integer in 0..${Number.MAX_SAFE_INTEGER} on this page (the API takes up to 2^63 - 1)`);
    body.seed = parseInt(seed, 10);
  }
  return body;
}

function figure(b64, name, withEdit) {
  const fig = document.createElement("figure");
  const img = document.createElement("img");
  img.src = png(b64);
  img.className = "result";
  fig.appendChild(img);
  const a = document.createElement("a");
  a.href = img.src;
  a.download = name;
  a.textContent = "download";
  a.className = "download";
  fig.appendChild(a);
  if (withEdit) {
    const b = document.createElement("button");
    b.textContent = "edit this";
    b.className = "edit-this";
    b.onclick = () => { loadEditImage(img.src); showTab("edit"); };
    fig.appendChild(document.createTextNode(" "));
    fig.appendChild(b);
  }
  return fig;
}

async function errorOf(resp) {
  try { return (await resp.json()).error || resp.statusText; } catch (e) { return resp.statusText; }
}

// ---- generation, streamed scale by scale (NDJSON) -------------------------------------------------------
async function generate(ev) {
  ev.preventDefault();
  let body;
  try {
    body = Object.assign({ class: resolveClass($("class").value), n: parseInt($("n").value, 10) || 1, preview: true },
                         samplingFields(""));
    if (body.class === null) throw new Error("pick a class");
  } catch (e) { setStatus("generate-status", e.message, true); return; }
  $("generate-run").disabled = true;
  $("scale-strip").innerHTML = "";
  $("results").innerHTML = "";
  $("generate-settings").textContent = "";
  setStatus("generate-status", "queued…");
  const t0 = performance.now();
  try {
    const resp = await fetch("/api/generate", { method: "POST", headers: { "Content-Type": "application/json" },
                                                body: JSON.stringify(body) });
    if (!resp.ok) throw new Error(await errorOf(resp));
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        if (line) handleEvent(JSON.parse(line), t0);
      }
    }
  } catch (e) {
    setStatus("generate-status", e.message, true);
  } finally {
    $("generate-run").disabled = false;
  }
}

function handleEvent(ev, t0) {
  if (ev.event === "scale") {
    const pn = INFO.patch_nums[ev.scale];
    const fig = document.createElement("figure");
    fig.className = "scale";
    fig.dataset.scale = ev.scale;
    const img = document.createElement("img");
    img.src = png(ev.images[0]);
    fig.appendChild(img);
    fig.appendChild(document.createElement("br"));
    fig.appendChild(document.createTextNode(`${pn}×${pn}`));
    $("scale-strip").appendChild(fig);
    setStatus("generate-status", `scale ${ev.scale + 1} of ${ev.of}`);
  } else if (ev.event === "done") {
    const s = ev.settings;
    const base = `${String(s.label).padStart(4, "0")}_${INFO.class_names[s.label].replace(/\W+/g, "_")}_seed${s.seed}`;
    ev.images.forEach((b64, i) => $("results").appendChild(figure(b64, `${base}_${i}.png`, true)));
    $("generate-settings").textContent = JSON.stringify(s, null, 2);
    setStatus("generate-status", `done in ${((performance.now() - t0) / 1000).toFixed(2)} s`);
  } else if (ev.event === "error") {
    throw new Error(ev.message);
  }
}

// ---- editing: an image, a painted mask (red on screen: regenerate; sent as black on white) ----------------
const mask = document.createElement("canvas");   // model resolution: white keeps, black is generated
const input = document.createElement("canvas");  // the input fitted to the model resolution
let painting = false;

function redraw() {
  const view = $("edit-canvas");
  const ctx = view.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.clearRect(0, 0, view.width, view.height);
  ctx.drawImage(input, 0, 0, view.width, view.height);
  const m = mask.getContext("2d", { willReadFrequently: true }).getImageData(0, 0, mask.width, mask.height);
  const overlay = new ImageData(mask.width, mask.height);
  for (let i = 0; i < m.data.length; i += 4) {
    if (m.data[i] < 128) { overlay.data[i] = 255; overlay.data[i + 3] = 140; }
  }
  const tmp = document.createElement("canvas");
  tmp.width = mask.width; tmp.height = mask.height;
  tmp.getContext("2d").putImageData(overlay, 0, 0);
  ctx.drawImage(tmp, 0, 0, view.width, view.height);
}

function clearMask() {
  const ctx = mask.getContext("2d", { willReadFrequently: true });
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, mask.width, mask.height);
  redraw();
}

function loadEditImage(src) {
  const img = new Image();
  img.onload = () => {
    const s = Math.min(img.width, img.height);  // center square, as the server fits images
    const ctx = input.getContext("2d");
    ctx.drawImage(img, (img.width - s) / 2, (img.height - s) / 2, s, s, 0, 0, input.width, input.height);
    clearMask();
    setStatus("edit-status", "paint the region to regenerate");
  };
  img.onerror = () => setStatus("edit-status", "this file could not be read as an image", true);
  img.src = src;
}

let last = null;  // the previous point of a stroke: strokes are lines, so fast moves leave no gaps

function paintAt(e) {
  const view = $("edit-canvas");
  const r = view.getBoundingClientRect();
  const x = (e.clientX - r.left) / r.width * mask.width, y = (e.clientY - r.top) / r.height * mask.height;
  const radius = Math.max(parseInt($("brush").value, 10) * mask.width / 256, 0.5);
  const ctx = mask.getContext("2d", { willReadFrequently: true });
  ctx.fillStyle = ctx.strokeStyle = "#000";
  ctx.lineWidth = 2 * radius;
  ctx.lineCap = "round";
  ctx.beginPath();
  if (last) { ctx.moveTo(last[0], last[1]); ctx.lineTo(x, y); ctx.stroke(); }
  ctx.beginPath();
  ctx.arc(x, y, radius, 0, 2 * Math.PI);
  ctx.fill();
  last = [x, y];
  redraw();
}

async function edit() {
  let body;
  try {
    body = Object.assign({ image: input.toDataURL("image/png"), mask: mask.toDataURL("image/png") },
                         samplingFields("edit-"));
    const label = resolveClass($("edit-class").value);
    if (label !== null) body.class = label;
  } catch (e) { setStatus("edit-status", e.message, true); return; }
  $("edit-run").disabled = true;
  setStatus("edit-status", "generating…");
  const t0 = performance.now();
  try {
    const resp = await fetch("/api/edit", { method: "POST", headers: { "Content-Type": "application/json" },
                                            body: JSON.stringify(body) });
    if (!resp.ok) throw new Error(await errorOf(resp));
    const out = await resp.json();
    const res = $("edit-results");
    res.innerHTML = "";
    res.appendChild(figure(out.images[0], `edited_seed${out.settings.seed}.png`, false));
    res.appendChild(figure(body.image.split(",")[1], "input.png", false));
    res.appendChild(figure(body.mask.split(",")[1], "mask.png", false));
    $("edit-settings").textContent = JSON.stringify(out.settings, null, 2);
    setStatus("edit-status", `done in ${((performance.now() - t0) / 1000).toFixed(2)} s`);
  } catch (e) {
    setStatus("edit-status", e.message, true);
  } finally {
    $("edit-run").disabled = false;
  }
}

function showTab(name) {
  for (const b of document.querySelectorAll(".tab")) b.classList.toggle("active", b.dataset.tab === name);
  $("generate").classList.toggle("hidden", name !== "generate");
  $("edit").classList.toggle("hidden", name !== "edit");
}

async function init() {
  INFO = await (await fetch("/api/info")).json();
  $("model").textContent = `${INFO.name} · ${INFO.image_size} px · ${INFO.num_classes} classes · ` +
                           `${INFO.backend} backend on ${INFO.device}`;
  const list = $("class-list");
  INFO.class_names.forEach((n, i) => { const o = document.createElement("option"); o.value = `${i}: ${n}`; list.appendChild(o); });
  $("n").max = INFO.limits.max_images;
  for (const p of ["", "edit-"]) {
    $(p + "cfg").placeholder = INFO.defaults.cfg;
    $(p + "top_k").placeholder = INFO.defaults.top_k;
    $(p + "top_p").placeholder = INFO.defaults.top_p;
  }
  mask.width = mask.height = input.width = input.height = INFO.image_size;
  const ctx = input.getContext("2d");
  ctx.fillStyle = "#888";
  ctx.fillRect(0, 0, input.width, input.height);
  clearMask();
  $("generate-form").addEventListener("submit", generate);
  for (const b of document.querySelectorAll(".tab")) b.onclick = () => showTab(b.dataset.tab);
  $("edit-file").addEventListener("change", (e) => {
    const f = e.target.files[0];
    if (f) { const r = new FileReader(); r.onload = () => loadEditImage(r.result); r.readAsDataURL(f); }
  });
  $("mask-clear").onclick = clearMask;
  $("edit-run").onclick = edit;
  const view = $("edit-canvas");
  view.addEventListener("pointerdown", (e) => { painting = true; last = null; paintAt(e); });
  view.addEventListener("pointermove", (e) => { if (painting) paintAt(e); });
  window.addEventListener("pointerup", () => { painting = false; });
  document.body.dataset.ready = "1";
}
init().catch((e) => setStatus("generate-status", "cannot reach the server: " + e.message, true));
