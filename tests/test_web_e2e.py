"""The calculator page (web/) end to end: the real app on a loopback port, driven in Debian's headless Chromium
through Playwright. Every number the page shows is checked against the library (`memplan.estimate`,
`memplan.sweep`) for the same job.

Chromium comes from Debian's `chromium` package at /usr/bin/chromium (Playwright's own browser download is not
used). Without it these tests FAIL, naming the package; set MEMPLAN_SKIP_BROWSER=1 to skip them on purpose.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import httpx
import pytest
import yaml

import memplan
from memplan.check import check
from memplan.cli import main as cli_main
from memplan.sweep import largest_fitting, sweep

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 15_000  # the first estimate of a model imports transformers and builds it on the meta device
GIB = 2**30
LLAMA = "meta-llama/Llama-3.1-8B"
QLORA_T4 = f"#model={LLAMA}&method=qlora&gpu=T4-16GB"

if os.environ.get("MEMPLAN_SKIP_BROWSER") == "1":
    pytestmark = pytest.mark.skip(reason="MEMPLAN_SKIP_BROWSER=1: browser tests skipped on request")


def gib(n: int) -> str:
    """The page's format of a byte count: GiB (2**30 bytes) to two decimals."""
    return f"{n / GIB:.2f}"


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module", autouse=True)
def _chromium_present():
    """Fail at once (before the app starts) where the browser is missing: a skip would hide a broken CI image."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: the web end-to-end tests need Debian's `chromium` package "
                    "(apt-get install chromium); set MEMPLAN_SKIP_BROWSER=1 to skip them on purpose", pytrace=False)


@pytest.fixture(scope="module")
def base_url():
    from api.background import serving

    with serving() as base:
        # warm up: the first estimate imports transformers and builds the model on the meta device
        r = httpx.post(base + "/v1/estimate", json={"model": LLAMA, "method": "qlora", "gpu": "T4-16GB"},
                       timeout=120)
        assert r.status_code == 200, r.text
        yield base


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: pip install 'memplan[test]' (or playwright); "
                    "set MEMPLAN_SKIP_BROWSER=1 to skip the browser tests on purpose", pytrace=False)
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    pw = sync_playwright().start()
    b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield b
    b.close()
    pw.stop()


class Tab:
    """A page in a fresh browser context that records uncaught script errors."""

    def __init__(self, browser, **context_args):
        self.context = browser.new_context(**{"viewport": {"width": 1280, "height": 900}, **context_args})
        self.context.set_default_timeout(TIMEOUT_MS)
        self.errors: list[str] = []
        self.page = self.new_page()

    def new_page(self):
        page = self.context.new_page()
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        # the service's Content-Security-Policy must not block anything the page does
        page.on("console", lambda m: self.errors.append(m.text) if "Content Security Policy" in m.text else None)
        return page


@pytest.fixture
def tab(browser):
    t = Tab(browser)
    yield t
    t.context.close()
    assert not t.errors, f"uncaught script errors or CSP violations on the page: {t.errors}"


def expect_result(page, spec: dict) -> memplan.Estimate:
    """Wait until the page shows the library's estimate of `spec`; return that estimate."""
    from playwright.sync_api import expect

    e = memplan.estimate(spec)
    expect(page.locator("#peak-gib")).to_have_text(f"{gib(e.peak_bytes)} GiB")
    expect(page.locator("#peak-gib")).to_have_attribute("data-bytes", str(e.peak_bytes))
    expect(page.locator("#fits")).to_have_attribute("data-fits", "true" if e.fits else "false")
    expect(page.locator("#fits")).to_have_attribute("data-verdict", e.verdict)
    expect(page.locator("#fits")).to_have_text(VERDICT_TEXT[e.verdict])
    expect(page.locator("#peak-phase")).to_have_text(e.peak_phase)
    band = page.locator("#breakdown .bar-range")
    expect(band).to_have_attribute("data-verdict", e.verdict)
    expect(band).to_have_attribute("data-low-bytes", str(e.range.low_bytes))
    expect(band).to_have_attribute("data-high-bytes", str(e.range.high_bytes))
    return e


VERDICT_TEXT = {"fits": "Fits", "borderline": "Borderline", "does_not_fit": "Does not fit"}


# ------------------------------------------------------------------ 1. the controls give the library's numbers


