"""The HTML report renders in headless Chromium (Debian's chromium package) with every image loaded."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from strato_peft.cli import main

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PROBE = ("<script>window.addEventListener('load', () => document.body.setAttribute('data-images', "
         "Array.from(document.images).map(i => i.complete && i.naturalWidth > 0 ? 'ok' : 'broken').join(',')));"
         "</script></body>")


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "Debian's chromium is needed (scripts/setup.sh installs it: apt-get install chromium)"
    return path


def test_report_renders_with_every_image_loaded(tmp_path):
    from test_compare import write_config

    results = tmp_path / "results"
    write_config(results, "lora_r8", [0.70, 0.71])
    write_config(results, "lora_r2", [0.60, 0.62], trainable=250)
    assert main(["report", str(results)]) == 0
    page = (results / "report.html").read_text()
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", PROBE))
    profile = tmp_path / "profile"
    dom = subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=5000",
                          "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    marks = re.search(r'data-images="([^"]*)"', dom.stdout)
    assert marks, dom.stderr[-2000:]
    assert marks.group(1).split(",") == ["ok"] * page.count("<img ")
    shot = tmp_path / "report.png"
    subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1400,1800",
                    f"--screenshot={shot}", (results / "report.html").as_uri()], capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000
    Path("/tmp/strato_report_screenshot.png").write_bytes(shot.read_bytes())  # for a person to look at
