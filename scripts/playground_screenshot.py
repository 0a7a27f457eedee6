"""The README's playground screenshot, taken as a person uses the page: real trait vectors, headless Chromium.

    python scripts/playground_screenshot.py --model gemma3-270m --out docs/serve_playground.png

Trains formality and verbosity vectors on the shipped pairs (`stf_jax.train_vector`, HF layer --layer, saved at
the default 0.15 x typical |h|), starts `python -m stf_jax.serve` on them, and in Chromium (Selenium, Debian's
chromium-driver) types the prompt, picks the vector, moves the strength slider with the keyboard, presses
Generate, waits for both streams and saves the screenshot. Prints both completions.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--layer", type=int, default=12, help="HF layer of the trained vectors [12]")
    parser.add_argument("--vector", default="formality", help="the vector picked on the page [formality]")
    parser.add_argument("--strength", type=float, default=1.0, help="slider position (stored scale; 1 = 0.15 x |h|) [1]")
    parser.add_argument("--prompt", default="Hey, can you tell me about the meeting tomorrow?")
    parser.add_argument("--out", default="docs/serve_playground.png")
    args = parser.parse_args(argv)

    import stf_jax
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait

    vectors = Path(tempfile.mkdtemp(prefix="serve_vectors_"))
    model = stf_jax.load_model(args.model)
    for trait in ("formality", "verbosity"):
        stf_jax.train_vector(model, "shipped", layers=args.layer, trait=trait).save(vectors / f"{trait}.gguf")
    del model
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "stf_jax.serve", "--model", args.model, "--vectors", str(vectors),
                               "--port", str(port), "--slots", "2", "--context", "256"])
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,800"):
        options.add_argument(flag)
    driver = None
    try:
        deadline = time.monotonic() + 300
        while b'"ok"' not in _get(base + "/health"):
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the server did not become ready")
            time.sleep(1)
        driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
        driver.get(base + "/")
        WebDriverWait(driver, 60).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
        prompt = driver.find_element(By.ID, "prompt")
        prompt.clear()
        prompt.send_keys(args.prompt)
        Select(driver.find_element(By.ID, "vector")).select_by_value(args.vector)
        slider = driver.find_element(By.ID, "strength")
        slider.click()
        step = float(slider.get_attribute("step"))
        for _ in range(200):
            value = float(slider.get_attribute("value"))
            if abs(value - args.strength) < step / 2:
                break
            slider.send_keys(Keys.ARROW_RIGHT if value < args.strength else Keys.ARROW_LEFT)
        driver.find_element(By.ID, "generate").click()
        WebDriverWait(driver, 300).until(lambda d: all(d.find_element(By.ID, i).get_attribute("data-done") == "1"
                                                       for i in ("plain", "steered")))
        for name in ("plain", "steered"):
            print(f"{name}: {driver.find_element(By.ID, name).text!r}")
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(args.out)
        print(f"wrote {args.out}")
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        server.wait(30)
    return 0


def _get(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.read()
    except OSError:
        return b""


if __name__ == "__main__":
    sys.exit(main())
