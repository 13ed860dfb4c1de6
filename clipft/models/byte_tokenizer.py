"""A vocabulary-free byte-level tokenizer for randomly initialised CLIPs.

Real checkpoints ship their own tokenizer; a CLIP built from a bare ``CLIPConfig`` (demo, tests)
needs one that requires no download. Every UTF-8 byte is a token, plus BOS/EOS/PAD, so any
text round-trips and the ids fit a tiny ``vocab_size`` of 259.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerFast

BOS, EOS, PAD = "<|startoftext|>", "<|endoftext|>", "<|pad|>"
BYTE_VOCAB_SIZE = 259  # 256 bytes + 3 specials


def byte_level_tokenizer(model_max_length: int = 32) -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from tokenizers.pre_tokenizers import ByteLevel

    alphabet = ByteLevel.alphabet()  # the 256 printable stand-ins for raw bytes
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    vocab[BOS], vocab[EOS], vocab[PAD] = 256, 257, 258
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, 256), (EOS, 257)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        model_max_length=model_max_length,
    )
