"""Run torch FSDP2 for real on a fake process group, in this one CPU process, and print FSDPMemTracker's peak
categories as JSON: `python -m tests.trace.fsdp_fake_pg '<json: config, world, reshard, batch, seq>'`.

FSDP2's own code decides what is sharded, gathered and freed (torch.distributed.fsdp.fully_shard on every block and
the root, as accelerate applies it; MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=bf16)); fake tensors hold
no data. torch.optim.AdamW(foreach=False): with foreach on DTensor shards the tracker counts unsharded temporaries
under OptState (296.9 MB for 39.6 MB of moments, torch 2.13), which is the tracker's bookkeeping, not FSDP's."""

from __future__ import annotations

import json
import sys


def run(case: dict) -> dict:
    import torch
    import torch.distributed as dist
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed._tools.fsdp2_mem_tracker import FSDPMemTracker
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    from torch.testing._internal.distributed.fake_pg import FakeStore
    from transformers import AutoConfig, AutoModelForCausalLM

    world = case["world"]
    dist.init_process_group("fake", rank=0, world_size=world, store=FakeStore())
    try:
        mesh = init_device_mesh("cpu", (world,))
        raw = dict(case["config"])
        config = AutoConfig.for_model(raw.pop("model_type"), **raw)
        with FakeTensorMode():
            with torch.device("meta"):
                model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="sdpa")
            mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.bfloat16)
            for block in model.model.layers:
                fully_shard(block, mesh=mesh, mp_policy=mp, reshard_after_forward=case["reshard"])
            fully_shard(model, mesh=mesh, mp_policy=mp, reshard_after_forward=case["reshard"])
            model.to_empty(device="cpu")
            ids = torch.randint(0, config.vocab_size, (case["batch"], case["seq"]))
            opt = torch.optim.AdamW(model.parameters(), foreach=False)
            tracker = FSDPMemTracker(model, opt)
            tracker.track_inputs((ids,))
            with tracker:
                for step in range(2):
                    model(input_ids=ids, labels=ids).loss.backward()
                    opt.step()
                    opt.zero_grad()
                    if step == 0:
                        tracker.reset_mod_stats()
            peak = tracker.get_tracker_snapshot("peak")
    finally:
        dist.destroy_process_group()
    (device_peak,) = peak.values()
    return {str(getattr(k, "value", k)): v for k, v in device_peak.items()}


if __name__ == "__main__":
    print(json.dumps(run(json.loads(sys.argv[1]))))
