"""Products and the catalog that finds them."""
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Product:
    sku: str
    name: str
    price_cents: int
    tags: frozenset = field(default_factory=frozenset)


class UnknownProduct(KeyError):
    """Raised when a SKU is not in the catalog."""


class Catalog:
    def __init__(self, products=()):
        self._by_sku = {}
        for product in products:
            self.add(product)

    def add(self, product):
        if product.price_cents < 0:
            raise ValueError(f"negative price for {product.sku}")
        self._by_sku[product.sku] = product

    def get(self, sku):
        try:
            return self._by_sku[sku]
        except KeyError:
            raise UnknownProduct(sku) from None

    def search(self, words):
        """Products whose name contains every word (case-insensitive), cheapest first."""
        wanted = [w.lower() for w in words.split()]
        hits = []
        for product in self._by_sku.values():
            name = product.name.lower()
            if all(w in name for w in wanted):
                hits.append(product)
        hits.sort(key=lambda p: (p.price_cents, p.sku))
        return hits

    def tagged(self, tag):
        return sorted(p.sku for p in self._by_sku.values() if tag in p.tags)
