"""The README's "Continue from mmBERT", command by command, at tiny scale.

Stand-ins for what a user downloads: a tokenizer with Gemma 2's properties as Google ships it (mmBERT's
tokenizer), a released HF model directory holding it, the raw end-of-mid-training checkpoint and two
released decay variants as Composer `.pt` files. Every `mmbert` command of the README section runs here
with the same options (checked against the README itself at the end).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import torch
from transformers import pipeline

from mmbert import MmBertConfig, MmBertForMaskedLM, cli
from mmbert.composer import convert_checkpoint
from mmbert.tokenizer import layout_changes, read_tokenizer_files
from tests.helpers.composer import write_composer_checkpoint
from tests.helpers.tokenizer import make_gemma_like_tokenizer
from tests.helpers.training import FAKE_LANGUAGES, fake_documents, read_metrics, write_recipe

README = Path(__file__).resolve().parents[1] / "README.md"
ADDED = "ddd_Grek"  # the language the decay adds: not in the "released" data


def _mmbert(ran: list[list[str]], *args: object) -> None:
    """Run `mmbert ARGS` in-process (exit 0 expected) and remember the command."""
    argv = [str(a) for a in args]
    ran.append(argv)
    assert cli.main(argv) == 0, argv


def _commands_in_readme() -> list[list[str]]:
    """The `mmbert ...` command lines of the README's "Continue from mmBERT" section."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Continue from mmBERT", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("mmbert "):
                commands.append(shlex.split(line)[1:])
    return commands


def _shape(argv: list[str]) -> tuple[str, frozenset[str]]:
    """A command's sub-command(s) and option names: what must match between the README and the test."""
    words = [a for a in argv if not a.startswith("-")]
    name = " ".join(words[:2]) if argv[0] == "tokenizer" else argv[0]
    return name, frozenset(a for a in argv if a.startswith("--"))


def _fill_mask_works(model_dir: Path, capsys) -> None:
    """transformers' pipeline and `mmbert fill-mask` both fill `<mask>` with the model's tokenizer."""
    fill = pipeline("fill-mask", model=str(model_dir), tokenizer=str(model_dir), device="cpu")
    results = fill("abc <mask> def.", top_k=3)
    assert len(results) == 3 and all("<mask>" not in r["sequence"] for r in results)
    capsys.readouterr()
    assert cli.main(["fill-mask", str(model_dir), "abc <mask> def.", "--top-k", "3", "--device", "cpu"]) == 0
    assert "->" in capsys.readouterr().out


