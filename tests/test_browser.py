"""The dashboard in a real browser: `streamlit run app/main.py` serves a storage that a seeded
study then fills, headless Chromium loads the page, and the Pareto chart with its v1/v2
reference markers must render, follow new trials and open a design's details on a click.

    pytest -m browser tests/test_browser.py                  # the check, screenshot in tmp_path
    DASHBOARD_SCREENSHOT=1 pytest -m browser tests/test_browser.py   # also write docs/dashboard.png
    python -m tests.test_browser [docs/dashboard.png [STORAGE STUDY]]   # only the screenshot

Needs Debian's chromium and chromium-driver; without them the test is skipped, except under CI
(CI=true), where it fails instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from explorer.store import load_study
from tests.helpers import make_ablation, make_study

ROOT = Path(__file__).resolve().parents[1]
README_SCREENSHOT = ROOT / "docs" / "dashboard.png"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
WINDOW = (1440, 1160)
DEMO_STUDY = "fashion-mnist-inception-block"  # the name `explorer.search` gives by default


def _missing() -> str | None:
    """Why the browser test cannot run here, or None."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (Path(path).exists() or shutil.which(path)):
            return f"{path} is not installed (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_dashboard(storage: str, study: str, log: Path, cwd: Path = ROOT) -> Iterator[str]:
    """`streamlit run app/main.py` in `cwd` on a free port for the duration; yields the URL."""
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(ROOT / "app" / "main.py"),
        "--server.headless",
        "true",
        "--server.port",
        str(port),
        "--server.address",
        "127.0.0.1",
        "--server.fileWatcherType",
        "none",
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "viewer",
        "--",
        "--storage",
        storage,
        "--study",
        study,
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"streamlit exited with {proc.returncode}: {log.read_text()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                    if resp.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"streamlit did not answer on {url}: {log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def chromium(profile: Path) -> Iterator[object]:
    """Headless Chromium driven by Debian's chromedriver, with a fresh profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


# The labels drawn in the Pareto chart's SVG (reference markers carry their name as text).
_PLOT_TEXTS = """
const plot = document.querySelector('.js-plotly-plot');
if (!plot) return [];
return Array.from(plot.querySelectorAll('text')).map(t => t.textContent.trim());
"""


def wait_for_pareto_chart(driver, timeout: float = 120) -> list[str]:
    """Wait until the Pareto chart shows its v1/v2 markers and the page is idle; returns the
    texts of the chart's SVG (raises TimeoutException if it never shows)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, timeout, poll_frequency=0.5)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot"))
    wait.until(lambda d: {"v1", "v2"} <= set(d.execute_script(_PLOT_TEXTS)))
    # Let Streamlit finish the run (its running indicator goes) and Plotly settle.
    wait.until(
        lambda d: (
            not d.find_elements(By.CSS_SELECTOR, "[data-testid='stStatusWidget'] img, .stSpinner")
        )
    )
    time.sleep(1.5)
    return driver.execute_script(_PLOT_TEXTS)


def click_reference_marker(driver, name: str, timeout: float = 90) -> str:
    """Click a reference's marker in the Pareto chart; selecting a point opens its details:
    returns the title of the block drawing then shown.

    The click is repeated while it does not take: the live refresh may redraw the chart under
    the pointer, and a slow machine may take a while to answer.
    """
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    tab = "//*[@role='tab'][@aria-selected='true'][normalize-space()='Trial details']"
    deadline = time.monotonic() + timeout
    while True:
        try:
            traces = driver.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .scatterlayer .trace")
            for trace in traces:
                texts = trace.find_elements(By.CSS_SELECTOR, ".textpoint text")
                if [t.text for t in texts] == [name]:
                    marker = trace.find_element(By.CSS_SELECTOR, ".points path")
                    ActionChains(driver).move_to_element(marker).click().perform()
                    break
            WebDriverWait(driver, 15, poll_frequency=0.5).until(
                lambda d: d.find_elements(By.XPATH, tab)
            )
            break
        except (StaleElementReferenceException, TimeoutException):
            if time.monotonic() > deadline:
                raise
    # the block drawing of the opened trial is titled with its label
    titles = (
        "return Array.from(document.querySelectorAll('.js-plotly-plot .gtitle'))"
        ".map(t => t.textContent);"
    )
    WebDriverWait(driver, max(10.0, deadline - time.monotonic()), poll_frequency=0.5).until(
        lambda d: any("each conv" in t for t in d.execute_script(titles))
    )
    return next(t for t in driver.execute_script(titles) if "each conv" in t)


def screenshot_dashboard(storage: str, study: str, out: Path, workdir: Path) -> None:
    """Serve the study from `workdir` and save the page, once its Pareto chart shows, at `out`."""
    with serve_dashboard(storage, study, workdir / "streamlit.log", cwd=workdir) as url:
        with chromium(workdir / "chrome-profile") as driver:
            driver.get(url)
            wait_for_pareto_chart(driver)
            out.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(out))


