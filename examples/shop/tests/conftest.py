import pytest

from shop.catalog import Catalog, Product


@pytest.fixture
def catalog():
    return Catalog([
        Product("A1", "Red Apple", 120, frozenset({"fruit", "fresh"})),
        Product("B2", "Green Apple", 95, frozenset({"fruit"})),
        Product("C3", "Apple Pie", 850, frozenset({"bakery"})),
        Product("D4", "Bread Loaf", 300, frozenset({"bakery", "fresh"})),
    ])


@pytest.fixture
def stock():
    return {"A1": 40, "B2": 5, "C3": 2, "D4": 0}
