"""A real JupyterLab session: notebook 08 run in headless Chromium with ``INTERACTIVE = True``; changing
the explorer's ``video`` dropdown must change its output. A screenshot is saved.

What it needs, and where it comes from in CI (``make test``, the Makefile's setup step):

* Debian's ``chromium`` and ``chromium-driver`` (``/usr/bin/chromium``, ``/usr/bin/chromedriver``;
  override with ``PECOP_CHROMIUM`` / ``PECOP_CHROMEDRIVER``), installed by ``apt-get`` when missing;
* the ``selenium`` package (the ``test`` extra of ``pyproject.toml``).

Missing pieces make the test **fail** with the fix in the message; set ``PECOP_SKIP_BROWSER_TEST=1``
to skip it explicitly (e.g. on a laptop without Chromium). JupyterLab runs on loopback, on a free
port with a random token, with its own runtime, config and settings folders and a fresh
``PECOP_CACHE_DIR`` (so notebook 08 trains what it needs, on its own). The screenshot is saved in
the test's tmp folder and the last one is kept as ``runs/test-artifacts/jupyterlab_08.png`` (or under
``$PECOP_TEST_ARTIFACTS``); the log line names it.

No conftest.py lives here: conftest modules outside a package all import as ``conftest`` and would
shadow ``tests/conftest.py``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._network import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO_ROOT / "notebooks" / "08_score_distributions.ipynb"
SKIP_ENV = "PECOP_SKIP_BROWSER_TEST"
ARTIFACTS_ENV = "PECOP_TEST_ARTIFACTS"  # where the last screenshot is kept (default: runs/test-artifacts/)
CHROMIUM = os.environ.get("PECOP_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("PECOP_CHROMEDRIVER", "/usr/bin/chromedriver")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1400,1000")
RUN_TIMEOUT_S = 1200  # the whole notebook, trained from an empty cache on a shared 2-core machine
WIDGET_TIMEOUT_S = 180


def _require_browser() -> None:
    """Fail (or skip on explicit request) when Chromium, its driver or selenium is missing."""
    missing = [f"{what} ({path})" for what, path in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER))
               if not os.access(path, os.X_OK)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the Python package selenium")
    if not missing:
        return
    message = (f"the JupyterLab browser test needs {', '.join(missing)}: run `make setup` as root (it apt-get "
               "installs chromium and chromium-driver) or `apt-get install -y chromium chromium-driver`, and "
               "`pip install -e '.[test]'` for selenium; set PECOP_CHROMIUM / PECOP_CHROMEDRIVER for other paths, "
               f"or {SKIP_ENV}=1 to skip this test explicitly")
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(message)
    pytest.fail(message, pytrace=False)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    """JupyterLab on loopback serving ``tmp_path/lab``; yields ``(base url with token, lab folder, log file)``."""
    _require_browser()
    root, state = tmp_path / "lab", tmp_path / "jupyter"
    root.mkdir()
    port, token = free_port(), secrets.token_hex(16)
    env = {**os.environ, "PECOP_CACHE_DIR": str(tmp_path / "cache"), "JUPYTER_RUNTIME_DIR": str(state / "runtime"),
           "JUPYTER_CONFIG_DIR": str(state / "config"), "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    env.pop("PECOP_HEADLESS", None)
    log = tmp_path / "jupyterlab.log"
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
               f"--ServerApp.root_dir={root}", f"--LabApp.user_settings_dir={state / 'settings'}",
               f"--LabApp.workspaces_dir={state / 'workspaces'}", "--LabApp.news_url=",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # CI containers run as root
        command.append("--allow-root")
    with open(log, "w") as handle:
        server = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=root)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not start (exit code {server.poll()}); log:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield f"{base}|{token}", root, log
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=30)


def _driver(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


PROMPTS_JS = """
return Array.from(document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputPrompt'))
  .map(p => p.textContent.trim());
"""
ERRORS_JS = """
return Array.from(document.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'))
  .map(e => e.innerText).filter(t => t.includes('Traceback') || t.includes('Error'));
"""
EXPLORER_JS = """
const boxes = Array.from(document.querySelectorAll('.widget-interact'));
const box = boxes.find(b => Array.from(b.querySelectorAll('.widget-label')).some(l => l.textContent.trim() === 'video'));
if (!box) return null;
const out = box.querySelector('.widget-output');
const img = out ? out.querySelector('img') : null;
return {text: out ? out.innerText : '', image: img ? img.src.length + ':' + img.src.slice(-64) : ''};
"""


def _wait(condition, timeout: float, what: str, driver, shot: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(2)
    driver.save_screenshot(str(shot))
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}; screenshot {shot}", pytrace=False)


@pytest.mark.slow
@pytest.mark.notebooks
def test_explorer_reacts_in_jupyterlab(lab, tmp_path, request):
    import papermill
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    url, root, log = lab
    base, token = url.split("|")
    papermill.execute_notebook(str(NOTEBOOK), str(root / NOTEBOOK.name), prepare_only=True, kernel_name="python3",
                               parameters={"PRESET": "smoke", "DEVICE": "cpu", "INTERACTIVE": True,
                                           "OUT_DIR": str(tmp_path / "out"), "STRATEGIES": ["dom_g", "pecop"]})
    shot = tmp_path / "jupyterlab_08.png"
    driver = _driver(tmp_path / "chromium-profile")
    started = time.monotonic()
    try:
        driver.set_window_size(1400, 1000)
        driver.get(f"{base}/lab/tree/{NOTEBOOK.name}?token={token}")
        _wait(lambda: driver.execute_script(PROMPTS_JS), 120, "the notebook to open", driver, shot)
        _wait(lambda: "Idle" in driver.execute_script("return document.body.innerText"), 120, "an idle kernel",
              driver, shot)
        driver.find_element(By.XPATH, "//li[contains(@class,'lm-MenuBar-item')]"
                                      "[.//div[contains(@class,'lm-MenuBar-itemLabel') and text()='Run']]").click()
        run_all = ("//li[contains(@class,'lm-Menu-item')]"
                   "[.//div[contains(@class,'lm-Menu-itemLabel') and text()='Run All Cells']]")
        _wait(lambda: driver.find_elements(By.XPATH, run_all), 30, "the Run menu", driver, shot)[0].click()

        def finished() -> bool:
            prompts = driver.execute_script(PROMPTS_JS)
            if any("*" in p for p in prompts):
                return False
            if driver.execute_script(ERRORS_JS):
                return True
            return all(p.strip("[]:").strip().isdigit() for p in prompts)

        _wait(finished, RUN_TIMEOUT_S, "notebook 08 to run (Run All Cells)", driver, shot)
        errors = driver.execute_script(ERRORS_JS)
        assert not errors, f"notebook 08 raised in JupyterLab:\n{errors[0][-3000:]}"
        ran = time.monotonic() - started
        before = _wait(lambda: (driver.execute_script(EXPLORER_JS) or {}).get("text"), WIDGET_TIMEOUT_S,
                       "the explorer's output", driver, shot)
        box = driver.find_element(By.XPATH, "//div[contains(@class,'widget-interact')]"
                                            "[.//*[contains(@class,'widget-label') and normalize-space(text())='video']]")
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", box)
        choice = Select(box.find_element(By.TAG_NAME, "select"))
        first, second = choice.options[0].text, choice.options[1].text
        assert first.split(" | ")[1] in before, f"the explorer shows {before!r}, not the selected video {first!r}"
        image_before = driver.execute_script(EXPLORER_JS)["image"]
        choice.select_by_index(1)

        def shows_second() -> dict | None:
            state = driver.execute_script(EXPLORER_JS)
            return state if state and second.split(" | ")[1] in state["text"] else None

        after = _wait(shows_second, WIDGET_TIMEOUT_S, f"the explorer to show {second!r}", driver, shot)
        assert after["text"] != before and after["image"] != image_before
        driver.save_screenshot(str(shot))
    finally:
        driver.quit()
    assert shot.stat().st_size > 10_000
    artifacts = Path(os.environ.get(ARTIFACTS_ENV) or REPO_ROOT / "runs" / "test-artifacts")
    artifacts.mkdir(parents=True, exist_ok=True)
    kept = shutil.copy(shot, artifacts / shot.name)  # pytest rotates its tmp folders; this copy stays
    message = (f"JupyterLab browser test: notebook 08 ran in {ran:.0f} s, explorer switched {first!r} -> {second!r}; "
               f"screenshot: {kept} (JupyterLab log: {log})")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(message)
    else:
        print(message)
