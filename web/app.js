// memplan calculator page. Every number shown comes from the API (/v1/check: the estimate and its verdict,
// /v1/sweep, /v1/plan, /v1/models, /v1/gpus); this script only reads the controls, builds the job spec, draws the
// answers and keeps the URL.
// No build step, no dependencies.

const GIB = 2 ** 30;
const DEBOUNCE_MS = 150;

// Spec defaults; replaced at start-up by the defaults in the API's own schema (/openapi.json), so a field the
// user has not changed is never sent and the server's default applies.
const DEFAULTS = {
  task: "train", head: "auto", num_labels: 2, method: "lora", weight_dtype: "auto", mixed_precision: "bf16",
  double_quant: true, quant_storage: "auto", optimizer: "adamw", optimizer_impl: "auto", "lora.r": 16, "lora.alpha": 32,
  "lora.dropout": 0.05, "lora.target_modules": "all-linear", num_virtual_tokens: 20, adapter_size: 64,
  micro_batch_size: 1, seq_len: 2048, gradient_accumulation_steps: 1, gradient_checkpointing: false,
  attention: "sdpa", num_gpus: 1, zero_stage: 0, offload_optimizer: false, offload_params: false,
  "inference.batch_size": 1, "inference.prompt_len": 1024, "inference.max_new_tokens": 256,
  "inference.kv_cache_dtype": "bf16", gpu: "H100-SXM-80GB", allocator: "default",
  parallelism: "auto", fsdp_version: 2, fsdp_reduce_dtype: "auto", sequence_parallel_size: 1,
  "serving.engine": "vllm", "serving.tensor_parallel_size": 1, "serving.gpu_memory_utilization": null,
  "serving.max_model_len": null, "serving.kv_cache_dtype": "auto", "serving.max_loras": 0,
  "serving.max_lora_rank": 16, "serving.enforce_eager": false,
};
const FIRST_MODEL = "meta-llama/Llama-3.1-8B"; // shown on a first visit without a link

const isTrain = (v) => v.task === "train";
const isInference = (v) => v.task === "inference";
const isServe = (v) => v.task === "serve";
const notServe = (v) => !isServe(v);
const isLora = (v) => isTrain(v) && (v.method === "lora" || v.method === "qlora");
// the spec's default "auto" loads a catalog model (no quantization_config) in bf16
const effectiveWeightDtype = (v) =>
  v.weight_dtype || (isTrain(v) && v.method === "qlora" ? "nf4" : DEFAULTS.weight_dtype === "auto" ? "bf16" : DEFAULTS.weight_dtype);

// Job fields in the order the exports list them. kind: select | opt (select whose "" means "not set") | int |
// float | bool | targets. `when` says whether the field applies to the current job (else hidden, not sent).
const FIELDS = [
  { path: "task", kind: "select" },
  { path: "method", kind: "select", when: isTrain },
  { path: "lora.r", kind: "int", when: isLora },
  { path: "lora.alpha", kind: "float", when: isLora },
  { path: "lora.dropout", kind: "float", when: isLora },
  { path: "lora.target_modules", kind: "targets", when: isLora },
  { path: "num_virtual_tokens", kind: "int", when: (v) => isTrain(v) && ["prompt_tuning", "prefix_tuning"].includes(v.method) },
  { path: "adapter_size", kind: "int", when: (v) => isTrain(v) && v.method === "adapter" },
  { path: "weight_dtype", kind: "opt" },
  { path: "double_quant", kind: "bool", when: (v) => ["nf4", "fp4"].includes(effectiveWeightDtype(v)) },
  { path: "quant_storage", kind: "select", when: (v) => ["nf4", "fp4"].includes(effectiveWeightDtype(v)) },
  { path: "mixed_precision", kind: "select", when: notServe },
  { path: "optimizer", kind: "select", when: isTrain },
  { path: "optimizer_impl", kind: "select", when: isTrain },
  { path: "micro_batch_size", kind: "int", when: isTrain },
  { path: "seq_len", kind: "int", when: isTrain },
  { path: "gradient_accumulation_steps", kind: "int", when: isTrain },
  { path: "gradient_checkpointing", kind: "bool", when: isTrain },
  { path: "attention", kind: "opt", when: notServe },
  { path: "allocator", kind: "select", when: notServe },
  { path: "num_gpus", kind: "int", when: isTrain },
  { path: "parallelism", kind: "select", when: isTrain },
  { path: "fsdp_version", kind: "int-select", when: (v) => isTrain(v) && v.parallelism === "fsdp" },
  { path: "fsdp_reduce_dtype", kind: "select", when: (v) => isTrain(v) && v.parallelism === "fsdp" },
  // Ulysses under DeepSpeed, torch context parallelism under FSDP2
  { path: "sequence_parallel_size", kind: "int", when: (v) => isTrain(v) && ["deepspeed", "fsdp"].includes(v.parallelism) },
  { path: "zero_stage", kind: "int-select", when: isTrain },
  // FSDP offloads parameters, gradients and optimizer states together (offload_params, sharded stages only)
  { path: "offload_optimizer", kind: "bool", when: (v) => isTrain(v) && Number(v.zero_stage) >= 1 && v.parallelism !== "fsdp" },
  { path: "offload_params", kind: "bool",
    when: (v) => isTrain(v) && (Number(v.zero_stage) === 3 || (v.parallelism === "fsdp" && Number(v.zero_stage) === 2)) },
  { path: "inference.batch_size", kind: "int", when: isInference },
  { path: "inference.prompt_len", kind: "int", when: isInference },
  { path: "inference.max_new_tokens", kind: "int", when: isInference },
  { path: "inference.kv_cache_dtype", kind: "select", when: isInference },
  { path: "serving.engine", kind: "select", when: isServe },
  { path: "serving.tensor_parallel_size", kind: "int", when: isServe },
  { path: "serving.gpu_memory_utilization", kind: "float", when: isServe },
  { path: "serving.max_model_len", kind: "int", when: isServe },
  { path: "serving.kv_cache_dtype", kind: "select", when: isServe },
  { path: "serving.max_loras", kind: "int", when: isServe },
  { path: "serving.max_lora_rank", kind: "int", when: (v) => isServe(v) && Number(v["serving.max_loras"]) > 0 },
  { path: "serving.enforce_eager", kind: "bool", when: isServe },
  { path: "head", kind: "select", when: notServe },
  { path: "num_labels", kind: "int", when: (v) => ["sequence_classification", "token_classification"].includes(v.head) },
];
const controlId = (path) => path.replace(/[._]/g, "-");
const cliFlag = (path) => "--" + path.replace(/[._]/g, "-");

const SWEEPS = {
  train: [
    { field: "micro_batch_size", label: "micro-batch size", title: "Peak memory against micro-batch size" },
    { field: "seq_len", label: "sequence length (tokens)", title: "Peak memory against sequence length" },
  ],
  inference: [
    { field: "inference.batch_size", label: "batch size", title: "Peak memory against batch size" },
    { field: "inference.prompt_len", label: "prompt length (tokens)", title: "Peak memory against prompt length" },
  ],
  // serve jobs: /v1/serving-sweep, KV tokens and concurrency (renderServingChart)
  serve: [
    { field: "serving.max_model_len", label: "max_model_len (tokens)", metric: "max_concurrency", log: true,
      yLabel: "requests at once", title: "Concurrent requests against max_model_len" },
    { field: "serving.gpu_memory_utilization", label: "gpu_memory_utilization", metric: "kv_cache_tokens", log: false,
      yLabel: "KV cache tokens", title: "KV cache tokens against GPU memory utilization" },
  ],
};
const sweepKind = (task) => (task === "inference" || task === "serve" ? task : "train");

const TERM_COLORS = {
  weights: "#3b6ea8", optimizer_states: "#d08a2e", paged_optimizer_states: "#e3b060", gradients: "#b5534f",
  zero_buffers: "#8b6bb1", activations: "#4f9a76", logits: "#79b4a9", kv_cache: "#2d6f8f",
  temporaries: "#c97ba0", cublas_workspace: "#9aa3ad", allocator_fragmentation: "#b8bfc7", cuda_context: "#6b7580",
};
const EXTRA_COLORS = ["#a3844f", "#5d8fb8", "#8fa35a", "#b0708e", "#6f8b8b"];

const $ = (id) => document.getElementById(id);
const el = {
  form: $("job-form"), model: $("model"), modelList: $("model-list"), modelHint: $("model-hint"),
  config: $("model-config"), gpu: $("gpu"), gpuMem: $("gpu-memory-gib"), error: $("error"), result: $("result"),
  share: $("share-url"), yaml: $("copy-yaml-out"), json: $("copy-json-out"), cli: $("copy-cli-out"),
};

let models = []; // rows of /v1/models
const modelIndex = new Map(); // lower-cased id or alias -> row
let gpus = [];
let timer = 0;
let inflight = null; // AbortController of the requests in flight
let generation = 0;