DEMO_JOURNAL = "studies/explorer.journal"  # relative to the server's folder, as a user types it


def demo_study(folder: Path) -> str:
    """A seeded study big enough for a readable chart in `folder`; returns its journal path
    relative to `folder`."""
    make_study(
        str(folder / DEMO_JOURNAL),
        name=DEMO_STUDY,
        n_search=40,
        seed=3,
        weights=False,
        pruned=4,
        failed=2,
    )
    return DEMO_JOURNAL


def _metric(driver, index: int = 0) -> str:
    from selenium.webdriver.common.by import By

    values = driver.find_elements(By.CSS_SELECTOR, "[data-testid='stMetricValue']")
    return values[index].text if len(values) > index else ""


def _add_trial(storage: str) -> None:
    """What a running search does: one more finished trial in the study."""
    study = load_study(storage, DEMO_STUDY)
    donor = study.trials[5]
    study.add_trial(
        optuna.trial.create_trial(
            params=donor.params,
            distributions=donor.distributions,
            values=donor.values,
            user_attrs=donor.user_attrs,
        )
    )


@pytest.mark.browser
def test_dashboard_in_chromium(tmp_path: Path) -> None:
    """From an empty storage to a running search: the page shows the search command, reloads
    when the study appears, draws the Pareto chart with v1/v2, follows new trials, and opens a
    design's details when its point is clicked."""
    why = _missing()
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser test cannot run under CI: {why}")
        pytest.skip(why)
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    shot = tmp_path / "dashboard.png"
    with serve_dashboard(DEMO_JOURNAL, DEMO_STUDY, tmp_path / "streamlit.log", cwd=tmp_path) as url:
        with chromium(tmp_path / "chrome-profile") as driver:
            try:
                driver.get(url)
                wait = WebDriverWait(driver, 120, poll_frequency=0.5)
                code = "[data-testid='stCode']"
                wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, code))
                assert (
                    "python -m explorer.search --trials 100"
                    in driver.find_element(By.CSS_SELECTOR, code).text
                )
                demo_study(tmp_path)  # the search starts: the page reloads by itself
                assert {"v1", "v2"} <= set(wait_for_pareto_chart(driver))
                driver.save_screenshot(str(shot))
                trials = int(_metric(driver))
                _add_trial(str(tmp_path / DEMO_JOURNAL))  # the live refresh picks it up
                wait.until(lambda d: _metric(d) == str(trials + 1))
                drawn = click_reference_marker(driver, "v1")  # its block, at stage 1's widths
                assert drawn == "v1, stage 1 of 2, widths x0.25 · each conv: conv → ReLU"
            except Exception:
                # what the page and the server looked like, shown with the failure
                driver.save_screenshot(str(tmp_path / "failure.png"))
                print(f"page at failure: {tmp_path / 'failure.png'}")
                print((tmp_path / "streamlit.log").read_text()[-3000:])
                raise
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
    if os.environ.get("DASHBOARD_SCREENSHOT"):
        README_SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, README_SCREENSHOT)


_BLOCK_TITLES = (
    "return Array.from(document.querySelectorAll('.js-plotly-plot .gtitle'))"
    ".map(t => t.textContent);"
)


