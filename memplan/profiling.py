"""The CUDA profiling harness: run a job's real training step (or `generate()`) on a GPU and record the memory it
took, one run per fresh process, one JSON file per run (raw measurements only; `profiles/schema.json`).

    memplan profile JOB --out profiles/NAME.json          one run
    memplan profile --batch profiles/plan.yaml            every run of a plan not yet recorded

The job is the real one, built by memplan.stack (the same code the trace engine runs on fake tensors): the model
is built from its config with random weights (memory does not depend on the values, nothing is downloaded)
through the code paths users run: transformers' `from_config`, PEFT's own LoRA / prompt tuning /
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
import json
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from memplan import stack
from memplan.job import resolve
from memplan.spec import JobSpec, SpecError, parse_spec

SCHEMA_VERSION = 1
MIN_STEPS = 3


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

    started = time.perf_counter()
    check_supported(parse_spec(job))
    r = resolve(job)
    spec, attention = r.spec, r.attention
    torch.manual_seed(0)
    meter = Meter(device)
    meter.init_cuda()
    record: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "job": job, "device": device,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "environment": _environment(device),
        "harness": {"steps": steps, "attention": attention,
                    "optimizer_impl": r.optimizer_impl if spec.task == "train" else None},
        "oom": False, "oom_phase": None,
    }
    try:
        meter.begin("load")
        model, head = stack.load_model(spec, device, attention)
        if spec.task == "train":
            model = stack.apply_method(model, spec, head, r.info.head_params)
        meter.end()
        if spec.task == "train":
            stack.train_steps(model, spec, head, device, steps, meter)
        else:
            stack.generate(model, spec, device, meter)
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
        stack.prepare_checkpoint(parse_spec(job), args.device)
        return 0
    record = run_here(job, args.steps, args.device)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
