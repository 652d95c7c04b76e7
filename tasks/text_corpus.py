"""The text of ``task=lm``: an offline corpus every Python installation has, or the user's own.

The embedded corpus is human-written text that ships with the running interpreter: the source
of its standard library (every ``.py`` file under ``sysconfig``'s ``stdlib`` path, without the
test suites, IDLE and installed packages) and its bundled reference documentation,
``pydoc_data.topics``. Nothing is generated and nothing is downloaded. Two Pythons ship different
text, so the corpus is identified by the SHA-256 of its documents (names and bytes), which the
run's summary records.

``data_root`` names a folder of ``.txt`` files (read recursively, in sorted order) or one text
file; the same loader reads it.

The split is deterministic and the same for both sources: the documents are joined (sorted by
name, separated by a blank line) and cut into chunks of ``SPLIT_CHUNK`` bytes; every
``VAL_EVERY``-th chunk (chunk ``i`` with ``i % VAL_EVERY == VAL_EVERY - 1``) is validation, the
rest training. Validation text is thus contiguous prose or code that training never saw, spread
over the whole corpus.
"""

from __future__ import annotations

import hashlib
import os
import sysconfig
from dataclasses import dataclass
from pathlib import Path

#: bytes per split chunk: long enough to hold whole functions and paragraphs
SPLIT_CHUNK = 16_384
#: one chunk in this many is validation (5 %)
VAL_EVERY = 20
#: folders of the standard library left out: test suites, IDLE, installed third-party packages
SKIPPED_DIRS = frozenset(
    {"site-packages", "dist-packages", "test", "tests", "idle_test", "idlelib", "__pycache__"}
)


@dataclass(frozen=True)
class Corpus:
    """The training and validation text as UTF-8 bytes, and what they are."""

    train: bytes
    val: bytes
    sha256: str  # of the documents' names and bytes, before the split
    num_documents: int
    source: str  # in words, for the run record


def stdlib_documents() -> list[tuple[str, bytes]]:
    """``(name, bytes)`` of the standard library's source files and of ``pydoc_data.topics``."""
    root = Path(sysconfig.get_paths()["stdlib"])
    docs = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
        for name in sorted(files):
            if name.endswith(".py"):
                path = Path(folder) / name
                docs.append((path.relative_to(root).as_posix(), path.read_bytes()))
    from pydoc_data.topics import topics

    for key in sorted(topics):
        docs.append((f"pydoc_data.topics/{key}", topics[key].encode("utf-8")))
    return docs


def folder_documents(data_root: str | os.PathLike) -> list[tuple[str, bytes]]:
    """``(name, bytes)`` of one text file, or of every ``.txt`` file under a folder."""
    root = Path(data_root).expanduser()
    if root.is_file():
        return [(root.name, root.read_bytes())]
    if not root.is_dir():
        raise FileNotFoundError(
            f"task.data_root={str(data_root)!r} is neither a text file nor a folder"
        )
    paths = sorted(p for p in root.rglob("*.txt") if p.is_file())
    if not paths:
        raise FileNotFoundError(
            f"task.data_root={str(data_root)!r} holds no .txt files (a folder of .txt files "
            "or one text file is accepted)"
        )
    return [(p.relative_to(root).as_posix(), p.read_bytes()) for p in paths]


def content_hash(docs: list[tuple[str, bytes]]) -> str:
    digest = hashlib.sha256()
    for name, data in docs:
        for part in (name.encode("utf-8"), data):
            digest.update(len(part).to_bytes(8, "little"))
            digest.update(part)
    return digest.hexdigest()


def split_text(text: bytes) -> tuple[bytes, bytes]:
    """``(train, val)``: every ``VAL_EVERY``-th chunk of ``SPLIT_CHUNK`` bytes is validation."""
    chunks = [text[i : i + SPLIT_CHUNK] for i in range(0, len(text), SPLIT_CHUNK)]
    val = [c for i, c in enumerate(chunks) if i % VAL_EVERY == VAL_EVERY - 1]
    train = [c for i, c in enumerate(chunks) if i % VAL_EVERY != VAL_EVERY - 1]
    return b"".join(train), b"".join(val)


def load_corpus(data_root: str | os.PathLike | None = None) -> Corpus:
    """The embedded corpus (``data_root=None``) or the user's, split into train and validation."""
    if data_root is None:
        docs = stdlib_documents()
        source = "embedded: Python standard library source + pydoc_data.topics"
    else:
        docs = folder_documents(data_root)
        source = f"text at {data_root}"
    train, val = split_text(b"\n\n".join(data for _, data in docs))
    if not val or not train:
        raise ValueError(
            f"the corpus ({source}) holds {sum(len(d) for _, d in docs)} bytes; at least "
            f"{VAL_EVERY * SPLIT_CHUNK} are needed for a training and a validation split"
        )
    return Corpus(train, val, content_hash(docs), len(docs), source)
