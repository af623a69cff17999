"""Tiny Hugging Face transformers models built from configs (random init, no download).

Shared by the transformers tests. Every builder seeds torch, so two calls give the
same weights.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

VOCAB = 96


def gpt2() -> torch.nn.Module:
    """GPT-2: Conv1D projections, lm_head tied to the token embedding."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=2, vocab_size=VOCAB, n_positions=64,
        bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    return transformers.GPT2LMHeadModel(config).eval()


def _llama(tied: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=VOCAB, tie_word_embeddings=tied,
        max_position_embeddings=64, bos_token_id=0, eos_token_id=0, pad_token_id=0,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(config).eval()


def llama() -> torch.nn.Module:
    """Llama with separate input and output embeddings."""
    return _llama(tied=False)


def llama_tied() -> torch.nn.Module:
    """Llama with ``tie_word_embeddings=True``."""
    return _llama(tied=True)


def bert_mlm() -> torch.nn.Module:
    """BERT for masked LM: its decoder is tied to the word embeddings."""
    torch.manual_seed(0)
    config = transformers.BertConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        vocab_size=VOCAB, max_position_embeddings=64, pad_token_id=0,
    )  # fmt: skip
    return transformers.BertForMaskedLM(config).eval()


def opt() -> torch.nn.Module:
    """OPT: tied lm_head, Linear projections with biases."""
    torch.manual_seed(0)
    config = transformers.OPTConfig(
        hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=2,
        vocab_size=VOCAB, max_position_embeddings=64, word_embed_proj_dim=32,
        bos_token_id=0, eos_token_id=0, pad_token_id=1,
    )  # fmt: skip
    return transformers.OPTForCausalLM(config).eval()


BUILDERS: dict[str, Callable[[], torch.nn.Module]] = {
    "gpt2": gpt2,
    "llama": llama,
    "llama-tied": llama_tied,
    "bert-mlm": bert_mlm,
    "opt": opt,
}

#: The builders of causal LMs (they can ``generate``).
CAUSAL = ("gpt2", "llama", "llama-tied", "opt")


def tokens(batch: int = 2, length: int = 12, seed: int = 0) -> torch.Tensor:
    """A batch of token ids."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(2, VOCAB, (batch, length), generator=generator)


def logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """The model's logits for ``ids``, without autograd."""
    with torch.no_grad():
        return model(input_ids=ids).logits
