"""Parallel text for translation: Multi30k task 1 (verified files) and CLDR's localised dates (offline).

Every loader returns `{split name: ParallelText}`; a `ParallelText(source, target, name)` holds two equally long
tuples of raw (untokenised) sentences, line `i` of one the translation of line `i` of the other.

**Multi30k** (Elliott et al. 2016), task 1: image captions in English with German and French translations.

| split              | aliases     | lines  |
|--------------------|-------------|--------|
| `train`            |             | 29,000 |
| `val`              |             |  1,014 |
| `test_2016_flickr` | `test_2016` |  1,000 |
| `test_2017_flickr` | `test_2017` |  1,000 |
| `test_2017_mscoco` |             |    461 |
| `test_2018_flickr` | `test_2018` |  1,071 |

Files `<split>.<lang>.gz` for `lang` in en, de, fr: from `data_dir` (or its `multi30k/` subfolder, so the parent
`shared/data` works), else downloaded into `cache_dir()/multi30k/` from the `multi30k/dataset` commit that
SOURCES.md section 15 names; each file's sha256 is verified before it is decompressed (`experiments.datafiles`).

**CLDR dates** (`cldr_dates`): the offline default. Babel ships the Unicode CLDR locale data, whose "full" and
"long" date formats are human-written per locale, so `format_date(d, "full", locale="de")` ("Mittwoch,
2. Dezember 2026") and the same date in `locale="en"` ("Wednesday, December 2, 2026") are a real (if small and
formulaic) parallel corpus: the translation must map each word and reorder day and month. Distinct dates from
1900-2099 are split into train/val/test without overlap, so the test set measures generalisation to unseen
dates. Any two CLDR locales form a pair (`de`, `en`, `fr`, `es`, `ja`, ...).
"""

from __future__ import annotations

import dataclasses
import datetime
import gzip
import os
import zlib
from collections.abc import Mapping, Sequence

import numpy as np

from experiments import datafiles
from experiments.datafiles import DataFile

MULTI30K_COMMIT = "a3d2e0d26b56f3846f66a952536ffed4e401d05a"
_MULTI30K_URL = f"https://raw.githubusercontent.com/multi30k/dataset/{MULTI30K_COMMIT}/data/task1/raw/"
MULTI30K_LANGUAGES = ("en", "de", "fr")
MULTI30K_SPLITS = ("train", "val", "test_2016_flickr", "test_2017_flickr", "test_2017_mscoco", "test_2018_flickr")
SPLIT_ALIASES = {"test_2016": "test_2016_flickr", "test_2017": "test_2017_flickr", "test_2018": "test_2018_flickr"}

# name -> (sha256 of the .gz file, lines after decompression): SOURCES.md section 15.
_MULTI30K = {
    "train.en.gz": ("d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f", 29000),
    "train.de.gz": ("726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6", 29000),
    "train.fr.gz": ("622e75069e9f4c577425c4f277116ce66e63a2401c0a2312d90073cb12379a3c", 29000),
    "val.en.gz": ("14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28", 1014),
    "val.de.gz": ("f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a", 1014),
    "val.fr.gz": ("ca3106f1a72390591d25f6c45cb4cd39dec4cd3f123e099748a3ce5256c160e9", 1014),
    "test_2016_flickr.en.gz": ("611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9", 1000),
    "test_2016_flickr.de.gz": ("9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8", 1000),
    "test_2016_flickr.fr.gz": ("6d326e188d259fb1d04ac19eae3af956559b3a0b93d7635e56c90987c40c8b90", 1000),
    "test_2017_flickr.en.gz": ("76a444ee25172e72695cddb13ae4a3bda59430617be88e0bb46b60504f054074", 1000),
    "test_2017_flickr.de.gz": ("a2c89666db00c495cd8513b9d708d5a3acc205d7de312ef2bf5fb7ebc1540aee", 1000),
    "test_2017_flickr.fr.gz": ("3ba671ceb2299f3304ffafefea7a833d08632fbaf0ba18546f8a2ec2391af496", 1000),
    "test_2017_mscoco.en.gz": ("aab300bfb4427697987e02cd0aacd44bfe8aa50456231b6474c08038bbed2b58", 461),
    "test_2017_mscoco.de.gz": ("799e4854c25d601cb6cb6be29eabe5667734c61ace2f495e03e429031a0bc338", 461),
    "test_2017_mscoco.fr.gz": ("754f3072ba9f124569ba5258b32730fc1d214bbf8e0c6dfb2b74401676220db0", 461),
    "test_2018_flickr.en.gz": ("ef4f4844037d4c5dea75c9a8ed5fd78905967a26f67c255e230cc9780032654d", 1071),
    "test_2018_flickr.de.gz": ("ddd0130c7d97482dc5197a02141dae8dd79f20f03586c480d675c09a32daf608", 1071),
    "test_2018_flickr.fr.gz": ("fb2b83fcceb937a4f7e3e93c1c51c22aba92f1e342391e6b5ba392b16a920501", 1071),
}
MULTI30K_FILES = {name: DataFile(name, _MULTI30K_URL + name, sha) for name, (sha, _) in _MULTI30K.items()}
MULTI30K_LINES = {name: lines for name, (_, lines) in _MULTI30K.items()}

