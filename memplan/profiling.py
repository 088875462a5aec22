"""The CUDA profiling harness: run a job's real training step (or `generate()`) on a GPU and record the memory it
took, one run per fresh process, one JSON file per run (raw measurements only; `profiles/schema.json`).

    memplan profile JOB --out profiles/NAME.json          one run
    memplan profile --batch profiles/plan.yaml            every run of a plan not yet recorded

The model is built from its config with random weights (memory does not depend on the values, nothing is
downloaded) through the code paths users run: transformers' `from_config`, PEFT's own LoRA / prompt tuning /
prefix tuning / (IA)3 and `prepare_model_for_kbit_training`, bitsandbytes 4/8-bit through `from_pretrained` with a
quantization config (the random checkpoint is written to local disk first, by a separate process, so its
memory does not count), torch and bitsandbytes optimizers, a step with labels and the model's own loss, gradient
clipping and `zero_grad(set_to_none=True)` as the HF Trainer does, at least 3 optimizer steps. Inference runs
`generate()` with the KV cache; the prefill is split from decoding at the first generated token.

Recorded per phase and step: torch.cuda max_memory_allocated / max_memory_reserved (peaks reset at each phase
start) and memory_allocated at its end; overall: the same maxima, the device memory the process used at its peak
(NVML, sampled every millisecond, less what the GPU used before this process initialised CUDA), and the CUDA
context (NVML used memory right after CUDA init, less that baseline and less PyTorch's reserved bytes).
An out-of-memory error is recorded as such, with the phase it struck in.

`--device cpu` runs the same code on the CPU with no memory counters: it exists to test the harness where no GPU
is (tests/test_profiling.py); such records never go in profiles/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from memplan.spec import JobSpec, SpecError, parse_spec

SCHEMA_VERSION = 1
MIN_STEPS = 3
CHECKPOINT_CACHE = Path(os.environ.get("MEMPLAN_CHECKPOINT_CACHE", Path(tempfile.gettempdir()) / "memplan-ckpt"))


class ProfileError(Exception):
    """A job the harness cannot run (a multi-GPU job, an unsupported method), or a run that failed."""


# ---------------------------------------------------------------- the parent side


def profile(job: dict[str, Any], out: Path, steps: int = MIN_STEPS, device: str = "cuda",
            timeout_s: float = 3600) -> dict[str, Any]:
    """Run the job in a fresh process and write its record to `out`; return the record."""
    spec = parse_spec(job)
    check_supported(spec)
    if steps < MIN_STEPS and device == "cuda":
        raise SpecError([("steps", f"at least {MIN_STEPS} optimizer steps, got {steps}")])
    if spec.weight_dtype in ("nf4", "fp4", "int8"):
        _child(["--prepare-checkpoint"], job, device, timeout_s)
    out.parent.mkdir(parents=True, exist_ok=True)
    _child(["--out", str(out), "--steps", str(steps)], job, device, timeout_s)
    return json.loads(out.read_text())


def _child(args: list[str], job: dict, device: str, timeout_s: float) -> None:
    cmd = [sys.executable, "-m", "memplan.profiling", "--job", json.dumps(job), "--device", device, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        raise ProfileError(f"profiling process failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def check_supported(spec: JobSpec) -> None:
    """The harness runs one process on one GPU with PEFT's methods."""
    if spec.num_gpus > 1 or spec.zero_stage:
        raise ProfileError("the harness profiles one GPU: num_gpus 1 and zero_stage 0 (DeepSpeed runs are not "
                           "covered yet)")
    if spec.task == "train" and spec.method == "adapter":
        raise ProfileError("bottleneck adapters have no PEFT implementation to profile")
    if spec.weight_dtype == "int4":
        raise ProfileError("int4 (GPTQ/AWQ) needs a quantized checkpoint; not profiled")
    if spec.task == "inference" and spec.inference.kv_cache_dtype != spec.compute_dtype:
        raise ProfileError(f"transformers' DynamicCache stores the compute dtype ({spec.compute_dtype}); "
                           f"kv_cache_dtype {spec.inference.kv_cache_dtype} is not profiled")


