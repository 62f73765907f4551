import pytest

from shop.cart import Cart, OutOfStock


def test_add_and_subtotal(catalog, stock):
    cart = Cart(catalog, stock)
    cart.add("A1", 3)
    cart.add("B2")
    cart.add("A1")
    assert cart.lines == {"A1": 4, "B2": 1}
    assert cart.subtotal() == 4 * 120 + 95


def test_out_of_stock(catalog, stock):
    cart = Cart(catalog, stock)
    cart.add("C3", 2)
    with pytest.raises(OutOfStock) as err:
        cart.add("C3")
    assert err.value.available == 2
    with pytest.raises(OutOfStock):
        cart.add("D4")


def test_remove(catalog, stock):
    cart = Cart(catalog, stock)
    cart.add("A1", 5)
    cart.remove("A1", 2)
    assert cart.lines == {"A1": 3}
    cart.remove("A1", 3)
    assert cart.lines == {}


def test_checkout_applies_bulk_coupons_tax_and_takes_stock(catalog, stock):
    cart = Cart(catalog, stock)
    cart.add("A1", 20)
    total = cart.checkout(["TEN"])
    # 20 apples at 2% bulk off: 118 * 20 = 2360; 10% coupon: 2124; 8% tax: 2294
    assert total == 2294
    assert stock["A1"] == 20
    assert cart.lines == {}


@pytest.mark.xfail(reason="known bug: remove() ignores a SKU that is not in the cart", strict=True)
def test_remove_unknown_sku_raises(catalog, stock):
    cart = Cart(catalog, stock)
    with pytest.raises(KeyError):
        cart.remove("Z9")
