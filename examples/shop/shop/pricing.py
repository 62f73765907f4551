"""Money arithmetic in integer cents: coupons, bulk discounts and tax."""


class InvalidCoupon(ValueError):
    pass


COUPONS = {"TEN": 10, "TWENTY": 20, "HALF": 50}


def percent_off(cents, percent):
    if not 0 <= percent <= 100:
        raise ValueError(f"percent out of range: {percent}")
    return cents - (cents * percent + 50) // 100


def apply_coupons(cents, codes):
    """Coupons apply one after another, each on what the previous left."""
    if not codes:
        return cents
    code, rest = codes[0], codes[1:]
    if code not in COUPONS:
        raise InvalidCoupon(code)
    return apply_coupons(percent_off(cents, COUPONS[code]), rest)


def bulk_unit_price(unit_cents, quantity):
    """Every full ten items earn 1% off, up to 15%."""
    steps = 0
    remaining = quantity
    while remaining >= 10 and steps < 15:
        remaining -= 10
        steps += 1
    return percent_off(unit_cents, steps)


def with_tax(cents, rate_percent=8):
    return cents + (cents * rate_percent + 50) // 100


def format_cents(cents):
    sign = "-" if cents < 0 else ""
    whole, frac = divmod(abs(cents), 100)
    return f"{sign}${whole:,}.{frac:02d}"