# ---------------------------------------------------------------- memory meter


class Meter:
    """Per-phase peaks from torch.cuda's counters (reset at each phase start) and a device-level peak from NVML."""

    def __init__(self, device: str):
        self.device = device
        self.cuda = device == "cuda"
        self.phases: dict[str, list[dict[str, int | float | None]]] = {}
        self.current = "init"
        self.max_allocated = self.max_reserved = 0
        self.context_bytes: int | None = None
        self._nvml = None
        self._baseline = 0
        self._device_peak = 0
        self._stop = threading.Event()
        self._started = time.perf_counter()

    def init_cuda(self) -> None:
        if not self.cuda:
            return
        import torch

        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml.nvmlDeviceGetHandleByIndex(0)
            self._baseline = pynvml.nvmlDeviceGetMemoryInfo(self._nvml).used
        except Exception:  # noqa: BLE001 - NVML is optional: without it the device-level numbers are null
            self._nvml = None
        torch.cuda.init()
        torch.zeros(1, device="cuda")
        torch.cuda.synchronize()
        if self._nvml is not None:
            import pynvml

            used = pynvml.nvmlDeviceGetMemoryInfo(self._nvml).used
            self.context_bytes = used - self._baseline - torch.cuda.memory_reserved()
            threading.Thread(target=self._sample, daemon=True).start()
        torch.cuda.reset_peak_memory_stats()

    def _sample(self) -> None:
        import pynvml

        while not self._stop.is_set():
            self._device_peak = max(self._device_peak, pynvml.nvmlDeviceGetMemoryInfo(self._nvml).used)
            time.sleep(0.001)

    def begin(self, phase: str) -> None:
        self.current = phase
        self._t0 = time.perf_counter()
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def end(self, phase: str | None = None) -> None:
        phase = phase or self.current
        row: dict[str, int | float | None] = {"max_allocated_bytes": None, "max_reserved_bytes": None,
                                              "allocated_bytes_after": None,
                                              "seconds": round(time.perf_counter() - self._t0, 4)}
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            row.update(max_allocated_bytes=torch.cuda.max_memory_allocated(),
                       max_reserved_bytes=torch.cuda.max_memory_reserved(),
                       allocated_bytes_after=torch.cuda.memory_allocated())
            self.max_allocated = max(self.max_allocated, row["max_allocated_bytes"])
            self.max_reserved = max(self.max_reserved, row["max_reserved_bytes"])
        self.phases.setdefault(phase, []).append(row)

    def oom_peaks(self) -> None:
        """After an OOM: the peaks of the phase that failed count too."""
        if self.cuda:
            import torch

            self.max_allocated = max(self.max_allocated, torch.cuda.max_memory_allocated())
            self.max_reserved = max(self.max_reserved, torch.cuda.max_memory_reserved())

    def device_used_peak(self) -> int | None:
        self._stop.set()
        if self._nvml is None:
            return None
        time.sleep(0.005)
        return self._device_peak - self._baseline


# ---------------------------------------------------------------- building the model


def _torch_dtype(name: str):
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def _raw_config(spec: JobSpec) -> tuple[str, dict]:
    from memplan.architecture import load_config

    return load_config(spec.model, spec.inline_config, allow_path=True)


def _checkpoint_dir(spec: JobSpec) -> Path:
    from memplan.architecture import config_hash

    _, raw = _raw_config(spec)
    key = hashlib.sha256(f"{config_hash(raw)}:{spec.head}:{spec.num_labels}:{spec.compute_dtype}".encode())
    return CHECKPOINT_CACHE / key.hexdigest()[:16]


