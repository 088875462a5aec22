"""Write tests/golden/<engine>/<name>.json from the code as it stands: `python3 -m tests.golden.regenerate`.

Only for a change that is meant to move a number (say which and why in the commit); a change of layout must
leave every file byte for byte as it is (tests/golden/test_golden.py).
"""

from __future__ import annotations

import sys

from tests.golden.jobs import cases
from tests.golden.test_golden import GOLDEN_DIR, rendered


def main() -> int:
    for engine, name, job in cases():
        path = GOLDEN_DIR / engine / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rendered(engine, name, job))
    print(f"wrote {len(cases())} golden files under {GOLDEN_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
