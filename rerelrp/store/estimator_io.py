"""Fitted scikit-learn models to and from bytes without pickle: skops, only expected types, checked before use.

A workspace someone sends may be crafted to run code when it is opened. skops audits every type
in a file before it builds anything; on top of that only the model types rerelrp fits are
allowed, and each is checked (every tree's node arrays bounded) before it can predict anything.
"""
from __future__ import annotations

import io
import zipfile

import numpy as np

TRUSTED = ["sklearn.tree._tree.Tree"]  # beyond skops' default-trusted types; every tree is validated
MAX_UNPACKED = 1 << 30  # bytes a recogniser file may unpack to (a forest of 100 trees on 2,048 rows: about 25 MB)


def dumps(estimator):
    import skops.io

    return skops.io.dumps(estimator)


def loads(data):
    """The model in skops ``data``; raises ValueError saying why it was refused (nothing of it has run)."""
    import skops.io
    from sklearn.ensemble import RandomForestClassifier
    from skops.io.exceptions import UntrustedTypesFoundException

    _check_unpacked_size(data)
    try:  # skops audits every type in the file before it constructs anything
        model = skops.io.loads(data, trusted=TRUSTED)
    except UntrustedTypesFoundException as exc:
        found = str(exc).split("\n", 1)[0].replace("Untrusted types found in the file: ", "")
        raise ValueError(f"holds types a recogniser never contains: {found}; refused without loading it "
                         "(the file may be crafted to run code)") from None
    except Exception as exc:  # noqa: BLE001 - not a zip, no schema, a broken schema: skops raises many kinds
        raise ValueError(f"is not a skops file or not a readable recogniser ({type(exc).__name__}: {exc}); "
                         "refused without running anything") from None
    checks = {RandomForestClassifier: check_forest}
    if type(model) not in checks:
        raise ValueError(f"holds a {type(model).__name__}, expected one of {', '.join(t.__name__ for t in checks)}")
    try:
        checks[type(model)](model)
    except (AttributeError, TypeError, ValueError) as exc:
        raise ValueError(f"holds an invalid recogniser: {exc}; refused") from None
    return model


def _check_unpacked_size(data):
    """A skops file is a zip: one that would unpack to more than ``MAX_UNPACKED`` (a zip bomb) is refused unread.

    zipfile stops every member at the size its directory declares, so the declared sizes bound what is read."""
    try:
        declared = sum(info.file_size for info in zipfile.ZipFile(io.BytesIO(data)).infolist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise ValueError(f"is not a skops file (not a readable zip archive: {exc}); refused without running anything") from None
    if declared > MAX_UNPACKED:
        raise ValueError(f"would unpack to {declared:,} bytes, more than the {MAX_UNPACKED:,} a recogniser needs; refused "
                         "without loading it (the file may be crafted to exhaust memory)")


def check_forest(forest):
    """Bounds of every tree, so that predicting can never index outside its arrays (see skops' note on Tree)."""
    from sklearn.tree import DecisionTreeClassifier

    classes = np.asarray(forest.classes_)
    if forest.n_outputs_ != 1 or classes.ndim != 1 or not set(classes.tolist()) <= {0, 1} or len(classes) < 1:
        raise ValueError("it is not a binary single-output forest")
    n_features = forest.n_features_in_
    if not isinstance(n_features, int | np.integer) or n_features < 1:
        raise ValueError("it reads no features")
    if not forest.estimators_:
        raise ValueError("it has no trees")
    for est in forest.estimators_:
        if type(est) is not DecisionTreeClassifier or est.n_features_in_ != n_features or est.n_outputs_ != 1:
            raise ValueError("a tree does not match the forest")
        tree = est.tree_
        n = int(tree.node_count)
        left, right = np.asarray(tree.children_left), np.asarray(tree.children_right)
        feature, value = np.asarray(tree.feature), np.asarray(tree.value)
        if n < 1 or tree.n_features != n_features or tree.n_outputs != 1 or list(tree.n_classes) != [len(classes)]:
            raise ValueError("a tree's shape does not match the forest")
        if left.shape != (n,) or right.shape != (n,) or feature.shape != (n,) or value.shape[:2] != (n, 1):
            raise ValueError("a tree's node arrays have inconsistent lengths")
        leaf = left == -1
        if np.any(leaf != (right == -1)):
            raise ValueError("a tree has a node with only one child")
        index = np.arange(n)
        inner = ~leaf
        # sklearn creates children after their parent: child ids are larger (no cycles) and in range
        if np.any((left[inner] <= index[inner]) | (left[inner] >= n) | (right[inner] <= index[inner]) | (right[inner] >= n)):
            raise ValueError("a tree's child indices point outside the tree or backwards")
        if np.any((feature[inner] < 0) | (feature[inner] >= n_features)):
            raise ValueError("a tree splits on a feature that does not exist")