def test_continue_from_mmbert_as_the_readme_says(tmp_path, capsys):
    ran: list[list[str]] = []
    docs = fake_documents(n_docs=20)
    gemma = make_gemma_like_tokenizer(tmp_path / "gemma", [text for _, text in docs], vocab_size=700)
    vocab = read_tokenizer_files(gemma).vocab_size
    # The "released" raw checkpoints: the end of mid-training and two decay variants (Composer .pt).
    ckpt = tmp_path / "ckpt"
    (ckpt / "extension").mkdir(parents=True)
    (ckpt / "decay").mkdir()
    torch.manual_seed(0)
    model = MmBertForMaskedLM(MmBertConfig.preset("tiny", vocab_size=vocab))
    write_composer_checkpoint(ckpt / "extension" / "mmbert-tiny-ext.pt", model.state_dict())
    for seed, name in ((1, "eng"), (2, "mid")):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(seed)))
        write_composer_checkpoint(ckpt / "decay" / f"mmbert-tiny-{name}.pt", model.state_dict(), seed=seed)
    # The released HF model: the weights in transformers' format, the tokenizer as shipped.
    released = tmp_path / "mmBERT-tiny"
    convert_checkpoint(ckpt / "extension" / "mmbert-tiny-ext.pt", released)
    for f in gemma.iterdir():
        shutil.copy(f, released / f.name)

    # 1. Load a released model: its tokenizer is adapted in memory for fill-mask, and written adapted.
    _mmbert(ran, "tokenizer", "info", released)
    info = capsys.readouterr().out
    assert "special ids match mmBERT's layout" in info and "mask_token is not set" in info
    _mmbert(ran, "fill-mask", released, "abc <mask> def.", "--device", "cpu")
    assert "->" in capsys.readouterr().out
    adapted = tmp_path / "mmBERT-tokenizer"
    _mmbert(ran, "tokenizer", "adapt", released, "--out", adapted)
    assert "(the same token ids)" in capsys.readouterr().out

    # 2. Convert a raw checkpoint, with the tokenizer: ready for transformers and mmbert as it is.
    converted = tmp_path / "mmbert-tiny-ext"
    _mmbert(
        ran, "convert", ckpt / "extension" / "mmbert-tiny-ext.pt", "--out", converted, "--tokenizer", adapted
    )
    _fill_mask_works(converted, capsys)

    # 3. A decay variant from the end-of-mid checkpoint, with a language the released data lacks. The
    # released data was cut with the tokenizer as shipped, the added language with the adapted one:
    # the same ids, so both agree with the run's tokenizer.
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name, langs in (("released", set(FAKE_LANGUAGES) - {ADDED}), ("my-corpus", {ADDED})):
        rows = [{"text": text, "lang": lang} for lang, text in docs if lang in langs]
        (corpus / f"{name}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    # The fake language keys are in neither the bundled nor the released list, as an added language may not be.
    shipped_args = [
        "--tokenizer",
        gemma,
        "--name",
        "web",
        "--no-progress",
        "--workers",
        "1",
        "--allow-unknown-languages",
    ]
    _mmbert(ran, "prepare", "--source", corpus / "released.jsonl", "--lang-field", "lang", "--out", tmp_path / "data",
            *shipped_args)  # fmt: skip
    _mmbert(ran, "prepare", "--source", corpus / "my-corpus.jsonl", "--lang-field", "lang", "--name", "web",
            "--tokenizer", adapted, "--out", tmp_path / "added", "--no-progress", "--workers", "1",
            "--allow-unknown-languages")  # fmt: skip
    recipe = write_recipe(tmp_path / "recipe.yaml", gemma, tmp_path / "data")
    runs = tmp_path / "runs" / "decay"
    _mmbert(ran, "train", recipe, "--init-from", ckpt / "extension" / "mmbert-tiny-ext.pt", "--from-phase", "decay",
            "--variant", "all", "--out", runs, f"data=[{tmp_path / 'data'}, {tmp_path / 'added'}]",
            f"phases.2.variants.all.languages=[aaa_Latn, bbb_Latn, ccc_Cyrl, {ADDED}]", f"tokenizer={adapted}",
            "--no-progress", "--no-tensorboard", "--device", "cpu")  # fmt: skip
    records = read_metrics(runs / "variants" / "all")
    assert {r["phase"] for r in records} == {"decay"} and ADDED in records[-1]["lang_shares"]
    export = runs / "variants" / "all" / "export" / "decay"
    assert layout_changes(read_tokenizer_files(export), model_max_length=512) == []
    _fill_mask_works(export, capsys)

    # 4. Merge the result with the released decay variants (TIES against the end-of-mid checkpoint).
    merged = tmp_path / "mmbert-tiny-plus"
    _mmbert(ran, "merge", "--method", "ties", "--base", ckpt / "extension" / "mmbert-tiny-ext.pt", "--models", export,
            ckpt / "decay" / "mmbert-tiny-eng.pt", ckpt / "decay" / "mmbert-tiny-mid.pt", "--density", "0.5",
            "--out", merged)  # fmt: skip
    _fill_mask_works(merged, capsys)

    # Every command of the README section ran here, with the same options.
    in_readme = {_shape(argv) for argv in _commands_in_readme()}
    assert in_readme, "the README has no `Continue from mmBERT` commands"
    exercised = {_shape(argv) for argv in ran}
    missing = [
        f"mmbert {name} {' '.join(sorted(flags))}"
        for name, flags in in_readme
        if not any(n == name and flags <= f for n, f in exercised)
    ]
    assert not missing, f"README commands not exercised with these options: {missing}"
