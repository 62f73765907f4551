"""A category tree (recursive): where a product lives and how many products a branch holds."""


class Category:
    def __init__(self, name, children=(), skus=()):
        self.name = name
        self.children = list(children)
        self.skus = list(skus)

    def count(self):
        total = len(self.skus)
        for child in self.children:
            total += child.count()
        return total

    def path_to(self, sku, prefix=()):
        """Names from this category down to the one holding `sku`, or None."""
        here = prefix + (self.name,)
        if sku in self.skus:
            return list(here)
        for child in self.children:
            found = child.path_to(sku, here)
            if found is not None:
                return found
        return None


def depth(category):
    if not category.children:
        return 1
    return 1 + max(depth(child) for child in category.children)
