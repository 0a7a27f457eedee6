"""The playground page (GET /) used as a person would: in headless Chromium (Selenium with Debian's chromium and
chromium-driver) against the real server, `python -m stf_jax.serve`, started as a subprocess.

Load the page, type a prompt, choose a vector, move the strength slider with the keyboard, press Generate and
read both streamed completions off the page; they must be exactly what POST /v1/completions answers for the
same settings without and with the vector. Also: an API error shown on the page, an empty library said so,
and a server with --api-key (the page takes the key from ?api_key= and sends it on its own requests).

STF_JAX_WRITE_SCREENSHOT=1 also copies the page's screenshot to docs/serve_playground.png (for the README).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from stf_jax.core.vector import SteeringVector

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
REPO = Path(__file__).resolve().parents[1]
PROMPT = "The weather today is"
MAX_TOKENS = 32
KEY = "secret"
STARTUP_S = 180

if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip("the playground test needs Chromium and its driver: apt-get install chromium chromium-driver",
                allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium (the test extra)")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402


def demo_vector(path: Path) -> Path:
    """A random direction at HF layer 18 of smollm2-135m, stored with length 60 (typical |h| there is ~194):
    at strength 1.5 it changes smollm2's greedy text from the first token."""
    rng = np.random.default_rng(0)
    v = rng.normal(size=576).astype(np.float32)
    v /= np.linalg.norm(v)
    return SteeringVector({18: v * 60.0}, model="smollm2-135m", trait="demo").save(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(base: str, path: str, body: dict | None = None, key: str | None = None) -> tuple[int, dict]:
    """(HTTP status, JSON answer) of GET (body None) or POST path."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = None if body is None else json.dumps(body).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(base + path, data, headers), timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def completion(base: str, strength: float | None = None, key: str | None = None, max_tokens: int = MAX_TOKENS) -> str:
    """What the API answers for the page's settings (temperature 0, seed 0), unsteered or with demo x strength."""
    body = {"prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0, "seed": 0}
    if strength is not None:
        body["steering"] = [{"vector": "demo", "strength": strength, "scale": "stored"}]
    status, answer = request(base, "/v1/completions", body, key)
    assert status == 200, answer
    return answer["choices"][0]["text"]


class Server:
    """`python -m stf_jax.serve` on a free port, up until stop()."""

    def __init__(self, vectors: Path, log: Path, *extra: str, key: str | None = None):
        self.port, self.key, self.log = free_port(), key, log
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stf_jax.serve", "--model", "smollm2-135m", "--vectors", str(vectors),
             "--port", str(self.port), "--slots", "2", "--context", "128", *extra],
            cwd=REPO, stdout=log.open("wb"), stderr=subprocess.STDOUT)

    def wait_ready(self) -> "Server":
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"the server exited ({self.proc.returncode}):\n{self.log.read_text()[-3000:]}")
            try:
                if request(self.base, "/health", key=self.key)[1].get("status") == "ok":
                    return self
            except OSError:
                pass
            time.sleep(0.5)
        pytest.fail(f"the server was not ready in {STARTUP_S} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    directory = tmp_path_factory.mktemp("vectors")
    demo_vector(directory / "demo.gguf")
    return directory


@pytest.fixture(scope="module")
def server(library, tmp_path_factory):
    srv = Server(library, tmp_path_factory.mktemp("log") / "server.log")
    try:
        yield srv.wait_ready()
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory):
    """A server with --api-key and an empty library (the test uploads the vector)."""
    srv = Server(tmp_path_factory.mktemp("empty"), tmp_path_factory.mktemp("log") / "keyed.log", "--api-key", KEY,
                 key=KEY)
    try:
        yield srv.wait_ready()
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def driver():
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(arg)
    options.binary_location = str(CHROMIUM)
    browser = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    browser.set_page_load_timeout(60)
    try:
        yield browser
    finally:
        browser.quit()


# ------------------------------------------------------------------ what a person does on the page

def open_page(driver, url: str) -> None:
    driver.get(url)
    WebDriverWait(driver, 30).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")


def type_into(driver, element_id: str, text: str) -> None:
    box = driver.find_element(By.ID, element_id)
    box.clear()
    box.send_keys(text)


def move_slider(driver, right: int = 0, left: int = 0) -> str:
    """Press the arrow keys on the focused slider; its value as the page holds it."""
    slider = driver.find_element(By.ID, "strength")
    slider.send_keys(*[Keys.ARROW_RIGHT] * right, *[Keys.ARROW_LEFT] * left)
    return slider.get_property("value")


