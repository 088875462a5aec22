"""Write profiles/plan.yaml: the CUDA runs the profiling issue asks for (>= 60, >= 5 architectures), for
`memplan profile --batch profiles/plan.yaml` on an H100 80GB. Runs marked `expect_oom` are sized just past the
boundary. Edit the lists here and run `python3 scripts/make_profile_plan.py`; tests/test_profiling.py checks
the plan's coverage.
"""

from pathlib import Path

import yaml

H100 = "H100-SXM-80GB"
runs = []


def add(name, **job):
    expect_oom = job.pop("expect_oom", False)
    run = {"name": name, "job": {**job, "gpu": H100}}
    if expect_oom:
        run["expect_oom"] = True
    runs.append(run)


# full fine-tuning: pure bf16 and fp32 weights + bf16 autocast; optimizers; checkpointing; attention
for model, short in [("openai-community/gpt2", "gpt2"), ("EleutherAI/pythia-410m", "pythia410m"),
                     ("facebook/opt-350m", "opt350m"), ("Qwen/Qwen2.5-0.5B", "qwen05b"),
                     ("meta-llama/Llama-3.2-1B", "llama1b")]:
    add(f"full-bf16-{short}-s1024-b4", model=model, method="full", weight_dtype="bf16", seq_len=1024,
        micro_batch_size=4)
    add(f"full-amp-{short}-s1024-b4", model=model, method="full", weight_dtype="fp32", mixed_precision="bf16",
        seq_len=1024, micro_batch_size=4)
add("full-bf16-qwen15b-s2048-b8-gc", model="Qwen/Qwen2.5-1.5B", method="full", seq_len=2048, micro_batch_size=8,
    gradient_checkpointing=True)
add("full-bf16-llama1b-s2048-b2-eager", model="meta-llama/Llama-3.2-1B", method="full", seq_len=2048,
    micro_batch_size=2, attention="eager")
add("full-bf16-llama1b-s2048-b2-sdpa", model="meta-llama/Llama-3.2-1B", method="full", seq_len=2048,
    micro_batch_size=2, attention="sdpa")
add("full-bf16-llama3b-s4096-b1-gc", model="meta-llama/Llama-3.2-3B", method="full", seq_len=4096,
    micro_batch_size=1, gradient_checkpointing=True)
add("full-adamw8bit-llama1b-s2048-b4", model="meta-llama/Llama-3.2-1B", method="full", optimizer="adamw_8bit",
    seq_len=2048, micro_batch_size=4)
add("full-sgd-qwen05b-s1024-b8", model="Qwen/Qwen2.5-0.5B", method="full", optimizer="sgd_momentum",
    seq_len=1024, micro_batch_size=8)
add("full-adafactor-qwen05b-s1024-b8", model="Qwen/Qwen2.5-0.5B", method="full", optimizer="adafactor",
    seq_len=1024, micro_batch_size=8)
add("full-foreach-llama1b-s1024-b4", model="meta-llama/Llama-3.2-1B", method="full", optimizer_impl="foreach",
    seq_len=1024, micro_batch_size=4)
add("full-phi2-s1024-b2-gc", model="microsoft/phi-2", method="full", seq_len=1024, micro_batch_size=2,
    gradient_checkpointing=True)
add("full-gemma2b-s1024-b2-gc", model="google/gemma-2-2b", method="full", seq_len=1024, micro_batch_size=2,
    gradient_checkpointing=True)
add("full-bf16-llama3b-s4096-b4-oom", model="meta-llama/Llama-3.2-3B", method="full", seq_len=4096,
    micro_batch_size=4, expect_oom=True)

# LoRA: rank 8 to 64, q,v and all-linear, sequences 256 to 8192, micro-batch 1 to 16, checkpointing on and off
for r in (8, 16, 32, 64):
    add(f"lora-qv-r{r}-llama8b-s2048-b1", model="meta-llama/Llama-3.1-8B", method="lora",
        lora={"r": r, "target_modules": ["q_proj", "v_proj"]}, seq_len=2048)
    add(f"lora-all-r{r}-llama8b-s2048-b1", model="meta-llama/Llama-3.1-8B", method="lora",
        lora={"r": r, "target_modules": "all-linear"}, seq_len=2048)
for s in (256, 1024, 4096, 8192):
    add(f"lora-all-r16-llama3b-s{s}-b1-gc", model="meta-llama/Llama-3.2-3B", method="lora", seq_len=s,
        gradient_checkpointing=True)
for b in (1, 4, 16):
    add(f"lora-all-r16-qwen15b-s512-b{b}", model="Qwen/Qwen2.5-1.5B", method="lora", seq_len=512, micro_batch_size=b)
add("lora-all-r16-mistral7b-s4096-b1-gc", model="mistralai/Mistral-7B-v0.1", method="lora", seq_len=4096,
    gradient_checkpointing=True)
add("lora-all-r16-llama8b-s4096-b2-eager", model="meta-llama/Llama-3.1-8B", method="lora", seq_len=4096,
    micro_batch_size=2, attention="eager", gradient_checkpointing=True)
