"""Small tokenizers trained here in a second (nothing downloaded), each with its own way of cutting text,
for the synthetic prompt tests."""

from __future__ import annotations

import random
from pathlib import Path

from locust_inference import synthetic_prompts
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

CORPUS = " ".join(synthetic_prompts.WORDS)


def bpe(path: Path, vocab_size: int = 400) -> Tokenizer:
    """A byte-level BPE whose merges cross the spaces between words (no split on whitespace before the
    merges, as in SentencePiece-like tokenizers): a word's count depends on its neighbours."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    draw = random.Random(0)
    corpus = [" ".join(draw.choices(synthetic_prompts.WORDS, k=40)) for _ in range(200)]
    tok.train_from_iterator([CORPUS, *corpus], trainer)
    tok.save(str(path))
    return tok


def chars(path: Path) -> Tokenizer:
    """One token per character, spaces included: no word is one token."""
    vocab = {"[UNK]": 0, " ": 1, **{c: i + 2 for i, c in enumerate("abcdefghijklmnopqrstuvwxyz")}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok.save(str(path))
    return tok


def wordpiece(path: Path) -> Tokenizer:
    """BERT-like: whitespace pre-tokenizer, lowercase, sub-words with ##."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordPieceTrainer(vocab_size=120, special_tokens=["[UNK]"])
    tok.train_from_iterator([CORPUS] * 3, trainer)
    tok.save(str(path))
    return tok


def count(tok: Tokenizer, text: str) -> int:
    return len(tok.encode(text, add_special_tokens=False).ids)


def make_all(folder: Path) -> dict[str, tuple[Path, Tokenizer]]:
    """The three tokenizers saved in ``folder``: name -> (tokenizer.json, the tokenizer)."""
    made = {}
    for name, build in (("bpe", bpe), ("chars", chars), ("wordpiece", wordpiece)):
        path = folder / f"{name}.json"
        made[name] = (path, build(path))
    return made
