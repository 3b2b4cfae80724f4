// The page of the static site (`pokemon-classifier export --web`): decodes a picture or a camera frame,
// preprocesses it as predict does (preprocess.js), runs the ONNX model with ONNX Runtime Web (WebAssembly)
// and gives predict's verdict. Nothing leaves the browser. window.pokedex is the hook tests and
// benchmarks/web_budget.py drive.
import * as ort from "./ort/ort.wasm.bundle.min.mjs";
import { toInput } from "./preprocess.js";

const $ = (id) => document.getElementById(id);
const MAX_PIXELS = 64_000_000;  // images.MAX_PIXELS: what predict refuses, the page refuses too
const TOPK = 5;
let config, dex, session, lang, stream = null, strings = {}, statusKey = "webLoading", offline = false;
const live = { frames: 0, started: 0, last: null };
// The page's own strings in English: the source and the fallback. Every other language comes from
// i18n.json (beside the page; the server page's strings share that file); tests/test_i18n.py checks each
// key here has a translation in every language, so add new keys here and to i18n.json together.
const EN = {
  webTitle: "Pokédex — on this device",
  webTagline: "Runs on this device: no picture leaves it.",
  webLanguage: "Language",
  webPick: "Show me a Pokémon",
  webDrop: "Drop a picture here, or choose one",
  webCamera: "Start camera",
  webCameraStop: "Stop camera",
  webLoading: "Loading the model…",
  webReady: "Ready: pictures are classified on this device.",
  webUnknown: "Not sure this is a first-generation Pokémon",
  webTop: "Top guesses",
  webTiming: "classified on this device in {ms} ms",
  webFooter: "Model and ONNX Runtime Web run in this page (WebAssembly); after the first visit it works offline and can be installed. Pokémon names © Nintendo/Game Freak; facts from PokéAPI.",
  webOffline: "Ready for offline use.",
  webThePicture: "the picture",
  webUnreadable: "{what}: not a picture this browser can read (try a JPEG or PNG)",
  webTooBig: "{what}: {size} is over {mp} megapixels; send a smaller picture",
  webCameraOff: "Camera not available ({x}): allow it in the browser, or choose a picture",
  webNoModel: "The model could not start in this browser: {x}",
  webMaybe: "Not sure (maybe {name}, {p})",
  webFps: "{x} frames/s, on this device",
  webServerMode: "Use the server",
};

function t(key, vars) {
  let s = strings[lang]?.[key] ?? EN[key] ?? key;
  for (const [k, v] of Object.entries(vars || {})) s = s.replace("{" + k + "}", v);
  return s;
}

// stored gzip-compressed by `export --web` (web.WASM_GZ): a quarter of the size, the site's budget
const WASM = "ort/ort-wasm-simd-threaded.wasm.gz";

async function unpacked(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: ${r.status} ${r.statusText}`);
  const bytes = new Uint8Array(await r.arrayBuffer());
  // a server that labels .gz files Content-Encoding: gzip has had the browser unpack it already
  if (bytes[0] !== 0x1f || bytes[1] !== 0x8b) return bytes;
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

async function loadJSON(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: ${r.status} ${r.statusText}`);
  return r.json();
}

// ------------------------------------------------------------------ language (the Pokédex facts)
function pickLanguage() {
  // ?lang= first: serve's page links here with its language
  const saved = new URLSearchParams(location.search).get("lang") || localStorage.getItem("pokedex-lang");
  if (saved && dex.languages[saved]) return saved;
  const tags = Object.keys(dex.languages);
  for (const want of navigator.languages || [navigator.language]) {
    const t = String(want).toLowerCase(), [base, ...rest] = t.split("-");
    const exact = tags.find((x) => x.toLowerCase() === t);
    if (exact) return exact;
    if (base === "zh") return rest.some((p) => ["hant", "tw", "hk", "mo"].includes(p)) ? "zh-Hant" : "zh-Hans";
    const primary = tags.find((x) => x.toLowerCase() === base);
    if (primary) return primary;
  }
  return dex.default;
}

function translatePage() {
  // the lang attribute lets the browser pick the right CJK font (Japanese and Chinese share code points)
  document.documentElement.lang = lang;
  document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
  document.title = t("webTitle");
  $("camera").textContent = t(stream ? "webCameraStop" : "webCamera");
  $("status").textContent = statusKey ? t(statusKey) : "";
  $("offline").textContent = offline ? t("webOffline") : "";
}

