"""Language keys and the mmBERT phase language sets.

Data keys are FineWeb2-style `lang_Script` strings (`eng_Latn`, `cmn_Hans`); a bundled declaration
that is a variant of another has a `-variant` suffix (`deu_Latn-1996`, see `mmbert.data.corpus`), and
`code` is the key of the code source. mmBERT's phase sets are plain ISO 639-3 codes (+ `code`) taken
from the released per-language token counts (`resources/mmbert_language_counts.csv`, MIT, from
JHU-CLSP/mmBERT `statistics/language_counts.csv`): a phase's languages are the data keys whose ISO
639-3 part is in the set.

- `mmbert-60`: the pre-training languages (non-zero `pretrain`): 60 languages + code.
- `mmbert-110`: the mid-training (context extension) languages (non-zero `ext`): 109 languages + code.
- `mmbert-1833`: the decay languages (non-zero `decay-all`): 1833 languages + code.

The counts use a few codes that differ from the bundled corpus's for the same language (FineWeb2's
`fas` for Persian where the UDHR has Western Farsi `pes` and Dari `prs`; `fil` for Tagalog `tgl`;
`pbt` for Pashto `pbu`; `zsm` for Malay `zlm`): `counts_code` maps them, and set membership goes
through it.
"""

from __future__ import annotations

import csv
import functools
import io
import json
from collections.abc import Iterable
from importlib import resources

CODE = "code"
COUNTS_FILE = "mmbert_language_counts.csv"
PHASES = ("pretrain", "ext", "decay-mid", "decay-eng", "decay-all")
# Named sets -> the phase column whose non-zero rows define them.
LANGUAGE_SETS = {"mmbert-60": "pretrain", "mmbert-110": "ext", "mmbert-1833": "decay-all"}
# ISO 639-3 code of a data key -> the code the released counts use for that language.
COUNTS_CODE = {"pes": "fas", "prs": "fas", "tgl": "fil", "pbu": "pbt", "zlm": "zsm"}


def iso3(key: str) -> str:
    """The ISO 639-3 part of a key: `cmn_Hans` -> `cmn`, `deu_Latn-1996` -> `deu`, `code` -> `code`."""
    return key.split("_", 1)[0].split("-", 1)[0]


def script(key: str) -> str | None:
    """The ISO 15924 part of a key: `cmn_Hans` -> `Hans`; None for `code` and plain ISO codes."""
    if "_" not in key:
        return None
    return key.split("_", 1)[1].split("-", 1)[0]


def counts_code(key: str) -> str:
    """The released counts' code for a key's language: `pes_Arab` -> `fas`, `eng_Latn` -> `eng`."""
    code = iso3(key)
    return COUNTS_CODE.get(code, code)


def in_language_set(key: str, name: str) -> bool:
    """Whether a data key's language is in a named mmBERT set."""
    return counts_code(key) in language_set(name)


def base_key(key: str) -> str:
    """The key without a variant suffix: `deu_Latn-1996` -> `deu_Latn`."""
    return key.split("-", 1)[0]


def _resource_text(name: str) -> str:
    return (resources.files("mmbert") / "resources" / name).read_text(encoding="utf-8")


@functools.cache
def _counts() -> dict[str, dict[str, int]]:
    rows = csv.DictReader(io.StringIO(_resource_text(COUNTS_FILE)))
    missing = set(PHASES) - set(rows.fieldnames or [])
    if missing or "language" not in (rows.fieldnames or []):
        raise ValueError(f"{COUNTS_FILE}: expected columns language,{','.join(PHASES)}, missing {missing}")
    counts: dict[str, dict[str, int]] = {phase: {} for phase in PHASES}
    for line, row in enumerate(rows, start=2):
        for phase in PHASES:
            try:
                counts[phase][row["language"]] = int(row[phase])
            except ValueError as e:
                raise ValueError(f"{COUNTS_FILE} line {line}: bad {phase} count {row[phase]!r}") from e
    return counts


def released_counts() -> dict[str, dict[str, int]]:
    """Tokens per language (ISO 639-3 or `code`) in each phase of mmBERT's training, as released.

    Phases: pretrain, ext (mid-training), decay-mid, decay-eng, decay-all. Zero rows are kept.
    """
    return {phase: dict(c) for phase, c in _counts().items()}


@functools.cache
def language_set(name: str) -> frozenset[str]:
    """A named mmBERT language set: ISO 639-3 codes plus `code` (see the module docstring)."""
    if name not in LANGUAGE_SETS:
        raise ValueError(f"unknown language set {name!r}; known: {', '.join(LANGUAGE_SETS)}")
    return frozenset(lang for lang, n in _counts()[LANGUAGE_SETS[name]].items() if n > 0)


@functools.cache
def _bundled_scripts() -> dict[str, list[str]]:
    """ISO 639-3 -> the scripts of the bundled declarations of that language, most common first."""
    meta = json.loads(_resource_text("languages.json"))["declarations"]
    per_lang: dict[str, dict[str, int]] = {}
    for d in meta:
        scripts = per_lang.setdefault(d["iso639_3"], {})
        scripts[d["script"]] = scripts.get(d["script"], 0) + 1
    return {lang: sorted(s, key=lambda k: -s[k]) for lang, s in per_lang.items()}


def to_key(code: str, script_: str | None = None) -> str:
    """A `lang_Script` key for an ISO 639-3 code (a key is returned unchanged).

    Without `script_`, the script is the one the bundled corpus uses most for that language
    (`cmn` -> `cmn_Hans`); a code the corpus does not have needs an explicit script.
    """
    if code == CODE or "_" in code:
        return code
    if script_:
        return f"{code}_{script_}"
    scripts = _bundled_scripts().get(code)
    if not scripts:
        raise ValueError(
            f"no default script for {code!r} (not in the bundled corpus): pass one, e.g. {code}_Latn"
        )
    return f"{code}_{scripts[0]}"


def resolve_languages(spec: str | Iterable[str], available_keys: Iterable[str]) -> list[str]:
    """The available data keys a language spec selects, sorted.

    `spec` is "all", a set name (`mmbert-60`, matched through `counts_code`), or a list of keys (`deu_Latn`, `deu_Latn-1996`) and ISO
    639-3 codes (`deu`, selecting every key of that language); a comma-separated string is a list.
    An element that selects nothing is an error naming it, as is an unknown set name.
    """
    available = sorted(set(available_keys))
    if isinstance(spec, str):
        if spec == "all":
            return available
        if spec in LANGUAGE_SETS:
            return [k for k in available if in_language_set(k, spec)]
        if spec.startswith("mmbert-"):
            raise ValueError(f"unknown language set {spec!r}; known: {', '.join(LANGUAGE_SETS)}")
        spec = [s.strip() for s in spec.split(",") if s.strip()]
    selected: set[str] = set()
    unknown = []
    for item in spec:
        if item in LANGUAGE_SETS:
            matches = [k for k in available if in_language_set(k, item)]
        elif "_" in item or item == CODE:
            # a key selects itself and, when it has no variant, its variants
            matches = [k for k in available if k == item or base_key(k) == item]
        else:
            matches = [k for k in available if item in (iso3(k), counts_code(k))]
        if not matches:
            unknown.append(item)
        selected.update(matches)
    if unknown:
        shown = ", ".join(available[:8]) + (", ..." if len(available) > 8 else "")
        raise ValueError(f"languages not in the data: {', '.join(unknown)} (available: {shown})")
    return sorted(selected)
