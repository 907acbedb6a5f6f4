"""MkDocs hook: the site's prose pages are the repository's own Markdown files, read in place (no copies).

README.md (the home page), experiments/README.md (the results), ARCHITECTURE.md, benchmarks/NOTES.md and every
figure under experiments/figures/ join the site under their repository paths, so the links between them, and from
them to the figures, work unchanged on the site and on a code host.
"""

from __future__ import annotations

import pathlib

from mkdocs.structure.files import File, Files

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = ("README.md", "ARCHITECTURE.md", "experiments/README.md", "benchmarks/NOTES.md")
FIGURES = ("experiments/figures",)


def on_files(files: Files, config) -> Files:
    paths = [ROOT / page for page in PAGES]
    for folder in FIGURES:
        paths += sorted(p for p in (ROOT / folder).rglob("*") if p.is_file())
    for path in paths:
        uri = path.relative_to(ROOT).as_posix()
        if files.get_file_from_path(uri) is None:
            files.append(File(uri, src_dir=str(ROOT), dest_dir=config["site_dir"],
                              use_directory_urls=config["use_directory_urls"]))
    return files
