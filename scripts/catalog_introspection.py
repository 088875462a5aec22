"""Write memplan/catalog/introspected/<org>/<name>.json.gz for every catalog model: its ModelInfo (default head) as
data, so that the formula engine needs neither torch nor transformers for a catalog model. tests/test_catalog.py
checks every file against a fresh meta-device build. Run after adding or changing a model file, or after moving the
pinned transformers:
    python3 scripts/catalog_introspection.py
"""

import json

import transformers

from memplan import architecture, introspected
from memplan.catalog import MODELS_DIR

written = 0
for path in sorted(MODELS_DIR.glob("*/*.json")):
    raw = json.loads(path.read_text())
    architecture.clear_caches()
    info = architecture.build_catalog_info(raw["id"])
    introspected.write(raw["id"], info, raw["config"], transformers.__version__)
    written += 1
print(f"wrote {written} files under {introspected.INTROSPECTED_DIR}")
