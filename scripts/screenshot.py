#!/usr/bin/env python3
"""Screenshot of the calculator page for the docs: docs/calculator.png (1280 px wide, full page).

Starts the app in-process on a free loopback port, opens the QLoRA Llama-3.1-8B on a T4 example through its
share link in Debian's Chromium (/usr/bin/chromium, driven by Playwright), waits for the result and the charts,
and saves the page.

    HF_HUB_OFFLINE=1 python3 scripts/screenshot.py [--out docs/calculator.png] [--width 1280] [--height 900]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
#: the example job of the README and api/app.py's EXAMPLES["qlora_t4"], as the page's share link
EXAMPLE_HASH = ("#model=meta-llama/Llama-3.1-8B&method=qlora&optimizer=paged_adamw_8bit"
                "&gradient_checkpointing=true&gpu=T4-16GB")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "calculator.png"))
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=900)
    ap.add_argument("--color-scheme", choices=["light", "dark"], default="light")
    args = ap.parse_args()
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} not found: install Debian's chromium package")
    from playwright.sync_api import sync_playwright

    from api.background import serving

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with serving() as base:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": args.width, "height": args.height},
                                    color_scheme=args.color_scheme, device_scale_factor=1)
            page.goto(base + "/" + EXAMPLE_HASH)
            page.wait_for_selector("#result[data-state=ready]", timeout=60_000)
            page.wait_for_selector("#chart-seq svg", timeout=15_000)
            page.screenshot(path=str(out), full_page=True)
            browser.close()
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