def test_catalog_model_method_and_gpu_show_the_librarys_peak(tab, base_url):
    from playwright.sync_api import expect

    page = tab.page
    page.goto(base_url + "/")
    page.get_by_label("Model", exact=True).fill(LLAMA)
    page.get_by_label("Method", exact=True).select_option("qlora")
    page.get_by_label("GPU", exact=True).select_option("T4-16GB")
    spec = {"model": LLAMA, "method": "qlora", "gpu": "T4-16GB"}
    e = expect_result(page, spec)
    assert httpx.post(base_url + "/v1/estimate", json=spec).json()["peak_bytes"] == e.peak_bytes
    # 27.67 GiB on a 15 GiB T4 without gradient checkpointing: does not fit, short by the headroom
    assert not e.fits
    expect(page.locator("#headroom")).to_contain_text(f"short by {gib(-e.headroom_bytes)} GiB")
    expect(page.locator("#headroom")).to_have_attribute("data-bytes", str(e.headroom_bytes))
    expect(page.locator("#usable-gib")).to_have_text(f"{gib(e.gpu.usable_bytes)} GiB")
    expect(page.get_by_label("Weight dtype")).to_have_value("")  # not sent: the server's nf4 for QLoRA applies
    expect(page.locator("#model-hint")).to_contain_text("8,030,261,248")  # the catalog's parameter count
    # the stacked bar: one segment per non-zero term, the API's bytes, adding up to the peak
    segs = page.eval_on_selector_all("#breakdown .seg", "els => els.map(e => [e.dataset.term, Number(e.dataset.bytes)])")
    assert segs == [[k, v] for k, v in e.components.items() if v > 0]
    assert sum(v for _, v in segs) == e.peak_bytes
    rows = page.eval_on_selector_all("#breakdown-table tbody tr[data-term]",
                                     "els => els.map(e => [e.dataset.term, e.cells[1].textContent])")
    assert rows == [[k, gib(v)] for k, v in e.components.items() if v > 0]
    expect(page.locator("#phases li.is-peak")).to_have_attribute("data-phase", e.peak_phase)


# ------------------------------------------------------------------ 2. keyboard edits, the charts, largest fit


def test_keyboard_changes_update_numbers_charts_and_largest_fit(tab, base_url):
    from playwright.sync_api import expect

    page = tab.page
    page.goto(base_url + "/" + QLORA_T4)
    spec = {"model": LLAMA, "method": "qlora", "gpu": "T4-16GB"}
    before = expect_result(page, spec)
    expect(page.locator("#chart-mb .pt.current")).to_have_attribute("data-peak-bytes", str(before.peak_bytes))

    box = page.get_by_label("Gradient checkpointing")
    box.focus()
    page.keyboard.press("Space")
    expect(box).to_be_checked()
    spec["gradient_checkpointing"] = True
    expect_result(page, spec)

    for label, value, key in [("Micro-batch size", "2", "micro_batch_size"), ("Sequence length", "512", "seq_len")]:
        field = page.get_by_label(label, exact=True)
        field.focus()
        page.keyboard.press("Control+A")
        page.keyboard.type(value)
        spec[key] = int(value)
    e = expect_result(page, spec)
    assert e.peak_bytes != before.peak_bytes

    # the micro-batch chart: the API's sweep points, the current job highlighted, the capacity line
    current = page.locator("#chart-mb .pt.current")
    expect(current).to_have_attribute("data-value", "2")
    expect(current).to_have_attribute("data-peak-bytes", str(e.peak_bytes))
    expect(page.locator("#chart-mb line.capacity")).to_have_attribute("data-gib", gib(e.gpu.usable_bytes))
    expect(page.locator("#chart-mb line.capacity")).to_have_attribute("data-bytes", str(e.gpu.usable_bytes))
    expected_points = {p.value: p.peak_bytes for p in sweep(spec, "micro_batch_size").points}
    expected_points[2] = e.peak_bytes
    shown = page.eval_on_selector_all("#chart-mb .pt", "els => els.map(e => [Number(e.dataset.value), Number(e.dataset.peakBytes)])")
    assert dict(shown) == expected_points
    expect(page.locator("#chart-seq .pt.current")).to_have_attribute("data-value", "512")
    expect(page.locator("#chart-seq")).to_have_attribute("data-field", "seq_len")

    best = largest_fitting(spec, "micro_batch_size")
    assert best == 3  # QLoRA 8B, checkpointing, 512 tokens on a T4
    expect(page.locator("#largest-mb")).to_have_text(str(best))
    expect(page.locator("#chart-mb line.largest")).to_have_attribute("data-value", str(best))
    best_seq = largest_fitting(spec, "seq_len")
    expect(page.locator("#chart-seq")).to_have_attribute("data-largest-fitting", str(best_seq))
    expect(page.locator("#chart-seq-note")).to_contain_text(f"{best_seq:,}")


# ------------------------------------------------------------------ 3. the share link restores the page


