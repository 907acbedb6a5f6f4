"""The treebank parser and loader: round trip of a tree, phrase deduplication and label counts of a tiny fixture,
malformed lines named by number, the extracted files and the zip's download-and-verify path."""

import hashlib
import io
import pathlib
import zipfile

import numpy as np
import pytest

from experiments.datafiles import DataFile
from experiments.sentiment import data as sentiment_data
from experiments.sentiment import trees

SHARED = pathlib.Path(__file__).resolve().parents[4] / "shared" / "data"  # next to the checkout
needs_shared = pytest.mark.skipif(not (SHARED / "sst_trees").is_dir(), reason="shared/data/sst_trees not present")

# Two train trees sharing the phrases "a", "film", "fine" (and "a fine film"); a neutral and a negative sentence.
TRAIN = ("(3 (2 A) (4 (4 fine) (2 film)))\n"
         "(1 (2 (2 not) (3 (2 A) (4 (4 fine) (2 film)))) (2 .))\n"
         "(2 (2 It) (2 (2 is) (2 (2 8\xa01\\/2) (2 -LRB-ok-RRB-))))\n")
DEV = "(4 (4 Superb) (2 .))\n(2 (2 Plain) (2 .))\n"
TEST = "(0 (0 Awful) (2 .))\n"


def test_a_tree_prints_back_to_its_line():
    line = "(3 (2 (2 The) (2 Rock)) (4 (3 (2 is) (4 (2 destined) (3 splash))) (2 .)))"
    tree = trees.parse_tree(line)
    assert str(tree) == line and trees.parse_tree(str(tree)) == tree
    assert tree.leaves() == ("The", "Rock", "is", "destined", "splash", ".")
    assert tree.label == 3 and tree.children[0].children[1] == trees.Tree(2, (), "Rock")
    assert [node.label for node in tree.nodes()][-1] == 3 and len(list(tree.nodes())) == 11  # 6 leaves + 5 inner
    text = "".join(str(t) + "\n" for t in trees.parse_trees(TRAIN, "train.txt"))
    assert text == TRAIN  # the no-break space inside "8\xa01\/2" is part of the word, as in the treebank


def test_phrases_of_a_tiny_fixture_are_deduplicated_with_their_labels():
    parsed = trees.parse_trees(TRAIN, "train.txt")
    assert sum(1 for tree in parsed for _ in tree.nodes()) == 5 + 9 + 7  # every labelled node
    texts, labels = trees.phrases(parsed, 5)
    # "A", "fine", "film", "fine film", "A fine film" occur twice but are kept once, at their first occurrence.
    assert texts[:5] == ("A", "fine", "film", "fine film", "A fine film")
    assert len(texts) == len(set(texts)) == 5 + 4 + 7
    assert np.bincount(labels, minlength=5).tolist() == [0, 1, 12, 1, 2]
    assert dict(zip(texts, labels.tolist()))["not A fine film ."] == 1
    binary_texts, binary = trees.phrases(parsed, 2)  # neutral dropped, 0-1 -> 0, 3-4 -> 1
    assert dict(zip(binary_texts, binary.tolist())) == {"fine": 1, "fine film": 1, "A fine film": 1,
                                                        "not A fine film .": 0}
    sentences, roots = trees.sentences(parsed, 5)
    assert sentences[2] == "It is 8\xa01\\/2 -LRB-ok-RRB-" and roots.tolist() == [3, 1, 2]
    assert trees.sentences(parsed, 2)[1].tolist() == [1, 0]


def test_a_phrase_with_two_labels_is_an_error():
    parsed = trees.parse_trees("(3 (3 good) (2 film))\n(1 (1 good) (2 film))\n")
    with pytest.raises(ValueError, match=r"phrase 'good' has label 3 in tree 1 but 1 in tree 2"):
        trees.phrases(parsed)
    with pytest.raises(ValueError, match="classes must be 2"):
        trees.map_label(1, 3)


@pytest.mark.parametrize("line, message", [
    ("(3 (2 A) (4 fine)", r"character 1: expected a complete tree .* \(unclosed '\('\)"),
    ("(3 (2 A) (4 fine)))", "character 19: expected nothing after the tree's closing"),
    ("(7 (2 A) (4 fine))", "character 2: expected a label 0-4"),
    ("(x A)", "expected a label 0-4 after '\\('"),
    ("(3 (2 A))", "one word or two subtrees .* found 1 subtree"),
    ("(3 (2 A) (2 B) (2 C))", "found 3 subtree"),
    ("(3 A B)", "a word must be alone in its node"),
    ("(3 (2 A) B)", "a word must be alone in its node"),
    ("(2 A\tB)", "without tabs"),
    ("", "expected a complete tree"),
])
def test_a_malformed_line_names_its_file_line_and_character(line, message):
    with pytest.raises(ValueError, match=rf"dev.txt, line 2, .*{message}"):
        trees.parse_trees("(2 (2 fine) (2 .))\n" + line + "\n(2 (2 fine) (2 .))\n", "dev.txt")


def _files(tmp_path):
    contents = {"train.txt": TRAIN, "dev.txt": DEV, "test.txt": TEST}
    files = tuple(DataFile(name, "", hashlib.sha256(text.encode()).hexdigest()) for name, text in contents.items())
    return contents, files


