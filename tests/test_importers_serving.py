"""vLLM and SGLang server arguments -> a serve job: command lines (as text files) and YAML configs, flags with
dashes or underscores, vLLM's token suffixes, unknown flags named with the closest known one."""

from __future__ import annotations

import pytest

import memplan
from memplan.importers import detect_format, import_configs
from memplan.spec import SpecError, parse_spec


def test_vllm_command_line(tmp_path):
    path = tmp_path / "serve.sh"
    path.write_text("# production\nvllm serve meta-llama/Llama-3.1-70B-Instruct \\\n"
                    "  --tensor-parallel-size 2 --gpu-memory-utilization=0.92 \\\n"
                    "  --max-model-len 32K --enable-lora --max-lora-rank 64 --kv-cache-dtype fp8_e4m3 \\\n"
                    "  --port 8000 --max-num-seqz 64 --pipeline-parallel-size 1\n")
    r = import_configs([str(path)])
    assert r.sources == [f"vllm:{path}"]
    assert r.job == {"model": "meta-llama/Llama-3.1-70B-Instruct", "task": "serve",
                     "serving": {"engine": "vllm", "tensor_parallel_size": 2, "gpu_memory_utilization": 0.92,
                                 "max_model_len": 32768, "kv_cache_dtype": "fp8", "max_loras": 1,
                                 "max_lora_rank": 64}}
    reasons = {src: why for _, src, why in r.ignored}
    assert "did you mean 'max_num_seqs'" in reasons["max_num_seqz"]
    assert "pipeline parallelism" in reasons["pipeline_parallel_size"]
    assert "port" not in reasons  # no memory effect: not reported
    assert parse_spec(r.job).serving.max_loras == 1


def test_vllm_yaml_config_and_quantization(tmp_path):
    path = tmp_path / "vllm.yaml"
    path.write_text("model: Qwen/Qwen2.5-7B-Instruct\nmax-model-len: auto\nmax_num_seqs: 128\nquantization: awq\n"
                    "gpu-memory-utilization: 0.85\nenforce-eager: true\n")
    assert detect_format(str(path), {"max-model-len": 1, "max_num_seqs": 2}) == "vllm"
    r = import_configs([str(path)])
    assert r.job["weight_dtype"] == "int4" and r.job["serving"]["max_model_len"] == -1
    assert r.job["serving"]["enforce_eager"] is True and r.job["serving"]["max_num_seqs"] == 128
    e = memplan.estimate({**r.job, "gpu": "L4-24GB"})
    assert e.serving.max_model_len == e.serving.largest_max_model_len > 0


def test_sglang_command_and_yaml(tmp_path):
    cmd = tmp_path / "sglang.txt"
    cmd.write_text("python -m sglang.launch_server --model-path Qwen/Qwen2.5-32B-Instruct --tp 4 "
                   "--mem-fraction-static 0.85 --chunked-prefill-size 2048 --lora-paths a=/x b=/y\n")
    with pytest.raises(SpecError) as err:  # a second positional word after a flag's value is not an argument
        import_configs([str(cmd)])
    assert "unexpected argument" in str(err.value)
    cmd.write_text("python -m sglang.launch_server --model-path Qwen/Qwen2.5-32B-Instruct --tp 4 "
                   "--mem-fraction-static 0.85 --chunked-prefill-size 2048 --disable-cuda-graph\n")
    r = import_configs([str(cmd)])
    assert r.job["serving"] == {"engine": "sglang", "tensor_parallel_size": 4, "gpu_memory_utilization": 0.85,
                                "max_num_batched_tokens": 2048, "enforce_eager": True}
    yml = tmp_path / "sglang.yaml"
    yml.write_text("model-path: Qwen/Qwen2.5-32B-Instruct\ntp-size: 4\nmem-fraction-static: 0.85\n"
                   "context-length: 16384\nmax-loras-per-batch: 4\nmax-lora-rank: 32\n")
    r = import_configs([str(yml)])
    assert r.sources == [f"sglang:{yml}"]
    assert r.job["serving"]["max_model_len"] == 16384 and r.job["serving"]["max_loras"] == 4


def test_bad_values_name_the_file_and_flag(tmp_path):
    path = tmp_path / "serve.sh"
    path.write_text("vllm serve meta-llama/Llama-3.1-8B --tensor-parallel-size two\n")
    with pytest.raises(SpecError) as err:
        import_configs([str(path)])
    assert "tensor_parallel_size" in str(err.value) and "expected an integer" in str(err.value)
    path.write_text("vllm serve meta-llama/Llama-3.1-8B --kv-cache-dtype int3\n")
    with pytest.raises(SpecError) as err:
        import_configs([str(path)])
    assert "kv_cache_dtype" in str(err.value) and "fp8" in str(err.value)
