"""Sentiment loaders: strict parsing with line numbers, label sets, Latin-1 rt-polarity, folds, the shared copies."""

import gzip
import hashlib
import pathlib

import numpy as np
import pytest

from experiments.datafiles import DataFile
from experiments.sentiment import data as sentiment_data
from experiments.sentiment.data import BINARY, FINE, LabelledTexts

SHARED = pathlib.Path(__file__).resolve().parents[4] / "shared" / "data"  # next to the checkout
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="shared/data copies not present")


def test_label_first_format():
    parsed = sentiment_data.parse_label_first("1 a good film\n0 bad .\n", BINARY, "f")
    assert parsed.texts == ("a good film", "bad .") and parsed.labels.tolist() == [1, 0]


def test_label_outside_the_label_set_names_line():
    with pytest.raises(ValueError, match=r"f, line 2: label 5 is outside the label set 0..1"):
        sentiment_data.parse_label_first("1 ok\n5 what\n", BINARY, "f")
    with pytest.raises(ValueError, match="outside the label set 0..4"):
        LabelledTexts(("a", "b"), np.array([0, 7]), FINE)


def test_malformed_tsv_line_names_its_line_number():
    text = "sentence\tlabel\ngood\t1\nno tab here\nbad\t0\n"
    with pytest.raises(ValueError, match=r"train.tsv, line 3: expected 'sentence<TAB>label'"):
        sentiment_data.parse_tsv(text, BINARY, "train.tsv")
    with pytest.raises(ValueError, match=r"line 2: expected 'sentence<TAB>label'"):
        sentiment_data.parse_tsv("sentence\tlabel\ngood\tpositive\n", BINARY, "x")
    with pytest.raises(ValueError, match="line 1: expected the header"):
        sentiment_data.parse_tsv("good\t1\n", BINARY, "x")


def test_uci_style_last_tab_split_keeps_stray_quotes():
    parsed = sentiment_data.parse_tsv('A "quoted\ttab  \t1\r\nFine.\t0\r\n', BINARY, "u", header=False, last_tab=True)
    assert parsed.texts == ('A "quoted\ttab', "Fine.") and parsed.labels.tolist() == [1, 0]


def test_empty_text_is_rejected():
    with pytest.raises(ValueError, match="text 1 is empty"):
        LabelledTexts(("fine", "  "), np.array([0, 1]), BINARY)
    with pytest.raises(ValueError, match="line 1: expected '<label> <sentence>'"):
        sentiment_data.parse_label_first("1 \n", BINARY, "f")


def test_cross_validation_folds_partition_the_examples():
    folds = sentiment_data.cross_validation_folds(103, 10, seed=0)
    assert len(folds) == 10 and sorted(np.concatenate(folds).tolist()) == list(range(103))
    assert {len(f) for f in folds} <= {10, 11}


def test_checksum_mismatch_and_missing_file(tmp_path):
    (tmp_path / "rt-polarity.pos").write_bytes(b"good\n")
    (tmp_path / "rt-polarity.neg").write_bytes(b"bad\n")
    with pytest.raises(ValueError, match="has sha256 .* expected"):
        sentiment_data.load_rt_polarity(tmp_path)
    with pytest.raises(FileNotFoundError, match="stsa.binary.train"):
        sentiment_data.load_sst(2, tmp_path)


def test_imdb_csvs_are_found_in_the_per_dataset_folder(tmp_path, monkeypatch):
    """`data_dir` may be the parent of the per-dataset folders (as shared/data is): data_dir/imdb/train.csv.gz."""
    data = gzip.compress(b"id,rating,label,text\n7,9,1,a great<br />film\n", mtime=0)
    files = tuple(DataFile(name, "", hashlib.sha256(data).hexdigest()) for name in ("train.csv.gz", "test.csv.gz"))
    monkeypatch.setitem(sentiment_data.FILES, "imdb", files)
    (tmp_path / "imdb").mkdir()
    for file in files:
        (tmp_path / "imdb" / file.name).write_bytes(data)
    imdb = sentiment_data.load_imdb(tmp_path)
    assert imdb.train.texts == imdb.test.texts == ("a great film",) and imdb.train.labels.tolist() == [1]


@needs_shared
def test_shared_copies_load_with_the_documented_counts():
    sst2 = sentiment_data.load_sentiment("sst2", SHARED)
    assert (len(sst2.train), len(sst2.dev), len(sst2.test)) == (6920, 872, 1821)
    sst5 = sentiment_data.load_sst(5, SHARED / "sst_sentence")
    assert (len(sst5.train), len(sst5.dev), len(sst5.test)) == (8544, 1101, 2210)
    rt = sentiment_data.load_rt_polarity(SHARED)
    assert len(rt.train) == 10662 and np.bincount(rt.train.labels).tolist() == [5331, 5331]
    assert any("\xe9" in text for text in rt.train.texts)  # Latin-1 accents decoded (e.g. "café")
    uci = sentiment_data.load_uci_sentiment(SHARED)
    assert len(uci.train) == 3000


def test_vader_offline_default():
    pytest.importorskip("vaderSentiment")
    vader = sentiment_data.load_vader_lexicon()
    assert len(vader.train) + len(vader.dev) + len(vader.test) == 7520
    assert set(vader.train.texts).isdisjoint(vader.test.texts)
