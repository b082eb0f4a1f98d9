"""A fitted ``HistGradientBoostingRegressor`` evaluated in a few array operations.

The global model forecasts recursively: every step's prediction is the next step's
lag 1, so one forecast of ``h`` steps asks the regressor ``h`` times for a handful of
rows. scikit-learn's ``predict`` then walks its trees one Cython call per tree (200
trees: 200 calls, each entering an OpenMP region, ~4 us apiece even on preallocated
arrays with one thread), plus input validation and a thread-count probe per call:
~0.8 ms per step through the cheapest library entry point, ~5 ms per six-step
forecast. No installed library evaluates a scikit-learn ensemble in one call
(treelite, lleaves and numba are not dependencies), so the trees are evaluated here,
by hand, in the QuickScorer manner (Lucchese et al., SIGIR 2015), all trees at once:

- every split of every tree is tested in one vectorised comparison;
- each split that sends the row right removes the leaves of its left subtree: leaves
  are bits of an integer numbered left to right, so the leaf a tree reaches is the
  lowest bit left in the AND of the masks of its right-going splits;
- the leaf values are added to the baseline one tree after the other, in the order
  of scikit-learn's own loop, so the sums (and the forecasts) are identical bit for
  bit, not just close.

For the shipped model (200 trees of at most 31 leaves: 6,000 splits) that is ~30 us
per step for one row, about a dozen NumPy calls. It reads the fitted model's private
attributes (``_predictors``, ``_baseline_prediction``, ``_loss``; the lock pins
scikit-learn), so ``TreeEnsemble.build`` checks the result on probe rows against
``predict`` and refuses (returns ``None``) a model it cannot reproduce exactly —
categorical splits, trees of more than 64 leaves, a scikit-learn whose internals
moved — for which the caller keeps scikit-learn's ``predict``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: leaves per tree an unsigned 64-bit mask can number
_MAX_LEAVES = 64


@dataclass(frozen=True)
class TreeEnsemble:
    """The splits and leaves of all trees of one fitted regressor, as flat arrays."""

    feature: np.ndarray  # (splits,) feature tested by each split
    threshold: np.ndarray  # (splits,) go left when value <= threshold
    nan_right: np.ndarray  # (splits,) a missing value goes right
    right_mask: np.ndarray  # (splits,) leaves still reachable after going right
    all_leaves: np.unsignedinteger  # the mask with every bit set (uint32 when trees allow)
    tree_starts: np.ndarray  # (trees,) first split of each tree
    leaf_bit_starts: np.ndarray  # (trees,) first leaf of each tree in ``leaf_value``, - 1
    leaf_value: np.ndarray  # (leaves,) leaf values, tree after tree, left to right; the
    # first tree's are baseline + value, the first addition of scikit-learn's sum
    inverse_link: object  # the regressor's link inverse (identity for squared error)

    @classmethod
    def build(cls, model, n_probe: int = 64, seed: int = 0) -> TreeEnsemble | None:
        """The ensemble of a fitted ``HistGradientBoostingRegressor``, or ``None`` when it
        cannot reproduce the model's ``predict`` exactly (see the module docstring)."""
        try:
            ensemble = cls._from_predictors(model)
        except (AttributeError, KeyError, TypeError, ValueError):
            return None  # internals of another scikit-learn version: use its predict
        if ensemble is None or not ensemble._agrees_with(model, n_probe, seed):
            return None
        return ensemble

    @classmethod
    def _from_predictors(cls, model) -> TreeEnsemble | None:
        if getattr(model, "is_categorical_", None) is not None and model.is_categorical_.any():
            return None
        if model.n_trees_per_iteration_ != 1:
            return None
        features, thresholds, nan_right, masks, tree_starts = [], [], [], [], []
        leaf_starts, leaf_values = [], []
        n_splits = n_leaves = 0
        for (predictor,) in model._predictors:
            nodes = predictor.nodes
            tree = _tree_arrays(nodes)
            if tree is None:
                return None
            split_idx, left_leaves, leaves = tree
            tree_starts.append(n_splits)
            leaf_starts.append(n_leaves)
            if split_idx.size == 0:
                # a tree that is one leaf: a split every row passes, so the tree's AND
                # is never empty (reduceat needs one element per tree)
                features.append(np.zeros(1, dtype=np.intp))
                thresholds.append(np.full(1, np.inf))
                nan_right.append(np.zeros(1, dtype=bool))
                masks.append([0])
            else:
                split_nodes = nodes[split_idx]
                features.append(split_nodes["feature_idx"].astype(np.intp))
                thresholds.append(split_nodes["num_threshold"].astype(float))
                nan_right.append(split_nodes["missing_go_to_left"] == 0)
                masks.append(left_leaves)
            n_splits += len(features[-1])
            leaf_values.append(nodes["value"][leaves].astype(float))
            n_leaves += len(leaves)
        baseline = np.asarray(model._baseline_prediction, dtype=float).ravel()
        if baseline.size != 1 or not leaf_values:
            return None
        leaf_values[0] = baseline[0] + leaf_values[0]
        # 32-bit masks when every tree has at most 32 leaves (max_leaf_nodes 31 by
        # default): half the memory the per-split operations go through
        dtype = np.uint32 if max(map(len, leaf_values)) <= 32 else np.uint64
        all_leaves = np.iinfo(dtype).max
        left = np.asarray([m for tree in masks for m in tree], dtype=dtype)
        return cls(
            feature=np.concatenate(features),
            threshold=np.concatenate(thresholds),
            nan_right=np.concatenate(nan_right),
            right_mask=np.bitwise_xor(left, dtype(all_leaves)),
            all_leaves=dtype(all_leaves),
            tree_starts=np.asarray(tree_starts, dtype=np.intp),
            # frexp gives bit k as exponent k + 1
            leaf_bit_starts=np.asarray(leaf_starts, dtype=np.intp) - 1,
            leaf_value=np.concatenate(leaf_values),
            inverse_link=model._loss.link.inverse,
        )

    def _agrees_with(self, model, n_probe: int, seed: int) -> bool:
        """Exact agreement with ``model.predict`` on rows that reach every side of splits:
        each split's threshold itself, values just beside it and missing values."""
        from threadpoolctl import threadpool_limits

        rng = np.random.default_rng(seed)
        n_features = int(model.n_features_in_)
        picks = rng.integers(0, len(self.threshold), size=(n_probe, n_features))
        probe = self.threshold[picks]
        probe = np.where(np.isfinite(probe), probe, 0.0)
        nudge = rng.choice([-np.inf, 0.0, np.inf], size=probe.shape)
        probe = np.where(nudge == 0, probe, np.nextafter(probe, nudge))
        probe[rng.random(probe.shape) < 0.05] = np.nan
        probe = np.vstack([probe, rng.normal(0.0, 1.0, (4, n_features))])
        # one OpenMP thread: idle threads spin, and on a busy machine a 68-row predict
        # took seconds instead of milliseconds
        with threadpool_limits(limits=1, user_api="openmp"):
            expected = model.predict(probe)
        return bool(np.array_equal(self.predict(probe), expected))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """``model.predict(X)`` for a float array ``(rows, features)``, bit for bit."""
        values = X[:, self.feature]
        goes_right = values > self.threshold  # false for NaN: it goes left unless...
        if np.isnan(X).any():
            goes_right |= np.isnan(values) & self.nan_right
        masks = np.where(goes_right, self.right_mask, self.all_leaves)
        reached = np.bitwise_and.reduceat(masks, self.tree_starts, axis=1)
        lowest = reached & -reached  # two's complement: the lowest set bit alone
        # frexp's exponent of 2**k is k + 1, which leaf_bit_starts allows for
        leaf_values = self.leaf_value[self.leaf_bit_starts + np.frexp(lowest)[1]]
        # scikit-learn adds the trees to the baseline one after the other: accumulate
        # (sequential, unlike sum's pairwise order) gives the same rounding; the first
        # tree's leaves already hold baseline + value (the same single addition)
        raw = np.add.accumulate(leaf_values, axis=1)[:, -1:]
        return np.asarray(self.inverse_link(raw)).ravel()


