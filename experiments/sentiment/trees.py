"""The Stanford Sentiment Treebank's parse trees: a strict parser, the printer it round-trips with, and the labelled
phrases and sentences the SST tasks train and test on.

Format (`trees/{train,dev,test}.txt` of Stanford's `trainDevTestTrees_PTB.zip`): one binarised parse tree per line
in PTB bracket notation; every node is `(label ...)` with a sentiment label 0 (very negative) .. 4 (very positive);
a leaf is `(label word)`, an inner node `(label left right)`, and the root's label is the sentence's:

    (3 (2 (2 The) (2 Rock)) (4 (3 (2 is) ...

Every node (leaves included: single words are phrases too) is a labelled phrase whose text is its leaves joined by
spaces. `phrases(trees, classes)` deduplicates them as Kim 2014's `stsa.*.phrases.train` and GLUE's SST-2 do: each
distinct phrase (its exact, case-sensitive token sequence, i.e. an entry of SST's phrase dictionary) once, in order of
first appearance in a post-order walk of the trees. SST labels phrases in its dictionary, not per occurrence, so a
phrase has the same label wherever it occurs; a conflict is an error naming both occurrences. (The train trees:
318,582 labelled nodes, 159,274 distinct phrases.)

`classes=5` keeps labels 0-4; `classes=2` drops neutral (2) and maps 0-1 -> 0 (negative), 3-4 -> 1 (positive).

>>> tree = parse_tree("(3 (2 A) (4 (4 fine) (2 film)))")
>>> tree.leaves(), tree.label, str(tree) == "(3 (2 A) (4 (4 fine) (2 film)))"
(('A', 'fine', 'film'), 3, True)
>>> [(text, label) for text, label in node_phrases(tree)]
[('A', 2), ('fine', 4), ('film', 2), ('fine film', 4), ('A fine film', 3)]
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np

LABELS = 5  # SST's fine-grained labels 0 .. 4
# Tokens are separated by ASCII spaces only: a word may hold a no-break space (train: "8\xa01\/2").
_TOKEN = re.compile(r"\(|\)|[^ ()]+")
_CONTROL = re.compile(r"[\t\n\v\f\r]")


class Tree(NamedTuple):
    """A labelled node: a leaf holds `word` and no children, an inner node exactly two `children` (binarised). A
    named tuple, not a dataclass: the train file has 318,582 nodes, and tuples are several times faster to make."""

    label: int
    children: tuple[Tree, ...] = ()
    word: str | None = None

    def leaves(self) -> tuple[str, ...]:
        """The words under this node, left to right."""
        words, stack = [], [self]
        while stack:  # iterative: a deep tree cannot hit Python's recursion limit
            node = stack.pop()
            if node.word is not None:
                words.append(node.word)
            stack.extend(reversed(node.children))
        return tuple(words)

    def nodes(self) -> Iterator[Tree]:
        """Every node, children before their parent (post-order), the root last."""
        stack, out = [(self, False)], []
        while stack:
            node, expanded = stack.pop()
            if expanded or not node.children:
                out.append(node)
            else:
                stack.append((node, True))
                stack.extend((child, False) for child in reversed(node.children))
        return iter(out)

    def __str__(self) -> str:
        """PTB bracket notation, the exact form of the treebank files (`parse_tree(str(t)) == t`)."""
        parts, stack = [], [self]
        while stack:
            node = stack.pop()
            if isinstance(node, str):
                parts.append(node)
            elif node.word is not None:
                parts.append(f"({node.label} {node.word})")
            else:
                parts.append(f"({node.label} ")
                stack.extend([")", node.children[1], " ", node.children[0]])
        return "".join(parts)


def parse_tree(line: str, source: str = "<tree>", number: int = 1) -> Tree:
    """One tree from one line (see the module docstring). Anything else (unbalanced brackets, a label outside
    0..4, a node with other than one word or two subtrees, text after the tree) raises a ValueError naming
    `source`, the 1-based line `number` and the character where it went wrong."""
    tokens = [(match.group(), match.start()) for match in _TOKEN.finditer(line)]

    def fail(position: int, expected: str) -> ValueError:
        got = line[position:position + 30] if position < len(line) else "the end of the line"
        return ValueError(f"{source}, line {number}, character {position + 1}: expected {expected}, got {got!r}")

    # A stack of open nodes [label, children, word, position]; a node closes at its ")".
    stack: list[list] = []
    root = None
    index = 0
    while index < len(tokens):
        token, position = tokens[index]
        if root is not None:
            raise fail(position, "nothing after the tree's closing ')'")
        if token == "(":
            if index + 1 >= len(tokens) or not tokens[index + 1][0].isdecimal():
                raise fail(tokens[index + 1][1] if index + 1 < len(tokens) else len(line), "a label 0-4 after '('")
            label_token, label_position = tokens[index + 1]
            if int(label_token) >= LABELS:
                raise fail(label_position, "a label 0-4")
            if stack and stack[-1][2] is not None:
                raise fail(position, "')' after the leaf's word")
            stack.append([int(label_token), [], None, position])
            index += 2
            continue
        if not stack:
            raise fail(position, "'(' opening a tree")
        node = stack[-1]
        if token == ")":
            label, children, word, start = stack.pop()
            if word is None and len(children) != 2:
                raise fail(position, f"one word or two subtrees in the node opened at character {start + 1} "
                                     f"(binarised trees), found {len(children)} subtree(s)")
            tree = Tree(label, tuple(children), word)
            if stack:
                stack[-1][1].append(tree)
            else:
                root = tree
        else:
            if _CONTROL.search(token):
                raise fail(position, "a word without tabs or line breaks (the files separate tokens by spaces)")
            if node[1] or node[2] is not None:
                raise fail(position, "'(' or ')': a word must be alone in its node")
            node[2] = token
        index += 1
    if root is None:
        raise fail(stack[-1][3] if stack else len(line),
                   "a complete tree '(label ...)'" + (" (unclosed '(')" if stack else ""))
    return root


def parse_trees(text: str, source: str = "<trees>") -> list[Tree]:
    """One tree per line of `text` (`\\n` or `\\r\\n`; a final newline does not open an empty line). An empty
    line is malformed too: every line of the treebank files is a tree."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [parse_tree(line.removesuffix("\r"), source, number) for number, line in enumerate(lines, start=1)]


