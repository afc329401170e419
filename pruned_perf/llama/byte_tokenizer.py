"""The tokenizer of the byte-level tiny presets: UTF-8 bytes as tokens, no files, no network.

A bottom module: `models.load_tokenizer` returns it for those presets and `pruning.calibration` cuts text
with it, so it lives below both.
"""
from __future__ import annotations

# The first ids are reserved (LLaMA: unk, bos, eos), so byte b is token b + 3.
SPECIAL_TOKENS = 3


class ByteTokenizer:
    """UTF-8 bytes as tokens: the tokenizer of the byte-level tiny presets (vocabulary >= 259)."""

    vocab_size = 256 + SPECIAL_TOKENS
    pad_token_id, bos_token_id, eos_token_id = 0, 1, 2

    def encode(self, text: str) -> list[int]:
        return [b + SPECIAL_TOKENS for b in text.encode("utf-8")]

    def decode(self, ids) -> str:
        return bytes(i - SPECIAL_TOKENS for i in ids if i >= SPECIAL_TOKENS).decode("utf-8", "replace")