def _tree_arrays(nodes: np.ndarray) -> tuple[np.ndarray, list[int], np.ndarray] | None:
    """Split node indices, the leaves of each split's left subtree as bits of an integer
    (leaves numbered left to right), and the leaf node indices left to right, of one
    scikit-learn tree; ``None`` if it has more leaves than a mask can number."""
    is_leaf, left, right = (
        nodes["is_leaf"].tolist(),
        nodes["left"].tolist(),
        nodes["right"].tolist(),
    )
    leaves: list[int] = []
    splits: list[int] = []
    first_leaf: list[int] = []  # per split: the first leaf of its left subtree
    left_leaves: list[int] = []
    # depth-first, left child first: leaves come out numbered left to right; a split is
    # seen again (``done``) once its left subtree is finished
    stack: list[tuple[int, int]] = [(0, -1)]
    while stack:
        node, split = stack.pop()
        if split >= 0:  # the left subtree of split number ``split`` just finished
            left_leaves[split] = ((1 << (len(leaves) - first_leaf[split])) - 1) << first_leaf[split]
            stack.append((right[node], -1))
        elif is_leaf[node]:
            leaves.append(node)
        else:
            splits.append(node)
            first_leaf.append(len(leaves))
            left_leaves.append(0)
            stack.append((node, len(splits) - 1))
            stack.append((left[node], -1))
    if len(leaves) > _MAX_LEAVES:
        return None
    return np.asarray(splits, dtype=np.intp), left_leaves, np.asarray(leaves, dtype=np.intp)