def test_ablation_tab_in_chromium(tmp_path: Path) -> None:
    """A stored ablation opens in the Ablation tab as a waterfall; clicking a step's bar draws
    that step's two designs side by side."""
    why = _missing()
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser test cannot run under CI: {why}")
        pytest.skip(why)
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    journal = tmp_path / DEMO_JOURNAL
    make_study(str(journal), name=DEMO_STUDY, n_search=8, seed=0, weights=False)
    make_ablation(str(journal), DEMO_STUDY, seeds=3)
    with serve_dashboard(str(journal), DEMO_STUDY, tmp_path / "streamlit.log") as url:
        with chromium(tmp_path / "chrome-profile") as driver:
            try:
                driver.get(url)
                wait = WebDriverWait(driver, 120, poll_frequency=0.5)
                wait_for_pareto_chart(driver)
                tab = "//*[@role='tab'][normalize-space()='Ablation']"
                wait.until(lambda d: d.find_elements(By.XPATH, tab))[0].click()
                wait.until(lambda d: "v1 -> v2" in d.execute_script(_BLOCK_TITLES))
                # the fourth bar is the branch-widths step (after v1, batch norm, factorization)
                want = ("v1 +bn +factorization ·", "v1 +bn +factorization +widths ·")
                deadline = time.monotonic() + 90
                while True:
                    try:
                        plots = driver.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")
                        (plot,) = [p for p in plots if "v1 -> v2" in p.text]
                        bar = plot.find_elements(By.CSS_SELECTOR, ".barlayer .point path")[3]
                        ActionChains(driver).move_to_element(bar).click().perform()
                        WebDriverWait(driver, 15, poll_frequency=0.5).until(
                            lambda d: all(
                                any(t.startswith(w) for t in d.execute_script(_BLOCK_TITLES))
                                for w in want
                            )
                        )
                        break
                    except (StaleElementReferenceException, TimeoutException, ValueError):
                        if time.monotonic() > deadline:
                            raise
            except Exception:
                driver.save_screenshot(str(tmp_path / "failure.png"))
                print(f"page at failure: {tmp_path / 'failure.png'}")
                print((tmp_path / "streamlit.log").read_text()[-3000:])
                raise


_PLOT_TEXT = (
    "return Array.from(document.querySelectorAll('.js-plotly-plot text'))"
    ".map(t => t.textContent.trim());"
)


@pytest.mark.browser
def test_verified_study_in_chromium(tmp_path: Path) -> None:
    """A study whose claims were raced (issue 40): the front is labelled with how many held, the
    Verified claims tab draws the retrained designs and the claims in their verdicts' colours with
    the rule, and clicking the claimant that held opens its details with its verification."""
    why = _missing()
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser test cannot run under CI: {why}")
        pytest.skip(why)
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from explorer.analysis import RULE
    from tests.test_app_verdicts import make_verified_study

    journal = tmp_path / DEMO_JOURNAL
    make_verified_study(str(journal), DEMO_STUDY)
    with serve_dashboard(str(journal), DEMO_STUDY, tmp_path / "streamlit.log") as url:
        with chromium(tmp_path / "chrome-profile") as driver:
            try:
                driver.get(url)
                wait = WebDriverWait(driver, 120, poll_frequency=0.5)
                wait_for_pareto_chart(driver)
                label = "search front at smoke: single runs; 1 of 4 claims held at smokex10"
                assert label in driver.execute_script(_BLOCK_TITLES)
                tab = "//*[@role='tab'][normalize-space()='Verified claims']"
                wait.until(lambda d: d.find_elements(By.XPATH, tab))[0].click()
                wait.until(
                    lambda d: (
                        {"held (better)", "not held (worse)"} <= set(d.execute_script(_PLOT_TEXT))
                    )
                )
                titles = driver.execute_script(_BLOCK_TITLES)
                assert any(t.startswith("retrained at smokex10: test accuracy") for t in titles)
                assert any(
                    t.startswith("each claim at smokex10: test accuracy, design") for t in titles
                )
                # the rest of the tab may still be coming: the table, then the rule below it
                wanted = ("1 of 4 claims held when retrained at smokex10", " ".join(RULE.split()))
                wait.until(
                    lambda d: all(
                        w in " ".join(d.find_element(By.TAG_NAME, "body").text.split())
                        for w in wanted
                    )
                )
                driver.save_screenshot(str(tmp_path / "verified.png"))
                # the claimant that held: the first trace of the retrained designs' chart
                deadline = time.monotonic() + 90
                opened = (
                    "//*[@role='tab'][@aria-selected='true'][normalize-space()='Trial details']"
                )
                while True:
                    try:
                        plots = driver.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")
                        (plot,) = [p for p in plots if "retrained at smokex10" in p.text]
                        point = plot.find_element(
                            By.CSS_SELECTOR, ".scatterlayer .trace .points path"
                        )
                        ActionChains(driver).move_to_element(point).click().perform()
                        WebDriverWait(driver, 15, poll_frequency=0.5).until(
                            lambda d: d.find_elements(By.XPATH, opened)
                        )
                        break
                    except (StaleElementReferenceException, TimeoutException, ValueError):
                        if time.monotonic() > deadline:
                            raise
                wait.until(
                    lambda d: (
                        "retrained at smokex10: test accuracy"
                        in d.find_element(By.TAG_NAME, "body").text
                    )
                )
            except Exception:
                driver.save_screenshot(str(tmp_path / "failure.png"))
                print(f"page at failure: {tmp_path / 'failure.png'}")
                print((tmp_path / "streamlit.log").read_text()[-3000:])
                raise


