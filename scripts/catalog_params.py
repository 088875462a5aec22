"""Write each catalog model's `params` field: the parameter count memplan builds for it (default head).

`GET /v1/models` and `memplan models` list this field so they need not build 85 models; tests/test_catalog.py
checks every stored count against a fresh build. Run after adding or changing a model file:
    python3 scripts/catalog_params.py
"""

import json

from memplan.architecture import introspect
from memplan.catalog import MODELS_DIR

for path in sorted(MODELS_DIR.glob("*/*.json")):
    raw = json.loads(path.read_text())
    total = introspect(raw["id"], allow_path=False).total_params
    if raw.get("params") != total:
        items = list(raw.items())
        at = [k for k, _ in items].index("config")  # keep the config last, as in the other files
        raw = dict(items[:at] + [("params", total)] + [i for i in items[at:] if i[0] != "params"])
        path.write_text(json.dumps(raw, indent=2, ensure_ascii=False) + "\n")
        print(f"{raw['id']}: params {total:,}")
