"""The playground page in a real headless Chromium: streaming, Stop, errors, the token, phone layout.

The browser is Debian's `chromium` driven by Selenium through Debian's `chromedriver` (both
installed by .ci/run); without them every test here is skipped with the reason in the summary.

The page talks to `textgen serve`'s own app and batching engine (the `serve` fixture) on a
loopback port, serving the pretrained model; a MutationObserver in the page records every length
the text takes, so streaming in pieces is seen however fast they come.
"""

from __future__ import annotations

import contextlib
import functools
import json
import shutil
import struct
import time
import urllib.request

import pytest

SEED = "ROMEO:"
MODEL_NAME = "shakespeare-char"  # the name /v1/model gives the pretrained model
LAPTOP = {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False}
PHONE = {"width": 360, "height": 740, "deviceScaleFactor": 2, "mobile": True}
WAIT = 60  # seconds any one thing may take on a busy 2-core machine before the test fails


# ------------------------------------------------------------------ the server

@contextlib.contextmanager
def real_server(generator, token: str | None = None):
    """`textgen serve`'s app and batching engine under uvicorn on a free loopback port; yields its base URL."""
    from test_serve_http import Server

    server = Server(generator, token=token, name=MODEL_NAME, max_length=100_000)  # Stop asks for 20,000 chars
    try:
        yield f"http://127.0.0.1:{server.port}/"
    finally:
        server.close()


# ------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def generator():
    import textgen
    from textgen.pretrained import default_model_path

    return textgen.load(default_model_path())


@pytest.fixture(scope="module")
def serve(generator):
    """`with serve(token=None) as url:` a server of the page and the API, on a free loopback port.

    The one place that picks which server: any context manager `(generator, token) -> base URL`
    (ending in "/") that serves the same API fits here.
    """
    return functools.partial(real_server, generator)


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed: pip install -e '.[test]'")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.skip("headless Chromium is not installed: apt-get install chromium chromium-driver "
                    "(as .ci/run does)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    # --no-sandbox: Chromium's sandbox refuses to start as root, which CI runs as.
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1280,800"):
        options.add_argument(flag)
    # Explicit paths for both, so Selenium Manager never looks for (or downloads) a browser or driver.
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    try:
        yield driver
    finally:
        driver.quit()


# ------------------------------------------------------------------ helpers

def _open(browser, url, metrics):
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    browser.get(url)
    browser.execute_script("sessionStorage.clear()")
    _record_output_lengths(browser)


def _record_output_lengths(browser):
    """Every length the generated text in #output takes, however fast the pieces come.

    The page appends each piece by setting the text of the span after the seed's, which adds a
    new text node each time; a MutationObserver's records keep every one of those nodes.
    """
    browser.execute_script("""
        window.outputLengths = [];
        new MutationObserver((records) => {
            for (const record of records)
                for (const node of record.addedNodes)
                    if (node.nodeType === Node.TEXT_NODE && !record.target.classList.contains('seed'))
                        window.outputLengths.push(node.data.length);
        }).observe(document.getElementById('output'), {childList: true, subtree: true});
    """)


def _el(browser, element_id):
    return browser.find_element("id", element_id)


def _until(browser, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, WAIT, poll_frequency=0.05).until(lambda _: condition(), message=what)


def _status(browser) -> str:
    return _el(browser, "status").text


def _output(browser) -> str:
    return browser.execute_script("return document.getElementById('output').textContent")


def _generate(browser, seed: str, length: int):
    seed_box = _el(browser, "seed")
    seed_box.clear()
    seed_box.send_keys(seed)
    length_box = _el(browser, "length")
    length_box.clear()
    length_box.send_keys(str(length))
    _el(browser, "generate").click()


def _pending(url) -> int:
    with urllib.request.urlopen(url + "healthz", timeout=10) as response:
        return json.load(response)["pending"]


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def _streams_to_done(browser, length: int):
    """Generate and check the text arrived in pieces, then in full, ending with `done`."""
    _generate(browser, SEED, length)
    _until(browser, lambda: len(_output(browser)) > len(SEED), "no streamed text appeared in #output")
    assert _el(browser, "stop").is_enabled() and not _el(browser, "generate").is_enabled()
    _until(browser, lambda: _status(browser).startswith("done in"), "generation never finished")
    final = _output(browser)
    assert final.startswith(SEED) and len(final) > len(SEED) + length // 2
    growing = [n for n in browser.execute_script("return window.outputLengths") if 0 < n < len(final) - len(SEED)]
    assert len(set(growing)) >= 2, f"the text did not stream in pieces: lengths {growing}"
    assert _el(browser, "generate").is_enabled() and not _el(browser, "stop").is_enabled()


