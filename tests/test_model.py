"""The encoder: shapes, parameter counts, backends against the reference, packed against padded."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention.flex_attention import create_block_mask

from mmbert import MmBertConfig, MmBertForMaskedLM, MmBertForSequenceClassification, MmBertModel, attention
from mmbert.attention import VarlenBatch, flex_block_mask, get_backend, reference_attention, sdpa_attention
from mmbert.model import compiles
from mmbert.optim import build_optimizer
from mmbert.recipe import TrainSpec
from tests.helpers.model import ragged_batch


@pytest.mark.parametrize(
    ("preset", "total", "non_embedding"),
    [("mmbert-small", 140_897_536, 42_188_928), ("mmbert-base", 307_786_240, 110_330_112)],
)
def test_released_parameter_counts(preset, total, non_embedding):
    cfg = MmBertConfig.preset(preset)
    with torch.device("meta"):
        model = MmBertForMaskedLM(cfg)
    assert model.num_parameters() == total == cfg.num_parameters()
    # mmbert.md's "non-embedding" count is the 22 layers alone.
    layers = sum(p.numel() for n, p in model.named_parameters() if n.startswith("model.layers."))
    assert layers == non_embedding


def test_layer_types_and_no_first_prenorm(tiny_config):
    model = MmBertModel(tiny_config)
    assert tiny_config.layer_types == [
        "full_attention",
        "sliding_attention",
        "sliding_attention",
        "full_attention",
    ]
    assert isinstance(model.layers[0].attn_norm, torch.nn.Identity)
    assert isinstance(model.layers[1].attn_norm, torch.nn.LayerNorm)
    assert all(
        m.bias is None for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.LayerNorm))
    )
    assert model.layers[0].attn.window is None and model.layers[1].attn.window == 8


def _random_qkv(lengths, heads=3, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = sum(lengths)
    q, k, v = (torch.randn(n, heads, dim, generator=g) for _ in range(3))
    return q, k, v, VarlenBatch.from_seqlens(torch.tensor(lengths))


@pytest.mark.parametrize("backend", ["sdpa", "flex"])
@pytest.mark.parametrize("window", [None, 4, 9])
@pytest.mark.parametrize("lengths", [[40, 3, 17, 1, 26], [32, 32, 32], [5]])
def test_backend_matches_reference(backend, window, lengths):
    q, k, v, batch = _random_qkv(lengths)
    ref = reference_attention(q, k, v, batch, window, 0.3)
    out = get_backend(backend)(q, k, v, VarlenBatch(batch.cu_seqlens, batch.max_seqlen), window, 0.3)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("block", [32, 7])
@pytest.mark.parametrize("window", [40, 64])
def test_local_inference_blocks_match_reference(block, window, monkeypatch):
    """Without autograd, local layers run query blocks smaller than the window (B + 2W keys each): the
    same values as the reference and as the training blocks, across sequence ends and the tail padding."""
    monkeypatch.setattr(attention, "LOCAL_INFERENCE_BLOCK", block)
    q, k, v, batch = _random_qkv([300, 3, 130, 1, 77, 129], heads=2, dim=16, seed=3)
    ref = reference_attention(q, k, v, batch, window, 0.25)
    with torch.no_grad():
        fresh = VarlenBatch(batch.cu_seqlens, batch.max_seqlen)
        out = sdpa_attention(q, k, v, fresh, window, 0.25)
        assert ("local_block_mask", window, block, q.dtype) in fresh._cache  # the inference blocks ran
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    train = sdpa_attention(q, k, v, fresh, window, 0.25)  # grad enabled: blocks of `window`, same batch
    assert ("local_block_mask", window, window, q.dtype) in fresh._cache
    torch.testing.assert_close(train, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("window", [None, 3, 20])
@pytest.mark.parametrize("lengths", [[40, 3, 17, 1, 26], [64, 64], [0, 100, 0, 29], [5]])
def test_flex_block_mask_equals_create_block_mask(window, lengths):
    """Built tile by tile from cu_seqlens, the same BlockMask as flex's from all N x N pairs (tiles of 16)."""
    batch = VarlenBatch.from_seqlens(torch.tensor(lengths))
    seq, pos = batch.seq_ids, batch.positions

    def mask_mod(b, h, q, k):
        near = (pos[q] - pos[k]).abs() <= window if window is not None else True
        return (seq[q] == seq[k]) & near

    ref = create_block_mask(mask_mod, None, None, batch.total, batch.total, device="cpu", BLOCK_SIZE=16)
    ours = flex_block_mask(batch, window, block=16)
    assert torch.equal(ours.to_dense(), ref.to_dense())
    for counts, indices in (("kv_num_blocks", "kv_indices"), ("full_kv_num_blocks", "full_kv_indices")):
        assert torch.equal(getattr(ours, counts), getattr(ref, counts))
        for row, n in enumerate(getattr(ref, counts)[0, 0].tolist()):
            assert torch.equal(getattr(ours, indices)[0, 0, row, :n], getattr(ref, indices)[0, 0, row, :n])