function setupLanguage() {
  const sel = $("lang");
  for (const [tag, own] of Object.entries(dex.languages)) sel.add(new Option(own, tag));
  lang = pickLanguage();
  sel.value = lang;
  translatePage();
  sel.addEventListener("change", () => {
    lang = sel.value;
    localStorage.setItem("pokedex-lang", lang);
    if (config.server) localStorage.setItem("lang", lang);  // serve's page (same origin) keeps the choice too
    translatePage();
    if (window.pokedex.last) render(window.pokedex.last);
  });
}

const nameOf = (id) => dex.pokemon[id].names[lang] || dex.pokemon[id].name;

// ------------------------------------------------------------------ the model
function verdict(logits, score) {
  // Classifier.forward + result: softmax(logits / temperature), top-k, is_unknown
  const n = logits.length, t = config.temperature, probs = new Float64Array(n);
  let max = -Infinity, sum = 0;
  for (let i = 0; i < n; i++) max = Math.max(max, logits[i] / t);
  for (let i = 0; i < n; i++) sum += (probs[i] = Math.exp(logits[i] / t - max));
  for (let i = 0; i < n; i++) probs[i] /= sum;
  const order = [...probs.keys()].sort((a, b) => probs[b] - probs[a]).slice(0, TOPK);
  const top = order.map((i) => ({ dex_id: config.class_ids[i], name: dex.pokemon[config.class_ids[i]].name,
    probability: probs[i] }));
  const low = top[0].probability < config.threshold;
  const unknown = low || (score !== null && config.open_set_threshold !== null && score < config.open_set_threshold);
  const out = { dex_id: unknown ? null : top[0].dex_id, name: unknown ? "unknown" : top[0].name,
    probability: top[0].probability, unknown, topk: top, probs: Array.from(probs) };
  if (score !== null) out.open_set_score = score;
  return out;
}

async function runModel(input) {
  const s = config.preprocessing.size;
  const out = await session.run({ image: new ort.Tensor("float32", input, [1, 3, s, s]) });
  const score = out.open_set_score ? Number(out.open_set_score.data[0]) : null;
  return verdict(out.logits.data, score);
}

function pixels(source, w, h) {
  // transparency on white, as images.load_image does
  const canvas = new OffscreenCanvas(w, h), ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, w, h);
  ctx.drawImage(source, 0, 0, w, h);
  return ctx.getImageData(0, 0, w, h).data;
}

async function decode(blob) {
  const what = blob.name || t("webThePicture");
  let bmp;
  try {
    // EXIF orientation applied and no colour management, as Pillow decodes
    bmp = await createImageBitmap(blob, { imageOrientation: "from-image", colorSpaceConversion: "none",
      premultiplyAlpha: "none" });
  } catch {
    throw new Error(t("webUnreadable", { what }));
  }
  if (bmp.width * bmp.height > MAX_PIXELS) {
    throw new Error(t("webTooBig", { what, size: `${bmp.width}×${bmp.height}`, mp: MAX_PIXELS / 1e6 }));
  }
  return bmp;
}

async function classifyBlob(blob) {
  const t0 = performance.now();
  const bmp = await decode(blob);
  const input = toInput(pixels(bmp, bmp.width, bmp.height), bmp.width, bmp.height, config.preprocessing);
  const t1 = performance.now();
  const r = await runModel(input);
  r.ms = { total: performance.now() - t0, preprocess: t1 - t0, model: performance.now() - t1 };
  r.bitmap = bmp;
  return r;
}

// ------------------------------------------------------------------ the card
function thumb(bmp) {
  const c = $("thumb"), ctx = c.getContext("2d"), side = Math.min(bmp.width, bmp.height);
  ctx.clearRect(0, 0, c.width, c.height);
  ctx.drawImage(bmp, (bmp.width - side) / 2, (bmp.height - side) / 2, side, side, 0, 0, c.width, c.height);
}

const pct = (p) => `${(100 * p).toFixed(1)}%`;

function render(r) {
  $("result").hidden = false;
  if (r.bitmap) thumb(r.bitmap);
  const v = $("verdict");
  v.textContent = r.unknown ? t("webUnknown") : nameOf(r.dex_id);
  if (!r.unknown) {
    const conf = document.createElement("span");
    conf.className = "conf";
    conf.textContent = pct(r.probability);
    v.append(conf);
  }
  $("dexno").textContent = r.unknown ? "" : `#${String(r.dex_id).padStart(3, "0")}`;
  $("genus").textContent = r.unknown ? "" : (dex.pokemon[r.dex_id].genus[lang] || "");
  const types = $("types");
  types.replaceChildren(...(r.unknown ? [] : dex.pokemon[r.dex_id].types.map((t) => {
    const li = document.createElement("li");
    li.textContent = dex.types[t][lang] || t;
    return li;
  })));
  $("bars").replaceChildren(...r.topk.map((t) => {
    const li = document.createElement("li");
    li.className = "bar";
    li.innerHTML = '<span class="name"></span><span class="track"><span class="fill"></span></span><span class="pct"></span>';
    li.querySelector(".name").textContent = nameOf(t.dex_id);
    li.querySelector(".fill").style.width = pct(t.probability);
    li.querySelector(".pct").textContent = pct(t.probability);
    return li;
  }));
  $("timing").textContent = r.ms ? t("webTiming", { ms: Math.round(r.ms.total) }) : "";
}

