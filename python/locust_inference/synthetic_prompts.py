"""Synthetic prompts of a set number of input tokens (``--input-tokens MEAN``, ``--input-tokens-stddev SD``,
``--synthetic-prompts N``), counted by the ``--tokenizer`` file.

Each prompt's length is drawn from a normal law (mean, standard deviation), rounded, at least 1, from
``--seed`` (a fixed seed without it: every worker and run makes the same prompts). A prompt is English words
drawn from a fixed list, joined by spaces, grown by each word's own token count, then counted whole by the
tokenizer (the count the endpoint makes of a prompt) and corrected a word at a time until the count is the
length drawn: tokenizers merge across words (or not at all), so a word's own count is only a first guess.
A prompt the tokenizer cannot bring to its length within a bounded number of rounds stops the start with one
line, never a prompt of another length sent silently.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path

from locust_inference._native import ConfigError, count_tokens

__all__ = ["MAX_INPUT_TOKENS", "MAX_PROMPTS", "MAX_TOTAL_TOKENS", "WORDS", "lengths", "make"]

MAX_INPUT_TOKENS = 1_000_000  # one prompt: more than any model's context
MAX_PROMPTS = 100_000
MAX_TOTAL_TOKENS = 20_000_000  # all prompts together (~100 MB of text at most)
MAX_ROUNDS = 64  # corrections of the prompts still off their length, each one tokenizer pass

# Common words, none of a tokenizer's special forms: a word's token count is small for any real tokenizer.
_WORD_TEXT = """the of and to in is was for on that with as by at from his her it an were are which this be or
    has had not but also its one their first new they after two who been have all other time would more
    there when into people year city world school river house water light music night story early
    small great north south state market garden window morning summer winter letter number question answer
    paper table engine signal server request token stream model system method result value reason
    a b c d e f g h i j k l m n o p q r s t u v w x y z"""
WORDS: tuple[str, ...] = tuple(_WORD_TEXT.split())

Counter = Callable[[list[str]], list[int | None]]
NEAR = 3  # a prompt this close to its length gets its last word chosen among all words, by its count
SEARCH_BYTES = 8 << 20  # the text of one batch of last-word candidates


def _counted(counter: Counter, texts: list[str]) -> list[int]:
    counts = counter(texts)
    if any(n is None for n in counts):
        raise ConfigError("--tokenizer fails on a synthetic prompt of plain English words")
    return [n or 0 for n in counts]


def _counter(tokenizer: Path) -> Counter:
    def count(texts: list[str]) -> list[int | None]:
        try:
            return count_tokens(tokenizer, texts)
        except ValueError as err:  # the file: missing, too large, not a tokenizer
            raise ConfigError(str(err)) from None

    return count


def lengths(count: int, mean: int, stddev: float, seed: int | None) -> list[int]:
    """``count`` prompt lengths in tokens, drawn from a normal law, rounded, within 1 and
    :data:`MAX_INPUT_TOKENS`; the same for the same arguments."""
    draw = random.Random(f"input-tokens:{seed if seed is not None else 0}")
    if stddev == 0:
        return [mean] * count
    return [min(MAX_INPUT_TOKENS, max(1, round(draw.gauss(mean, stddev)))) for _ in range(count)]


def make(
    targets: Sequence[int], seed: int | None, tokenizer: Path | None = None, counter: Counter | None = None
) -> list[str]:
    """One prompt per target length, of exactly that many tokens by the tokenizer (``counter`` instead of
    the file: tests). ConfigError (one line) when the tokenizer fails on the words or a prompt cannot be
    brought to its length."""
    if counter is None:
        if tokenizer is None:
            raise ValueError("make() needs a tokenizer or a counter")
        counter = _counter(tokenizer)
    return _Builder(list(targets), seed, counter).build()


class _Builder:
    def __init__(self, targets: list[int], seed: int | None, counter: Counter) -> None:
        self.targets, self.counter = targets, counter
        self.draw = random.Random(f"prompt-words:{seed if seed is not None else 0}")
        # each word's own count first in a prompt (no space before it) and after another (a space before it)
        firsts, laters = _counted(counter, list(WORDS)), _counted(counter, [f" {w}" for w in WORDS])
        self.words = [(w, f, lat) for w, f, lat in zip(WORDS, firsts, laters, strict=True) if f and lat]
        if not self.words:
            raise ConfigError(
                "--tokenizer counts no token in plain English words: it cannot make --input-tokens prompts"
            )
        self.later = {f" {w}": lat for w, _, lat in self.words}
        self.pieces: list[list[str]] = [[] for _ in targets]

    def build(self) -> list[str]:
        for i, target in enumerate(self.targets):
            self.grow(i, target)
        off = list(range(len(self.targets)))
        for _ in range(MAX_ROUNDS):
            counts = _counted(self.counter, ["".join(self.pieces[i]) for i in off])
            still, near = [], []
            for i, count in zip(off, counts, strict=True):
                target, n = self.targets[i], count
                if n == target:
                    continue
                still.append(i)
                if n < target - NEAR:
                    self.grow(i, target - n)
                elif n > target + NEAR:
                    while len(self.pieces[i]) > 1 and n > target:  # the words' own counts: a guess
                        n -= self.later[self.pieces[i].pop()]
                else:
                    near.append(i)
            for group in self.groups(near):
                self.last_word(group)
            off = still
            if not off:
                return ["".join(p) for p in self.pieces]
        raise ConfigError(
            f"--tokenizer cannot make a prompt of exactly {self.targets[off[0]]} tokens from plain words "
            f"({len(off)} of {len(self.targets)} prompts off after {MAX_ROUNDS} rounds)"
        )

    def piece(self, word: str, first: bool) -> str:
        return word if first else f" {word}"

    def grow(self, i: int, room: int) -> None:
        """Adds words to prompt ``i`` whose own counts add up to ``room`` (or just past it, when no word is
        small enough): a first guess, corrected by the rounds."""
        while room > 0:
            first = not self.pieces[i]
            costs = [(w, f if first else lat) for w, f, lat in self.words]
            fitting = [c for c in costs if c[1] <= room] or [min(costs, key=lambda c: c[1])]
            word, cost = self.draw.choice(fitting)
            self.pieces[i].append(self.piece(word, first))
            room -= cost

    def groups(self, near: list[int]) -> list[list[int]]:
        """``near`` cut in batches whose candidates (each prompt once per word) hold about SEARCH_BYTES."""
        groups: list[list[int]] = []
        size = 0
        for i in near:
            cost = sum(map(len, self.pieces[i])) * len(self.words)
            if not groups or size + cost > SEARCH_BYTES:
                groups.append([])
                size = 0
            groups[-1].append(i)
            size += cost
        return groups

    def last_word(self, group: list[int]) -> None:
        """For each prompt of ``group``, near its length: a word added, or its last word replaced, so that
        the count is exact, chosen at random among those that make it so; else the added word that leaves
        it closest below (a later round adds another), else the replacement that does, else (all above)
        its last two words go."""
        width = len(self.words)
        texts = []
        for i in group:
            whole, prefix = "".join(self.pieces[i]), "".join(self.pieces[i][:-1])
            texts += [whole + self.piece(w, False) for w, _, _ in self.words]
            texts += [prefix + self.piece(w, not prefix) for w, _, _ in self.words]
        counts = _counted(self.counter, texts)
        for k, i in enumerate(group):
            mine, target = counts[2 * k * width : 2 * (k + 1) * width], self.targets[i]
            exact = [j for j, n in enumerate(mine) if n == target]
            below = [j for j, n in enumerate(mine[:width]) if n < target]
            below = below or [j + width for j, n in enumerate(mine[width:]) if n < target]
            if not exact and not below:
                del self.pieces[i][-2:]
                if not self.pieces[i]:
                    self.pieces[i].append(self.draw.choice(self.words)[0])
                continue
            j = self.draw.choice(exact) if exact else max(below, key=lambda j: (mine[j], self.draw.random()))
            if j < width:
                self.pieces[i].append(self.piece(self.words[j][0], False))
            else:
                self.pieces[i][-1] = self.piece(self.words[j - width][0], len(self.pieces[i]) == 1)