def test_auto_backend_is_sdpa_on_cpu():
    q, k, v, batch = _random_qkv([40, 3, 17])
    auto = get_backend("auto")(q, k, v, batch, 4, 0.3)
    assert torch.equal(auto, sdpa_attention(q, k, v, batch, 4, 0.3))


def test_compile_modes(tiny_config):
    cpu = torch.device("cpu")
    assert not compiles("auto", tiny_config.hidden_size, cpu)  # the tiny shape stays eager
    assert compiles("on", 64, cpu) and not compiles("off", 4096, cpu)
    with pytest.raises(ValueError, match="compile"):
        tiny_config.replace(compile="always")


def test_compiled_regions_and_fused_step_match_eager(tiny_config):
    """compile="on": the same logits, loss, gradients and StableAdamW update as eager, within 1e-5."""
    ids, mask = ragged_batch()
    labels = torch.where(torch.rand(ids.shape, generator=torch.Generator().manual_seed(0)) < 0.3, ids, -100)
    labels[mask == 0] = -100
    results = []
    for mode in ("off", "on"):
        torch.manual_seed(0)
        model = MmBertForMaskedLM(tiny_config.replace(compile=mode))
        with torch.no_grad():  # norms are 1 at init: randomize them so that a mix-up would show
            for name, p in model.named_parameters():
                if "norm" in name:
                    p.add_(torch.randn_like(p) * 0.1)
        optimizer = build_optimizer(model, TrainSpec(lr=1e-3), 1e-3, 0.01)
        assert optimizer.fused == (mode == "on")
        model.eval()
        with torch.inference_mode():
            logits = model(ids, attention_mask=mask).logits
        model.train()
        loss = model(ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        grads = [p.grad.clone() for p in model.parameters()]
        optimizer.step()
        results.append((logits, loss.detach(), grads, [p.detach().clone() for p in model.parameters()]))
    (logits, loss, grads, params), (logits_c, loss_c, grads_c, params_c) = results
    torch.testing.assert_close(logits_c, logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss_c, loss, atol=1e-5, rtol=1e-5)
    for a, b in zip(grads_c + params_c, grads + params, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_reference_window_semantics():
    """A token sees exactly the keys with |i - j| <= window: changing a key just outside changes nothing."""
    q, k, v, batch = _random_qkv([30])
    out = reference_attention(q, k, v, batch, 4, 1.0)
    v2 = v.clone()
    v2[20] += 10  # |10 - 20| > 4: invisible to token 10, visible to 16..24
    out2 = reference_attention(q, k, v2, batch, 4, 1.0)
    assert torch.equal(out[10], out2[10]) and torch.equal(out[15], out2[15])
    assert not torch.allclose(out[16], out2[16])


def test_sdpa_local_backward_matches_reference():
    q, k, v, batch = _random_qkv([37, 5, 20], seed=1)
    grads = []
    for fn in (reference_attention, sdpa_attention):
        qq, kk, vv = (t.clone().requires_grad_() for t in (q, k, v))
        fn(qq, kk, vv, VarlenBatch(batch.cu_seqlens, batch.max_seqlen), 6, 0.5).square().sum().backward()
        grads.append([t.grad for t in (qq, kk, vv)])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("window", [None, 5])
def test_packed_rows_match_reference(window):
    """A packer's rows of 32 (documents split at row ends) run as one masked call: same values and grads."""
    q, k, v, batch = _random_qkv([10, 22, 5, 5, 20, 2, 30, 2, 32], seed=2)
    assert batch.row_len == 32 and VarlenBatch.from_seqlens(torch.tensor([40, 3, 17])).row_len == 60
    assert VarlenBatch.from_seqlens(torch.tensor([0])).row_len is None  # an empty stream has no rows
    results = []
    for fn in (reference_attention, sdpa_attention):
        qq, kk, vv = (t.clone().requires_grad_() for t in (q, k, v))
        out = fn(qq, kk, vv, VarlenBatch(batch.cu_seqlens, batch.max_seqlen), window, 0.5)
        out.square().sum().backward()
        results.append([out, qq.grad, kk.grad, vv.grad])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_packed_equals_padded_equals_separate(tiny_config):
    torch.manual_seed(0)
    model = MmBertModel(tiny_config).eval()
    ids, mask = ragged_batch()
    with torch.no_grad():
        padded = model(ids, attention_mask=mask).last_hidden_state  # (B, T, H)
        lengths = mask.sum(1)
        flat = ids[mask.bool()]
        cu = torch.nn.functional.pad(lengths.cumsum(0), (1, 0)).int()
        packed = model(flat, cu_seqlens=cu, max_seqlen=int(lengths.max())).last_hidden_state  # (N, H)
        torch.testing.assert_close(packed, padded[mask.bool()], atol=1e-5, rtol=1e-5)
        assert torch.all(padded[~mask.bool()] == 0)
        for i, n in enumerate(lengths.tolist()):
            alone = model(ids[i : i + 1, :n]).last_hidden_state[0]
            torch.testing.assert_close(alone, padded[i, :n], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("compile_mode", ["off", "on"])
def test_chunked_inference_equals_one_pass(tiny_config, compile_mode, monkeypatch):
    """CPU inference runs the post-attention block in row chunks: the same hidden states as the one-pass
    forward autograd takes, for a stream that does not divide into chunks, eager and compiled."""
    import mmbert.model

    monkeypatch.setattr(mmbert.model, "INFERENCE_CHUNK", 16)
    torch.manual_seed(0)
    model = MmBertModel(tiny_config.replace(compile=compile_mode)).eval()
    ids, mask = ragged_batch()
    assert mask.sum() > 16 and mask.sum() % 16
    with torch.no_grad():  # norms are 1 at init: randomize them so that a mix-up would show
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    one_pass = model(ids, attention_mask=mask).last_hidden_state  # grad enabled: one pass per layer
    with torch.inference_mode():
        chunked = model(ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(chunked, one_pass.detach(), atol=1e-5, rtol=1e-5)


def test_sparse_prediction_and_prediction_mask(tiny_config):
    torch.manual_seed(0)
    model = MmBertForMaskedLM(tiny_config).eval()
    ids, mask = ragged_batch()
    labels = torch.full_like(ids, -100)
    labels[0, 3], labels[2, 10], labels[3, 16] = 7, 8, 9
    with torch.no_grad():
        full = model(ids, attention_mask=mask).logits  # (B, T, V)
        sparse = model(ids, attention_mask=mask, labels=labels)
        picked = model(ids, attention_mask=mask, prediction_mask=labels != -100).logits
    assert sparse.logits.shape == (3, tiny_config.vocab_size)
    expected = full[labels != -100]
    torch.testing.assert_close(sparse.logits, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(picked, expected, atol=1e-5, rtol=1e-5)
    ce = torch.nn.functional.cross_entropy(expected, labels[labels != -100])
    torch.testing.assert_close(sparse.loss, ce, atol=1e-5, rtol=1e-5)


def test_decoder_is_tied_and_training_step_runs(tiny_config):
    torch.manual_seed(0)
    model = MmBertForMaskedLM(tiny_config)
    assert model.decoder.weight is model.model.embeddings.tok_embeddings.weight
    ids, mask = ragged_batch()
    labels = torch.where(torch.rand(ids.shape) < 0.3, ids, torch.full_like(ids, -100))
    labels[mask == 0] = -100
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        loss = model(ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(tiny_config):
    """With `gradient_checkpointing` the layers run again in backward (counted) and nothing changes."""
    ids, mask = ragged_batch()
    labels = torch.where(torch.rand(ids.shape, generator=torch.Generator().manual_seed(1)) < 0.3, ids, -100)
    labels[mask == 0] = -100
    results = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = MmBertForMaskedLM(tiny_config.replace(attention_dropout=0.1)).train()
        model.model.gradient_checkpointing = checkpointing
        calls = []
        model.model.layers[1].register_forward_pre_hook(lambda *_, calls=calls: calls.append(1))
        torch.manual_seed(2)  # the same dropout masks, which checkpointing replays in backward
        loss = model(ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in model.named_parameters()}, len(calls)))
    (loss, grads, calls), (loss_ckpt, grads_ckpt, calls_ckpt) = results
    assert (calls, calls_ckpt) == (1, 2)  # recomputed in backward
    torch.testing.assert_close(loss_ckpt, loss, atol=0, rtol=0)
    for name, grad in grads.items():
        torch.testing.assert_close(grads_ckpt[name], grad, atol=1e-7, rtol=1e-6, msg=name)


def test_rope_theta_change_changes_output_without_rebuild(tiny_config):
    torch.manual_seed(0)
    model = MmBertModel(tiny_config).eval()
    ids, mask = ragged_batch()
    with torch.no_grad():
        a = model(ids, attention_mask=mask).last_hidden_state
        model.set_rope_theta(10_000.0, 500.0)
        b = model(ids, attention_mask=mask).last_hidden_state
    assert model.config.local_rope_theta == 500.0
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_sequence_classification_pooling(tiny_config, pooling):
    torch.manual_seed(0)
    cfg = tiny_config.replace(classifier_pooling=pooling, num_labels=3)
    model = MmBertForSequenceClassification(cfg).eval()
    ids, mask = ragged_batch()
    with torch.no_grad():
        out = model(ids, attention_mask=mask, labels=torch.tensor([0, 1, 2, 1]))
        hidden = model.model(ids, attention_mask=mask).last_hidden_state
    expected = (
        hidden[:, 0] if pooling == "cls" else (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    )
    torch.testing.assert_close(out.pooled, expected, atol=1e-5, rtol=1e-5)
    assert out.logits.shape == (4, 3) and torch.isfinite(out.loss)


def test_bad_configs_and_backends_fail_at_build(tiny_config):
    with pytest.raises(ValueError, match="hidden_size"):
        MmBertConfig.preset("tiny", hidden_size=65)
    with pytest.raises(ValueError, match="attn_backend"):
        MmBertConfig.preset("tiny", attn_backend="xformers")
    with pytest.raises(ValueError, match="unknown model preset"):
        MmBertConfig.preset("huge")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="use attn_backend='sdpa'"):
            MmBertModel(tiny_config.replace(attn_backend="flash"))


def test_flex_refuses_backward_on_cpu(tiny_config):
    model = MmBertForMaskedLM(tiny_config.replace(attn_backend="flex"))
    ids, mask = ragged_batch()
    with pytest.raises(RuntimeError, match="no backward pass on CPU"):
        model(ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100))


@pytest.mark.parametrize("before", [8, 200])
def test_compiled_flex_raises_the_recompile_limit(before):
    """Compiling flex (on CUDA) lifts dynamo's limit of 8 entries, which a run that trains and then infers
    passes (past it flex runs uncompiled, N x N scores); a higher limit a user set stays."""
    config = torch._dynamo.config
    attention._compiled_flex.cache_clear()
    try:
        with config.patch(recompile_limit=before):
            attention._compiled_flex()
            assert config.recompile_limit == max(before, attention.FLEX_RECOMPILE_LIMIT)
    finally:
        attention._compiled_flex.cache_clear()


def test_input_errors_name_the_problem(tiny_config):
    model = MmBertModel(tiny_config)
    with pytest.raises(ValueError, match="cu_seqlens ends at 5"):
        model(torch.ones(6, dtype=torch.long), cu_seqlens=torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="attention_mask shape"):
        model(torch.ones(2, 6, dtype=torch.long), attention_mask=torch.ones(2, 5))


BACKENDS_HERE = ["reference", "sdpa", "flex"] + (["flash"] if attention.flash_available() else [])


@pytest.mark.parametrize("backend", BACKENDS_HERE)
def test_attention_output_dropout_on_every_backend(tiny_config, backend):
    """mmBERT's 0.1 after `Wo` (no dropout on the attention weights): active in train mode, a no-op in
    eval, whatever the backend (it runs outside the kernel; `attention_dropout` > 0 is refused by some)."""
    cfg = tiny_config.replace(attn_backend=backend, compile="off", attention_output_dropout=0.3)
    model = MmBertForMaskedLM(cfg)
    assert all(layer.attn.out_drop.p == 0.3 and layer.attn.dropout_p == 0.0 for layer in model.model.layers)
    plain = MmBertForMaskedLM(cfg.replace(attention_output_dropout=0.0))
    plain.load_state_dict(model.state_dict())
    ids, mask = ragged_batch()
    device, dtype = ("cuda", torch.bfloat16) if backend == "flash" else ("cpu", torch.float32)
    model, plain = model.to(device, dtype), plain.to(device, dtype)
    ids, mask = ids.to(device), mask.to(device)
    with torch.no_grad():
        model.train()
        first, second = (model(ids, attention_mask=mask).logits for _ in range(2))
        assert not torch.allclose(first, second)  # fresh dropout masks each forward
        model.eval()
        evaluated = model(ids, attention_mask=mask).logits
        torch.testing.assert_close(evaluated, plain.eval()(ids, attention_mask=mask).logits)
    # None (the default) keeps transformers' meaning: attention_dropout also drops after Wo.
    assert (
        MmBertForMaskedLM(tiny_config.replace(attention_dropout=0.2)).model.layers[0].attn.out_drop.p == 0.2
    )
    with pytest.raises(ValueError, match="attention_output_dropout"):
        tiny_config.replace(attention_output_dropout=1.0)