def test_share_link_restores_controls_and_result(tab, base_url):
    from playwright.sync_api import expect

    page = tab.page
    page.goto(base_url + "/")
    page.get_by_label("Model", exact=True).fill(LLAMA)
    page.get_by_label("LoRA rank (r)").fill("32")
    page.get_by_label("LoRA target modules").fill("q_proj, v_proj")
    page.get_by_label("Sequence length", exact=True).fill("1024")
    page.get_by_label("Number of GPUs").fill("2")
    page.get_by_label("ZeRO stage").select_option("2")
    page.get_by_label("Offload optimizer states to CPU").check()
    page.get_by_label("GPU", exact=True).select_option("custom")
    page.get_by_label("GPU memory (GiB)").fill("24")
    spec = {"model": LLAMA, "lora": {"r": 32, "target_modules": ["q_proj", "v_proj"]}, "seq_len": 1024,
            "num_gpus": 2, "zero_stage": 2, "offload_optimizer": True, "gpu": {"memory_gib": 24}}
    e = expect_result(page, spec)
    url = page.url
    assert "lora.r=32" in url and "gpu_memory_gib=24" in url
    assert "task=" not in url and "method=" not in url  # defaults stay out of the link

    controls = ["Model", "Task", "Method", "LoRA rank (r)", "LoRA alpha", "LoRA target modules", "Micro-batch size",
                "Sequence length", "Number of GPUs", "ZeRO stage", "GPU", "GPU memory (GiB)", "Weight dtype",
                "Optimizer", "Attention"]
    state = {c: page.get_by_label(c, exact=True).input_value() for c in controls}
    other = tab.new_page()
    other.goto(url)
    expect_result(other, spec)
    for c in controls:
        expect(other.get_by_label(c, exact=True)).to_have_value(state[c])
    expect(other.get_by_label("Offload optimizer states to CPU")).to_be_checked()
    expect(other.get_by_label("Gradient checkpointing")).not_to_be_checked()
    assert other.url == url
    expect(other.locator("#peak-gib")).to_have_text(f"{gib(e.peak_bytes)} GiB")


# ------------------------------------------------------------------ 4. bad input: a readable alert


def test_bad_values_show_the_apis_message_naming_the_field(tab, base_url):
    from playwright.sync_api import expect

    page = tab.page
    page.goto(base_url + "/" + QLORA_T4)
    e = expect_result(page, {"model": LLAMA, "method": "qlora", "gpu": "T4-16GB"})
    alert = page.get_by_role("alert")
    expect(alert).to_be_hidden()

    rank = page.get_by_label("LoRA rank (r)")
    rank.fill("0")
    api = httpx.post(base_url + "/v1/estimate", json={"model": LLAMA, "method": "qlora", "gpu": "T4-16GB",
                                                      "lora": {"r": 0}})
    assert api.status_code == 422
    expect(alert).to_be_visible()
    expect(alert).to_contain_text("lora.r")
    expect(alert).to_contain_text(api.json()["detail"][0]["message"])  # "Input should be greater than or equal to 1"
    expect(alert).to_contain_text("HTTP 422")
    expect(page.locator("#result")).to_be_hidden()  # the stale result is replaced, not left beside the message
    expect(rank).to_have_attribute("aria-invalid", "true")

    rank.fill("16")  # fixed: the message goes, the result comes back
    expect(alert).to_be_hidden()
    expect(page.locator("#peak-gib")).to_have_text(f"{gib(e.peak_bytes)} GiB")

    gpu = page.get_by_label("GPU", exact=True)
    gpu.select_option("custom")  # no memory given yet
    expect(alert).to_contain_text("gpu.memory_gib")
    page.get_by_label("GPU memory (GiB)").fill("-4")
    expect(alert).to_contain_text("gpu.memory_gib: Input should be greater than 0")
    gpu.select_option("T4-16GB")
    expect(alert).to_be_hidden()

    model = page.get_by_label("Model", exact=True)
    model.fill("meta-llama/Llama-9-8B")
    model.press("Enter")  # commits the text: the API answers 404 with the closest ids
    expect(alert).to_contain_text("model: unknown model 'meta-llama/Llama-9-8B'")
    expect(alert).to_contain_text("HTTP 404")
    expect(alert).to_contain_text(LLAMA)

    page.get_by_label("Paste config.json").check()
    page.get_by_label("config.json", exact=True).fill('{"model_type": "llama", hidden_size: 64')
    expect(alert).to_contain_text("model_config")
    expect(alert).to_contain_text("invalid JSON")
    page.get_by_label("config.json", exact=True).fill('{"hidden_size": 64}')  # valid JSON, no model_type: 422
    expect(alert).to_contain_text("model_config: model_config must be a config.json object with a 'model_type'")
    expect(alert).to_contain_text("HTTP 422")
    expect(page.locator("#copy-cli-out")).to_have_text("memplan check job.yaml")


