"""memplan's own job spec (shared/DESIGN.md "The job spec"), JSON or YAML, as a source among the others."""

from __future__ import annotations

import difflib
from typing import Any

from memplan.importers._common import Collector
from memplan.spec import InferenceSpec, JobSpec, LoraSpec, ServingSpec

NESTED = {"lora": LoraSpec, "inference": InferenceSpec, "serving": ServingSpec}


def field_names(model_cls: Any) -> list[str]:
    return [f.alias or name for name, f in model_cls.model_fields.items()]


def read(data: dict[str, Any], out: Collector) -> None:
    """Take a memplan job spec field for field (memplan.spec.JobSpec). `lora` and `inference` are merged field by
    field (a file may set lora.r while another sets lora.target_modules). Unknown fields are rejected, as the job
    spec contract says; values are validated later by parse_spec."""
    allowed = field_names(JobSpec)
    for key, value in data.items():
        if value is None:  # YAML `key:` with nothing after it: unset
            continue
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise out.error(str(key), f"unknown job spec field{hint}; allowed fields: {', '.join(allowed)}")
        if key in NESTED:
            if not isinstance(value, dict):
                raise out.error(str(key), f"expected a mapping of {key} fields, got {value!r}")
            sub_allowed = field_names(NESTED[key])
            for sub, sub_value in value.items():
                if sub_value is None:
                    continue
                if sub not in sub_allowed:
                    close = difflib.get_close_matches(str(sub), sub_allowed, n=1)
                    hint = f" (did you mean '{close[0]}'?)" if close else ""
                    raise out.error(f"{key}.{sub}", f"unknown field{hint}; allowed fields: {', '.join(sub_allowed)}")
                out.set(f"{key}.{sub}", sub_value, f"{key}.{sub}")
        else:
            out.set(key, value, key)
