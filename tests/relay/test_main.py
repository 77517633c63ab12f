"""``python -m tube``'s options that only shape the configuration."""

from __future__ import annotations

import pytest

from tube.relay.limits import Limits
from tube.relay.main import _limit_overrides


def test_limit_overrides_set_any_field_with_its_type() -> None:
    overrides = _limit_overrides(["claims_per_minute=60", "grace-s=30.5", "max_pairs=2000"])
    assert overrides == {"claims_per_minute": 60, "grace_s": 30.5, "max_pairs": 2000}
    assert Limits().replace(**overrides).claims_per_minute == 60


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("claims", "NAME one of"),
        ("nope=1", "NAME one of"),
        ("claims_per_minute=many", "not a number"),
        ("claims_per_minute=1.5", "not a number"),  # an int field takes whole numbers only
    ],
)
def test_a_bad_limit_is_refused_with_what_was_wrong(item: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _limit_overrides([item])
