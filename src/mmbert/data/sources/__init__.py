"""Document sources: the bundled corpus, local files, Hugging Face datasets and MDS shards.

Every source is a `DocumentSource` (`base.py`: work units, `read`, `fingerprint`) and yields `Document`s
(one text in one language; MDS shards of token ids, which are already tokenized, yield
`TokenizedDocument`s), so that `mmbert prepare` treats them alike. One module per kind: `files.py`
(`.jsonl`, `.jsonl.gz`, `.parquet`, `.txt`), `hf.py` (`datasets`), `mds.py` (MosaicML streaming
shards of token ids or text), `bundled.py`. `open_source` builds one from a `--source` string.

Bad input (invalid UTF-8, a broken JSON line, a missing text field, an unknown language code, an empty
file, a corrupt MDS shard) raises `BadInputError`, which names the file and line. With a `SkipReport`
the reader counts the bad record and carries on instead.
"""

from __future__ import annotations

from mmbert.data.documents import Document, TokenizedDocument
from mmbert.data.records import BadInputError
from mmbert.data.sources.base import DocumentSource, SkipReport, Unit, lang_from_path, normalize_lang
from mmbert.data.sources.bundled import BundledSource
from mmbert.data.sources.files import LocalFilesSource
from mmbert.data.sources.hf import HFSource
from mmbert.data.sources.mds import MdsSource

__all__ = [
    "BadInputError",
    "BundledSource",
    "Document",
    "DocumentSource",
    "HFSource",
    "LocalFilesSource",
    "MdsSource",
    "SkipReport",
    "TokenizedDocument",
    "Unit",
    "lang_from_path",
    "normalize_lang",
    "open_source",
]


def open_source(
    spec: str,
    *,
    text_field: str = "text",
    lang_field: str | None = None,
    id_field: str = "id",
    lang: str | None = None,
    hf_config: str | None = None,
    hf_split: str = "train",
    streaming: bool = False,
    mds_column: str | None = None,
) -> DocumentSource:
    """Build a source from a `--source` string: `bundled[:train|heldout|code]`, `PATH`, `hf:NAME`, `mds:PATH`."""
    if spec == "bundled" or spec.startswith("bundled:"):
        return BundledSource(spec.partition(":")[2] or "train")
    if spec.startswith("hf:"):
        return HFSource(
            spec[3:],
            config=hf_config,
            split=hf_split,
            streaming=streaming,
            text_field=text_field,
            lang_field=lang_field,
            id_field=id_field,
            lang=lang,
        )
    if spec.startswith("mds:"):
        return MdsSource(spec[4:], column=mds_column, lang_column=lang_field, lang=lang)
    return LocalFilesSource(spec, text_field=text_field, lang_field=lang_field, id_field=id_field, lang=lang)
