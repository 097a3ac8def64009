"""The operator's version, read from the installed package's metadata.

pyproject.toml is the one place the version is written; the CLI, the `build_info` metric and the
chart's appVersion (kept equal by tests/unit/test_version.py) all follow it.
"""
from __future__ import annotations

import platform
from importlib.metadata import version
from typing import Final

VERSION: Final = version("understudy")
PYTHON_VERSION: Final = platform.python_version()