@pytest.mark.browser
def test_hostile_study_in_chromium(tmp_path: Path) -> None:
    """A study whose names and notes hold markup, and trials that are malformed or enormous:
    the page draws it, shows the markup as text (nothing runs, no element is injected) and a
    trial's shortened note where that trial is opened."""
    why = _missing()
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser test cannot run under CI: {why}")
        pytest.skip(why)
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.test_dashboard_security import HOSTILE_REFERENCE, HOSTILE_STUDY, make_hostile_study

    journal = tmp_path / DEMO_JOURNAL
    says = make_hostile_study(str(journal))
    (markup_trial,) = [n for n, note in says.items() if note.startswith("<img")]
    with serve_dashboard(str(journal), HOSTILE_STUDY, tmp_path / "streamlit.log") as url:
        with chromium(tmp_path / "chrome-profile") as driver:
            try:
                # any alert() the study's markup managed to run is recorded
                driver.execute_cdp_cmd(
                    "Page.addScriptToEvaluateOnNewDocument",
                    {"source": "window.alert = () => { window.__alerted = true; };"},
                )
                driver.get(url)
                wait = WebDriverWait(driver, 120, poll_frequency=0.5)
                assert HOSTILE_REFERENCE in wait_for_pareto_chart(driver)  # drawn as its name
                headings = [h.text for h in driver.find_elements(By.CSS_SELECTOR, "h1")]
                assert HOSTILE_STUDY in headings
                tab = "//*[@role='tab'][normalize-space()='Trial details']"
                wait.until(lambda d: d.find_elements(By.XPATH, tab))[0].click()
                picker = "//*[@data-testid='stSelectbox'][.//*[normalize-space()='Trial']]//input"
                box = wait.until(lambda d: d.find_elements(By.XPATH, picker))[0]
                box.click()
                box.send_keys(f"#{markup_trial} · fail")
                box.send_keys(Keys.ENTER)
                alerts = "[data-testid='stAlert']"
                wait.until(
                    lambda d: any(
                        f"#{markup_trial}: <img src=x" in a.text
                        for a in d.find_elements(By.CSS_SELECTOR, alerts)
                    )
                )
                (note,) = [
                    a.text
                    for a in driver.find_elements(By.CSS_SELECTOR, alerts)
                    if f"#{markup_trial}:" in a.text
                ]
                shown = note.replace("\u2060", "")  # the joiners that keep a URL from linking
                assert "[a link](http://example.invalid) **bold** $x$" in shown
                assert len(note) < 400  # 100,000 characters stored, a line shown
                injected = driver.execute_script(
                    "return [document.querySelectorAll('img[src=\"x\"]').length,"
                    " Array.from(document.scripts).filter(s => s.text.includes('alert(')).length,"
                    " document.querySelectorAll('a[href*=\"example.invalid\"]').length,"
                    " window.__alerted === true];"
                )
                assert injected == [0, 0, 0, False]
            except Exception:
                driver.save_screenshot(str(tmp_path / "failure.png"))
                print(f"page at failure: {tmp_path / 'failure.png'}")
                print((tmp_path / "streamlit.log").read_text()[-3000:])
                raise


if __name__ == "__main__":
    # python -m tests.test_browser [OUT.png [STORAGE STUDY]]: the demo study, or a real one
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else README_SCREENSHOT
    with tempfile.TemporaryDirectory() as tmp:
        if len(sys.argv) > 3:
            storage, study = str(Path(sys.argv[2]).resolve()), sys.argv[3]
        else:
            storage, study = demo_study(Path(tmp)), DEMO_STUDY
        screenshot_dashboard(storage, study, target.resolve(), Path(tmp))
    print(f"wrote {target}")
