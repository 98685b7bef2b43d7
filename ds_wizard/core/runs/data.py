"""Training data with no downloads: tokenizers, token sources and per-rank shards.

numpy only (no torch): the launch side validates data with it before any rank starts,
and each rank reads its shard with it. Import it lazily (numpy is not on the fast paths).

- The default corpus is the Python standard library's own source, found through
  ``sysconfig``: it exists wherever Python does. Files are read in sorted order, so every
  machine builds the same token stream.
- User data: ``.txt``, ``.jsonl`` (a ``text`` field per line), a directory of those, or a
  pre-tokenized ``.bin`` (a flat uint16/uint32 array, read through a memmap).
- Tokenizer: bytes (vocabulary 256) or a local HF ``tokenizer.json``.
"""

from __future__ import annotations

import errno
import os
import stat
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ds_wizard.core.base.errors import DsWizardError
from ds_wizard.core.base.fsio import kind_of, parse_json_text, read_input, read_text

#: bytes of one text data file (tokenized in memory) and of a tokenizer.json
MAX_TEXT_DATA_BYTES = 2 << 30
MAX_TOKENIZER_BYTES = 256 << 20

BYTE_VOCAB = 256
DEFAULT_CORPUS_BYTES = 8 << 20  # plenty for demos; keeps start-up under a second
DOC_SEPARATOR = b"\n\n"
_SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__"}


class DataError(DsWizardError):
    """Training data or a tokenizer that cannot be used."""


class Tokenizer(Protocol):
    name: str
    vocab_size: int

    def encode(self, text: bytes) -> np.ndarray: ...


class ByteTokenizer:
    """One token per byte: vocabulary 256, nothing to download, any text round-trips."""

    name = "bytes"
    vocab_size = BYTE_VOCAB

    def encode(self, text: bytes) -> np.ndarray:
        return np.frombuffer(text, dtype=np.uint8).astype(np.uint16)


class HFTokenizer:
    """A local ``tokenizer.json`` through the ``tokenizers`` package."""

    def __init__(self, path: Path) -> None:
        try:
            from tokenizers import Tokenizer as _Tok
        except ImportError as exc:  # pragma: no cover - a declared dependency
            raise DataError("the tokenizers package is not installed",
                            "pip install tokenizers") from exc
        _data_path_kind(path, "tokenizer file")
        text = read_text(path, limit=MAX_TOKENIZER_BYTES, what="tokenizer.json",
                         error=DataError)
        try:
            self._tok = _Tok.from_str(text)
        except Exception as exc:  # tokenizers raises its own untyped errors
            raise DataError(f"{path}: not a tokenizer.json ({exc})") from exc
        self.name = str(path)
        self.vocab_size = int(self._tok.get_vocab_size(with_added_tokens=True))

    def encode(self, text: bytes) -> np.ndarray:
        ids = self._tok.encode(text.decode("utf-8", errors="replace")).ids
        return np.asarray(ids, dtype=np.uint32 if self.vocab_size > 65536 else np.uint16)


def _data_path_kind(path: Path, what: str) -> str:
    """``"file"`` or ``"dir"`` for a data path or tokenizer, else one-line DataError: missing,
    a symlink loop, a FIFO or device (never opened: reading one would hang or never end)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise DataError(f"{what} {path} does not exist",
                        "give a .txt, .jsonl or .bin file, or a directory of text files"
                        if what == "data" else "give the path of a local tokenizer.json"
                        ) from None
    except (OSError, ValueError) as exc:
        reason = "a loop of symbolic links" if getattr(exc, "errno", None) == errno.ELOOP \
            else (getattr(exc, "strerror", None) or str(exc))
        raise DataError(f"{what} {path} cannot be read: {reason}", "check the path") from None
    if stat.S_ISDIR(mode) and what == "data":
        return "dir"
    if not stat.S_ISREG(mode):
        raise DataError(f"{what} {path} is {kind_of(mode)}, not a regular file",
                        "ds-wizard reads only regular files")
    return "file"


def load_tokenizer(path: str | Path | None) -> Tokenizer:
    return ByteTokenizer() if path is None else HFTokenizer(Path(path))


def stdlib_files() -> list[Path]:
    """The standard library's ``.py`` files in a fixed order (relative path, sorted)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = [p for p in root.rglob("*.py") if not _SKIP_DIRS.intersection(p.parts)]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def embedded_corpus(max_bytes: int = DEFAULT_CORPUS_BYTES) -> bytes:
    parts: list[bytes] = []
    total = 0
    for path in stdlib_files():
        try:
            data = read_input(path, limit=max_bytes, what="Python source file")
        except DsWizardError:
            continue  # an unreadable stdlib file only shortens the corpus
        parts.append(data)
        total += len(data) + len(DOC_SEPARATOR)
        if total >= max_bytes:
            break
    if not parts:
        raise DataError("no Python standard library sources found through sysconfig",
                        "pass --data FILE")
    return DOC_SEPARATOR.join(parts)[:max_bytes]


