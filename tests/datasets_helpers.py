"""The real Hugging Face `datasets` library, offline, its caches in a temporary directory.

Imported before `datasets` itself: the library reads these variables once, at import.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"
_HOME = tempfile.mkdtemp(prefix="hf-home-")
atexit.register(shutil.rmtree, _HOME, True)
os.environ["HF_HOME"] = _HOME

import datasets  # noqa: E402  (after the environment above)

datasets.disable_progress_bars()


def load(path: str | Path, cache: Path, **kwargs: Any) -> Any:
    """`datasets.load_dataset(path, ...)` with its cache under `cache` (one per test)."""
    return datasets.load_dataset(str(path), cache_dir=str(cache), **kwargs)
