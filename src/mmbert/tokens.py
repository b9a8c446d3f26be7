"""mmBERT's special tokens (Gemma 2's layout): the one place their strings and ids are defined.

Gemma 2's 256k vocabulary starts with `<pad>` 0, `<eos>` 1, `<bos>` 2, `<unk>` 3 and `<mask>` 4, and
every part of this project assumes that layout: a sequence is `<bos> text <eos>`, a pair
`<bos> a <eos> b <eos>` (so cls is `<bos>` and sep is `<eos>`), the packer wraps documents with these
ids and masking never selects them. A tokenizer with the same ids works as shipped (`mmbert.tokenizer`).
"""

from __future__ import annotations

PAD, EOS, BOS, UNK, MASK = "<pad>", "<eos>", "<bos>", "<unk>", "<mask>"
PAD_ID, EOS_ID, BOS_ID, UNK_ID, MASK_ID = 0, 1, 2, 3, 4

# name -> token string and name -> id, in id order (the names are transformers' `<name>_token`).
SPECIAL_TOKENS: dict[str, str] = {"pad": PAD, "eos": EOS, "bos": BOS, "unk": UNK, "mask": MASK}
SPECIAL_IDS: dict[str, int] = {"pad": PAD_ID, "eos": EOS_ID, "bos": BOS_ID, "unk": UNK_ID, "mask": MASK_ID}
# cls and sep are aliases: a sequence starts with <bos> and every segment ends with <eos>.
ROLE_ALIASES: dict[str, str] = {"cls": "bos", "sep": "eos"}

# The label of a position the loss ignores (PyTorch's cross-entropy default).
IGNORE_INDEX = -100