# ------------------------------------------------------------------ 5. the copied job: JSON, YAML, command line

TINY_LLAMA = {"model_type": "llama", "hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22,
              "num_attention_heads": 32, "num_key_value_heads": 4, "vocab_size": 32000, "rms_norm_eps": 1e-05,
              "rope_theta": 10000.0, "rope_scaling": None, "tie_word_embeddings": False,
              "architectures": ["LlamaForCausalLM"], "torch_dtype": "bfloat16"}


def copied_job(page, capsys, tmp_path):
    """Click the three copy buttons; check JSON, YAML and the command line agree with the library and the page."""
    page.get_by_role("button", name="Copy JSON").click()
    job = json.loads(page.locator("#copy-json-out").text_content())
    assert page.evaluate("navigator.clipboard.readText()") == page.locator("#copy-json-out").text_content()
    e = memplan.estimate(job)
    assert page.locator("#peak-gib").text_content() == f"{gib(e.peak_bytes)} GiB"
    assert page.locator("#fits").get_attribute("data-verdict") == e.verdict

    page.get_by_role("button", name="Copy YAML").click()
    yaml_text = page.locator("#copy-yaml-out").text_content()
    assert yaml.safe_load(yaml_text) == job
    assert page.evaluate("navigator.clipboard.readText()") == yaml_text

    page.get_by_role("button", name="Copy command").click()
    argv = shlex.split(page.locator("#copy-cli-out").text_content())
    assert argv[:2] == ["memplan", "check"]
    if argv[2:] == ["job.yaml"]:  # a pasted config: the command runs on the YAML saved as job.yaml
        (tmp_path / "job.yaml").write_text(yaml_text)
        argv[2] = str(tmp_path / "job.yaml")
    capsys.readouterr()
    code = cli_main(argv[1:])
    out = capsys.readouterr().out
    assert code == (0 if e.verdict == "fits" else 1), out
    assert f"peak {gib(e.peak_bytes)} GiB" in out
    assert out.startswith("memplan check: " + {"fits": "FITS", "borderline": "BORDERLINE",
                                               "does_not_fit": "DOES NOT FIT"}[e.verdict])
    return job, e, argv


def test_copy_outputs_reproduce_the_estimate(browser, base_url, capsys, tmp_path):
    from playwright.sync_api import expect

    tab = Tab(browser, permissions=["clipboard-read", "clipboard-write"])
    page = tab.page
    try:
        page.goto(base_url + "/" + QLORA_T4 + "&lora.r=32&lora.target_modules=q_proj,v_proj&optimizer=paged_adamw_8bit"
                  "&micro_batch_size=2&seq_len=1024&gradient_checkpointing=true&lora.alpha=16")
        spec = {"model": LLAMA, "method": "qlora", "lora": {"r": 32, "alpha": 16, "target_modules": ["q_proj", "v_proj"]},
                "optimizer": "paged_adamw_8bit", "micro_batch_size": 2, "seq_len": 1024,
                "gradient_checkpointing": True, "gpu": "T4-16GB"}
        expect_result(page, spec)
        job, e, argv = copied_job(page, capsys, tmp_path)
        assert job == spec and e.fits and e.verdict == "borderline"  # fits at the estimate, not across its range
        assert argv == ["memplan", "check", LLAMA, "--method", "qlora", "--lora-r", "32", "--lora-alpha", "16",
                        "--lora-target-modules", "q_proj,v_proj", "--optimizer", "paged_adamw_8bit",
                        "--micro-batch-size", "2", "--seq-len", "1024", "--gradient-checkpointing", "true",
                        "--gpu", "T4-16GB"]
        expect(page.locator("#copy-status")).to_have_text("Copied to the clipboard.")

        # inference on a custom GPU: nested inference flags and --gpu-memory-gib
        page.get_by_label("Task").select_option("inference")
        page.get_by_label("Batch size", exact=True).fill("8")
        page.get_by_label("KV cache dtype").select_option("fp8")
        page.get_by_label("GPU", exact=True).select_option("custom")
        page.get_by_label("GPU memory (GiB)").fill("40")
        spec = {"model": LLAMA, "task": "inference", "inference": {"batch_size": 8, "kv_cache_dtype": "fp8"},
                "gpu": {"memory_gib": 40}}
        expect_result(page, spec)
        job, e, argv = copied_job(page, capsys, tmp_path)
        assert job == spec
        assert argv[-2:] == ["--gpu-memory-gib", "40"] and "--inference-kv-cache-dtype" in argv

        # a pasted config.json: the YAML carries it, the command runs on job.yaml
        page.get_by_label("Paste config.json").check()
        page.get_by_label("config.json", exact=True).fill(json.dumps(TINY_LLAMA, indent=2))
        spec = {"model_config": TINY_LLAMA, **{k: v for k, v in spec.items() if k != "model"}}
        expect_result(page, spec)
        job, e, argv = copied_job(page, capsys, tmp_path)
        assert job == spec
        expect(page.locator("#cli-note")).to_be_visible()
        assert "model_config=" in page.url
        other = tab.new_page()  # the share link carries the pasted text
        other.goto(page.url)
        expect(other.get_by_label("config.json", exact=True)).to_have_value(json.dumps(TINY_LLAMA, indent=2))
        expect_result(other, spec)
    finally:
        tab.context.close()
    assert not tab.errors


