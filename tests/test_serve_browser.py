"""The page in a real headless browser (the system's Chromium driven by Selenium) against a real
`var-fast serve` process: pick a class by name, generate, see the scales arrive and the final images;
then paint a mask in the editing tab and get an edited image. The screenshot of the page is saved to
the test's folder, and to $VAR_FAST_SERVE_SCREENSHOT when set (README's docs/serve_page.png)."""
import base64
import io
import os
import shutil

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="var-fast serve needs the serve extra: pip install 'var_fast[serve]'")
pytest.importorskip("uvicorn", reason="var-fast serve needs the serve extra: pip install 'var_fast[serve]'")
selenium = pytest.importorskip("selenium", reason="the browser test needs selenium (requirements-dev.txt)")

from serve_process import Server  # noqa: E402

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
DRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and DRIVER):
        missing = pytest.fail if os.environ.get("VAR_FAST_REQUIRE_BROWSER") == "1" else pytest.skip  # CI: fail
        missing("no Chromium and chromedriver on this machine (Debian: apt-get install chromium chromium-driver; "
                ".ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1000", "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(log_path=str(tmp_path_factory.mktemp("serve") / "server.log"))
    yield srv
    srv.close()


def wait(driver, condition, timeout=240):
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)


def data_url_pixels(src):
    from PIL import Image
    return np.array(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("RGB"))


def test_generate_then_edit_in_the_browser(browser, server, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    d = browser
    d.get(server.url + "/")
    wait(d, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1", 60)
    assert "classes" in d.find_element(By.ID, "model").text
    options = [o.get_attribute("value") for o in d.find_elements(By.CSS_SELECTOR, "#class-list option")]
    assert options[3] == "3: triangle" and len(options) == 10

    d.find_element(By.ID, "class").send_keys("triang")  # a unique part of a name picks the class
    for field, value in (("n", "2"), ("seed", "7")):
        box = d.find_element(By.ID, field)
        box.clear()
        box.send_keys(value)
    d.find_element(By.ID, "generate-run").click()
    status = d.find_element(By.ID, "generate-status")
    wait(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results img")) == 2 or "error" in status.get_attribute("class"))
    assert "done in" in status.text, status.text
    scales = d.find_elements(By.CSS_SELECTOR, "#scale-strip figure.scale")
    assert len(scales) >= 1, "no intermediate scale was shown"
    from var_fast.default_model import default_model_info  # noqa: PLC0415
    before_last = len(default_model_info()["patch_nums"]) - 1  # every scale but the last, which is the image
    assert [s.get_attribute("data-scale") for s in scales] == [str(si) for si in range(before_last)]
    settings = d.find_element(By.ID, "generate-settings").text
    assert '"seed": 7' in settings and '"class_name": "triangle"' in settings and "var-fast sample" in settings
    links = d.find_elements(By.CSS_SELECTOR, "#results a.download")
    assert len(links) == 2 and links[0].get_attribute("download").endswith(".png")
    assert links[0].get_attribute("href").startswith("data:image/png;base64,")
    assert "done in" in d.find_element(By.ID, "generate-status").text
    d.save_screenshot(str(tmp_path / "serve_page.png"))
    target = os.environ.get("VAR_FAST_SERVE_SCREENSHOT")
    if target:
        d.save_screenshot(target)

    # editing: reuse the first generated image, paint the middle, regenerate it as a checkerboard
    first = data_url_pixels(d.find_element(By.CSS_SELECTOR, "#results img").get_attribute("src"))
    d.find_element(By.CSS_SELECTOR, "#results .edit-this").click()
    assert d.find_element(By.ID, "edit").is_displayed()
    canvas = d.find_element(By.ID, "edit-canvas")
    wait(d, lambda d: "paint" in d.find_element(By.ID, "edit-status").text, 30)
    chain = ActionChains(d).move_to_element_with_offset(canvas, -40, -40).click_and_hold()
    for dy in range(-40, 41, 8):
        chain = chain.move_to_element_with_offset(canvas, -40, dy).move_to_element_with_offset(canvas, 40, dy)
    chain.release().perform()
    d.find_element(By.ID, "edit-class").send_keys("checkerboard")
    d.find_element(By.ID, "edit-seed").send_keys("3")
    d.find_element(By.ID, "edit-run").click()
    status = d.find_element(By.ID, "edit-status")
    wait(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#edit-results img")) == 3 or "error" in status.get_attribute("class"))
    assert "done in" in status.text, status.text
    edited = data_url_pixels(d.find_element(By.CSS_SELECTOR, "#edit-results img").get_attribute("src"))
    mask = data_url_pixels(d.find_elements(By.CSS_SELECTOR, "#edit-results img")[2].get_attribute("src"))[..., 0]
    assert edited.shape == first.shape == (64, 64, 3)
    painted = mask < 128
    assert 0.1 < painted.mean() < 0.9, f"the painted region covers {painted.mean():.0%} of the image"
    assert painted[32, 32] and not painted[2, 2]
    diff = np.abs(edited.astype(int) - first.astype(int)).sum(-1)
    assert diff[painted].mean() > diff[~painted].mean(), "the painted region did not change more than the rest"
    settings = d.find_element(By.ID, "edit-settings").text
    assert '"kind": "edit"' in settings and '"label": 9' in settings
    d.save_screenshot(str(tmp_path / "serve_edit.png"))