# ------------------------------------------------------------------ tests

def test_page_streams_text_on_a_laptop_and_a_phone(browser, serve, tmp_path):
    with serve() as url:
        for name, metrics in (("laptop", LAPTOP), ("phone", PHONE)):
            _open(browser, url, metrics)
            _until(browser, lambda: MODEL_NAME in _el(browser, "model-name").text, "no model card")
            _streams_to_done(browser, 600)
            _el(browser, "card").find_element("tag name", "summary").click()  # its JSON must wrap too
            width = browser.execute_script("return document.documentElement.scrollWidth")
            assert width <= metrics["width"], f"the page scrolls sideways at {metrics['width']} px"
            shot = tmp_path / f"playground-{name}.png"
            assert browser.save_screenshot(str(shot))
            assert _png_size(shot)[0] == metrics["width"] * metrics["deviceScaleFactor"]


def test_page_shows_the_model_card_and_the_temperature(browser, serve):
    with serve() as url:
        _open(browser, url, LAPTOP)
        card = _el(browser, "card")
        _until(browser, lambda: card.get_attribute("open") is None and _el(browser, "card-json").get_attribute(
            "textContent"), "the model card never loaded")
        card.find_element("tag name", "summary").click()
        assert "vocabulary" in card.text and "lstm" in card.text and "1,115,394 tokens" in card.text
        slider = _el(browser, "temperature")
        browser.execute_script("arguments[0].value = '1.5'; arguments[0].dispatchEvent(new Event('input'))", slider)
        assert _el(browser, "temperature-value").text == "1.50"


def test_page_names_the_field_of_a_refused_request(browser, serve):
    with serve() as url:
        _open(browser, url, LAPTOP)
        _el(browser, "seed").clear()
        _el(browser, "generate").click()
        _until(browser, lambda: "seed" in _status(browser), "the server's error was not shown")
        assert "error" in _el(browser, "status").get_attribute("class")
        assert _el(browser, "seed").get_attribute("aria-invalid") == "true"
        assert _el(browser, "generate").is_enabled()


def test_stop_ends_the_generation_on_the_page_and_on_the_server(browser, serve):
    with serve() as url:
        _open(browser, url, LAPTOP)
        _generate(browser, SEED, 20_000)
        _until(browser, lambda: len(_output(browser)) > len(SEED), "no streamed text appeared in #output")
        _until(browser, lambda: _pending(url) == 1, "the server is not generating")
        _el(browser, "stop").click()
        _until(browser, lambda: _status(browser).startswith("stopped"), "Stop did not stop the page")
        assert _el(browser, "generate").is_enabled() and not _el(browser, "stop").is_enabled()
        _until(browser, lambda: _pending(url) == 0, "the server kept generating after Stop")
        stopped = _output(browser)
        assert len(stopped) < len(SEED) + 20_000
        time.sleep(0.5)  # a piece still in flight would show here
        assert _output(browser) == stopped


def test_page_asks_for_the_token_and_sends_it(browser, serve):
    with serve(token="s3cret") as url:
        _open(browser, url, LAPTOP)
        token = _el(browser, "token")
        _until(browser, token.is_displayed, "the page did not ask for the token after a 401")
        assert "token" in _status(browser)
        token.send_keys("s3cret")
        _streams_to_done(browser, 300)
        assert browser.execute_script("return sessionStorage.getItem('textgen-token')") == "s3cret"
        _until(browser, lambda: MODEL_NAME in _el(browser, "model-name").text, "no card after the token")
        browser.refresh()  # the token outlives a reload of the tab
        _until(browser, lambda: MODEL_NAME in _el(browser, "model-name").text, "token forgotten on reload")
        assert not _el(browser, "token-box").is_displayed()