// ------------------------------------------------------------------ formatting

/** bytes / 2^30 to `digits` decimals, rounded half-to-even on the exact value (as Python's f"{x:.2f}"). */
function gib(bytes, digits = 2) {
  let b = BigInt(bytes);
  const neg = b < 0n;
  if (neg) b = -b;
  const scale = 10n ** BigInt(digits);
  const d = 1n << 30n;
  let q = (b * scale) / d;
  const r = (b * scale) % d;
  if (2n * r > d || (2n * r === d && q % 2n === 1n)) q += 1n;
  let s = q.toString().padStart(digits + 1, "0");
  if (digits > 0) s = s.slice(0, -digits) + "." + s.slice(-digits);
  return (neg ? "-" : "") + s;
}

function fmtCount(n) {
  if (n == null) return "–";
  if (n >= 1e9) return (n / 1e9).toFixed(2) + " B";
  if (n >= 1e6) return (n / 1e6).toFixed(1) + " M";
  if (n >= 1e3) return (n / 1e3).toFixed(1) + " K";
  return String(n);
}

const humanTerm = (t) => t.replace(/_/g, " ").replace(/^kv /, "KV ").replace(/^cuda /, "CUDA ").replace(/^cublas /, "cuBLAS ");

function node(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) if (c != null) e.append(c);
  return e;
}

const SVG_NS = "http://www.w3.org/2000/svg";
function svg(tag, attrs = {}, text) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v != null) e.setAttribute(k, String(v));
  if (text != null) e.textContent = text;
  return e;
}

// ------------------------------------------------------------------ controls <-> raw state

function field(path) { return FIELDS.find((f) => f.path === path); }

function readControl(f) {
  const c = $(controlId(f.path));
  return f.kind === "bool" ? String(c.checked) : c.value.trim();
}

function writeControl(f, raw) {
  const c = $(controlId(f.path));
  if (f.kind === "bool") c.checked = raw === true || raw === "true";
  else c.value = raw == null ? "" : String(raw);
}

function defaultRaw(f) {
  if (f.kind === "opt") return "";
  const d = DEFAULTS[f.path];
  if (d == null) return ""; // null: the engine's own default (serving fields)
  if (f.kind === "targets") return Array.isArray(d) ? d.join(",") : String(d);
  return String(d);
}

function isDefault(f, raw) {
  const d = defaultRaw(f);
  if (raw === "" || raw === d) return true;
  if (["int", "float", "int-select"].includes(f.kind)) return Number(raw) === Number(d) && raw.trim() !== "";
  if (f.kind === "targets") return normTargets(raw) === normTargets(d);
  return false;
}

const normTargets = (raw) => raw.split(",").map((s) => s.trim()).filter(Boolean).join(",");

/** Values of every control (for the `when` rules), strings as in the controls. */
function controlValues() {
  const v = {};
  for (const f of FIELDS) v[f.path] = readControl(f);
  return v;
}

/** The page state: model source, model or pasted text, the applicable non-default fields, the GPU. */
function readState() {
  const values = controlValues();
  const state = { source: $("source-config").checked ? "config" : "catalog", fields: [] };
  state.model = el.model.value.trim();
  state.config = el.config.value;
  for (const f of FIELDS) {
    const applies = !f.when || f.when(values);
    if (applies && !isDefault(f, values[f.path])) state.fields.push([f.path, values[f.path]]);
  }
  state.gpu = el.gpu.value;
  state.gpuMem = el.gpuMem.value.trim();
  state.margin = $("margin-pct").value.trim();
  return state;
}

function updateVisibility() {
  const values = controlValues();
  for (const f of FIELDS) {
    const wrap = document.querySelector(`[data-field="${f.path}"]`);
    if (wrap) wrap.hidden = !!f.when && !f.when(values);
  }
  for (const fs of document.querySelectorAll(".controls fieldset.card")) {
    const wraps = fs.querySelectorAll("[data-field]");
    if (wraps.length) fs.hidden = [...wraps].every((w) => w.hidden);
  }
  const config = $("source-config").checked;
  $("catalog-field").hidden = config;
  $("config-field").hidden = !config;
  $("gpu-memory-field").hidden = el.gpu.value !== "custom";
  for (const [i, s] of SWEEPS[sweepKind(values.task)].entries()) {
    $(i === 0 ? "chart-mb-title" : "chart-seq-title").textContent = s.title;
  }
  // the weight dtype the server picks when none is sent: nf4 for QLoRA training, else the spec default
  document.querySelector("#weight-dtype option[data-default-label]").textContent =
    `Auto (${effectiveWeightDtype({ ...values, weight_dtype: "" })})`;
  $("largest-label").textContent = values.task === "inference" ? "Largest batch that fits"
    : values.task === "serve" ? "Longest max_model_len that fits" : "Largest micro-batch that fits";
}

// ------------------------------------------------------------------ URL (the share link)