def generate(driver, timeout: float = 120) -> tuple[str, str]:
    """Press Generate and wait for both streams to finish; (unsteered text, steered text) from the page."""
    driver.find_element(By.ID, "generate").click()
    WebDriverWait(driver, timeout).until(
        lambda d: all(d.find_element(By.ID, side).get_attribute("data-done") == "1" for side in ("plain", "steered")))
    return tuple(driver.find_element(By.ID, side).get_property("textContent") for side in ("plain", "steered"))


def status(driver) -> tuple[str, bool]:
    line = driver.find_element(By.ID, "status")
    return line.text, "error" in (line.get_attribute("class") or "")


def check_screenshot(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    try:
        from PIL import Image
    except ImportError:
        return
    with Image.open(path) as image:
        assert image.width >= 800 and image.height >= 500, image.size
        rgb = image.convert("RGB")
        assert len(rgb.getcolors(maxcolors=1 << 20) or ()) > 50  # text, colours, controls: not a blank page
        assert all(lo < hi for lo, hi in rgb.getextrema())


# ------------------------------------------------------------------ tests

def test_playground_streams_unsteered_and_steered_side_by_side(server, driver, tmp_path):
    open_page(driver, server.base + "/")
    assert driver.title == "stf_jax playground"
    vector = Select(driver.find_element(By.ID, "vector"))
    assert [o.get_attribute("value") for o in vector.options] == ["demo"]

    type_into(driver, "prompt", PROMPT)
    vector.select_by_value("demo")
    type_into(driver, "max-tokens", str(MAX_TOKENS))
    assert driver.find_element(By.ID, "strength").get_property("value") == "1"  # the default
    value = move_slider(driver, right=12, left=2)  # 1 -> 1.6 -> 1.5 in steps of 0.05
    assert value == "1.5" and driver.find_element(By.ID, "strength-value").text == "1.50"
    strength = float(value)

    plain, steered = generate(driver)
    assert plain.strip() and steered.strip() and plain != steered
    message, error = status(driver)
    assert not error and message.startswith("Done"), message
    assert driver.find_element(By.ID, "plain-title").text == "Unsteered"
    assert driver.find_element(By.ID, "steered-title").text == "Steered (demo \u00d7 1.50)"
    assert driver.find_element(By.ID, "plain-echo").get_property("textContent") == PROMPT

    # the page shows exactly what the API answers for the same settings (same seed: only the steering differs)
    assert plain == completion(server.base)
    assert steered == completion(server.base, strength)

    shot = tmp_path / "playground.png"
    assert driver.save_screenshot(str(shot))
    check_screenshot(shot)
    if os.environ.get("STF_JAX_WRITE_SCREENSHOT") == "1":
        (REPO / "docs").mkdir(exist_ok=True)
        shutil.copyfile(shot, REPO / "docs" / "serve_playground.png")


def test_playground_shows_api_errors(server, driver):
    open_page(driver, server.base + "/")
    type_into(driver, "max-tokens", "1000")  # over the server's context of 128
    generate(driver, timeout=30)
    message, error = status(driver)
    expected = request(server.base, "/v1/completions", {"prompt": PROMPT, "max_tokens": 1000})[1]["error"]["message"]
    assert error and message == f"Error 400: {expected}", message
    assert driver.find_element(By.ID, "plain").get_attribute("data-finish") == "error"


def test_playground_with_api_key_and_an_empty_library(keyed_server, driver, library):
    base = keyed_server.base
    for path in ("/", "/v1/vectors"):  # no key: 401 with OpenAI's error shape
        code, answer = request(base, path)
        assert code == 401 and answer["error"]["code"] == "invalid_api_key", answer

    open_page(driver, f"{base}/?api_key={KEY}")
    message, error = status(driver)
    assert error and "no vectors" in message
    assert not driver.find_element(By.ID, "generate").is_enabled()

    upload = urllib.request.Request(f"{base}/v1/vectors/demo", (library / "demo.gguf").read_bytes(),
                                    {"Authorization": f"Bearer {KEY}"}, method="PUT")
    with urllib.request.urlopen(upload, timeout=60) as answer:
        assert json.loads(answer.read())["name"] == "demo"

    open_page(driver, f"{base}/?api_key={KEY}")  # reload: the page lists the upload and sends the key
    Select(driver.find_element(By.ID, "vector")).select_by_value("demo")
    type_into(driver, "max-tokens", "8")
    strength = float(move_slider(driver, left=4))  # 1 -> 0.8
    assert strength == pytest.approx(0.8)
    plain, steered = generate(driver)
    message, error = status(driver)
    assert not error, message
    assert plain == completion(base, key=KEY, max_tokens=8)
    assert steered == completion(base, strength, key=KEY, max_tokens=8)
