"""A schema-driven fuzzer for the API: request bodies made from the routes' own OpenAPI schemas (valid values,
wrong types, out-of-range numbers, hostile strings, unknown and missing fields, deep nesting), sent to every
route, each answer checked against the contract: no 5xx, and the body matches the schema `/openapi.json` documents
for that status. Used by tests/test_robustness.py (a few hundred requests in CI) and bench/reliability.py (10,000
and more against a real server).

Deterministic for a seed; bounded in count (the caller's n) and in size (bodies stay under the body limit)."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any, Callable

from urllib.parse import quote

import jsonschema

HOSTILE_STRINGS = ["", " ", "\ud800", "\udfff", "\x00", "a" * 5000, "../../etc/passwd", "<script>alert(1)</script>",
                   "meta-llama/Llama-3.1-8B", "H100-SXM-80GB", "T4", "A100", "ü" * 50, "1e309", "NaN", "true",
                   "all-linear", "%s%n", "{}", "[]"]
HOSTILE_NUMBERS = [0, -1, 1, 2, 7, 2**31, 2**63, 2**70, -(2**63), 0.5, -0.0, 1e308, 3.7, 100, 1024, 4097]
CATALOG_MODELS = ["meta-llama/Llama-3.1-8B", "Qwen/Qwen2.5-0.5B", "openai-community/gpt2", "google/flan-t5-base",
                  "mistralai/Mixtral-8x7B-v0.1", "google/gemma-2-2b"]
INLINE_CONFIGS = [
    {"model_type": "llama", "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,
     "num_attention_heads": 4, "vocab_size": 1000},
    {"model_type": "gemma3", "text_config": {"num_hidden_layers": 3000}},
    {"model_type": "llama", "vocab_size": 2**70},
    {"model_type": "gpt2", "n_layer": 1, "n_embd": 64, "n_head": 2},
    {"model_type": "llama", "num_hidden_layers": 1024},
    {"model_type": "unknown_thing"},
    {"model_type": "llama", "auto_map": {"AutoModel": "x.y"}},
]


def _resolve(schema: dict, components: dict) -> dict:
    while "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[-1]]
    return schema


@dataclass
class Generator:
    spec: dict
    rng: random.Random
    components: dict = field(init=False)

    def __post_init__(self):
        self.components = self.spec.get("components", {}).get("schemas", {})

    def value(self, schema: dict, depth: int = 0) -> Any:
        """A value for the schema: mostly plausible, sometimes hostile."""
        rng = self.rng
        schema = _resolve(schema, self.components)
        if rng.random() < 0.05:
            return self.hostile(depth)
        for key in ("anyOf", "oneOf"):
            if key in schema:
                return self.value(rng.choice(schema[key]), depth)
        if "enum" in schema:
            return rng.choice(schema["enum"])
        if "const" in schema:
            return schema["const"]
        kind = schema.get("type")
        if kind == "object" or "properties" in schema:
            return self.obj(schema, depth + 1)
        if kind == "array":
            items = schema.get("items", {})
            return [self.value(items, depth + 1) for _ in range(rng.choice([0, 1, 2, 3, 300]))]
        if kind == "integer":
            low, high = schema.get("minimum", 1), schema.get("maximum", 4096)
            return rng.choice([rng.randint(int(low), int(min(high, low + 8192))), *HOSTILE_NUMBERS[:6]])
        if kind == "number":
            return rng.choice([rng.uniform(0, 100), *HOSTILE_NUMBERS])
        if kind == "boolean":
            return rng.choice([True, False])
        if kind == "string":
            return rng.choice(CATALOG_MODELS + HOSTILE_STRINGS)
        return self.hostile(depth)

    def obj(self, schema: dict, depth: int) -> dict:
        rng = self.rng
        schema = _resolve(schema, self.components)
        props = schema.get("properties", {})
        if "model" in props and rng.random() < 0.05:
            # a minimal job naming a near-miss id: the unknown-id answer (404 with suggestions) is reached too
            return {"model": "meta-llama/Llama-3.1-8B-Instruc"}
        out = {}
        for name, sub in props.items():
            if name in schema.get("required", []) or rng.random() < 0.35:
                if name == "model" and rng.random() < 0.7:
                    out[name] = rng.choice(CATALOG_MODELS)
                elif name == "model_config":
                    if "model" not in out:
                        out[name] = json.loads(json.dumps(rng.choice(INLINE_CONFIGS)))
                else:
                    out[name] = self.value(sub, depth)
        if rng.random() < 0.1:
            out[rng.choice(["fulll", "lora_rank", "\ud800", "x" * 100, "seq-len"])] = self.hostile(depth)
        if props and rng.random() < 0.05:
            out.pop(rng.choice(list(out) or [""]), None)
        return out

    def hostile(self, depth: int) -> Any:
        rng = self.rng
        pick = rng.randrange(7)
        if pick == 0:
            return rng.choice(HOSTILE_STRINGS)
        if pick == 1:
            return rng.choice(HOSTILE_NUMBERS)
        if pick == 2:
            return None
        if pick == 3:
            return rng.choice([True, False])
        if pick == 4:
            nested: Any = 1
            for _ in range(rng.choice([2, 50, 200])):
                nested = [nested]
            return nested
        if pick == 5:
            return {f"k{i}": i for i in range(rng.choice([1, 50]))}
        return [rng.choice(HOSTILE_STRINGS) for _ in range(rng.choice([1, 10]))]


def operations(spec: dict) -> list[tuple[str, str, dict | None, list[dict]]]:
    """(method, path, body schema or None, query parameters) of every route."""
    out = []
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            out.append((method.upper(), path, body, op.get("parameters", [])))
    return out


def response_schema(spec: dict, path: str, method: str, status: int) -> dict | None:
    op = spec["paths"][path][method.lower()]
    documented = op["responses"].get(str(status))
    if documented is None:
        return None
    return documented.get("content", {}).get("application/json", {}).get("schema", {})


@dataclass
class Tally:
    requests: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    server_errors: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)


def fuzz(spec: dict, send: Callable[[str, str, bytes | None], tuple[int, bytes]], n: int,
         seed: int = 0) -> Tally:
    """Send n generated requests through send(method, target, body) -> (status, body bytes), target being the
    path with its percent-encoded query; tally 5xx and answers whose status or body the OpenAPI document does
    not describe."""
    rng = random.Random(seed)
    gen = Generator(spec, rng)
    ops = operations(spec)
    validator_cls = jsonschema.Draft202012Validator
    tally = Tally()
    for i in range(n):
        method, path, body_schema, params = ops[i % len(ops)]
        body = None
        if body_schema is not None:
            value = gen.value(body_schema) if rng.random() < 0.97 else gen.hostile(0)
            try:
                body = json.dumps(value).encode("utf-8", "surrogatepass")
            except (ValueError, TypeError):
                body = b"{}"
            if rng.random() < 0.02:
                body = body[: rng.randrange(max(1, len(body)))]  # cut short: invalid JSON
        query = []
        for p in params:
            if p.get("in") == "query" and rng.random() < 0.5:
                raw = str(gen.value(p.get("schema", {})))[:100]
                query.append(f"{p['name']}={quote(raw.encode('utf-8', 'surrogatepass'))}")
        status, content = send(method, path + ("?" + "&".join(query) if query else ""), body)
        tally.requests += 1
        tally.by_status[status] = tally.by_status.get(status, 0) + 1
        where = f"{method} {path} -> {status}: {body[:120] if body else b''!r}"
        if status >= 500 and status not in (503, 504):
            tally.server_errors.append(where)
            continue
        schema = response_schema(spec, path, method, status)
        if schema is None:
            tally.violations.append(f"undocumented status: {where}")
            continue
        try:
            data = json.loads(content)
        except ValueError:
            tally.violations.append(f"not JSON: {where}")
            continue
        full = {**schema, "components": spec.get("components", {})} if "$ref" in json.dumps(schema) else schema
        errors = list(validator_cls(full).iter_errors(data))
        if errors:
            tally.violations.append(f"body off its schema ({errors[0].message[:100]}): {where}")
    return tally