@dataclass(frozen=True)
class TokenSource:
    tokens: np.ndarray  # 1-D; a memmap for .bin files
    description: str
    tokenizer: str


def _text_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in (".txt", ".jsonl"))
        if not files:
            raise DataError(f"{path} holds no .txt or .jsonl files")
        return files
    return [path]


def _read_jsonl(path: Path) -> list[bytes]:
    docs = []
    raw_file = read_input(path, limit=MAX_TEXT_DATA_BYTES, what="data file", error=DataError)
    for lineno, raw in enumerate(raw_file.splitlines(), 1):
        if not raw.strip():
            continue
        record = parse_json_text(raw, f"{path}:{lineno}", error=DataError)
        text = record.get("text") if isinstance(record, dict) else None
        if not isinstance(text, str):
            raise DataError(f"{path}:{lineno}: no string field \"text\"",
                            'each line must look like {"text": "..."}')
        docs.append(text.encode("utf-8"))
    return docs


def bin_dtype(flag: str | None, vocab_size: int) -> np.dtype:
    """The flag's dtype, or the smallest one that holds every id of the vocabulary."""
    if flag is not None:
        if flag not in ("uint16", "uint32"):
            raise DataError(f"--data-dtype {flag!r} is not uint16 or uint32")
        return np.dtype(flag)
    return np.dtype(np.uint16 if vocab_size <= 65536 else np.uint32)


def load_tokens(
    data: str | Path | None,
    tokenizer: Tokenizer,
    model_vocab: int,
    *,
    dtype: str | None = None,
    max_bytes: int = DEFAULT_CORPUS_BYTES,
) -> TokenSource:
    """Read and tokenize the data; fail clearly when ids would not fit the model."""
    if tokenizer.vocab_size > model_vocab:
        raise DataError(
            f"tokenizer {tokenizer.name} has {tokenizer.vocab_size} tokens but the model's "
            f"vocabulary is {model_vocab}",
            f"use a preset with vocab_size >= {tokenizer.vocab_size} "
            f"(--set model.vocab_size={tokenizer.vocab_size})",
        )
    if data is None:
        tokens = tokenizer.encode(embedded_corpus(max_bytes))
        return TokenSource(tokens, f"embedded corpus (Python {sysconfig.get_python_version()} "
                           "standard library source)", tokenizer.name)
    path = Path(data).expanduser()
    _data_path_kind(path, "data")
    if path.suffix == ".bin":
        return _load_bin(path, model_vocab, dtype)
    docs: list[bytes] = []
    for f in _text_files(path):
        if f.suffix == ".jsonl":
            docs += _read_jsonl(f)
        elif f.suffix == ".txt" or path.is_file():
            docs.append(read_input(f, limit=MAX_TEXT_DATA_BYTES, what="data file",
                                   error=DataError))
    if not docs:
        raise DataError(f"{path} contains no text")
    tokens = tokenizer.encode(DOC_SEPARATOR.join(docs))
    return TokenSource(tokens, str(path), tokenizer.name)


def _load_bin(path: Path, model_vocab: int, flag: str | None) -> TokenSource:
    dt = bin_dtype(flag, model_vocab)
    if _data_path_kind(path, "data") != "file":
        raise DataError(f"{path} is a directory", "a .bin data path is one file of token ids")
    size = path.stat().st_size
    if size == 0 or size % dt.itemsize:
        raise DataError(f"{path}: {size} bytes is not a whole number of {dt.name} tokens",
                        "pass --data-dtype uint16 or uint32 to match how it was written")
    tokens = np.memmap(path, dtype=dt, mode="r")
    top = int(tokens.max())
    if top >= model_vocab:
        raise DataError(f"{path} holds token id {top}, outside the model's vocabulary "
                        f"of {model_vocab}",
                        "check --data-dtype, or use a preset with a larger vocab_size")
    return TokenSource(tokens, f"{path} ({dt.name}, pre-tokenized)", "pre-tokenized")