def prepare_checkpoint(spec: JobSpec, device: str) -> Path:
    """A random checkpoint of the model in the compute dtype on local disk, for the quantized load path
    (bitsandbytes quantizes while from_pretrained loads). Cached by config."""
    path = _checkpoint_dir(spec)
    if (path / "config.json").exists():
        return path
    from memplan.architecture import prepare_config

    _, raw = _raw_config(spec)
    config, _, auto_cls = prepare_config(raw, spec.head, spec.num_labels)
    import torch

    with torch.device(device):
        model = auto_cls.from_config(config, dtype=_torch_dtype(spec.compute_dtype))
    tmp = path.with_suffix(".tmp")
    model.save_pretrained(tmp)
    tmp.rename(path)
    return path


def _load_model(spec: JobSpec, device: str, attention: str):
    import torch

    from memplan.architecture import prepare_config

    _, raw = _raw_config(spec)
    config, head, auto_cls = prepare_config(raw, spec.head, spec.num_labels)
    if spec.weight_dtype in ("nf4", "fp4", "int8"):
        from transformers import BitsAndBytesConfig

        compute = _torch_dtype(spec.compute_dtype)
        if spec.weight_dtype == "int8":
            quant = BitsAndBytesConfig(load_in_8bit=True)
        else:
            quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=spec.weight_dtype,
                                       bnb_4bit_use_double_quant=spec.double_quant, bnb_4bit_compute_dtype=compute)
        model = auto_cls.from_pretrained(_checkpoint_dir(spec), quantization_config=quant, dtype=compute,
                                         device_map={"": 0} if device == "cuda" else {"": device},
                                         attn_implementation=attention)
    else:
        with torch.device(device):
            model = auto_cls.from_config(config, dtype=_torch_dtype(spec.weight_dtype),
                                         attn_implementation=attention)
    return model, head


_TASK_TYPES = {"causal_lm": "CAUSAL_LM", "seq2seq_lm": "SEQ_2_SEQ_LM", "sequence_classification": "SEQ_CLS",
               "token_classification": "TOKEN_CLS", "masked_lm": "FEATURE_EXTRACTION"}


def _apply_method(model, spec: JobSpec, head: str, head_params: tuple[str, ...]):
    """The trainable setup as users write it: PEFT's own configs, the Trainer's gradient checkpointing."""
    quantized = spec.weight_dtype in ("nf4", "fp4", "int8")
    gc_kwargs = {"use_reentrant": False}
    if quantized:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=spec.gradient_checkpointing,
                                                gradient_checkpointing_kwargs=gc_kwargs)
    elif spec.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gc_kwargs)
    method = spec.method
    if method in ("full", "freeze"):
        for name, p in model.named_parameters():
            p.requires_grad_(method == "full" or name in head_params)
        if spec.gradient_checkpointing and method == "freeze":
            model.enable_input_require_grads()
        return model
    import peft

    task = _TASK_TYPES[head]
    if method in ("lora", "qlora"):
        targets = spec.lora.target_modules
        cfg = peft.LoraConfig(r=spec.lora.r, lora_alpha=spec.lora.alpha, lora_dropout=spec.lora.dropout,
                              target_modules=targets if isinstance(targets, str) else list(targets), task_type=task)
    elif method == "prompt_tuning":
        cfg = peft.PromptTuningConfig(task_type=task, num_virtual_tokens=spec.num_virtual_tokens)
    elif method == "prefix_tuning":
        cfg = peft.PrefixTuningConfig(task_type=task, num_virtual_tokens=spec.num_virtual_tokens)
    elif method == "ia3":
        cfg = peft.IA3Config(task_type=task)
    else:
        raise ProfileError(f"method {method!r} is not profiled")
    if spec.gradient_checkpointing and not quantized:
        model.enable_input_require_grads()  # what the Trainer does for PEFT models under checkpointing
    return peft.get_peft_model(model, cfg)