async function onFile(file) {
  if (!file) return;
  $("error").textContent = "";
  try {
    const r = await classifyBlob(file);
    window.pokedex.last = r;
    render(r);
  } catch (e) {
    $("error").textContent = e.message;
  }
}

// ------------------------------------------------------------------ the camera
async function startCamera() {
  $("error").textContent = "";
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" }, audio: false });
  } catch (e) {
    $("error").textContent = t("webCameraOff", { x: e.name });
    return;
  }
  const video = $("video");
  video.srcObject = stream;
  await video.play();
  $("live").hidden = false;
  $("camera").textContent = t("webCameraStop");
  Object.assign(live, { frames: 0, started: performance.now(), last: null });
  liveLoop(video);
}

function stopCamera() {
  for (const track of stream?.getTracks() || []) track.stop();
  stream = null;
  $("live").hidden = true;
  $("camera").textContent = t("webCamera");
}

async function liveLoop(video) {
  while (stream) {
    if (video.readyState >= 2 && video.videoWidth) {
      const w = video.videoWidth, h = video.videoHeight;
      const r = await runModel(toInput(pixels(video, w, h), w, h, config.preprocessing));
      live.frames++;
      live.last = r;
      const secs = (performance.now() - live.started) / 1000;
      const guess = r.topk[0];
      $("overlay").textContent = r.unknown ? t("webMaybe", { name: nameOf(guess.dex_id), p: pct(guess.probability) })
        : `${nameOf(r.dex_id)} ${pct(r.probability)}`;
      $("fps").textContent = t("webFps", { x: (live.frames / secs).toFixed(1) });
    }
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
}

// ------------------------------------------------------------------ start
function registerServiceWorker() {
  if (!("serviceWorker" in navigator)) return Promise.resolve(false);
  return navigator.serviceWorker.register("sw.js")
    .then(() => navigator.serviceWorker.ready)
    .then(() => { offline = true; $("offline").textContent = t("webOffline"); return true; })
    .catch(() => false);
}

async function start() {
  const t0 = performance.now();
  const wasm = unpacked(WASM);  // the largest file first: it downloads while the rest loads
  [config, dex, strings] = await Promise.all([loadJSON("pokedex-site.json"), loadJSON("pokedex.json"),
    loadJSON("i18n.json")]);
  setupLanguage();
  if (config.server) Object.assign($("server-mode"), { href: config.server, hidden: false });  // serve's /device/
  // threads need a cross-origin isolated page, which a plain static server does not give: one thread then
  ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
  ort.env.wasm.wasmBinary = await wasm;
  // one picture at a time: a fixed batch lets ORT plan the graph's shapes once
  session = await ort.InferenceSession.create(config.model, { executionProviders: ["wasm"],
    graphOptimizationLevel: "all", freeDimensionOverrides: { batch: 1 } });
  window.pokedex.loadMs = performance.now() - t0;
  statusKey = "webReady";
  $("status").textContent = t(statusKey);
  $("camera").disabled = !navigator.mediaDevices?.getUserMedia;
}

window.pokedex = { classifyBlob, live, last: null };
window.pokedex.offlineReady = registerServiceWorker();
window.pokedex.ready = start().then(() => true, (e) => {
  statusKey = null;
  $("status").textContent = "";
  $("error").textContent = t("webNoModel", { x: e.message });
  throw e;
});
// for tests and benchmarks: classify pictures by URL in one go (per-picture results, probabilities included)
window.pokedex.classifyUrls = async (urls) => {
  await window.pokedex.ready;
  const out = [];
  for (const url of urls) {
    const blob = await (await fetch(url)).blob();
    const r = await classifyBlob(blob);
    delete r.bitmap;
    out.push(r);
  }
  return out;
};

$("file").addEventListener("change", (e) => onFile(e.target.files[0]));
$("camera").addEventListener("click", () => (stream ? stopCamera() : startCamera()));
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  onFile(e.dataTransfer.files[0]);
});
