"""Training data: tokenizers, sources and per-rank shards (numpy only, fast)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ds_wizard.core.runs import data as D


def test_byte_tokenizer_is_one_token_per_byte() -> None:
    ids = D.ByteTokenizer().encode("hé\n".encode())
    assert ids.tolist() == [104, 195, 169, 10]


def test_embedded_corpus_is_stdlib_source_in_a_fixed_order() -> None:
    files = D.stdlib_files()
    assert files and all(p.suffix == ".py" for p in files)
    assert not any("site-packages" in p.parts for p in files)
    a = D.embedded_corpus(200_000)
    assert a == D.embedded_corpus(200_000) and len(a) == 200_000
    assert files[0].read_bytes()[:1000] == a[:1000]


def test_shards_are_disjoint_cover_an_epoch_and_are_deterministic() -> None:
    tokens = np.arange(8 * 100, dtype=np.uint16)
    world = 3
    shards = [D.ShardedSamples(tokens, 8, r, world, seed=7) for r in range(world)]
    per_rank = shards[0].per_rank
    assert per_rank == 33  # 100 samples // 3 ranks; the remainder is dropped
    seen = [[s.sample_id(c) for c in range(per_rank)] for s in shards]
    flat = [i for rank in seen for i in rank]
    assert len(set(flat)) == len(flat) == 99
    again = D.ShardedSamples(tokens, 8, 1, world, seed=7)
    assert [again.sample_id(c) for c in range(per_rank)] == seen[1]
    other_seed = D.ShardedSamples(tokens, 8, 1, world, seed=8)
    assert [other_seed.sample_id(c) for c in range(per_rank)] != seen[1]
    # the next epoch is a different order of the same samples
    next_epoch = [shards[0].sample_id(per_rank + c) for c in range(per_rank)]
    assert next_epoch != seen[0]


def test_batches_are_windows_of_the_token_stream() -> None:
    tokens = np.arange(4 * 10, dtype=np.uint16)
    s = D.ShardedSamples(tokens, 4, 0, 1, seed=0)
    batch = s.next_batch(3)
    assert batch.shape == (3, 4) and batch.dtype == np.int64
    for row in batch:
        assert row[0] % 4 == 0 and row.tolist() == list(range(row[0], row[0] + 4))
    assert s.cursor == 3


def test_data_position_resumes_exactly() -> None:
    tokens = np.arange(16 * 50, dtype=np.uint16)
    a = D.ShardedSamples(tokens, 16, 1, 2, seed=3)
    a.next_batch(5)
    state = a.state_dict()
    expected = a.next_batch(4)
    b = D.ShardedSamples(tokens, 16, 1, 2, seed=3)
    assert b.load_state_dict(state) == []
    assert np.array_equal(b.next_batch(4), expected)


def test_resume_on_another_world_size_keeps_the_global_position() -> None:
    tokens = np.arange(16 * 50, dtype=np.uint16)
    a = D.ShardedSamples(tokens, 16, 0, 2, seed=3)
    a.next_batch(6)
    b = D.ShardedSamples(tokens, 16, 0, 4, seed=3)
    assert b.load_state_dict(a.state_dict()) == []
    assert b.consumed == 12 and b.position(0) == 12


def _consume(world: int, state: dict | None, steps: int, micro: int, gas: int,
             tokens: np.ndarray) -> tuple[list[list[int]], dict]:
    """``steps`` optimizer steps on ``world`` ranks in lockstep; each step's samples, sorted
    (a multiset: a step across an epoch end may hold one sample from each epoch)."""
    ranks = [D.ShardedSamples(tokens, 4, r, world, seed=11) for r in range(world)]
    for s in ranks:
        if state is not None:
            s.load_state_dict(state)
    taken = []
    for _ in range(steps):
        step: list[int] = []
        for _ in range(gas):
            for s in ranks:
                step += [s.sample_id(s.cursor + j) for j in range(micro)]
                s.next_batch(micro)
        assert len(step) == micro * gas * world
        taken.append(sorted(step))
    return taken, ranks[0].state_dict()


def test_a_2_3_1_world_size_change_takes_exactly_the_uninterrupted_samples() -> None:
    """Issue 21: the same global batch (12) re-split over 2, 3 then 1 ranks consumes, step
    by step, exactly the samples an uninterrupted 2-rank run takes, across an epoch end
    (50 samples: the epoch ends inside step 5), none twice in an epoch, none skipped."""
    tokens = np.arange(4 * 50, dtype=np.uint16)
    straight, _ = _consume(2, None, 9, micro=3, gas=2, tokens=tokens)
    first, state = _consume(2, None, 3, micro=3, gas=2, tokens=tokens)
    assert state["consumed"] == 36
    second, state = _consume(3, state, 3, micro=2, gas=2, tokens=tokens)
    assert state["consumed"] == 72
    third, state = _consume(1, state, 3, micro=3, gas=4, tokens=tokens)
    assert state["consumed"] == 108
    assert first + second + third == straight
    one = D.ShardedSamples(tokens, 4, 0, 1, seed=11)
    epoch0 = [one.sample_at(g) for g in range(50)]
    assert sorted(epoch0) == list(range(50))  # every sample exactly once in the epoch
    order = [one.sample_at(g) for g in range(108)]
    assert [s for step in straight for s in step] == \
        [s for k in range(9) for s in sorted(order[12 * k:12 * (k + 1)])]


def test_a_checkpoint_from_the_per_rank_cursor_resumes_at_its_global_position() -> None:
    tokens = np.arange(16 * 50, dtype=np.uint16)
    b = D.ShardedSamples(tokens, 16, 1, 3, seed=3)
    b.load_state_dict({"cursor": 6, "world": 2, "n_samples": 50, "seed": 3, "seq_len": 16})
    assert b.consumed == 12 and b.position(0) == 13


def test_too_little_data_is_a_clear_error() -> None:
    with pytest.raises(D.DataError, match="fewer than one 64-token sample per rank"):
        D.ShardedSamples(np.zeros(100, dtype=np.uint16), 64, 0, 2)


def test_txt_and_jsonl_sources(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("abc")
    src = D.load_tokens(tmp_path / "a.txt", D.ByteTokenizer(), 256)
    assert src.tokens.tolist() == [97, 98, 99]
    jl = tmp_path / "b.jsonl"
    jl.write_text(json.dumps({"text": "xy"}) + "\n\n" + json.dumps({"text": "z"}) + "\n")
    src = D.load_tokens(jl, D.ByteTokenizer(), 256)
    assert bytes(src.tokens.astype(np.uint8)) == b"xy\n\nz"
    src = D.load_tokens(tmp_path, D.ByteTokenizer(), 256)  # a directory: both files
    assert bytes(src.tokens.astype(np.uint8)) == b"abc\n\nxy\n\nz"


def test_jsonl_without_text_names_the_line(tmp_path: Path) -> None:
    jl = tmp_path / "bad.jsonl"
    jl.write_text('{"text": "ok"}\n{"body": "no"}\n')
    with pytest.raises(D.DataError, match=r"bad.jsonl:2: no string field"):
        D.load_tokens(jl, D.ByteTokenizer(), 256)


def test_bin_dtype_by_flag_or_vocab(tmp_path: Path) -> None:
    path = tmp_path / "tok.bin"
    np.array([1, 2, 70000], dtype=np.uint32).tofile(path)
    src = D.load_tokens(path, D.ByteTokenizer(), 100_000)  # vocab > 65536 → uint32
    assert src.tokens.tolist() == [1, 2, 70000]
    with pytest.raises(D.DataError, match="token id 70000"):
        D.load_tokens(path, D.ByteTokenizer(), 256, dtype="uint32")
    small = tmp_path / "small.bin"
    np.array([5, 6, 7], dtype=np.uint16).tofile(small)
    assert D.load_tokens(small, D.ByteTokenizer(), 256).tokens.tolist() == [5, 6, 7]
    with pytest.raises(D.DataError, match="not a whole number of uint32"):
        D.load_tokens(small, D.ByteTokenizer(), 256, dtype="uint32")


def _word_tokenizer(path: Path, n_words: int) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, **{f"w{i}": i + 1 for i in range(n_words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(path))
    return path


def test_hf_tokenizer_json(tmp_path: Path) -> None:
    tok = D.load_tokenizer(_word_tokenizer(tmp_path / "tokenizer.json", 10))
    assert tok.vocab_size == 11
    (tmp_path / "d.txt").write_text("w1 w2 nope w3")
    src = D.load_tokens(tmp_path / "d.txt", tok, 16)
    assert src.tokens.tolist() == [2, 3, 0, 4]


def test_tokenizer_larger_than_the_model_vocab_is_refused(tmp_path: Path) -> None:
    tok = D.load_tokenizer(_word_tokenizer(tmp_path / "tokenizer.json", 300))
    with pytest.raises(D.DataError, match="301 tokens but the model's vocabulary is 256"):
        D.load_tokens(None, tok, 256)


def test_missing_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(D.DataError, match="does not exist"):
        D.load_tokens(tmp_path / "nope.txt", D.ByteTokenizer(), 256)
    with pytest.raises(D.DataError, match="tokenizer file"):
        D.load_tokenizer(tmp_path / "nope.json")
