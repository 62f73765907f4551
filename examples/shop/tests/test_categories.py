from shop.categories import Category, depth


def make_tree():
    apples = Category("apples", skus=["A1", "B2"])
    fruit = Category("fruit", [apples], skus=["F0"])
    bakery = Category("bakery", skus=["C3", "D4"])
    return Category("food", [fruit, bakery])


def test_count_is_recursive():
    assert make_tree().count() == 5


def test_path_to_product():
    tree = make_tree()
    assert tree.path_to("B2") == ["food", "fruit", "apples"]
    assert tree.path_to("D4") == ["food", "bakery"]
    assert tree.path_to("nope") is None


def test_depth():
    assert depth(make_tree()) == 3
    assert depth(Category("leaf")) == 1
