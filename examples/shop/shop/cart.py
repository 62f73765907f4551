"""A shopping cart that checks stock and prices lines with the pricing rules."""
from . import pricing


class OutOfStock(Exception):
    def __init__(self, sku, wanted, available):
        super().__init__(f"{sku}: wanted {wanted}, only {available} left")
        self.sku, self.wanted, self.available = sku, wanted, available


class Cart:
    def __init__(self, catalog, stock):
        self.catalog = catalog
        self.stock = stock
        self.lines = {}

    def add(self, sku, quantity=1):
        product = self.catalog.get(sku)
        wanted = self.lines.get(sku, 0) + quantity
        available = self.stock.get(sku, 0)
        if wanted > available:
            raise OutOfStock(sku, wanted, available)
        self.lines[product.sku] = wanted
        return wanted

    def remove(self, sku, quantity=1):
        left = self.lines.get(sku, 0) - quantity
        if left > 0:
            self.lines[sku] = left
        else:
            self.lines.pop(sku, None)

    def subtotal(self):
        total = 0
        for sku, quantity in sorted(self.lines.items()):
            unit = pricing.bulk_unit_price(self.catalog.get(sku).price_cents, quantity)
            total += unit * quantity
        return total

    def checkout(self, coupons=()):
        """Total with coupons and tax; takes the goods out of stock."""
        total = pricing.with_tax(pricing.apply_coupons(self.subtotal(), list(coupons)))
        for sku, quantity in self.lines.items():
            self.stock[sku] -= quantity
        self.lines.clear()
        return total
