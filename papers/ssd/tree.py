"""Static token-tree topologies for tree speculative decoding.

A tree is a tuple of parent indices in topological order (BFS): node 0 is the root, the last token already
emitted (its target distribution proposes depth-1 tokens), and `parents[i] < i` for every other node. The
topology is static (hashable) so it compiles into the verification and drafting loops; only the tokens
at the nodes change from step to step.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class TreeSpec:
    parents: tuple[int, ...]

    def __post_init__(self):
        if not self.parents or self.parents[0] != -1:
            raise ValueError("A tree's node 0 must be the root with parent -1; build it with tree_from_branching.")
        for node, parent in enumerate(self.parents[1:], start=1):
            if not 0 <= parent < node:
                raise ValueError(f"Node {node} has parent {parent}; parents must precede their children.")

    @property
    def num_nodes(self) -> int:
        return len(self.parents)

    @functools.cached_property
    def depths(self) -> np.ndarray:
        """int32[N]: depth of each node, root = 0 (also the RoPE offset from the root's position)."""
        depths = np.zeros(self.num_nodes, np.int32)
        for node, parent in enumerate(self.parents[1:], start=1):
            depths[node] = depths[parent] + 1
        return depths

    @property
    def max_depth(self) -> int:
        return int(self.depths.max())

    @functools.cached_property
    def children(self) -> np.ndarray:
        """int32[N, C]: children of each node in index order (the sibling trial order), padded with -1."""
        lists = [[] for _ in self.parents]
        for node, parent in enumerate(self.parents[1:], start=1):
            lists[parent].append(node)
        width = max(1, max(len(c) for c in lists))
        table = np.full((self.num_nodes, width), -1, np.int32)
        for node, kids in enumerate(lists):
            table[node, :len(kids)] = kids
        return table

    @functools.cached_property
    def ancestor_mask(self) -> np.ndarray:
        """bool[N, N]: mask[i, j] is True when node j is node i or one of its ancestors (tree attention)."""
        mask = np.eye(self.num_nodes, dtype=bool)
        for node, parent in enumerate(self.parents[1:], start=1):
            mask[node] |= mask[parent]
        return mask

    def level(self, depth: int) -> tuple[int, int]:
        """[start, stop) of the nodes at `depth`; contiguous because nodes are in BFS order."""
        nodes = np.flatnonzero(self.depths == depth)
        if nodes.size == 0 or nodes[-1] - nodes[0] + 1 != nodes.size:
            raise ValueError(f"Depth {depth} is empty or not contiguous; build trees in BFS order.")
        return int(nodes[0]), int(nodes[-1]) + 1


def tree_from_branching(branching: Sequence[int]) -> TreeSpec:
    """Full tree in BFS order: each node at depth d has branching[d] children, e.g. (2, 2, 1) has 1+2+4+4 nodes."""
    if not branching or any(b < 1 for b in branching):
        raise ValueError(f"Branching factors must be positive integers, got {tuple(branching)}.")
    parents, level = [-1], [0]
    for width in branching:
        next_level = []
        for node in level:
            for _ in range(width):
                parents.append(node)
                next_level.append(len(parents) - 1)
        level = next_level
    return TreeSpec(tuple(parents))


def chain(num_draft: int) -> TreeSpec:
    """The chain of K draft tokens as a tree (one child per node)."""
    return tree_from_branching((1,) * num_draft)
