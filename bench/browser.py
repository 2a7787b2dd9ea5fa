"""Headless Chromium for looking at report.html: Debian's package, a throwaway profile.

Used by `make bench` (how fast a 100,000-item report opens) and by the report's browser
tests (what it shows). Nothing here reaches the network: the page is a local file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Final

CHROMIUM: Final = Path("/usr/bin/chromium")
WINDOW: Final = (1280, 900)


def find_chromium() -> Path | None:
    """Debian's chromium, or another on PATH; None if there is none."""
    if CHROMIUM.exists():
        return CHROMIUM
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    return Path(found) if found else None


def run_chromium(
    chromium: Path, url: str, profile: Path, *flags: str, timeout_s: float = 60
) -> subprocess.CompletedProcess[str]:
    """One headless run (`--dump-dom`, `--screenshot=...`) with its own profile and HOME."""
    command = [
        str(chromium), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}", *flags, url,
    ]  # fmt: skip
    env = {**os.environ, "HOME": str(profile)}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env)