def map_label(label: int, classes: int) -> int | None:
    """The task label of an SST label: itself for 5 classes; for 2, 0-1 -> 0, 3-4 -> 1 and neutral 2 -> None."""
    if classes == 5:
        return label
    if classes == 2:
        return None if label == 2 else int(label > 2)
    raise ValueError(f"classes must be 2 (neutral dropped) or 5, got {classes!r}")


def node_phrases(tree: Tree) -> Iterator[tuple[str, int]]:
    """`(text, SST label)` of every node of `tree`, post-order (the sentence itself last); duplicates kept."""
    texts: list[str] = []  # the texts of the finished nodes whose parent is not finished yet
    for node in tree.nodes():  # post-order: a node's two children are the last two texts
        if node.word is not None:
            text = node.word
        else:
            right = texts.pop()
            text = f"{texts.pop()} {right}"
        texts.append(text)
        yield text, node.label


def phrases(trees: Sequence[Tree], classes: int = 5) -> tuple[tuple[str, ...], np.ndarray]:
    """`(texts, labels int32 [n])`: the distinct labelled phrases of `trees` (see the module docstring for the
    deduplication), each with its task label (`map_label`; neutral ones dropped for `classes=2`). A phrase that
    occurs with two different labels raises a ValueError naming both trees (1-based)."""
    seen: dict[str, tuple[int, int]] = {}
    for number, tree in enumerate(trees, start=1):
        for text, label in node_phrases(tree):
            first = seen.setdefault(text, (label, number))
            if first[0] != label:
                raise ValueError(f"phrase {text[:40]!r} has label {first[0]} in tree {first[1]} but {label} in "
                                 f"tree {number}")
    kept = [(text, map_label(label, classes)) for text, (label, _) in seen.items()]
    kept = [(text, label) for text, label in kept if label is not None]
    return tuple(text for text, _ in kept), np.asarray([label for _, label in kept], np.int32)


def sentences(trees: Sequence[Tree], classes: int = 5) -> tuple[tuple[str, ...], np.ndarray]:
    """`(texts, labels int32 [n])`: each tree's sentence with its root's task label (neutral sentences dropped
    for `classes=2`), in file order, duplicates kept (test sentences are scored as they are)."""
    kept = [(" ".join(tree.leaves()), map_label(tree.label, classes)) for tree in trees]
    kept = [(text, label) for text, label in kept if label is not None]
    return tuple(text for text, _ in kept), np.asarray([label for _, label in kept], np.int32)