def test_copy_falls_back_to_selecting_the_text(tab, base_url):
    """Without a usable clipboard API the button selects the visible output for Ctrl+C."""
    from playwright.sync_api import expect

    page = tab.page
    page.add_init_script("navigator.clipboard.writeText = () => Promise.reject(new Error('denied'));")
    page.goto(base_url + "/" + QLORA_T4)
    expect_result(page, {"model": LLAMA, "method": "qlora", "gpu": "T4-16GB"})
    page.get_by_role("button", name="Copy YAML").click()
    expect(page.locator("#copy-status")).not_to_be_empty()
    selected = page.evaluate("window.getSelection().toString()")
    assert selected.strip() == page.locator("#copy-yaml-out").text_content().strip()
    assert "model: meta-llama/Llama-3.1-8B" in selected


# ------------------------------------------------------------------ 6. phone width, keyboard, labels


def test_phone_width_keyboard_and_labels(browser, base_url):
    from playwright.sync_api import expect

    tab = Tab(browser, viewport={"width": 375, "height": 800})
    page = tab.page
    try:
        page.goto(base_url + "/" + QLORA_T4)
        expect_result(page, {"model": LLAMA, "method": "qlora", "gpu": "T4-16GB"})
        expect(page.locator("#chart-seq svg")).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), "horizontal scroll at 375 px"
        assert page.evaluate("document.body.scrollWidth <= window.innerWidth")
        expect(page.locator("#mini-summary")).to_contain_text(page.locator("#peak-gib").text_content())

        unlabelled = page.evaluate("""() => [...document.querySelectorAll('input, select, textarea')]
            .filter(e => e.type !== 'hidden')
            .filter(e => ![...(e.labels || [])].some(l => l.textContent.trim()))
            .map(e => e.id || e.name || e.outerHTML)""")
        assert unlabelled == []
        nameless = page.evaluate("""() => [...document.querySelectorAll('button')]
            .filter(b => !b.textContent.trim() && !b.getAttribute('aria-label')).length""")
        assert nameless == 0
        live = page.locator("#summary-live[aria-live=polite]")
        expect(live).to_contain_text(page.locator("#peak-gib").text_content())

        # keyboard only: Tab walks the controls in reading order, with a visible focus ring
        order = []
        for _ in range(40):
            page.keyboard.press("Tab")
            order.append(page.evaluate("document.activeElement.id || document.activeElement.className"))
            if order[-1] == "method":
                break
        assert order[0] == "skip-link"
        assert order.index("source-catalog") < order.index("model") < order.index("task") < order.index("method")
        outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
        assert outline not in ("", "none")
        page.keyboard.press("ArrowDown")  # qlora -> freeze
        expect(page.get_by_label("Method", exact=True)).to_have_value("freeze")
        expect_result(page, {"model": LLAMA, "method": "freeze", "gpu": "T4-16GB"})
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    finally:
        tab.context.close()
    assert not tab.errors


# ------------------------------------------------------------------ 7. inference