CITATION = ("Elliott, Frank, Sima'an, Specia (2016). Multi30K: Multilingual English-German Image Descriptions. "
            "Proceedings of the 5th Workshop on Vision and Language.")


@dataclasses.dataclass(frozen=True, repr=False)
class ParallelText:
    """`target[i]` translates `source[i]`; both tuples of non-empty raw sentences, equally long."""

    source: tuple[str, ...]
    target: tuple[str, ...]
    name: str = "<text>"

    def __post_init__(self):
        object.__setattr__(self, "source", tuple(self.source))
        object.__setattr__(self, "target", tuple(self.target))
        if len(self.source) != len(self.target):
            raise ValueError(f"{self.name}: {len(self.source)} source sentences but {len(self.target)} target "
                             f"sentences; line i of each side must translate line i of the other")
        if not self.source:
            raise ValueError(f"{self.name}: no sentences")
        for side, sentences in (("source", self.source), ("target", self.target)):
            for index, sentence in enumerate(sentences):
                if not isinstance(sentence, str) or not sentence.strip():
                    raise ValueError(f"{self.name}: {side} sentence {index + 1} is empty ({sentence!r})")

    def __len__(self) -> int:
        return len(self.source)

    def __repr__(self) -> str:
        return f"ParallelText({self.name!r}, {len(self)} pairs)"

    def head(self, count: int) -> ParallelText:
        """The first `count` pairs (a smaller run's subset; the order is the file's)."""
        return ParallelText(self.source[:count], self.target[:count], self.name)


def canonical_split(split: str) -> str:
    """`split` with its alias resolved (`test_2016` -> `test_2016_flickr`); a ValueError for an unknown one."""
    split = SPLIT_ALIASES.get(split, split)
    if split not in MULTI30K_SPLITS:
        known = ", ".join(MULTI30K_SPLITS + tuple(SPLIT_ALIASES))
        raise ValueError(f"Multi30k has no split {split!r}; expected one of {known}")
    return split


