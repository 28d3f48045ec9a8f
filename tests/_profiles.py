"""Hypothesis profiles: ``fast`` by default, ``thorough`` when ``CI=true``.

Both are derandomized with no example database, so a run is the same every time and a
failure found once is found again. Neither has a deadline or the too-slow health
check: the suite checks behaviour, never wall-clock time, on a machine others share.
``HYPOTHESIS_PROFILE`` names a profile explicitly.

A test that sets its own ``max_examples`` writes it for the fast profile, through
:func:`examples`, so the thorough profile multiplies it as it multiplies the default.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

FAST_EXAMPLES = 100  # hypothesis' own default: the counts written in tests assume it
THOROUGH_EXAMPLES = 200  # twice as many: keeps `make test` well under 20 minutes on 2 cores


def register() -> None:
    """Register both profiles and load the one this run asks for."""
    common = {
        "derandomize": True,
        "database": None,
        "deadline": None,
        "print_blob": True,
        "suppress_health_check": [HealthCheck.too_slow],
    }
    settings.register_profile("fast", max_examples=FAST_EXAMPLES, **common)
    settings.register_profile("thorough", max_examples=THOROUGH_EXAMPLES, **common)
    default = "thorough" if os.environ.get("CI") == "true" else "fast"
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or default)


def examples(n: int) -> int:
    """``n`` examples under the fast profile, scaled to the profile loaded."""
    return max(1, n * settings.default.max_examples // FAST_EXAMPLES)
