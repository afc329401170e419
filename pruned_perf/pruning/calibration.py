"""Calibration batches without a network: user text, built-in English text, or deterministic token ids."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from pruned_perf.llama.byte_tokenizer import SPECIAL_TOKENS, ByteTokenizer  # noqa: F401 (callers take it from here too)
from pruned_perf.core.errors import UserError, choice_error

SOURCES = ("builtin", "tokens")


@dataclass(frozen=True)
class CalibSpec:
    """How many windows of how many tokens, drawn with which seed."""

    samples: int
    seq_len: int
    seed: int

    def __post_init__(self):
        if self.samples < 1 or self.seq_len < 2:
            raise UserError(f"calibration needs at least 1 sample of 2 tokens, got "
                            f"{self.samples} x {self.seq_len}")


@dataclass(frozen=True)
class Calibration:
    """A calibration batch [samples, seq_len] and where it came from (recorded in the plan)."""

    ids: torch.Tensor
    source: str
    spec: CalibSpec

    def describe(self) -> dict:
        return {"source": self.source, **asdict(self.spec)}


def builtin_text() -> str:
    """English prose that ships with Python itself: the documentation topics behind `help()`."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


def read_text(path: str | Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot read calibration text {str(path)!r}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise UserError(f"calibration text {str(path)!r} is not UTF-8") from exc


def token_windows(ids: list[int] | torch.Tensor, spec: CalibSpec) -> torch.Tensor:
    """`spec.samples` random windows of `spec.seq_len` tokens, as in the methods' reference loaders."""
    ids = torch.as_tensor(ids, dtype=torch.long)
    if ids.numel() <= spec.seq_len:
        raise UserError(f"calibration text has {ids.numel()} tokens; need more than {spec.seq_len}")
    generator = torch.Generator().manual_seed(spec.seed)
    starts = torch.randint(0, ids.numel() - spec.seq_len, (spec.samples,), generator=generator)
    return torch.stack([ids[s:s + spec.seq_len] for s in starts.tolist()])


def deterministic_ids(shape: tuple[int, ...], vocab_size: int, seed: int) -> torch.Tensor:
    """Token ids that are the same on every run and device (drawn on the CPU with their own generator),
    never one of the reserved ids: calibration without a tokenizer, and the perf suite's prompts."""
    if vocab_size <= SPECIAL_TOKENS:
        raise UserError(f"vocab_size must be larger than {SPECIAL_TOKENS}, got {vocab_size!r}")
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(SPECIAL_TOKENS, vocab_size, shape, generator=generator)


def random_tokens(spec: CalibSpec, vocab_size: int) -> torch.Tensor:
    """Deterministic token ids for models without a tokenizer (random-weight presets)."""
    return deterministic_ids((spec.samples, spec.seq_len), vocab_size, spec.seed)


def choose_source(source: str | None, tokenizer=None, model: str | None = None) -> str:
    """The source a user asked for, or by default the built-in text where `model` has a tokenizer and token
    ids where it has none. Asking for text the model cannot tokenize is an error, not a quiet fallback."""
    if source is None:
        return "builtin" if tokenizer is not None else "tokens"
    if source not in SOURCES:
        raise choice_error("calibration source", source, SOURCES)
    if source == "builtin" and tokenizer is None:
        who = f"model {model!r}" if model else "this model"
        raise UserError(f"calibration source 'builtin' is text and needs a tokenizer; {who} has none, so the "
                        f"calibration sources that work for it are: tokens")
    return source


def effective_source(source: str, tokenizer=None, text_file: str | Path | None = None) -> str:
    """What a batch is really drawn from: a file, the built-in text, or token ids (no tokenizer)."""
    if source not in SOURCES:
        raise choice_error("calibration source", source, SOURCES)
    if text_file is not None:
        if tokenizer is None:
            raise UserError("--calib-file needs a model with a tokenizer; this model has none "
                            "(use the default deterministic token ids)")
        return f"file:{text_file}"
    return "builtin" if source == "builtin" and tokenizer is not None else "tokens"


def calibration_batch(spec: CalibSpec, vocab_size: int, tokenizer=None, source: str = "builtin",
                      text_file: str | Path | None = None) -> torch.Tensor:
    """Token ids [samples, seq_len]. Text needs a tokenizer; without one, deterministic token ids."""
    drawn_from = effective_source(source, tokenizer, text_file)
    if drawn_from == "tokens":
        return random_tokens(spec, vocab_size)
    text = builtin_text() if drawn_from == "builtin" else read_text(text_file)
    return token_windows(tokenizer.encode(text), spec)
