"""MLM masking (BERT's 80/10/10 rule) at a per-phase rate.

Each non-special position is selected with probability `rate`; a selected position's label is its
original id (-100 everywhere else, which the loss ignores), and its input becomes `<mask>` (id 4) with
probability 0.8, a random token with probability 0.1, and stays unchanged with probability 0.1.

Special tokens: the tokens of the special roles, pad, eos, bos, unk and mask (and cls/sep, which are
bos/eos in mmBERT's layout), are never selected and never drawn as the random replacement: ids 0-4
(`mmbert.tokens`) for every tokenizer with mmBERT's layout, which training checks; random replacements
are uniform over the rest of the vocabulary. `never_masked` is that one rule, for training and for
evaluation alike (a model of another family is evaluated with its tokenizer's own role ids).
This differs from mmBERT's trainer on purpose. ModernBERT's sequence packer (`SequencePacker.mlm_masking`,
which mmBERT's released configs ran) selects every non-pad position, `<bos>` and `<eos>` included, and
draws random replacements from `[0, max id in the masked batch]`, so they can be special ids and never
exceed the batch's largest id. Here predicting `<bos>`/`<eos>` is not trained (they sit at fixed
places: trivial), pad is not data, `<unk>` teaches nothing, and every ordinary token can replace.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from mmbert.tokens import IGNORE_INDEX, MASK_ID, ROLE_ALIASES, SPECIAL_IDS


def never_masked(tokenizer: Any = None) -> tuple[int, ...]:
    """The ids masking never selects (nor draws, nor predicts): the tokens of the special roles.

    mmBERT's ids (`tokens.SPECIAL_IDS`) without a tokenizer, as training masks; else the ids `tokenizer`
    (a transformers tokenizer) gives pad, eos, bos, unk, mask, cls and sep, the same ids for one with
    mmBERT's layout.
    """
    if tokenizer is None:
        return tuple(sorted(SPECIAL_IDS.values()))
    ids = {getattr(tokenizer, f"{role}_token_id", None) for role in (*SPECIAL_IDS, *ROLE_ALIASES)}
    return tuple(sorted(i for i in ids if i is not None))


def mask_tokens(
    input_ids: torch.Tensor,
    rate: float,
    generator: torch.Generator,
    vocab_size: int,
    special_ids: Iterable[int] = never_masked(),
    mask_id: int = MASK_ID,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask `input_ids` (any shape, integer) at `rate`; returns new `(input_ids, labels)`.

    Random draws come from `generator` (on its own device, then moved), so a seeded generator gives the
    same masks on CPU and GPU and the generator's state is all a resumed run needs.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"mask rate must be in [0, 1], got {rate}")
    specials = torch.tensor(sorted(set(special_ids)), dtype=torch.long)
    if specials.numel() and (specials.min() < 0 or specials.max() >= vocab_size):
        raise ValueError(f"special ids {specials.tolist()} must lie in [0, vocab_size={vocab_size})")
    n_normal = vocab_size - specials.numel()
    if n_normal <= 0:
        raise ValueError("the vocabulary has no non-special token to draw random replacements from")
    gen_device = generator.device
    shape = input_ids.shape
    select_u = torch.rand(shape, generator=generator, device=gen_device).to(input_ids.device)
    action_u = torch.rand(shape, generator=generator, device=gen_device).to(input_ids.device)
    random_ids = torch.randint(0, n_normal, shape, generator=generator, device=gen_device)
    # Map a draw from [0, n_normal) onto the vocabulary without the specials: shift past each special
    # id at or below it (ascending order makes one pass enough), with no vocabulary-sized table.
    for s in specials.tolist():
        random_ids += (random_ids >= s).to(random_ids.dtype)
    random_ids = random_ids.to(device=input_ids.device, dtype=input_ids.dtype)

    maskable = ~torch.isin(input_ids, specials.to(input_ids.device))
    selected = maskable & (select_u < rate)
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    masked = input_ids.clone()
    to_mask = selected & (action_u < 0.8)
    to_random = selected & (action_u >= 0.8) & (action_u < 0.9)
    masked[to_mask] = mask_id
    masked[to_random] = random_ids[to_random]
    return masked, labels