def test_loader_reads_the_extracted_files_or_the_zip(tmp_path, monkeypatch):
    contents, files = _files(tmp_path)
    monkeypatch.setitem(sentiment_data.FILES, "sst_trees", files)
    monkeypatch.setattr(sentiment_data, "TREE_COUNTS", {"train": 3, "dev": 2, "test": 1})
    (tmp_path / "shared" / "sst_trees").mkdir(parents=True)
    for name, text in contents.items():
        (tmp_path / "shared" / "sst_trees" / name).write_text(text, encoding="utf-8")
    fine = sentiment_data.load_sentiment("sst5_trees", tmp_path / "shared")
    assert len(fine.train) == 16 and fine.dev.labels.tolist() == [4, 2] and fine.test.labels.tolist() == [0]
    assert fine.dev.texts == ("Superb .", "Plain .")
    binary = sentiment_data.load_sst_trees(2, tmp_path / "shared")
    assert len(binary.train) == 4 and binary.dev.labels.tolist() == [1] and binary.test.labels.tolist() == [0]

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in contents.items():
            archive.writestr(f"trees/{name}", text.encode())
    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror" / "trees.zip").write_bytes(buffer.getvalue())
    digest = hashlib.sha256(buffer.getvalue()).hexdigest()
    url = (tmp_path / "mirror" / "trees.zip").as_uri()
    monkeypatch.setattr(sentiment_data, "TREES_ZIP", DataFile("trainDevTestTrees_PTB.zip", url, digest))
    monkeypatch.setenv("RNNJAX_DATA", str(tmp_path / "cache"))
    downloaded = sentiment_data.load_sst_trees(5)  # no data_dir: downloaded into the cache, verified
    assert (tmp_path / "cache" / "sst_trees" / "trainDevTestTrees_PTB.zip").is_file()
    assert downloaded.train.texts == fine.train.texts and downloaded.test.labels.tolist() == [0]
    assert [f["name"] for f in downloaded.record["files"]] == ["trees/train.txt", "trees/dev.txt", "trees/test.txt"]
    (tmp_path / "zip_only").mkdir()  # a data_dir holding only the archive reads it in place
    (tmp_path / "zip_only" / "trainDevTestTrees_PTB.zip").write_bytes(buffer.getvalue())
    assert sentiment_data.load_sst_trees(5, tmp_path / "zip_only").dev.texts == fine.dev.texts


def test_loader_rejects_wrong_files(tmp_path, monkeypatch):
    contents, files = _files(tmp_path)
    monkeypatch.setitem(sentiment_data.FILES, "sst_trees", files)
    for name, text in contents.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=r"train.txt holds 3 trees, expected 8544"):
        sentiment_data.load_sst_trees(5, tmp_path)
    with pytest.raises(ValueError, match="classes must be 2"):
        sentiment_data.load_sst_trees(3, tmp_path)
    (tmp_path / "dev.txt").write_text(DEV + "\n", encoding="utf-8")  # not the pinned bytes any more
    with pytest.raises(ValueError, match=r"dev.txt has sha256 .* expected"):
        sentiment_data.load_sst_trees(5, tmp_path)
    (tmp_path / "test.txt").rename(tmp_path / "test.txt.moved")
    with pytest.raises(FileNotFoundError, match="trainDevTestTrees_PTB.zip"):  # neither the 3 files nor the zip
        sentiment_data.load_sst_trees(5, tmp_path)
    (tmp_path / "test.txt.moved").rename(tmp_path / "test.txt")
    bad = DataFile("dev.txt", "", hashlib.sha256((DEV + "\n").encode()).hexdigest())
    monkeypatch.setitem(sentiment_data.FILES, "sst_trees", (files[0], bad, files[2]))
    monkeypatch.setattr(sentiment_data, "TREE_COUNTS", {"train": 3, "dev": 2, "test": 1})
    with pytest.raises(ValueError, match=r"dev.txt, line 3, character 1: expected a complete tree"):
        sentiment_data.load_sst_trees(5, tmp_path)


@needs_shared
def test_shared_copies_have_the_published_counts():
    """dev and test parsed in full (the 8,544 train trees take ~10 s more: their 318,582 nodes / 159,274 distinct
    phrases are checked by loading the set, and their root labels here)."""
    parsed = {split: trees.parse_trees((SHARED / "sst_trees" / f"{split}.txt").read_text(encoding="utf-8"), split)
              for split in ("dev", "test")}
    assert {split: len(p) for split, p in parsed.items()} == {"dev": 1101, "test": 2210}
    assert sum(1 for tree in parsed["dev"] for _ in tree.nodes()) == 41_447
    assert len(trees.phrases(parsed["dev"], 5)[0]) == 24_772
    assert [len(trees.sentences(parsed[split], 2)[0]) for split in parsed] == [872, 1821]
    assert np.bincount(trees.sentences(parsed["test"], 5)[1]).tolist() == [279, 633, 389, 510, 399]
    train = (SHARED / "sst_trees" / "train.txt").read_text(encoding="utf-8").splitlines()
    assert np.bincount([int(line[1]) for line in train]).tolist() == [1092, 2218, 1624, 2322, 1288]
