"""A tiny shop: catalog, category tree, cart, pricing rules and stock.

It exists to be traced: small enough to read, with the loops, classes, recursion and
exceptions a real code base has.
"""
