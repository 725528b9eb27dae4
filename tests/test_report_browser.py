"""The report renders in a real browser: headless Chromium shows every image and the tables.

The report is made from fake runs (see test_lab_fakes), then a copy with a small probe script
appended is opened with ``chromium --headless --dump-dom``; at the load event (which waits for
every image) the probe writes what it found into the DOM. The set-up installs Debian's ``chromium`` with
apt-get when it is missing and this is possible; otherwise the test is skipped, saying why.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest

import inceptionlab.lab.measure as measure_module
import inceptionlab.train as train_module
from inceptionlab.lab import Plan, Variant, run_plan
from test_lab_fakes import FakeEngine, fake_measure

PROBE = """
<script>
window.addEventListener("load", () => {
  const images = [...document.images];  // the load event waits for every image
  const probe = document.createElement("pre");
  probe.id = "probe";
  probe.textContent = JSON.stringify({
    images: images.length,
    rendered: images.filter((img) => img.complete && img.naturalWidth > 0 && img.naturalHeight > 0).length,
    widths: images.map((img) => img.naturalWidth),
    tables: document.querySelectorAll("table").length,
    rows: document.querySelectorAll("table tbody tr").length,
    title: document.title,
  });
  document.body.appendChild(probe);
});
</script>
"""


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="session")
def chromium() -> str:
    path = find_chromium()
    if path:
        return path
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        pytest.skip("headless Chromium is not installed and cannot be installed here (needs apt-get as root); "
                    "install it with: apt-get install -y chromium")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        subprocess.run([apt, "update", "-qq"], check=True, capture_output=True, timeout=600, env=env)
        subprocess.run([apt, "install", "-y", "-qq", "chromium"], check=True, capture_output=True, timeout=1200,
                       env=env)
    except (subprocess.SubprocessError, OSError) as exc:
        pytest.skip(f"headless Chromium is not installed and apt-get could not install it ({exc}); "
                    f"install it with: apt-get install -y chromium")
    path = find_chromium()
    if path is None:
        pytest.skip("apt-get installed chromium but no chromium executable is on PATH")
    return path


def test_report_renders_in_headless_chromium(chromium, tmp_path, monkeypatch):
    monkeypatch.setattr(train_module, "train", FakeEngine({"bn_inception": "diverge", "inception_v3": 8.0}))
    monkeypatch.setattr(measure_module, "measure_model", fake_measure)
    plan = Plan([Variant(m, m) for m in ("googlenet", "bn_inception", "inception_v3")], budget={"steps": 100},
                seeds=[0, 1], model_kwargs=dict(stem="low_res", depth_multiplier=0.125, min_depth=8),
                train={"limit_per_class": 5}, title="Browser check")
    results = run_plan(plan, tmp_path / "lab", log=lambda line: None)
    report = (tmp_path / "lab" / "report.html").read_text()
    probed = tmp_path / "probe.html"
    probed.write_text(report.replace("</body>", PROBE + "</body>"))
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000",
               "--dump-dom", probed.as_uri()]
    for _attempt in range(3):  # a loaded machine can make Chromium dump the page before its load event
        done = subprocess.run(command, capture_output=True, text=True, timeout=180)
        match = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
        if match:
            break
    assert match, (f"Chromium did not run the probe (exit {done.returncode}); page: {done.stdout[-300:]!r}; "
                   f"errors: {done.stderr[-1500:]}")
    found = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert found["images"] == len(results["plots"]) >= 4
    assert found["rendered"] == found["images"], found
    assert all(w > 200 for w in found["widths"]), found
    assert found["tables"] >= 3 and found["rows"] >= 6
    assert found["title"] == "Browser check"