def read_gzip_lines(data: bytes, label: str) -> list[str]:
    """The UTF-8 lines of gzip `data` (`label` names the file in errors): a damaged archive or a non-UTF-8 byte
    is a ValueError saying so, and every line must be non-empty."""
    try:
        raw = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as error:
        raise ValueError(f"{label} is not a valid gzip file ({type(error).__name__}: {error}); expected a gzip of "
                         f"UTF-8 text, one sentence per line") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{label}: byte {error.start} of the decompressed text is not UTF-8 ({error.reason})") \
            from None
    lines = text.removesuffix("\n").split("\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            raise ValueError(f"{label}, line {number}: empty line; expected one sentence per line")
    return lines


def load_multi30k(source: str, target: str, splits: Sequence[str] = ("train", "val", "test_2016_flickr"),
                  data_dir: str | os.PathLike | None = None,
                  files: Mapping[str, DataFile] = MULTI30K_FILES) -> dict[str, ParallelText]:
    """`{split: ParallelText}` of Multi30k task 1 from `source` to `target` (two of en, de, fr) for each split
    (aliases accepted, keys canonical). `files` is the pinned table (tests pass their own).

    Errors: an unknown language or split, a language pair with itself, a missing file (FileNotFoundError naming
    the path and the files the folder needs), a wrong checksum, a damaged gzip, or two sides with different line
    counts (ValueError naming both files)."""
    for role, language in (("source", source), ("target", target)):
        if language not in MULTI30K_LANGUAGES:
            raise ValueError(f"{role} language must be one of {', '.join(MULTI30K_LANGUAGES)} for Multi30k, "
                             f"got {language!r}")
    if source == target:
        raise ValueError(f"source and target languages are both {source!r}; translation needs two")
    splits = [canonical_split(split) for split in splits]  # every name checked before any file is read
    result = {}
    for split in splits:
        sides = []
        for language in (source, target):
            name = f"{split}.{language}.gz"
            expected = [f"{split}.{lang}.gz" for lang in (source, target)]
            data, path = datafiles.read_verified(files[name], "multi30k", data_dir, expected=expected)
            sides.append((read_gzip_lines(data, str(path)), path))
        (src_lines, src_path), (tgt_lines, tgt_path) = sides
        if len(src_lines) != len(tgt_lines):
            raise ValueError(f"{split}: {src_path} has {len(src_lines)} lines but {tgt_path} has {len(tgt_lines)}; "
                             f"line i of each must be translations of one another")
        result[split] = ParallelText(tuple(src_lines), tuple(tgt_lines), f"multi30k {split} {source}-{target}")
    return result


def files_record(source: str, target: str, splits: Sequence[str]) -> list[dict]:
    """What a run read, for its config: each file's name, URL and sha256."""
    names = [f"{canonical_split(s)}.{lang}.gz" for s in splits for lang in (source, target)]
    return [{"name": n, "url": MULTI30K_FILES[n].url, "sha256": MULTI30K_FILES[n].sha256} for n in names]


# -- CLDR dates (offline) -------------------------------------------------------------------------------------------
CLDR_FORMATS = ("full", "long")  # the spelled-out formats; "medium"/"short" are mostly digits, one token each
_FIRST_DAY = datetime.date(1900, 1, 1)
_DAYS = (datetime.date(2099, 12, 31) - _FIRST_DAY).days + 1


def check_locale(role: str, locale: str) -> str:
    """`locale` if Babel knows it, else a ValueError naming `role` (source/target)."""
    import babel

    try:
        babel.Locale.parse(locale)
    except (ValueError, babel.UnknownLocaleError) as error:
        raise ValueError(f"{role} language {locale!r} is not a CLDR locale known to Babel ({error})") from None
    return locale


def cldr_dates(source: str, target: str, sizes: Mapping[str, int] | None = None,
               seed: int = 0) -> dict[str, ParallelText]:
    """`{"train", "val", "test": ParallelText}` of dates written out in locale `source` and in locale `target`
    (module docstring), `sizes` pairs per split (default 6000/400/400), each pair a distinct date drawn from
    1900-2099 with `np.random.default_rng(seed)`, its format ("full" with the weekday, or "long") drawn too.
    No date is in two splits."""
    import babel.dates

    check_locale("source", source)
    check_locale("target", target)
    if source == target:
        raise ValueError(f"source and target languages are both {source!r}; translation needs two")
    sizes = dict(sizes or {"train": 6000, "val": 400, "test": 400})
    total = sum(sizes.values())
    if total > _DAYS:
        raise ValueError(f"at most {_DAYS} distinct dates, asked for {total}")
    rng = np.random.default_rng(seed)
    days = rng.choice(_DAYS, size=total, replace=False)
    formats = rng.integers(len(CLDR_FORMATS), size=total)
    result, start = {}, 0
    for split, size in sizes.items():
        pairs = [(_FIRST_DAY + datetime.timedelta(days=int(day)), CLDR_FORMATS[int(f)])
                 for day, f in zip(days[start:start + size], formats[start:start + size])]
        start += size
        result[split] = ParallelText(
            tuple(babel.dates.format_date(d, format=f, locale=source) for d, f in pairs),
            tuple(babel.dates.format_date(d, format=f, locale=target) for d, f in pairs),
            f"cldr_dates {split} {source}-{target}")
    return result


def cldr_record() -> dict:
    """The Babel and CLDR versions the dates came from (they change the text), for a run's config."""
    import babel
    import babel.core

    return {"babel": babel.__version__, "cldr": str(babel.core.get_cldr_version())}
