"""A headless Chromium for the tests of the explorer pages, driven by Selenium.

The browser is Debian's ``chromium`` with its ``chromium-driver`` (``.ci/run`` installs them
when it runs as root with apt-get); Selenium is in the ``browser`` extra. Without either, the
tests that take ``chromium()`` skip and say which is missing.
"""

from __future__ import annotations

import shutil

import pytest

BINARIES = ("chromium", "chromedriver")


def chromium():
    """A headless Chromium (1400 x 900) that keeps its console log, or a skip naming what is
    missing."""
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium is not installed (pip install -e '.[browser]')"
    )
    paths = {name: shutil.which(name) for name in BINARIES}
    missing = [name for name, path in paths.items() if path is None]
    if missing:
        pytest.skip(
            f"no {' or '.join(missing)} on PATH: the browser tests need Debian's chromium and "
            "chromium-driver (apt-get install chromium chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,900", "--allow-file-access-from-files"):  # fmt: skip
        options.add_argument(argument)
    options.binary_location = paths["chromium"]
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=paths["chromedriver"])
    return webdriver.Chrome(service=service, options=options)


def console_errors(driver) -> list[str]:
    """The console messages of level SEVERE (errors, uncaught exceptions) since the last call."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
