"""The page in a real browser: headless Chromium from Debian (``chromium`` and
``chromium-driver``, driven by selenium; nothing downloads a browser) on a server on a free
loopback port. It generates a Fashion-MNIST class image and an emoji prompt image (the second
with the keyboard), watches the live view go through every step, sees the final images in the
gallery, paints an inpainting mask, cancels with Escape, and checks the page at phone width.

A screenshot is saved under the test's tmp folder, and to $PIXDIFF_SCREENSHOT when set (the
README's docs/serve/page.png is made with PIXDIFF_SCREENSHOT=docs/serve/page.png). When no
browser can be started the test fails, saying what to install.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from serve_helpers import held, serving

from pixdiff.serve.app import create_app
from pixdiff.serve.config import ServeConfig

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
INSTALL = "install Debian's chromium and chromium-driver: apt-get install chromium chromium-driver"
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", "--window-size=1280,900")  # fmt: skip


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """A headless Chromium; fails (never skips) when none can be started."""
    try:
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is missing: pip install -e '.[dev]' (make setup does)")
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists():
            pytest.fail(f"{path} is missing: {INSTALL} (make setup does)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    try:
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    except WebDriverException as e:
        pytest.fail(f"headless Chromium did not start ({e.msg}); {INSTALL}")
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page(browser, pool):
    app = create_app(pool, ServeConfig(batch_window=0.0))
    with serving(app) as url:
        browser.get(url + "/")
        wait(browser, lambda d: d.find_elements("css selector", "#model option"))
        yield browser


def wait(driver, condition, timeout: float = 60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition)


def set_value(driver, element_id: str, value) -> None:
    element = driver.find_element("id", element_id)
    element.clear()
    element.send_keys(str(value))


def gallery(driver) -> list:
    return driver.find_elements("css selector", "#gallery .card img")


def loaded(driver, element) -> bool:
    return driver.execute_script(
        "return arguments[0].complete && arguments[0].naturalWidth", element
    )


def run_and_watch(driver, steps: int, cards: int) -> None:
    """Wait for the job's result card; the live view must have shown every step 0..steps."""
    wait(driver, lambda d: len(gallery(d)) == cards)
    assert driver.execute_script("return window.pixdiff.steps") == list(range(steps + 1))
    assert driver.find_element("id", "step-counter").text == f"step {steps} / {steps}"
    assert driver.find_element("id", "progress").get_attribute("value") == "1"
    for element_id in ("xt", "x0"):
        assert loaded(driver, driver.find_element("id", element_id))
    assert loaded(driver, gallery(driver)[0])


def test_the_page_generates_live_in_a_real_browser(page, pool, tmp_path):
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    Select(page.find_element("id", "model")).select_by_value("fashion")
    Select(page.find_element("id", "class")).select_by_visible_text("Sneaker")
    set_value(page, "steps", 6)
    set_value(page, "n", 4)
    page.find_element("id", "run").click()
    run_and_watch(page, 6, 1)
    card = page.find_element("css selector", "#gallery .card")
    assert "Sneaker" in card.text and "pixdiff sample --class Sneaker" in card.text
    assert card.find_element("link text", "Download PNG").get_attribute("href").startswith(
        "data:image/png;base64,")  # fmt: skip

    Select(page.find_element("id", "model")).select_by_value("emoji")
    set_value(page, "steps", 5)
    set_value(page, "n", 2)
    prompt = page.find_element("id", "prompt")
    prompt.send_keys("red apple", Keys.ENTER)  # the keyboard submits the form
    run_and_watch(page, 5, 2)
    assert "“red apple”" in page.find_element("css selector", "#gallery .card").text
    shot = tmp_path / "page.png"
    page.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("PIXDIFF_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["PIXDIFF_SCREENSHOT"])


def test_inpainting_with_a_brush_drawn_mask(page):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    Select(page.find_element("id", "model")).select_by_value("fashion")
    set_value(page, "steps", 3)
    before = len(gallery(page))
    page.find_element("id", "run").click()  # a Fashion-MNIST image to inpaint
    wait(page, lambda d: len(gallery(d)) == before + 1)
    page.find_element("css selector", "#gallery .card").find_element(
        "xpath", ".//button[text()='Use as input']").click()  # fmt: skip
    page.find_element("css selector", "input[value=inpaint]").click()
    canvas = page.find_element("id", "mask")
    ActionChains(page).move_to_element(canvas).click_and_hold().move_by_offset(40, 10) \
        .release().perform()  # fmt: skip
    canvas.send_keys(Keys.ARROW_RIGHT, Keys.SPACE, Keys.ARROW_DOWN, Keys.SPACE)
    painted = page.execute_script("return window.pixdiff.mask.bits.reduce((a, b) => a + b)")
    assert painted > 4
    set_value(page, "steps", 4)
    page.find_element("id", "run").click()
    wait(page, lambda d: len(gallery(d)) == before + 2)
    assert "pixdiff inpaint" in page.find_element("css selector", "#gallery .card").text
    page.find_element("css selector", "input[value=generate]").click()


def test_escape_cancels_a_running_job(page, pool):
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    Select(page.find_element("id", "model")).select_by_value("fashion")
    with held(pool.get("fashion")):
        page.find_element("id", "run").click()
        wait(page, lambda d: d.execute_script("return window.pixdiff.steps.length") >= 1)
        page.find_element("tag name", "body").send_keys(Keys.ESCAPE)
        wait(page, lambda d: d.find_element("id", "status").text == "cancelled")
    assert page.find_element("id", "run").is_enabled()


def test_the_page_fits_a_phone(page):
    page.set_window_size(390, 844)
    try:
        width, inner = page.execute_script(
            "return [document.documentElement.scrollWidth, window.innerWidth]")  # fmt: skip
        assert width <= inner
        assert page.find_element("id", "run").is_displayed()
    finally:
        page.set_window_size(1280, 900)
