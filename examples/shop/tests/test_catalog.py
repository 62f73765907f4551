import pytest

from shop.catalog import Catalog, Product, UnknownProduct


def test_search_finds_every_word_cheapest_first(catalog):
    hits = catalog.search("apple")
    assert [p.sku for p in hits] == ["B2", "A1", "C3"]
    assert [p.sku for p in catalog.search("APPLE red")] == ["A1"]


def test_unknown_sku_raises(catalog):
    with pytest.raises(UnknownProduct):
        catalog.get("Z9")


def test_negative_price_is_rejected():
    catalog = Catalog()
    with pytest.raises(ValueError, match="negative price"):
        catalog.add(Product("X", "Broken", -1))


def test_tagged(catalog):
    assert catalog.tagged("fresh") == ["A1", "D4"]
    assert catalog.tagged("toys") == []