add("lora-all-r16-gemma2b-s2048-b2", model="google/gemma-2-2b", method="lora", seq_len=2048, micro_batch_size=2)
add("lora-all-r16-phi2-s2048-b2", model="microsoft/phi-2", method="lora", seq_len=2048, micro_batch_size=2)
add("lora-all-r16-pythia1b-s2048-b4", model="EleutherAI/pythia-1b", method="lora", seq_len=2048, micro_batch_size=4)
add("lora-all-r16-opt13b-s2048-b4", model="facebook/opt-1.3b", method="lora", seq_len=2048, micro_batch_size=4)
add("lora-all-r16-llama8b-s8192-b4-oom", model="meta-llama/Llama-3.1-8B", method="lora", seq_len=8192,
    micro_batch_size=4, expect_oom=True)

# QLoRA: NF4 with double quant on and off, paged 8-bit AdamW and AdamW, FP4
for dq in (True, False):
    for optim in ("paged_adamw_8bit", "adamw"):
        add(f"qlora-nf4-dq{int(dq)}-{optim}-llama8b-s2048-b1-gc", model="meta-llama/Llama-3.1-8B", method="qlora",
            double_quant=dq, optimizer=optim, seq_len=2048, gradient_checkpointing=True)
add("qlora-nf4-llama8b-s4096-b4-gc", model="meta-llama/Llama-3.1-8B", method="qlora",
    optimizer="paged_adamw_8bit", seq_len=4096, micro_batch_size=4, gradient_checkpointing=True)
add("qlora-nf4-llama8b-s2048-b2-nogc", model="meta-llama/Llama-3.1-8B", method="qlora",
    optimizer="paged_adamw_8bit", seq_len=2048, micro_batch_size=2)
add("qlora-fp4-qwen7b-s2048-b1-gc", model="Qwen/Qwen2.5-7B", method="qlora", weight_dtype="fp4",
    optimizer="paged_adamw_8bit", seq_len=2048, gradient_checkpointing=True)
add("qlora-nf4-mistral7b-s1024-b4-gc", model="mistralai/Mistral-7B-v0.1", method="qlora",
    optimizer="paged_adamw_8bit", seq_len=1024, micro_batch_size=4, gradient_checkpointing=True)
add("qlora-nf4-qwen15b-s256-b16", model="Qwen/Qwen2.5-1.5B", method="qlora", seq_len=256, micro_batch_size=16)
add("qlora-nf4-llama8b-s8192-b16-gc-oom", model="meta-llama/Llama-3.1-8B", method="qlora",
    optimizer="paged_adamw_8bit", seq_len=8192, micro_batch_size=16, gradient_checkpointing=True, expect_oom=True)

# prompt tuning and (IA)3
add("prompt-qwen05b-s1024-b8", model="Qwen/Qwen2.5-0.5B", method="prompt_tuning", num_virtual_tokens=20,
    seq_len=1024, micro_batch_size=8)
add("prompt-llama1b-s2048-b4-gc", model="meta-llama/Llama-3.2-1B", method="prompt_tuning", num_virtual_tokens=50,
    seq_len=2048, micro_batch_size=4, gradient_checkpointing=True)
add("ia3-llama1b-s2048-b4", model="meta-llama/Llama-3.2-1B", method="ia3", seq_len=2048, micro_batch_size=4)
add("ia3-opt350m-s1024-b8", model="facebook/opt-350m", method="ia3", seq_len=1024, micro_batch_size=8)

# inference: bf16, int8 and NF4 weights, long prompts
for model, short in [("meta-llama/Llama-3.1-8B", "llama8b"), ("Qwen/Qwen2.5-7B", "qwen7b")]:
    for dtype in ("bf16", "int8", "nf4"):
        add(f"infer-{dtype}-{short}-p8192-n256-b1", model=model, task="inference", weight_dtype=dtype,
            inference={"batch_size": 1, "prompt_len": 8192, "max_new_tokens": 256})
add("infer-bf16-llama8b-p2048-n512-b16", model="meta-llama/Llama-3.1-8B", task="inference",
    inference={"batch_size": 16, "prompt_len": 2048, "max_new_tokens": 512})
add("infer-bf16-llama3b-p32768-n128-b1", model="meta-llama/Llama-3.2-3B", task="inference",
    inference={"batch_size": 1, "prompt_len": 32768, "max_new_tokens": 128})
add("infer-bf16-gemma2b-p4096-n256-b8", model="google/gemma-2-2b", task="inference",
    inference={"batch_size": 8, "prompt_len": 4096, "max_new_tokens": 256})
add("infer-bf16-llama8b-p16384-n256-b32-oom", model="meta-llama/Llama-3.1-8B", task="inference",
    inference={"batch_size": 32, "prompt_len": 16384, "max_new_tokens": 256}, expect_oom=True)

out = Path(__file__).resolve().parent.parent / "profiles" / "plan.yaml"
header = ("# CUDA profiling plan: `memplan profile --batch profiles/plan.yaml` on one H100 80GB writes\n"
          "# profiles/NAME.json per run. Generated by scripts/make_profile_plan.py; do not edit by hand.\n")
out.write_text(header + yaml.safe_dump({"runs": runs}, sort_keys=False, width=120))
print(f"{len(runs)} runs -> {out}")
