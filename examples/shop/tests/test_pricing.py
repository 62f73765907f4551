import pytest

from shop import pricing


@pytest.mark.parametrize("cents, percent, expected", [(1000, 10, 900), (999, 50, 499), (5, 0, 5)])
def test_percent_off(cents, percent, expected):
    assert pricing.percent_off(cents, percent) == expected


def test_coupons_stack_in_order():
    assert pricing.apply_coupons(10000, ["TEN", "HALF"]) == 4500


def test_invalid_coupon():
    with pytest.raises(pricing.InvalidCoupon):
        pricing.apply_coupons(10000, ["TEN", "FREE"])


def test_bulk_discount_caps_at_fifteen_percent():
    assert pricing.bulk_unit_price(1000, 9) == 1000
    assert pricing.bulk_unit_price(1000, 35) == 970
    assert pricing.bulk_unit_price(1000, 500) == 850


def test_format_cents():
    assert pricing.format_cents(123456) == "$1,234.56"
    assert pricing.format_cents(-5) == "-$0.05"


@pytest.mark.skip(reason="needs the payment gateway sandbox")
def test_charge_card():
    raise AssertionError("never runs")
