"""How many examples a property test runs: its written count, scaled by the Hypothesis profile.

Tests write `@settings(max_examples=examples(300))`. Under the `thorough` profile (the default, and what
`.ci/run` uses) that is 300; under `quick` (profile max_examples 10, so a tenth: what `pytest -m unit`
loads unless `--hypothesis-profile` is given; tests/conftest.py) it is 30, and never fewer than
`FLOOR` (or the written count, if smaller). The oracles and properties are the same; only the depth of
the search changes.
"""

from __future__ import annotations

from hypothesis import settings

THOROUGH_EXAMPLES = 100  # the thorough profile's max_examples: the written counts hold as written
QUICK_EXAMPLES = 10
FLOOR = 10


def examples(written: int) -> int:
    """`written` scaled by the loaded profile's max_examples against the thorough profile's."""
    scaled = round(written * settings().max_examples / THOROUGH_EXAMPLES)
    return max(min(written, FLOOR), scaled)
