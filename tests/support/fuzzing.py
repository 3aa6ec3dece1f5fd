"""Settings for the property-based fuzzers of outside input (tests/property/).

In every test run a fuzzer tries a fixed number of examples, derandomized: the same
examples each time, so CI is deterministic and fast. ``CDB_FUZZ_EXAMPLES=N`` asks for ``N``
examples per fuzzer, freshly random (repeat a run with pytest's ``--hypothesis-seed``):
the longer run of docs/testing.md.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

FUZZ_EXAMPLES_ENV = "CDB_FUZZ_EXAMPLES"


def fuzz_settings(examples: int) -> settings:
    """``examples`` derandomized examples, or ``$CDB_FUZZ_EXAMPLES`` random ones."""
    asked = os.environ.get(FUZZ_EXAMPLES_ENV)
    return settings(
        max_examples=int(asked) if asked else examples,
        derandomize=not asked,
        database=None,  # nothing written into the working tree
        deadline=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