function b64urlEncode(text) {
  const bytes = new TextEncoder().encode(text);
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function b64urlDecode(s) {
  const bin = atob(s.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((s.length + 3) % 4));
  return new TextDecoder().decode(Uint8Array.from(bin, (c) => c.charCodeAt(0)));
}

function stateToHash(state) {
  const p = new URLSearchParams();
  if (state.source === "config") p.set("model_config", b64urlEncode(state.config));
  else p.set("model", state.model);
  for (const [path, raw] of state.fields) p.set(path, raw);
  if (state.gpu === "custom") p.set("gpu_memory_gib", state.gpuMem);
  else if (state.gpu && state.gpu !== DEFAULTS.gpu) p.set("gpu", state.gpu);
  if (state.margin && Number(state.margin) > 0) p.set("margin", state.margin);
  // keep '/' and ',' readable in ids and module lists
  return "#" + p.toString().replace(/%2F/gi, "/").replace(/%2C/gi, ",");
}

/** Set every control from a hash (missing fields get their defaults). Returns a list of problems. */
function applyHash(hash) {
  const p = new URLSearchParams(hash.replace(/^#/, ""));
  const problems = [];
  if (p.has("model_config")) {
    $("source-config").checked = true;
    try {
      el.config.value = b64urlDecode(p.get("model_config"));
    } catch {
      el.config.value = "";
      problems.push("model_config: the link's pasted config.json could not be decoded");
    }
  } else {
    $("source-catalog").checked = true;
    el.model.value = p.get("model") ?? "";
  }
  for (const f of FIELDS) {
    const raw = p.has(f.path) ? p.get(f.path) : defaultRaw(f);
    writeControl(f, raw);
    const c = $(controlId(f.path));
    if (c.tagName === "SELECT" && c.value !== raw) {
      problems.push(`${f.path}: '${raw}' is not one of the choices; using the default`);
      writeControl(f, defaultRaw(f));
    }
  }
  if (p.has("gpu_memory_gib")) {
    el.gpu.value = "custom";
    el.gpuMem.value = p.get("gpu_memory_gib");
  } else {
    const want = p.get("gpu") || DEFAULTS.gpu;
    el.gpu.value = want;
    if (el.gpu.value !== want) { // not in the list: keep it as an option so the API names the problem
      el.gpu.append(node("option", { value: want, text: `${want} (not in the catalog)` }));
      el.gpu.value = want;
    }
  }
  $("margin-pct").value = p.get("margin") ?? "";
  const known = new Set(["model", "model_config", "gpu", "gpu_memory_gib", "margin", ...FIELDS.map((f) => f.path)]);
  for (const key of p.keys()) if (!known.has(key)) problems.push(`${key}: not a job field; ignored`);
  return problems;
}

// ------------------------------------------------------------------ the job spec

function setPath(obj, path, value) {
  const parts = path.split(".");
  let t = obj;
  for (const part of parts.slice(0, -1)) t = t[part] ??= {};
  t[parts.at(-1)] = value;
}

/** {job, errors}: the spec the API gets, or the problems that stop it being sent. */
function buildJob(state) {
  const job = {};
  const errors = [];
  if (state.source === "config") {
    const text = state.config.trim();
    if (!text) errors.push({ field: "model_config", message: "paste a config.json (a JSON object)" });
    else {
      try {
        const cfg = JSON.parse(text);
        if (cfg === null || typeof cfg !== "object" || Array.isArray(cfg)) {
          errors.push({ field: "model_config", message: "the config.json must be a JSON object ({...})" });
        } else job.model_config = cfg;
      } catch (e) {
        errors.push({ field: "model_config", message: `invalid JSON: ${e.message}` });
      }
    }
  } else if (!state.model) {
    errors.push({ field: "model", message: "pick a model from the catalog (type to search)" });
  } else job.model = state.model;

  for (const [path, raw] of state.fields) {
    const f = field(path);
    let value = raw;
    if (f.kind === "int" || f.kind === "float" || f.kind === "int-select") {
      value = Number(raw);
      if (!Number.isFinite(value)) {
        errors.push({ field: path, message: `enter a number, got '${raw}'` });
        continue;
      }
    } else if (f.kind === "bool") value = raw === "true";
    else if (f.kind === "targets") value = raw.trim() === "all-linear" ? "all-linear" : normTargets(raw).split(",");
    setPath(job, path, value);
  }
  if (state.gpu === "custom") {
    const mem = state.gpuMem === "" ? NaN : Number(state.gpuMem);
    if (!Number.isFinite(mem)) errors.push({ field: "gpu.memory_gib", message: "enter the GPU's memory in GiB" });
    else job.gpu = { memory_gib: mem };
  } else if (state.gpu && state.gpu !== DEFAULTS.gpu) job.gpu = state.gpu;
  return { job, errors };
}

// ------------------------------------------------------------------ exports: YAML, JSON, command line

const YAML_PLAIN = /^[A-Za-z_][A-Za-z0-9_.\/-]*$/;
const YAML_RESERVED = /^(true|false|yes|no|on|off|y|n|null|~)$/i;

function yamlScalar(v) {
  if (v === null || v === undefined) return "null";
  if (typeof v === "boolean") return v ? "true" : "false";
  if (typeof v === "number") {
    if (!Number.isFinite(v)) return JSON.stringify(String(v));
    let s = String(v);
    // YAML 1.1 (PyYAML) reads a float only with a dot and a signed exponent: 1e-05 -> 1.0e-05
    if (/e/.test(s)) {
      let [m, e] = s.split("e");
      if (!m.includes(".")) m += ".0";
      if (!/^[+-]/.test(e)) e = "+" + e;
      s = `${m}e${e}`;
    }
    return s;
  }
  const s = String(v);
  return YAML_PLAIN.test(s) && !YAML_RESERVED.test(s) ? s : JSON.stringify(s);
}

function toYaml(value, indent = "") {
  if (Array.isArray(value)) {
    if (!value.length) return " []";
    return value.map((item) => {
      if (item !== null && typeof item === "object") {
        const inner = toYaml(item, indent + "  ").replace(/^\n\s*/, "");
        return `\n${indent}- ${inner}`;
      }
      return `\n${indent}- ${yamlScalar(item)}`;
    }).join("");
  }
  if (value !== null && typeof value === "object") {
    const keys = Object.keys(value);
    if (!keys.length) return " {}";
    return keys.map((k) => {
      const v = value[k];
      const key = yamlScalar(k);
      if (v !== null && typeof v === "object") return `\n${indent}${key}:${toYaml(v, indent + "  ")}`;
      return `\n${indent}${key}: ${yamlScalar(v)}`;
    }).join("");
  }
  return " " + yamlScalar(value);
}

const shellQuote = (s) => (/^[A-Za-z0-9_@%+=:,.\/-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);

function flatten(obj, prefix = "") {
  const out = [];
  for (const [k, v] of Object.entries(obj)) {
    const path = prefix + k;
    if (v !== null && typeof v === "object" && !Array.isArray(v)) out.push(...flatten(v, path + "."));
    else out.push([path, v]);
  }
  return out;
}

function cliCommand(job) {
  if (job.model_config) return "memplan check job.yaml";
  const parts = ["memplan", "check", shellQuote(job.model)];
  for (const [path, value] of flatten(job)) {
    if (path === "model" || path.startsWith("gpu")) continue;
    const text = Array.isArray(value) ? value.join(",") : String(value);
    parts.push(cliFlag(path), shellQuote(text));
  }
  if (typeof job.gpu === "string") parts.push("--gpu", shellQuote(job.gpu));
  else if (job.gpu) parts.push("--gpu-memory-gib", shellQuote(String(job.gpu.memory_gib)));
  return parts.join(" ");
}

function renderExports(state, job, ok) {
  el.share.value = location.href;
  if (!ok) {
    const msg = "(fix the problem shown above first)";
    el.yaml.textContent = el.json.textContent = el.cli.textContent = msg;
    $("cli-note").hidden = true;
    return;
  }
  el.yaml.textContent = toYaml(job).replace(/^\n/, "") + "\n";
  el.json.textContent = JSON.stringify(job, null, 2);
  const margin = Number(state.margin);
  el.cli.textContent = cliCommand(job) + (margin > 0 ? ` --margin ${shellQuote(state.margin)}` : "");
  $("cli-note").hidden = !job.model_config;
}

async function copyFrom(id) {
  const target = $(id);
  const text = target.value ?? target.textContent;
  const status = $("copy-status");
  try {
    if (!navigator.clipboard || !window.isSecureContext) throw new Error("no clipboard");
    await navigator.clipboard.writeText(text);
    status.textContent = "Copied to the clipboard.";
  } catch {
    // fallback: select the visible text so Ctrl+C / Cmd+C copies it
    target.focus();
    if (target.select) target.select();
    else {
      const range = document.createRange();
      range.selectNodeContents(target);
      const sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
    }
    let copied = false;
    try { copied = document.execCommand("copy"); } catch { copied = false; }
    status.textContent = copied ? "Copied to the clipboard." : "Selected: press Ctrl+C (⌘C) to copy.";
  }
}

// ------------------------------------------------------------------ API

class ApiError extends Error {
  constructor(message, detail = [], status = 0) {
    super(message);
    this.detail = detail;
    this.status = status;
  }
}

async function api(path, body, signal) {
  let res;
  try {
    res = await fetch(path, {
      method: body === undefined ? "GET" : "POST", signal,
      headers: body === undefined ? {} : { "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(`Cannot reach the memplan API (${e.message}). Is the server running?`);
  }
  let data = null;
  try { data = await res.json(); } catch { data = null; }
  if (!res.ok) {
    const message = (data && data.error) || `The API answered HTTP ${res.status} ${res.statusText}`.trim();
    throw new ApiError(message, (data && Array.isArray(data.detail)) ? data.detail : [], res.status);
  }
  return data;
}

// ------------------------------------------------------------------ rendering

function showError(err) {
  const box = el.error;
  box.replaceChildren();
  const detail = err.detail || [];
  const status = err.status ? ` (HTTP ${err.status})` : "";
  box.append(node("p", { class: "alert-title", text: detail.length > 1 ? `The job has ${detail.length} problems${status}:` : `The job cannot be estimated${status}:` }));
  if (detail.length) {
    const ul = node("ul");
    for (const d of detail) {
      const li = node("li");
      if (d.field) li.append(node("code", { text: d.field }), ": ");
      li.append(d.message);
      if (d.suggestions && d.suggestions.length && !d.message.includes(d.suggestions[0])) li.append(node("span", { class: "suggest", text: ` Did you mean: ${d.suggestions.join(", ")}?` }));
      ul.append(li);
    }
    box.append(ul);
  } else box.append(node("p", { text: err.message }));
  if (err.status === 404 && detail.some((d) => d.field === "model")) {
    const paste = node("button", { type: "button", class: "link-button", id: "offer-paste", text: "Paste its config.json instead" });
    paste.addEventListener("click", () => {
      $("source-config").checked = true;
      updateVisibility();
      el.config.focus();
    });
    box.append(node("p", { class: "suggest" }, "Not in the bundled catalog? ", paste,
      " (memplan builds any config.json on the meta device; nothing is downloaded)"));
  }
  box.hidden = false;
  el.result.hidden = true;
  setMini("error", "Cannot estimate: see the message", "");
  el.result.dataset.state = "error";
  markInvalid(detail.map((d) => d.field));
}

const VERDICT_TEXT = { fits: "Fits", borderline: "Borderline", does_not_fit: "Does not fit" };
const VERDICT_MARK = { fits: "✓", borderline: "!", does_not_fit: "✕" };

function setMini(state, verdict, peak, verdictName = "") {
  const mini = $("mini-summary");
  mini.dataset.fits = state;
  mini.dataset.verdict = verdictName;
  mini.querySelector(".mini-verdict").textContent = verdict;
  mini.querySelector(".mini-peak").textContent = peak;
}

function clearError() {
  el.error.hidden = true;
  el.error.replaceChildren();
  el.result.hidden = false;
  markInvalid([]);
}

function markInvalid(fields) {
  for (const c of el.form.querySelectorAll("[aria-invalid]")) c.removeAttribute("aria-invalid");
  for (const name of fields) {
    if (!name) continue;
    let id = name === "model_config" ? "model-config" : name.startsWith("gpu") ? (el.gpu.value === "custom" ? "gpu-memory-gib" : "gpu") : controlId(name);
    const c = $(id);
    if (c) c.setAttribute("aria-invalid", "true");
  }
}

function setBusy(busy) {
  el.result.setAttribute("aria-busy", busy ? "true" : "false");
  $("status").textContent = busy ? "Updating…" : "";
}

function termColor(term, i) {
  return TERM_COLORS[term] || EXTRA_COLORS[i % EXTRA_COLORS.length];
}

function renderEstimate(e, verdict = e.verdict, marginPct = 0) {
  const usable = e.gpu.usable_bytes;
  const fits = $("fits");
  fits.textContent = VERDICT_TEXT[verdict] + (marginPct > 0 ? ` (${marginPct}% margin)` : "");
  fits.dataset.fits = String(e.fits);
  fits.dataset.verdict = verdict;
  fits.title = verdict === "borderline"
    ? `The usable memory${marginPct > 0 ? ` less the ${marginPct}% margin` : ""} lies inside the likely range ${gib(e.range.low_bytes)} – ${gib(e.range.high_bytes)} GiB: it may or may not fit`
    : "";
  const peak = $("peak-gib");
  peak.textContent = `${gib(e.peak_bytes)} GiB`;
  peak.dataset.bytes = e.peak_bytes;
  const head = $("headroom");
  head.dataset.bytes = e.headroom_bytes;
  const pct = ((100 * Math.abs(e.headroom_bytes)) / usable).toFixed(1);
  if (e.serving) {
    const len = e.serving.max_model_len.toLocaleString("en-US");
    head.textContent = e.headroom_bytes >= 0
      ? `${gib(e.headroom_bytes)} GiB of the engine's share beyond one ${len}-token request`
      : `short by ${gib(-e.headroom_bytes)} GiB for one ${len}-token request`;
  } else {
    head.textContent = e.headroom_bytes >= 0
      ? `${gib(e.headroom_bytes)} GiB headroom (${pct}% of usable)`
      : `short by ${gib(-e.headroom_bytes)} GiB (${pct}% over usable)`;
  }
  renderServing(e);
  $("peak-phase").textContent = e.peak_phase;
  setMini(String(e.fits), `${VERDICT_MARK[verdict]} ${VERDICT_TEXT[verdict]}`, `${gib(e.peak_bytes)} GiB peak`, verdict);
  $("gpu-summary").textContent = e.gpu.name ? `${e.gpu.name} (${e.gpu.id}), ${gib(e.gpu.memory_bytes)} GiB` : `${gib(e.gpu.memory_bytes)} GiB (custom)`;
  const usableEl = $("usable-gib");
  usableEl.textContent = `${gib(usable)} GiB`;
  usableEl.dataset.bytes = usable;
  $("range-gib").textContent = `${gib(e.range.low_bytes)} – ${gib(e.range.high_bytes)} GiB`;
  $("alloc-gib").textContent = `${gib(e.peak_allocated_bytes)} / ${gib(e.peak_reserved_bytes)} GiB`;
  $("params").textContent = `${fmtCount(e.params.total)} total, ${fmtCount(e.params.trainable)} trainable`;
  $("params").title = `${e.params.total.toLocaleString("en-US")} total, ${e.params.trainable.toLocaleString("en-US")} trainable`;

  // stacked bar: the terms at the peak, on a scale that also shows the usable capacity
  const bar = $("breakdown");
  bar.replaceChildren();
  const scale = Math.max(e.range.high_bytes, usable);
  const track = node("div", { class: "bar-track", role: "img", "aria-label": `Breakdown of ${gib(e.peak_bytes)} GiB: ` + Object.entries(e.components).filter(([, b]) => b > 0).map(([t, b]) => `${humanTerm(t)} ${gib(b)} GiB`).join(", ") });
  const tbody = $("breakdown-table").tBodies[0];
  tbody.replaceChildren();
  Object.entries(e.components).forEach(([term, bytes], i) => {
    if (bytes <= 0) return;
    const color = termColor(term, i);
    const seg = node("div", { class: "seg", "data-term": term, "data-bytes": bytes, title: `${humanTerm(term)}: ${gib(bytes)} GiB` });
    seg.style.width = `${(100 * bytes) / scale}%`;
    seg.style.background = color;
    track.append(seg);
    const sw = node("span", { class: "swatch", "aria-hidden": "true" });
    sw.style.background = color;
    tbody.append(node("tr", { "data-term": term },
      node("th", { scope: "row" }, sw, humanTerm(term)),
      node("td", { class: "num", text: gib(bytes) }),
      node("td", { class: "num", text: `${((100 * bytes) / e.peak_bytes).toFixed(1)}%` })));
  });
  // the calibrated range of the device peak, as a bracket over the bar, against the usable capacity
  const rangeMark = node("div", { class: "bar-range", "data-verdict": verdict, "data-low-bytes": e.range.low_bytes,
    "data-high-bytes": e.range.high_bytes, title: `likely range ${gib(e.range.low_bytes)} – ${gib(e.range.high_bytes)} GiB` });
  rangeMark.style.left = `${(100 * e.range.low_bytes) / scale}%`;
  rangeMark.style.width = `${(100 * (e.range.high_bytes - e.range.low_bytes)) / scale}%`;
  const cap = node("div", { class: "bar-capacity", "data-bytes": usable, title: `usable ${gib(usable)} GiB` });
  cap.style.left = `${(100 * usable) / scale}%`;
  track.append(rangeMark, cap);
  bar.append(track, node("div", { class: "bar-scale" },
    node("span", { text: "0" }),
    node("span", { class: "bar-cap-label", text: `usable ${gib(usable)} GiB` })));
  const capLabel = bar.querySelector(".bar-cap-label");
  capLabel.style.left = `${(100 * usable) / scale}%`;
  if (usable / scale < 0.4) { // a short capacity mark: label to its right, where there is room
    capLabel.classList.add("to-right");
    bar.querySelector(".bar-scale span").hidden = true;
  }
  tbody.append(node("tr", { class: "total" }, node("th", { scope: "row", text: "Peak on the GPU" }),
    node("td", { class: "num", text: gib(e.peak_bytes) }), node("td", { class: "num", text: "100%" })));

  const phases = $("phases");
  phases.replaceChildren();
  const maxPhase = Math.max(...Object.values(e.phases), 1);
  for (const [name, bytes] of Object.entries(e.phases)) {
    const fill = node("span", { class: "phase-fill" });
    fill.style.width = `${(100 * bytes) / maxPhase}%`;
    phases.append(node("li", { class: name === e.peak_phase ? "is-peak" : null, "data-phase": name, "data-bytes": bytes },
      node("span", { class: "phase-name", text: name.replace(/_/g, " ") }),
      node("span", { class: "phase-bar", "aria-hidden": "true" }, fill),
      node("span", { class: "phase-val", text: `${gib(bytes)} GiB` })));
  }

  // the estimate's warnings (assumptions that start with "warning: ") stay in view, not only in the list below
  const warnings = e.assumptions.filter((a) => a.startsWith("warning: ")).map((a) => a.slice("warning: ".length));
  $("warnings").replaceChildren(...warnings.map((w) => node("li", { text: w })));
  $("warnings").hidden = warnings.length === 0;
  const list = $("assumptions");
  list.replaceChildren(...e.assumptions.map((a) => node("li", { text: a })));
  $("assumptions-count").textContent = `(${e.assumptions.length})`;
}

/** The serving budget as the engine logs it (every number from the estimate's `serving` object). */
function renderServing(e) {
  const card = $("serving-card");
  card.hidden = !e.serving;
  if (!e.serving) return;
  const s = e.serving;
  $("serving-engine-label").textContent = `(${s.engine === "vllm" ? "vLLM" : "SGLang"} ${s.engine_version}, tensor parallel ${s.tensor_parallel_size})`;
  const rows = [
    ["requested", "Engine's share", `${gib(s.requested_bytes)} GiB (${s.gpu_memory_utilization})`],
    ["weights", "Model loading took", `${gib(s.weights_bytes)} GiB` + (s.lora_bytes ? ` (LoRA slots ${gib(s.lora_bytes)})` : "")],
    ["activations", "Profile run peak", `${gib(s.activation_bytes)} GiB`],
    ["non_torch", "Outside torch", `${gib(s.non_torch_bytes)} GiB`],
    ["graphs", "CUDA graphs", `${gib(s.cuda_graph_bytes)} GiB` + (s.cuda_graph_in_budget ? " (in the share)" : " (beside the share)")],
    ["kv", "Available KV cache", `${gib(s.kv_cache_bytes)} GiB`],
    ["tokens", "KV cache tokens", s.kv_cache_tokens.toLocaleString("en-US")],
    ["concurrency", `Requests of ${s.max_model_len.toLocaleString("en-US")} tokens at once`, s.max_concurrency.toFixed(2)],
    ["longest", "Longest max_model_len that fits", s.largest_max_model_len.toLocaleString("en-US")],
  ];
  if (s.lora_bytes) rows.push(["per-slot", "KV tokens per LoRA slot", s.kv_tokens_per_lora_slot.toLocaleString("en-US")]);
  $("serving-stats").replaceChildren(...rows.map(([key, label, value]) =>
    node("div", { "data-key": key }, node("dt", { text: label }), node("dd", { text: value }))));
}

function niceStep(range, target) {
  const raw = range / target;
  const p = 10 ** Math.floor(Math.log10(raw));
  const m = raw / p;
  return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 2.5 ? 2.5 : m <= 5 ? 5 : 10) * p;
}

/** An SVG line chart of peak GiB against the swept field, from the API's sweep points. */
function renderChart(container, sweep, spec, current) {
  container.replaceChildren();
  container.dataset.field = sweep.field;
  container.dataset.largestFitting = sweep.largest_fitting ?? "none";
  container.dataset.usableBytes = sweep.usable_bytes;
  const W = 440, H = 250, m = { l: 46, r: 14, t: 22, b: 42 };
  const iw = W - m.l - m.r, ih = H - m.t - m.b;
  const pts = sweep.points.map((p) => ({ ...p }));
  if (current && !pts.some((p) => p.value === current.value)) pts.push(current);
  pts.sort((a, b) => a.value - b.value);
  const usable = sweep.usable_bytes;
  const xs = pts.map((p) => Math.log2(p.value));
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
  const top = Math.max(...pts.map((p) => p.peak_bytes));
  // clip very tall curves at three times the capacity so the crossing stays readable
  let yMaxBytes = Math.max(Math.min(top, 3 * usable), 1.15 * usable);
  const yMaxGib = yMaxBytes / GIB;
  const step = niceStep(yMaxGib, 5);
  const yTop = Math.ceil((yMaxGib * 1.02) / step) * step;
  yMaxBytes = yTop * GIB;
  const X = (v) => m.l + ((Math.log2(v) - x0) / (x1 - x0)) * iw;
  const Y = (b) => m.t + ih - (Math.min(b, yMaxBytes) / yMaxBytes) * ih;

  const desc = `${spec.title}: ` + pts.map((p) => `${p.value}: ${gib(p.peak_bytes)} GiB${p.fits ? "" : " (does not fit)"}`).join("; ")
    + `. Usable capacity ${gib(usable)} GiB. Largest that fits: ${sweep.largest_fitting ?? "none"}.`;
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": desc, class: "chart-svg", preserveAspectRatio: "xMidYMid meet" });

  const grid = svg("g", { class: "grid" });
  for (let t = 0; t <= yTop + 1e-9; t += step) {
    const y = Y(t * GIB);
    grid.append(svg("line", { x1: m.l, x2: W - m.r, y1: y, y2: y }));
    grid.append(svg("text", { x: m.l - 8, y: y + 4, "text-anchor": "end", class: "tick" }, Number(t.toFixed(2)).toString()));
  }
  root.append(grid);
  const xt = svg("g", { class: "xticks" });
  const tickVals = pts.map((p) => p.value).filter((v, i, a) => a.indexOf(v) === i);
  let lastX = -Infinity;
  for (const v of tickVals) {
    const x = X(v);
    if (x - lastX < 26) continue;
    lastX = x;
    xt.append(svg("line", { x1: x, x2: x, y1: m.t + ih, y2: m.t + ih + 4 }));
    xt.append(svg("text", { x, y: m.t + ih + 17, "text-anchor": "middle", class: "tick" }, v >= 10000 ? `${v / 1024}K` : String(v)));
  }
  root.append(xt);
  root.append(svg("line", { class: "axis", x1: m.l, x2: W - m.r, y1: m.t + ih, y2: m.t + ih }));
  root.append(svg("text", { class: "axis-title x-title", x: m.l + iw / 2, y: H - 6, "text-anchor": "middle" }, spec.label));
  root.append(svg("text", { class: "axis-title y-title", x: 14, y: m.t + ih / 2, "text-anchor": "middle", transform: `rotate(-90 14 ${m.t + ih / 2})` }, "peak per GPU (GiB)"));

  const best = sweep.largest_fitting;
  if (best != null && Math.log2(best) >= x0 && Math.log2(best) <= x1) {
    const x = X(best);
    root.append(svg("line", { class: "largest", x1: x, x2: x, y1: m.t - 8, y2: m.t + ih, "data-value": best }));
    const right = x < W - m.r - 90;
    root.append(svg("text", { class: "largest-label", x: right ? x + 4 : x - 4, y: m.t - 10, "text-anchor": right ? "start" : "end" },
      `largest fit ${best.toLocaleString("en-US")}`));
  }
  const capY = Y(usable);
  root.append(svg("line", { class: "capacity", x1: m.l, x2: W - m.r, y1: capY, y2: capY, "data-bytes": usable, "data-gib": gib(usable) }));
  // the capacity label goes where the curve is farthest from it: left or right end, above or below the line
  const curveY = (x) => {
    const sx = pts.map((p) => X(p.value)), sy = pts.map((p) => Y(p.peak_bytes));
    if (x <= sx[0]) return sy[0];
    for (let i = 1; i < sx.length; i++) {
      if (x <= sx[i]) return sy[i - 1] + ((sy[i] - sy[i - 1]) * (x - sx[i - 1])) / (sx[i] - sx[i - 1] || 1);
    }
    return sy[sy.length - 1];
  };
  const labelW = 118;
  let capLabel = null;
  for (const [lx, ly] of [[m.l + 6, capY - 6], [W - m.r - 6 - labelW, capY - 6], [m.l + 6, capY + 15], [W - m.r - 6 - labelW, capY + 15]]) {
    if (ly < m.t + 8 || ly > m.t + ih - 4) continue;
    let clear = Infinity;
    for (let x = lx; x <= lx + labelW; x += 6) clear = Math.min(clear, Math.abs(curveY(x) - (ly - 4)));
    if (!capLabel || clear > capLabel.clear + 0.5) capLabel = { x: lx, y: ly, w: labelW, clear };
  }
  capLabel ??= { x: m.l + 6, y: capY - 6, w: labelW };
  root.append(svg("text", { class: "capacity-label", x: capLabel.x, y: capLabel.y, "text-anchor": "start" }, `usable ${gib(usable)} GiB`));

  const d = pts.map((p, i) => `${i ? "L" : "M"}${X(p.value).toFixed(1)},${Y(p.peak_bytes).toFixed(1)}`).join(" ");
  root.append(svg("path", { class: "curve", d }));
  const dots = svg("g", { class: "points" });
  for (const p of pts) {
    const isCur = current && p.value === current.value;
    const clipped = p.peak_bytes > yMaxBytes;
    const attrs = { class: `pt ${p.fits ? "fit" : "nofit"}${isCur ? " current" : ""}${clipped ? " clipped" : ""}`,
      "data-value": p.value, "data-peak-bytes": p.peak_bytes, "data-fits": p.fits, "data-current": isCur ? "true" : null };
    const x = X(p.value), y = Y(p.peak_bytes);
    const shape = clipped
      ? svg("path", { ...attrs, d: `M${x - 5},${y + 5} L${x},${y - 3} L${x + 5},${y + 5} Z` })
      : svg("circle", { ...attrs, cx: x, cy: y, r: isCur ? 6 : 4 });
    shape.append(svg("title", {}, `${spec.label} ${p.value}: ${gib(p.peak_bytes)} GiB, ${p.fits ? "fits" : "does not fit"} (peak in ${p.peak_phase})`));
    dots.append(shape);
    if (isCur) {
      const lx = Math.min(Math.max(x, m.l + 32), W - m.r - 32);
      let ly = Math.max(y - 12, m.t + 4);
      const nearCap = Math.abs(ly - capLabel.y) < 14 && lx - 32 < capLabel.x + capLabel.w && lx + 32 > capLabel.x;
      if (nearCap || Math.abs(ly - capY) < 6) ly = Math.min(y + 22, m.t + ih - 4);
      dots.append(svg("text", { class: "current-label", x: lx, y: ly, "text-anchor": "middle" }, `${gib(p.peak_bytes)} GiB`));
    }
  }
  root.append(dots);
  // points above the axis are drawn as triangles on its top edge: mark the cut on the axis and say so
  const cut = pts.filter((p) => p.peak_bytes > yMaxBytes);
  if (cut.length) {
    const x = m.l, y = m.t + 10;
    root.append(svg("path", { class: "axis-break", d: `M${x - 6},${y + 3} L${x + 6},${y - 3} M${x - 6},${y + 8} L${x + 6},${y + 2}` }));
  }
  const legend = node("p", { class: "chart-legend" },
    node("span", { class: "mark fit", "aria-hidden": "true", text: "●" }), " fits  ",
    node("span", { class: "mark nofit", "aria-hidden": "true", text: "○" }), " does not fit");
  if (cut.length) {
    legend.append("  ", node("span", { class: "mark", "aria-hidden": "true", text: "▲" }),
      ` above the axis, cut at ${gib(yMaxBytes)} GiB: ` + cut.map((p) => `${p.value.toLocaleString("en-US")} → ${gib(p.peak_bytes)} GiB`).join(", "));
    legend.dataset.clipped = String(cut.length);
  }
  container.append(root, legend);
}

/** An SVG line chart of one serving metric (concurrency, KV tokens) against a serving field, from the API's points. */
function renderServingChart(container, sweep, spec, currentValue) {
  container.replaceChildren();
  container.dataset.field = sweep.field;
  const W = 440, H = 250, m = { l: 58, r: 14, t: 22, b: 42 };
  const iw = W - m.l - m.r, ih = H - m.t - m.b;
  const pts = sweep.points;
  const xv = (v) => (spec.log ? Math.log2(v) : v);
  const x0 = Math.min(...pts.map((p) => xv(p.value))), x1 = Math.max(...pts.map((p) => xv(p.value)), x0 + 1e-9);
  const top = Math.max(...pts.map((p) => p[spec.metric]), 1);
  const step = niceStep(top, 5);
  const yTop = Math.ceil((top * 1.05) / step) * step;
  const X = (v) => m.l + ((xv(v) - x0) / (x1 - x0 || 1)) * iw;
  const Y = (y) => m.t + ih - (y / yTop) * ih;
  const fmt = (y) => (y >= 10000 ? `${Math.round(y / 1000)}k` : Number(y.toFixed(2)).toString());
  const desc = `${spec.title}: ` + pts.map((p) => `${p.value}: ${fmt(p[spec.metric])}${p.fits ? "" : " (does not fit)"}`).join("; ");
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": desc, class: "chart-svg", preserveAspectRatio: "xMidYMid meet" });
  const grid = svg("g", { class: "grid" });
  for (let t = 0; t <= yTop + 1e-9; t += step) {
    grid.append(svg("line", { x1: m.l, x2: W - m.r, y1: Y(t), y2: Y(t) }));
    grid.append(svg("text", { x: m.l - 8, y: Y(t) + 4, "text-anchor": "end", class: "tick" }, fmt(t)));
  }
  root.append(grid);
  const xt = svg("g", { class: "xticks" });
  let lastX = -Infinity;
  for (const p of pts) {
    const x = X(p.value);
    if (x - lastX < 30) continue;
    lastX = x;
    xt.append(svg("text", { x, y: m.t + ih + 17, "text-anchor": "middle", class: "tick" },
      p.value >= 10000 ? `${p.value / 1024}K` : String(p.value)));
  }
  root.append(xt);
  root.append(svg("line", { class: "axis", x1: m.l, x2: W - m.r, y1: m.t + ih, y2: m.t + ih }));
  root.append(svg("text", { class: "axis-title x-title", x: m.l + iw / 2, y: H - 6, "text-anchor": "middle" }, spec.label));
  root.append(svg("text", { class: "axis-title y-title", x: 14, y: m.t + ih / 2, "text-anchor": "middle", transform: `rotate(-90 14 ${m.t + ih / 2})` }, spec.yLabel));
  const d = pts.map((p, i) => `${i ? "L" : "M"}${X(p.value).toFixed(1)},${Y(p[spec.metric]).toFixed(1)}`).join(" ");
  root.append(svg("path", { class: "curve", d }));
  const dots = svg("g", { class: "points" });
  for (const p of pts) {
    const isCur = Math.abs(p.value - currentValue) < 1e-9;
    const dot = svg("circle", { class: `pt ${p.fits ? "fit" : "nofit"}${isCur ? " current" : ""}`, cx: X(p.value), cy: Y(p[spec.metric]),
      r: isCur ? 6 : 4, "data-value": p.value, "data-metric": p[spec.metric], "data-fits": p.fits });
    dot.append(svg("title", {}, `${spec.label} ${p.value}: ${fmt(p[spec.metric])} ${spec.yLabel}, ${p.fits ? "fits" : "does not fit"}`));
    dots.append(dot);
  }
  root.append(dots);
  const legend = node("p", { class: "chart-legend" },
    node("span", { class: "mark fit", "aria-hidden": "true", text: "●" }), " serves a request of max_model_len  ",
    node("span", { class: "mark nofit", "aria-hidden": "true", text: "○" }), " does not");
  container.append(root, legend);
}

/** A sweep the API refused: its message in the chart's place; true when so. */
function sweepFailed(r, container, note) {
  if (r.status !== "rejected") return false;
  container.replaceChildren(node("p", { class: "chart-error", text: `No sweep: ${r.reason.message}` }));
  note.textContent = "";
  return true;
}

function renderServingSweeps(results, est) {
  SWEEPS.serve.forEach((spec, i) => {
    const container = $(i === 0 ? "chart-mb" : "chart-seq");
    const note = $(i === 0 ? "chart-mb-note" : "chart-seq-note");
    const r = results[i];
    if (sweepFailed(r, container, note)) return;
    const s = est.serving;
    const current = spec.field === "serving.max_model_len" ? s.max_model_len : s.gpu_memory_utilization;
    renderServingChart(container, r.value, spec, current);
    note.textContent = spec.field === "serving.max_model_len"
      ? "KV cache tokens do not depend on max_model_len: the profile run is sized by max_num_batched_tokens."
      : `Concurrency counts requests of ${s.max_model_len.toLocaleString("en-US")} tokens.`;
  });
  const lm = $("largest-mb");
  lm.textContent = est.serving.largest_max_model_len.toLocaleString("en-US");
  lm.dataset.value = est.serving.largest_max_model_len;
}

function renderSweeps(results, job, est) {
  const kind = sweepKind(job.task);
  if (kind === "serve") return renderServingSweeps(results, est);
  SWEEPS[kind].forEach((spec, i) => {
    const container = $(i === 0 ? "chart-mb" : "chart-seq");
    const note = $(i === 0 ? "chart-mb-note" : "chart-seq-note");
    const r = results[i];
    if (sweepFailed(r, container, note)) {
      if (i === 0) $("largest-mb").textContent = "–";
      return;
    }
    const sweep = r.value;
    const currentValue = spec.field.startsWith("inference.") ? (job.inference?.[spec.field.split(".")[1]] ?? DEFAULTS[spec.field]) : (job[spec.field] ?? DEFAULTS[spec.field]);
    const current = { value: currentValue, peak_bytes: est.peak_bytes, peak_phase: est.peak_phase, fits: est.fits };
    renderChart(container, sweep, spec, current);
    const best = sweep.largest_fitting;
    note.textContent = best == null ? `Not even 1 fits on ${sweep.gpu_id}.` : `Largest that fits on ${sweep.gpu_id}: ${best.toLocaleString("en-US")}.`;
    if (i === 0) {
      const lm = $("largest-mb");
      lm.textContent = best == null ? "none (not even 1)" : String(best);
      lm.dataset.value = best ?? "";
    }
  });
}

// ------------------------------------------------------------------ the update cycle

function schedule() {
  clearTimeout(timer);
  timer = setTimeout(update, DEBOUNCE_MS);
}

async function update() {
  document.querySelector(".link-note")?.remove(); // a note about the opening link lasts until the first change
  updateVisibility();
  updatePlanPlaceholders();
  const state = readState();
  history.replaceState(null, "", stateToHash(state));
  const { job, errors } = buildJob(state);
  renderExports(state, job, errors.length === 0);
  if (inflight) inflight.abort();
  inflight = null;
  const mine = ++generation;
  if (errors.length) {
    setBusy(false);
    showError({ detail: errors });
    return;
  }
  const ctrl = new AbortController();
  inflight = ctrl;
  setBusy(true);
  el.result.dataset.state = "loading";
  const kind = sweepKind(job.task);
  // /v1/check gives the estimate and the verdict with the margin kept free (the same verdict at margin 0)
  const margin = Number(state.margin) > 0 ? Number(state.margin) : 0;
  const est = api(`/v1/check?margin_pct=${encodeURIComponent(margin)}`, job, ctrl.signal);
  const sweepPath = kind === "serve" ? "/v1/serving-sweep" : "/v1/sweep";
  const sweeps = Promise.allSettled(SWEEPS[kind].map((s) => api(sweepPath, { job, field: s.field }, ctrl.signal)));
  sweeps.catch(() => {});
  try {
    const checked = await est;
    const e = checked.estimate;
    if (mine !== generation) return;
    clearError();
    renderEstimate(e, checked.verdict, checked.margin_pct);
    const results = await sweeps;
    if (mine !== generation) return;
    renderSweeps(results, job, e);
    el.result.dataset.state = "ready";
    setBusy(false);
  } catch (err) {
    if (err.name === "AbortError" || mine !== generation) return;
    setBusy(false);
    showError(err);
  } finally {
    if (inflight === ctrl && mine === generation) inflight = null;
  }
}

// ------------------------------------------------------------------ the plan (POST /v1/plan)

// The plan's own inputs: the target fields they set, and the element each one's API error is shown in.
const PLAN_INPUTS = {
  "target.global_batch_size": { id: "plan-global-batch-size", key: "global_batch_size" },
  "target.num_gpus": { id: "plan-num-gpus", key: "num_gpus" },
};
const planEl = {
  form: $("plan-form"), run: $("plan-run"), status: $("plan-status"), error: $("plan-error"),
  result: $("plan-result"), stale: $("plan-stale"), baseline: $("plan-baseline"),
  configs: $("plan-configs"), configsEmpty: $("plan-configs-empty"), changes: $("plan-changes"),
  changesEmpty: $("plan-changes-empty"), solvers: $("plan-solvers"), assumptions: $("plan-assumptions"),
};
let planInflight = null;
let planGeneration = 0;

/** Seconds or tokens/s as the API gives them, to three significant digits (no unit, no arithmetic). */
function fmtRate(x) {
  if (x == null) return "–";
  return x >= 1000 ? Math.round(x).toLocaleString("en-US") : x.toPrecision(3);
}

/** {target, errors}: the target fields the plan inputs give; empty inputs are left out (the job's own apply). */
function readTarget() {
  const target = {};
  const errors = [];
  for (const [field, { id, key }] of Object.entries(PLAN_INPUTS)) {
    const c = $(id);
    const raw = c.value.trim();
    if (c.validity.badInput) errors.push({ field, message: "enter a whole number" });
    else if (raw !== "") {
      const value = Number(raw);
      if (Number.isFinite(value)) target[key] = value;
      else errors.push({ field, message: `enter a whole number, got '${raw}'` });
    }
  }
  return { target, errors };
}

function clearPlanErrors() {
  planEl.error.hidden = true;
  planEl.error.replaceChildren();
  for (const { id } of Object.values(PLAN_INPUTS)) {
    $(id).removeAttribute("aria-invalid");
    const msg = $(`${id}-error`);
    msg.hidden = true;
    msg.textContent = "";
  }
}

/** The API's (or the form's) problems: a target field's next to its input, the others in the plan's alert. */
function showPlanError(err) {
  clearPlanErrors();
  const detail = err.detail || [];
  const rest = [];
  for (const d of detail) {
    const input = PLAN_INPUTS[d.field];
    if (!input) {
      rest.push(d);
      continue;
    }
    $(input.id).setAttribute("aria-invalid", "true");
    const msg = $(`${input.id}-error`);
    msg.textContent = msg.textContent ? `${msg.textContent}; ${d.message}` : d.message;
    msg.hidden = false;
  }
  const status = err.status ? ` (HTTP ${err.status})` : "";
  if (rest.length || !detail.length) {
    const box = planEl.error;
    box.append(node("p", { class: "alert-title", text: `No plan${status}:` }));
    if (rest.length) {
      const ul = node("ul");
      for (const d of rest) {
        const li = node("li");
        if (d.field) li.append(node("code", { text: d.field }), ": ");
        li.append(d.message);
        if (d.suggestions && d.suggestions.length && !d.message.includes(d.suggestions[0])) li.append(node("span", { class: "suggest", text: ` Did you mean: ${d.suggestions.join(", ")}?` }));
        ul.append(li);
      }
      box.append(ul);
      if (rest.some((d) => d.field && d.field.startsWith("job"))) box.append(node("p", { class: "hint", text: "Fix the job above, then find configurations again." }));
    } else box.append(node("p", { text: err.message }));
    box.hidden = false;
  }
  planEl.status.textContent = `No plan${status}: see the ${rest.length || !detail.length ? "message below" : "marked field"}.`;
  planEl.result.hidden = true;
  planEl.result.dataset.state = "error";
}

function setPlanBusy(busy) {
  planEl.run.disabled = busy;
  planEl.result.setAttribute("aria-busy", busy ? "true" : "false");
  if (busy) planEl.status.textContent = "Planning…";
}

function headroomText(bytes) {
  return bytes >= 0 ? `${gib(bytes)} GiB headroom` : `short by ${gib(-bytes)} GiB`;
}

function renderPlanConfigs(options) {
  const tbody = planEl.configs.tBodies[0];
  tbody.replaceChildren(...options.map((o, i) => node("tr", {
    "data-peak-bytes": o.peak_bytes, "data-headroom-bytes": o.headroom_bytes, "data-recipe-changes": o.recipe_changes,
  },
  node("td", { class: "num", text: String(i + 1) }),
  node("th", { scope: "row", class: "plan-label", text: o.label }),
  node("td", { class: "num", text: gib(o.peak_bytes) }),
  node("td", { class: "num", text: gib(o.headroom_bytes) }),
  node("td", { class: "num", text: fmtRate(o.step_time_s) }),
  node("td", { class: "num", text: fmtRate(o.tokens_per_s) }))));
  planEl.configs.hidden = !options.length;
  planEl.configsEmpty.hidden = options.length > 0;
}

function renderPlanChanges(changes) {
  const tbody = planEl.changes.tBodies[0];
  tbody.replaceChildren(...changes.map((c) => node("tr", {
    "data-fits": String(c.fits), "data-saves-bytes": c.saves_bytes, "data-peak-bytes": c.peak_bytes,
  },
  node("th", { scope: "row", text: c.description, title: JSON.stringify(c.fields) }),
  node("td", { class: "num", text: gib(c.saves_bytes) }),
  node("td", { class: c.fits ? "plan-yes" : "plan-no", text: c.fits ? "yes" : "no" }),
  node("td", { class: "num", text: c.slowdown == null ? "–" : `${c.slowdown.toFixed(2)}×` }))));
  planEl.changes.hidden = !changes.length;
  planEl.changesEmpty.hidden = changes.length > 0;
}

function renderPlanSolvers(solvers) {
  const rows = [];
  const add = (key, title, value, note) => rows.push(node("div", { "data-solver": key },
    node("dt", { text: title }),
    node("dd", {}, value, note ? node("span", { class: "plan-note", text: note }) : null)));
  const gpuChoice = (g) => g == null ? "none fits"
    : `${g.gpu} × ${g.num_gpus}: peak ${gib(g.peak_bytes)} GiB, ${headroomText(g.headroom_bytes)}`
      + (g.step_time_s == null ? "" : `, ${fmtRate(g.step_time_s)} s/step, ${fmtRate(g.tokens_per_s)} tokens/s`);
  const sv = solvers.serving;
  if (sv) { // a serve job: the serving planner's solvers (memplan.plan.serving)
    const few = sv.fewest_gpus;
    add("fewest_gpus", "Fewest GPUs (tensor parallel)", few == null ? "none up to 8"
      : `${few.num_gpus}: ${few.kv_cache_tokens.toLocaleString("en-US")} KV tokens, ${few.max_concurrency.toFixed(2)} requests at once`);
    for (const [key, title] of [["smallest_memory_gpu", "Smallest total GPU memory"], ["most_kv_per_gpu", "Most KV tokens per GPU"]]) {
      const g = sv[key];
      add(key, title, g == null ? "none fits" : `${g.gpu} × ${g.num_gpus}: ${g.kv_cache_tokens.toLocaleString("en-US")} KV tokens, ${g.max_concurrency.toFixed(2)} requests at once`);
    }
    add("largest_max_model_len", "Longest max_model_len that fits", sv.largest_max_model_len.toLocaleString("en-US"));
    planEl.solvers.replaceChildren(...rows);
    return;
  }
  const inf = solvers.inference;
  if (inf) {
    add("largest_batch", "Largest batch that fits", inf.largest_batch == null ? "none (not even 1)" : String(inf.largest_batch));
    add("longest_prompt_len", "Longest prompt that fits", inf.longest_prompt_len == null ? "none" : `${inf.longest_prompt_len.toLocaleString("en-US")} tokens`);
    if (inf.longest_context != null) add("longest_context", "Longest context (prompt + new tokens)", `${inf.longest_context.toLocaleString("en-US")} tokens`);
    add("kv_cache_budget_bytes", "vLLM KV-cache budget", inf.kv_cache_budget_bytes == null ? "–" : `${gib(inf.kv_cache_budget_bytes)} GiB`,
      inf.vllm ? `gpu_memory_utilization ${inf.vllm.gpu_memory_utilization}` : null);
    add("concurrent_sequences", "Concurrent sequences (vLLM)", inf.concurrent_sequences == null ? "–" : inf.concurrent_sequences.toLocaleString("en-US"),
      inf.vllm ? `of ${inf.vllm.sequence_tokens.toLocaleString("en-US")} tokens each` : null);
  } else {
    add("largest_micro_batch", "Largest micro-batch that fits", solvers.largest_micro_batch == null ? "none (not even 1)" : String(solvers.largest_micro_batch));
    add("longest_seq_len", "Longest sequence that fits", solvers.longest_seq_len == null ? "none" : `${solvers.longest_seq_len.toLocaleString("en-US")} tokens`);
  }
  const few = solvers.fewest_gpus;
  add("fewest_gpus", "Fewest GPUs", few == null ? "none found"
    : `${few.num_gpus} GPU${few.num_gpus === 1 ? "" : "s"}${inf ? "" : `, ${shardingText(few)}`}: peak ${gib(few.peak_bytes)} GiB, ${headroomText(few.headroom_bytes)}`);
  add("smallest_memory_gpu", "Smallest total GPU memory", gpuChoice(solvers.smallest_memory_gpu), solvers.smallest_memory_gpu?.basis);
  add("fastest_gpu", "Fastest GPU", gpuChoice(solvers.fastest_gpu), solvers.fastest_gpu?.basis);
  planEl.solvers.replaceChildren(...rows);
  for (const [key, value] of [["largest_micro_batch", solvers.largest_micro_batch], ["largest_batch", inf?.largest_batch]]) {
    const row = planEl.solvers.querySelector(`[data-solver="${key}"]`);
    if (row) row.dataset.value = value ?? "";
  }
}

// how a fewest-GPUs answer shards: FSDP's strategy under fsdp (its zero_stage 3/2/0), else the ZeRO stage
function shardingText(few) {
  if (few.parallelism === "fsdp") {
    const strategy = { 3: "FULL_SHARD", 2: "SHARD_GRAD_OP", 0: "NO_SHARD" }[few.zero_stage];
    return `FSDP${few.job?.fsdp_version ?? ""} ${strategy}`;
  }
  return `ZeRO ${few.zero_stage}`;
}

function renderPlan(p) {
  const e = p.estimate;
  const where = e.gpu.name ? `${e.gpu.name} (${e.gpu.id})` : `${gib(e.gpu.memory_bytes)} GiB GPU`;
  planEl.baseline.replaceChildren(
    node("span", { class: "verdict", "data-fits": String(e.fits), "data-verdict": e.verdict, text: VERDICT_TEXT[e.verdict] }), " ",
    `The job as planned on ${where}: peak ${gib(e.peak_bytes)} GiB, ${headroomText(e.headroom_bytes)}.`);
  planEl.baseline.dataset.peakBytes = e.peak_bytes;
  renderPlanConfigs(p.configurations);
  renderPlanChanges(p.changes);
  renderPlanSolvers(p.solvers);
  planEl.assumptions.replaceChildren(...p.assumptions.map((a) => node("li", { text: a })));
  $("plan-assumptions-count").textContent = `(${p.assumptions.length})`;
  planEl.stale.hidden = true;
  planEl.result.hidden = false;
  planEl.result.dataset.state = "ready";
  const n = p.configurations.length;
  planEl.status.textContent = n ? `${n} configuration${n === 1 ? "" : "s"} fit.` : "No configuration fits this target.";
}

async function runPlan(ev) {
  ev.preventDefault();
  clearPlanErrors();
  const { job, errors } = buildJob(readState());
  const { target, errors: targetErrors } = readTarget();
  const problems = [...errors.map((d) => ({ ...d, field: `job.${d.field}` })), ...targetErrors];
  if (planInflight) planInflight.abort();
  planInflight = null;
  const mine = ++planGeneration;
  if (problems.length) {
    setPlanBusy(false);
    showPlanError({ detail: problems });
    return;
  }
  const ctrl = new AbortController();
  planInflight = ctrl;
  setPlanBusy(true);
  try {
    const body = Object.keys(target).length ? { job, target } : { job };
    const p = await api("/v1/plan", body, ctrl.signal);
    if (mine !== planGeneration) return;
    renderPlan(p);
  } catch (err) {
    if (err.name === "AbortError" || mine !== planGeneration) return;
    showPlanError(err);
  } finally {
    if (mine === planGeneration) {
      setPlanBusy(false);
      planInflight = null;
    }
  }
}

/** A change to the job after a plan: the plan shown is for the old job, and says so. */
function markPlanStale() {
  if (!planEl.result.hidden) {
    planEl.stale.hidden = false;
    planEl.result.dataset.state = "stale";
  }
}

function updatePlanPlaceholders() {
  const values = controlValues();
  $("plan-num-gpus").placeholder = isTrain(values) && values.num_gpus ? `the job's: ${values.num_gpus}` : "the job's";
}

// ------------------------------------------------------------------ start-up

async function loadDefaults() {
  try {
    const schema = await api("/openapi.json");
    const s = schema.components.schemas;
    const take = (name, prefix) => {
      for (const [key, prop] of Object.entries(s[name]?.properties ?? {})) {
        if ("default" in prop && (prefix + key) in DEFAULTS) DEFAULTS[prefix + key] = prop.default;
      }
    };
    take("JobSpec", "");
    take("LoraSpec", "lora.");
    take("InferenceSpec", "inference.");
    take("ServingSpec", "serving.");
  } catch {
    /* keep the built-in defaults */
  }
  document.querySelector("#attention option[data-default-label]").textContent = `Auto (${DEFAULTS.attention})`;
  for (const f of FIELDS) {
    const c = $(controlId(f.path));
    if ((c.type === "number" || c.tagName === "INPUT" && c.type === "text") && defaultRaw(f) !== "") c.placeholder = defaultRaw(f);
  }
  el.model.placeholder = "Search, e.g. llama-3.1 or qwen";
}

async function loadCatalogs() {
  const [m, g] = await Promise.all([api("/v1/models"), api("/v1/gpus")]);
  models = m;
  gpus = g;
  for (const row of models) {
    modelIndex.set(row.id.toLowerCase(), row);
    for (const a of row.aliases) modelIndex.set(a.toLowerCase(), row);
    const parts = [row.params ? `${fmtCount(row.params)} params` : null, row.model_type].filter(Boolean);
    el.modelList.append(node("option", { value: row.id, label: parts.join(" · ") }));
  }
  const byVendor = new Map();
  for (const row of gpus) {
    if (!byVendor.has(row.vendor)) byVendor.set(row.vendor, []);
    byVendor.get(row.vendor).push(row);
  }
  for (const [vendor, rows] of byVendor) {
    const group = node("optgroup", { label: vendor === "nvidia" ? "NVIDIA" : vendor === "amd" ? "AMD" : vendor });
    for (const row of rows) {
      group.append(node("option", { value: row.id, text: `${row.id} · ${row.name} · ${gib(row.memory_bytes)} GiB` }));
    }
    el.gpu.append(group);
  }
  el.gpu.append(node("option", { value: "custom", text: "Custom: enter the memory in GiB" }));
}

function updateModelHint() {
  const row = modelIndex.get(el.model.value.trim().toLowerCase());
  el.modelHint.textContent = row
    ? `${row.id}: ${row.params ? `${fmtCount(row.params)} parameters (${row.params.toLocaleString("en-US")})` : "parameter count unknown"} · ${row.model_type}`
    : "Type to search the catalog; the list shows parameter counts.";
}

function onInput(ev) {
  const t = ev.target;
  if (t === el.model) {
    updateModelHint();
    // while typing a search, recompute only once the text is a catalog id (a `change` commits anything else);
    // meanwhile the result on screen belongs to another model: say so at once
    if (ev.type === "input" && !modelIndex.has(t.value.trim().toLowerCase())) {
      el.result.dataset.state = "stale";
      $("status").textContent = "Not a catalog id: the result shown is for the previous model";
      return;
    }
  }
  if (t.name === "source" || t === el.gpu) updateVisibility();
  schedule();
}

async function start() {
  el.form.addEventListener("input", onInput);
  el.form.addEventListener("change", onInput);
  el.form.addEventListener("submit", (ev) => ev.preventDefault());
  planEl.form.addEventListener("submit", runPlan);
  for (const type of ["input", "change"]) {
    el.form.addEventListener(type, markPlanStale);
  }
  for (const { id } of Object.values(PLAN_INPUTS)) $(id).addEventListener("input", () => {
    $(id).removeAttribute("aria-invalid");
    $(`${id}-error`).hidden = true;
  });
  for (const b of document.querySelectorAll("[data-copy]")) b.addEventListener("click", () => copyFrom(b.dataset.copy));
  el.share.addEventListener("focus", () => el.share.select());
  window.addEventListener("hashchange", () => {
    const problems = applyHash(location.hash);
    updateModelHint();
    update();
    if (problems.length) console.warn(problems.join("; "));
  });
  await loadDefaults();
  try {
    await loadCatalogs();
  } catch (err) {
    showError(new ApiError(`Could not load the model and GPU catalogs: ${err.message}`));
    return;
  }
  const hash = location.hash.length > 1 ? location.hash : `#model=${encodeURIComponent(modelIndex.has(FIRST_MODEL.toLowerCase()) ? FIRST_MODEL : (models[0]?.id ?? ""))}`;
  const problems = applyHash(hash);
  updateModelHint();
  updateVisibility();
  $("form-body").disabled = false; // the controls open only now, so the link's state cannot overwrite an edit
  await update();
  if (problems.length) {
    const note = node("p", { class: "link-note", text: `Parts of the link were ignored: ${problems.join("; ")}` });
    el.error.hidden ? document.querySelector(".results").prepend(note) : el.error.append(note);
  }
}

start();