class _Lion:
    """Lion (Chen et al. 2023, arXiv:2302.06675, Algorithm 2) as lion-pytorch writes it: one momentum buffer like
    each parameter, updated tensor by tensor."""

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99)):
        import torch

        self.params, self.lr, self.betas = list(params), lr, betas
        self.state: dict[int, Any] = {}
        self._torch = torch

    def step(self):
        b1, b2 = self.betas
        with self._torch.no_grad():
            for p in self.params:
                if p.grad is None:
                    continue
                m = self.state.setdefault(id(p), self._torch.zeros_like(p))
                update = (m * b1 + p.grad * (1 - b1)).sign_()
                p.add_(update, alpha=-self.lr)
                m.mul_(b2).add_(p.grad, alpha=1 - b2)

    def zero_grad(self, set_to_none=True):
        for p in self.params:
            p.grad = None


def make_optimizer(spec: JobSpec, params: list):
    """The optimizer the spec names, with the implementation memplan assumes (resolve_optimizer_impl)."""
    from memplan.estimate import resolve_optimizer_impl

    impl = resolve_optimizer_impl(spec)
    flags = {"fused": impl == "fused", "foreach": impl == "foreach"}
    name = spec.optimizer
    if name == "none":
        return None
    import torch

    if name == "adamw":
        return torch.optim.AdamW(params, lr=1e-5, **flags)
    if name in ("sgd", "sgd_momentum"):
        return torch.optim.SGD(params, lr=1e-3, momentum=0.9 if name == "sgd_momentum" else 0.0, **flags)
    if name == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(params, lr=1e-3, relative_step=False, scale_parameter=False, warmup_init=False)
    if name == "lion":
        return _Lion(params)
    import bitsandbytes as bnb

    return {"adamw_8bit": bnb.optim.AdamW8bit, "paged_adamw_8bit": bnb.optim.PagedAdamW8bit,
            "paged_adamw_32bit": bnb.optim.PagedAdamW32bit}[name](params, lr=1e-5)


def _batch(spec: JobSpec, config, head: str, device: str) -> dict:
    import torch

    b, s = spec.micro_batch_size, spec.seq_len
    vocab = int(getattr(config, "vocab_size", None) or 1000)
    ids = torch.randint(0, vocab, (b, s), device=device)
    if head == "sequence_classification":
        labels = torch.randint(0, spec.num_labels, (b,), device=device)
    elif head == "token_classification":
        labels = torch.randint(0, spec.num_labels, (b, s), device=device)
    else:
        labels = ids.clone()
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


# ---------------------------------------------------------------- the run