class ShardedSamples:
    """Fixed-length samples, shuffled per epoch, split over data-parallel ranks.

    Sample ``i`` is tokens ``[i·L, (i+1)·L)``. The run reads one global sequence: position
    ``g`` is sample ``perm_e[g mod n]`` of epoch ``e = g // n``, where ``perm_e`` is a
    permutation of the ``n`` samples seeded by ``(seed, e)``. Nothing in it depends on the
    number of ranks, so a run resumed on another world size (issue 21) continues at the
    very next global position: no sample is seen twice or skipped in an epoch.

    Rank ``r`` of ``W`` takes positions ``start + c·W + r`` for its ``c``-th sample since
    ``start`` (:func:`rank_positions`); after every rank has taken ``k`` samples, exactly the
    positions ``[start, start + k·W)`` are consumed. ``start`` is the global position the
    run was resumed at; ``cursor`` counts this rank's samples since then.
    """

    def __init__(self, tokens: np.ndarray, seq_len: int, rank: int, world: int,
                 seed: int = 0) -> None:
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is outside world size {world}")
        self.tokens = tokens
        self.seq_len = seq_len
        self.rank = rank
        self.world = world
        self.seed = seed
        self.n_samples = len(tokens) // seq_len
        self.per_rank = self.n_samples // world  # per epoch, for the summary
        if self.per_rank == 0:
            raise DataError(
                f"the data has {len(tokens)} tokens: fewer than one {seq_len}-token sample "
                f"per rank for {world} rank(s)",
                "give more data or lower train.seq_len",
            )
        self.start = 0
        self.cursor = 0
        self._perm_epoch = -1
        self._perm: np.ndarray | None = None

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._perm = rng.permutation(self.n_samples)
            self._perm_epoch = epoch
        assert self._perm is not None
        return self._perm

    def position(self, cursor: int) -> int:
        """The global position of this rank's ``cursor``-th sample since ``start``."""
        return rank_position(self.start, cursor, self.rank, self.world)

    def sample_at(self, position: int) -> int:
        """The sample id at global ``position``."""
        epoch, i = divmod(position, self.n_samples)
        return int(self._permutation(epoch)[i])

    def sample_id(self, cursor: int) -> int:
        return self.sample_at(self.position(cursor))

    def next_batch(self, micro: int) -> np.ndarray:
        """``micro`` samples as an int64 array of shape (micro, seq_len)."""
        out = np.empty((micro, self.seq_len), dtype=np.int64)
        for j in range(micro):
            start = self.sample_id(self.cursor) * self.seq_len
            out[j] = self.tokens[start:start + self.seq_len]
            self.cursor += 1
        return out

    @property
    def consumed(self) -> int:
        """Global samples consumed by the run so far (every rank moves in lockstep)."""
        return self.start + self.cursor * self.world

    @property
    def epoch(self) -> int:
        return self.consumed // self.n_samples

    def state_dict(self) -> dict[str, Any]:
        return {"consumed": self.consumed, "cursor": self.cursor, "world": self.world,
                "n_samples": self.n_samples, "seed": self.seed, "seq_len": self.seq_len}

    def load_state_dict(self, state: dict[str, Any]) -> list[str]:
        """Restore the position; returns warnings when the data changed."""
        notes = []
        if "consumed" in state:
            consumed = int(state["consumed"])
        else:
            # a checkpoint from before the global sequence: its cursor counted per rank
            consumed = int(state["cursor"]) * int(state.get("world", self.world))
        if (state.get("n_samples"), state.get("seed"), state.get("seq_len")) != (
            self.n_samples, self.seed, self.seq_len
        ):
            notes.append("the data, seed or seq_len changed since the checkpoint: "
                         "the sample order is not the original one")
        self.start, self.cursor = consumed, 0
        return notes


def rank_position(start: int, cursor: int, rank: int, world: int) -> int:
    """Global position of rank ``rank``'s ``cursor``-th sample of a stretch begun at
    ``start`` on ``world`` ranks: interleaved, so every block of ``world`` consecutive
    positions is one sample per rank."""
    return start + cursor * world + rank


def step_positions(consumed: int, global_batch: int) -> range:
    """The global positions one optimizer step takes, whatever the world size: the next
    ``global_batch`` of them (micro × accumulation × ranks, interleaved per micro-sample)."""
    return range(consumed, consumed + global_batch)
