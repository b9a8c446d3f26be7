"""Data: the bundled corpus, document sources, tokenized shards, the language sampler, packing, masking.

Submodules are imported where they are used (`mmbert.data.corpus`, `mmbert.data.sources`, ...), so
that importing one does not pay for the others' dependencies.
"""