def _train(model, spec: JobSpec, head: str, device: str, steps: int, meter: Meter, optimizer_factory=None,
           batch: dict | None = None) -> None:
    """The measured steps. The tracer (memplan.trace.run) runs this same loop with its own optimizer factory
    (bitsandbytes stand-ins) and batch (no attention_mask)."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = (optimizer_factory or make_optimizer)(spec, params)
    if batch is None:
        batch = _batch(spec, model.config, head, device)
    autocast = spec.mixed_precision != "no"
    dtype = _torch_dtype(spec.mixed_precision) if autocast else None
    scaler = torch.amp.GradScaler(device) if spec.mixed_precision == "fp16" and device == "cuda" else None
    model.train()
    for step in range(steps):
        for _ in range(spec.gradient_accumulation_steps):
            meter.begin("forward")
            with torch.autocast(device, dtype=dtype, enabled=autocast):
                out = model(**batch)
            loss = out.loss / spec.gradient_accumulation_steps
            del out  # the Trainer keeps the loss only
            meter.end()
            meter.begin("backward")
            (scaler.scale(loss) if scaler else loss).backward()
            del loss
            meter.end()
        if optimizer is not None:
            meter.begin("optimizer_step")
            if scaler:
                scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            meter.end()


def _generate(model, spec: JobSpec, device: str, meter: Meter) -> None:
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    inf = spec.inference
    vocab = int(getattr(model.config, "vocab_size", None) or 1000)
    ids = torch.randint(0, vocab, (inf.batch_size, inf.prompt_len), device=device)

    class _SplitPrefill(StoppingCriteria):
        """Called after each generated token: the first call closes the prefill phase."""

        def __init__(self):
            self.calls = 0

        def __call__(self, input_ids, scores, **kwargs):
            self.calls += 1
            if self.calls == 1:
                meter.end("prefill")
                meter.begin("decode")
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    model.eval()
    meter.begin("prefill")
    with torch.no_grad():
        if inf.max_new_tokens == 0:
            model(input_ids=ids, use_cache=True)
            meter.end("prefill")
            return
        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=inf.max_new_tokens,
                       min_new_tokens=inf.max_new_tokens, do_sample=False, use_cache=True, pad_token_id=0,
                       stopping_criteria=StoppingCriteriaList([_SplitPrefill()]))
    meter.end("decode")


def _environment(device: str) -> dict[str, Any]:
    import importlib.metadata as md

    import torch

    def version(name: str) -> str | None:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return None

    env: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                           "transformers": version("transformers"), "peft": version("peft"),
                           "bitsandbytes": version("bitsandbytes"), "accelerate": version("accelerate"),
                           "memplan": version("memplan"), "cuda": torch.version.cuda, "gpu_name": None,
                           "gpu_memory_bytes": None, "driver": None, "compute_capability": None}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env.update(gpu_name=props.name, gpu_memory_bytes=props.total_memory,
                   compute_capability=f"{props.major}.{props.minor}")
        try:
            import pynvml

            pynvml.nvmlInit()
            driver = pynvml.nvmlSystemGetDriverVersion()
            env["driver"] = driver.decode() if isinstance(driver, bytes) else driver
        except Exception:  # noqa: BLE001 - NVML is optional
            pass
    return env


def run_here(job: dict[str, Any], steps: int, device: str) -> dict[str, Any]:
    """The measured run, in this process (the child). Returns the record."""
    import torch

    from memplan.architecture import introspect
    from memplan.estimate import resolve_attention, resolve_optimizer_impl

    started = time.perf_counter()
    spec = parse_spec(job)
    check_supported(spec)
    info = introspect(spec.model, spec.inline_config, spec.head, spec.num_labels)
    attention = resolve_attention(info, spec, [])
    torch.manual_seed(0)
    meter = Meter(device)
    meter.init_cuda()
    record: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "job": job, "device": device,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "environment": _environment(device),
        "harness": {"steps": steps, "attention": attention,
                    "optimizer_impl": resolve_optimizer_impl(spec) if spec.task == "train" else None},
        "oom": False, "oom_phase": None,
    }
    try:
        meter.begin("load")
        model, head = _load_model(spec, device, attention)
        if spec.task == "train":
            model = _apply_method(model, spec, head, info.head_params)
        meter.end()
        if spec.task == "train":
            _train(model, spec, head, device, steps, meter)
        else:
            _generate(model, spec, device, meter)
    except torch.OutOfMemoryError:
        meter.oom_peaks()
        record.update(oom=True, oom_phase=meter.current)
    record.update(
        phases=meter.phases, max_allocated_bytes=meter.max_allocated if meter.cuda else None,
        max_reserved_bytes=meter.max_reserved if meter.cuda else None,
        device_used_peak_bytes=meter.device_used_peak(), cuda_context_bytes=meter.context_bytes,
        wall_s=round(time.perf_counter() - started, 2))
    return record


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m memplan.profiling", description="one profiling run (a child "
                                 "process of `memplan profile`)")
    ap.add_argument("--job", required=True, help="the job spec as JSON")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--out")
    ap.add_argument("--steps", type=int, default=MIN_STEPS)
    ap.add_argument("--prepare-checkpoint", action="store_true")
    args = ap.parse_args(argv)
    job = json.loads(args.job)
    if args.prepare_checkpoint:
        prepare_checkpoint(parse_spec(job), args.device)
        return 0
    record = run_here(job, args.steps, args.device)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
