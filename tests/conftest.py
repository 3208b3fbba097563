"""Test settings shared by both tiers.

In CI (CI=true) hypothesis runs derandomized: the same examples every run, so a run
is reproducible; on a developer's machine it explores new examples each time.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