def test_inference_task_uses_batch_and_prompt_length(tab, base_url):
    from playwright.sync_api import expect

    page = tab.page
    page.goto(base_url + "/" + QLORA_T4)
    expect_result(page, {"model": LLAMA, "method": "qlora", "gpu": "T4-16GB"})
    page.get_by_label("Task").select_option("inference")
    page.get_by_label("GPU", exact=True).select_option("L4-24GB")
    spec = {"model": LLAMA, "task": "inference", "gpu": "L4-24GB"}  # method and training fields are not sent
    expect_result(page, spec)
    expect(page.get_by_label("Micro-batch size")).to_be_hidden()
    expect(page.get_by_label("Method", exact=True)).to_be_hidden()
    expect(page.get_by_label("Batch size", exact=True)).to_be_visible()

    page.get_by_label("Batch size", exact=True).fill("4")
    page.get_by_label("Prompt length", exact=True).fill("4096")
    spec["inference"] = {"batch_size": 4, "prompt_len": 4096}
    e = expect_result(page, spec)
    expect(page.locator("#chart-mb")).to_have_attribute("data-field", "inference.batch_size")
    expect(page.locator("#chart-mb .x-title")).to_have_text("batch size")
    expect(page.locator("#chart-mb .pt.current")).to_have_attribute("data-value", "4")
    expect(page.locator("#chart-mb .pt.current")).to_have_attribute("data-peak-bytes", str(e.peak_bytes))
    expect(page.locator("#chart-seq")).to_have_attribute("data-field", "inference.prompt_len")
    expect(page.locator("#chart-seq .x-title")).to_have_text("prompt length (tokens)")
    expect(page.locator("#chart-seq .pt.current")).to_have_attribute("data-value", "4096")
    expect(page.locator("#largest-label")).to_have_text("Largest batch that fits")
    expect(page.locator("#largest-mb")).to_have_text(str(largest_fitting(spec, "inference.batch_size")))
    expect(page.locator("#chart-mb-title")).to_contain_text("batch size")
    expect(page.locator("#copy-cli-out")).to_have_text(
        f"memplan check {LLAMA} --task inference --inference-batch-size 4 --inference-prompt-len 4096 --gpu L4-24GB")
    assert e.phases.keys() >= {"prefill", "decode"}


# ------------------------------------------------------------------ 8. the plan section (POST /v1/plan)


def test_plan_button_shows_the_apis_configurations(tab, base_url):
    from playwright.sync_api import expect

    page = tab.page
    page.goto(base_url + "/" + QLORA_T4)
    spec = {"model": LLAMA, "method": "qlora", "gpu": "T4-16GB"}
    expect_result(page, spec)
    page.get_by_label("Global batch size").fill("8")
    with page.expect_response(lambda r: r.url.endswith("/v1/plan")) as answer:
        page.get_by_role("button", name="Find configurations that fit").click()
    response = answer.value
    assert response.status == 200
    assert response.request.post_data_json == {"job": spec, "target": {"global_batch_size": 8}}
    plan = response.json()
    assert plan == httpx.post(base_url + "/v1/plan", json={"job": spec, "target": {"global_batch_size": 8}},
                              timeout=60).json()
    first = plan["configurations"][0]
    assert memplan.estimate(first["job"]).peak_bytes == first["peak_bytes"]  # the API's number, re-estimated

    row = page.locator("#plan-configs tbody tr").first
    expect(row).to_contain_text(first["label"])
    expect(row.locator("td").nth(1)).to_have_text(gib(first["peak_bytes"]))
    expect(row.locator("td").nth(2)).to_have_text(gib(first["headroom_bytes"]))
    expect(row).to_have_attribute("data-peak-bytes", str(first["peak_bytes"]))
    expect(page.locator("#plan-configs tbody tr")).to_have_count(len(plan["configurations"]))
    expect(page.locator("#plan-changes tbody tr")).to_have_count(len(plan["changes"]))
    if plan["changes"]:
        change = page.locator("#plan-changes tbody tr").first
        expect(change).to_contain_text(plan["changes"][0]["description"])
        expect(change.locator("td").first).to_have_text(gib(plan["changes"][0]["saves_bytes"]))
    largest = plan["solvers"]["largest_micro_batch"]
    expect(page.locator('[data-solver="largest_micro_batch"] dd')).to_have_text(
        str(largest) if largest is not None else "none (not even 1)")
    expect(page.locator("#plan-baseline")).to_contain_text(f"peak {gib(plan['estimate']['peak_bytes'])} GiB")

    # a target the API refuses: its message next to the field, the stale table gone
    page.get_by_label("Global batch size").fill("3")
    page.get_by_label("GPU count").fill("2")
    page.get_by_role("button", name="Find configurations that fit").click()
    refused = httpx.post(base_url + "/v1/plan", json={"job": spec, "target": {"global_batch_size": 3, "num_gpus": 2}})
    assert refused.status_code == 422
    detail = refused.json()["detail"][0]
    assert detail["field"] == "target.global_batch_size"
    expect(page.locator("#plan-global-batch-size-error")).to_have_text(detail["message"])
    expect(page.get_by_label("Global batch size")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#plan-result")).to_be_hidden()
    expect(page.get_by_role("alert")).to_have_count(0)  # the estimate above is untouched


def test_verdict_colours_and_warnings_stay_in_view(tab, base_url):
    """The README's T4 job reads Borderline; on an H100 it fits; a length past the model's trained positions
    shows its warning under the peak (not only in the collapsed assumptions)."""
    from playwright.sync_api import expect

    page = tab.page
    page.goto(base_url + "/" + QLORA_T4 + "&optimizer=paged_adamw_8bit&gradient_checkpointing=true")
    readme = {"model": LLAMA, "method": "qlora", "optimizer": "paged_adamw_8bit", "gradient_checkpointing": True}
    e = expect_result(page, {**readme, "gpu": "T4-16GB"})
    assert e.verdict == "borderline"
    expect(page.locator("#mini-summary")).to_have_attribute("data-verdict", "borderline")
    expect(page.locator("#warnings")).to_be_hidden()
    colour = page.evaluate("getComputedStyle(document.querySelector('#fits')).color")
    page.get_by_label("GPU", exact=True).select_option("H100-SXM-80GB")
    page.get_by_label("Sequence length", exact=True).fill("200000")
    e = expect_result(page, {**readme, "gpu": "H100-SXM-80GB", "seq_len": 200000})
    warning = next(a for a in e.assumptions if a.startswith("warning: "))
    expect(page.locator("#warnings li")).to_have_text(warning[len("warning: "):])
    page.get_by_label("Sequence length", exact=True).fill("4096")
    e = expect_result(page, {**readme, "gpu": "H100-SXM-80GB", "seq_len": 4096})
    assert e.verdict == "fits"
    expect(page.locator("#warnings")).to_be_hidden()
    assert page.evaluate("getComputedStyle(document.querySelector('#fits')).color") != colour


def test_stale_result_paste_offer_margin_and_distinct_colours(tab, base_url):
    """Typing an id that is not in the catalog marks the result stale at once; a 404 on the model offers the
    paste tab; the margin control gives the verdict with that share of memory kept free (POST /v1/check), in the
    link and the copied command; the KV cache and the activations never share a colour."""
    from playwright.sync_api import expect

    page = tab.page
    readme = {"model": LLAMA, "method": "qlora", "optimizer": "paged_adamw_8bit", "gradient_checkpointing": True}
    page.goto(base_url + "/" + QLORA_T4 + "&optimizer=paged_adamw_8bit&gradient_checkpointing=true")
    expect_result(page, {**readme, "gpu": "T4-16GB"})
    model = page.get_by_label("Model", exact=True)
    model.fill("meta-llama/Llama-3.1-8")  # a prefix of a catalog id: no request yet, but the result is old
    expect(page.locator("#result")).to_have_attribute("data-state", "stale")
    model.fill("no-such/model-7b")
    model.press("Enter")
    expect(page.locator("#offer-paste")).to_be_visible()
    page.locator("#offer-paste").click()
    expect(page.get_by_label("config.json", exact=True)).to_be_visible()
    expect(page.get_by_label("config.json", exact=True)).to_be_focused()

    page.goto(base_url + "/" + QLORA_T4 + "&optimizer=paged_adamw_8bit&gradient_checkpointing=true&margin=10")
    page.reload()
    want = check({**readme, "gpu": "T4-16GB"}, 10)
    expect(page.locator("#fits")).to_have_attribute("data-verdict", want.verdict)
    expect(page.locator("#fits")).to_have_text("Does not fit (10% margin)")
    expect(page.locator("#copy-cli-out")).to_contain_text("--margin 10")
    page.get_by_label("Margin (% of usable memory kept free)").fill("5")
    expect(page.locator("#fits")).to_have_attribute("data-verdict", check({**readme, "gpu": "T4-16GB"}, 5).verdict)
    assert "margin=5" in page.evaluate("location.hash")
    page.get_by_label("Margin (% of usable memory kept free)").fill("")

    page.get_by_label("Task").select_option("inference")
    e = expect_result(page, {"model": LLAMA, "task": "inference", "gpu": "T4-16GB"})
    assert e.components["kv_cache"] > 0 and e.components["activations"] > 0
    colour = {t: page.locator(f'#breakdown .seg[data-term="{t}"]').evaluate("s => s.style.background")
              for t in ("kv_cache", "activations")}
    assert colour["kv_cache"] != colour["activations"], colour


def test_charts_say_what_they_cut_and_phones_read_the_plan(browser, base_url):
    """A sweep point above the chart's axis is a triangle on a marked axis break, listed with its value in the
    chart's legend; at phone width the page does not scroll sideways and the plan's tables scroll in their own
    box; fields of the other task are hidden."""
    from playwright.sync_api import expect

    t = Tab(browser, viewport={"width": 390, "height": 844})
    page = t.page
    try:
        page.goto(base_url + "/" + QLORA_T4 + "&optimizer=paged_adamw_8bit&gradient_checkpointing=true")
        e = expect_result(page, {"model": LLAMA, "method": "qlora", "optimizer": "paged_adamw_8bit",
                                 "gradient_checkpointing": True, "gpu": "T4-16GB"})
        legend = page.locator("#chart-mb .chart-legend")
        expect(legend).to_contain_text("does not fit")
        clipped = page.locator("#chart-mb .pt.clipped")
        if clipped.count():  # the micro-batch sweep reaches past 3x the T4's memory
            expect(legend).to_have_attribute("data-clipped", str(clipped.count()))
            expect(legend).to_contain_text("above the axis, cut at")
            expect(page.locator("#chart-mb .axis-break")).to_have_count(1)
        assert sweep({"model": LLAMA, "method": "qlora", "optimizer": "paged_adamw_8bit",
                      "gradient_checkpointing": True, "gpu": "T4-16GB"}, "micro_batch_size").points[-1].peak_bytes \
            > 3 * e.gpu.usable_bytes and clipped.count() >= 1
        for field in ("inference.batch_size", "inference.prompt_len", "inference.kv_cache_dtype"):
            expect(page.locator(f'[data-field="{field}"]')).to_be_hidden()
        page.get_by_label("Global batch size").fill("8")
        page.get_by_role("button", name="Find configurations that fit").click()
        expect(page.locator("#plan-configs tbody tr").first).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
        assert page.locator("#plan-configs").evaluate("t => t.closest('.table-wrap') !== null")
    finally:
        t.context.close()
    assert not t.errors, t.errors


def test_fsdp_controls_show_with_fsdp_and_give_the_librarys_peak(tab, base_url):
    from playwright.sync_api import expect

    page = tab.page
    page.goto(base_url + "/")
    page.get_by_label("Model", exact=True).fill(LLAMA)
    expect(page.get_by_label("FSDP version")).to_be_hidden()
    page.get_by_label("Number of GPUs").fill("8")
    page.get_by_label("Parallelism").select_option("fsdp")
    expect(page.get_by_label("FSDP version")).to_be_visible()
    page.get_by_label("ZeRO stage").select_option("3")
    page.get_by_label("Offload parameters to CPU").check()
    expect_result(page, {"model": LLAMA, "num_gpus": 8, "parallelism": "fsdp", "zero_stage": 3,
                         "offload_params": True})
    assert "parallelism=fsdp" in page.url


def test_serve_task_shows_the_engines_budget_and_its_charts(tab, base_url):
    """The serving mode: the engine's fields, its budget as the engine logs it, and the KV charts, every number
    the library's; the copied command reproduces the job."""
    from playwright.sync_api import expect

    from memplan.sweep import serving_sweep

    page = tab.page
    page.goto(base_url + "/" + QLORA_T4)
    expect_result(page, {"model": LLAMA, "method": "qlora", "gpu": "T4-16GB"})
    page.get_by_label("Task").select_option("serve")
    page.get_by_label("GPU", exact=True).select_option("H100-SXM-80GB")
    spec = {"model": LLAMA, "task": "serve"}  # the default GPU is not sent
    expect_result(page, spec)
    expect(page.get_by_label("Method", exact=True)).to_be_hidden()
    expect(page.get_by_label("Tensor parallel GPUs")).to_be_visible()
    page.get_by_label("max_model_len (tokens)").fill("8192")
    page.get_by_label("LoRA slots").fill("4")
    page.get_by_label("LoRA slot rank").fill("64")
    spec["serving"] = {"max_model_len": 8192, "max_loras": 4, "max_lora_rank": 64}
    e = expect_result(page, spec)
    s = e.serving
    stats = page.locator("#serving-stats")
    expect(stats.locator('[data-key="tokens"] dd')).to_have_text(f"{s.kv_cache_tokens:,}")
    expect(stats.locator('[data-key="kv"] dd')).to_have_text(f"{gib(s.kv_cache_bytes)} GiB")
    expect(stats.locator('[data-key="concurrency"] dd')).to_have_text(f"{s.max_concurrency:.2f}")
    expect(stats.locator('[data-key="per-slot"] dd')).to_have_text(f"{s.kv_tokens_per_lora_slot:,}")
    expect(page.locator("#chart-mb")).to_have_attribute("data-field", "serving.max_model_len")
    expect(page.locator("#chart-mb .pt.current")).to_have_attribute("data-value", "8192")
    curve = serving_sweep(spec, "serving.gpu_memory_utilization")
    point = curve.points[-1]
    expect(page.locator(f'#chart-seq .pt[data-value="{point.value:g}"]')).to_have_attribute(
        "data-metric", str(point.kv_cache_tokens))
    expect(page.locator("#largest-mb")).to_have_text(f"{s.largest_max_model_len:,}")
    expect(page.locator("#copy-cli-out")).to_have_text(
        f"memplan check {LLAMA} --task serve --serving-max-model-len 8192 --serving-max-loras 4 "
        "--serving-max-lora-rank 64")
