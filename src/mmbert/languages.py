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

Known keys (`check_key`): a bundled declaration's key, or a language of the bundled corpus or of the
released counts written in an ISO 15924 script. A well-formed key outside them (`zzz_Zzzz`, a typo such
as `eng_Lant`) is an `UnknownLanguageError` naming the closest known keys, unless the caller allows
unknown keys (data in languages mmBERT never saw).
"""

from __future__ import annotations

import csv
import difflib
import functools
import io
import json
from collections.abc import Iterable
from importlib import resources

from mmbert.errors import MmbertError

CODE = "code"
COUNTS_FILE = "mmbert_language_counts.csv"
PHASES = ("pretrain", "ext", "decay-mid", "decay-eng", "decay-all")
# Named sets -> the phase column whose non-zero rows define them.
LANGUAGE_SETS = {"mmbert-60": "pretrain", "mmbert-110": "ext", "mmbert-1833": "decay-all"}
# ISO 639-3 code of a data key -> the code the released counts use for that language.
COUNTS_CODE = {"pes": "fas", "prs": "fas", "tgl": "fil", "pbu": "pbt", "zlm": "zsm"}
# ISO 15924 script codes (the registry's, without the private-use range Qaaa-Qabx).
SCRIPTS = frozenset(
    """Adlm Afak Aghb Ahom Arab Aran Armi Armn Avst Bali Bamu Bass Batk Beng Bhks Blis Bopo Brah Brai Bugi
    Buhd Cakm Cans Cari Cham Cher Chis Chrs Cirt Copt Cpmn Cprt Cyrl Cyrs Deva Diak Dogr Dsrt Dupl Egyd
    Egyh Egyp Elba Elym Ethi Gara Geok Geor Glag Gong Gonm Goth Gran Grek Gujr Gukh Guru Hanb Hang Hani
    Hano Hans Hant Hatr Hebr Hira Hluw Hmng Hmnp Hrkt Hung Inds Ital Jamo Java Jpan Jurc Kali Kana Kawi
    Khar Khmr Khoj Kitl Kits Knda Kore Kpel Krai Kthi Lana Laoo Latf Latg Latn Leke Lepc Limb Lina Linb
    Lisu Loma Lyci Lydi Mahj Maka Mand Mani Marc Maya Medf Mend Merc Mero Mlym Modi Mong Moon Mroo Mtei
    Mult Mymr Nagm Nand Narb Nbat Newa Nkdb Nkgb Nkoo Nshu Ogam Olck Onao Orkh Orya Osge Osma Ougr Palm
    Pauc Pcun Pelm Perm Phag Phli Phlp Phlv Phnx Piqd Plrd Prti Psin Ranj Rjng Rohg Roro Runr Samr Sara
    Sarb Saur Sgnw Shaw Shrd Shui Sidd Sidt Sind Sinh Sogd Sogo Sora Soyo Sund Sunu Sylo Syrc Syre Syrj
    Syrn Tagb Takr Tale Talu Taml Tang Tavt Tayo Telu Teng Tfng Tglg Thaa Thai Tibt Tirh Tnsa Todr Tols
    Toto Tutg Ugar Vaii Visp Vith Wara Wcho Wole Xpeo Xsux Yezi Yiii Zanb Zinh Zmth Zsye Zsym Zxxx Zyyy
    Zzzz""".split()
)


class UnknownLanguageError(MmbertError, ValueError):
    """A well-formed language key that names no known language (or no known script)."""

    detail = ""  # the key and the closest known ones, for a message that says where the key was read


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


@functools.cache
def _known() -> tuple[frozenset[str], frozenset[str], tuple[str, ...]]:
    """(bundled keys, known ISO 639-3 codes: bundled and released, the keys offered as suggestions)."""
    bundled = frozenset(
        base_key(d["key"]) for d in json.loads(_resource_text("languages.json"))["declarations"]
    )
    released = {lang for counts in _counts().values() for lang in counts}
    codes = frozenset({iso3(k) for k in bundled} | released | set(COUNTS_CODE))
    # A released language the corpus lacks is offered with the script of its counts' code, if bundled.
    scripts = _bundled_scripts()
    offered = set(bundled) | {f"{c}_{scripts[c][0]}" for c in codes if c in scripts}
    return bundled, codes, tuple(sorted(offered))


def is_known_key(key: str) -> bool:
    """Whether a `lang_Script[-variant]` key (or `code`) names a known language in a known script."""
    if key == CODE:
        return True
    bundled, codes, _ = _known()
    base = base_key(key)
    if base in bundled:
        return True
    lang, _, script_ = base.partition("_")
    return lang in codes and script_ in SCRIPTS


def closest_keys(key: str, n: int = 5) -> list[str]:
    """The known keys most like `key`: its language's own keys first, then by spelling."""
    _, _, offered = _known()
    same = [k for k in offered if iso3(k) == iso3(key)]  # a known language in another script
    ranked = same + [
        k for k in difflib.get_close_matches(base_key(key), offered, n=n, cutoff=0.5) if k not in same
    ]
    if len(ranked) < n:  # then the keys of the languages whose codes are spelled most alike
        codes = sorted({iso3(k) for k in offered})
        for code in difflib.get_close_matches(iso3(key), codes, n=n, cutoff=0.0):
            match = next(k for k in offered if iso3(k) == code)
            if match not in ranked:
                ranked.append(match)
    return ranked[:n]


def check_key(key: str, where: str = "") -> str:
    """`key`, if known (`is_known_key`); else `UnknownLanguageError` naming the closest known keys."""
    if is_known_key(key):
        return key
    detail = (
        f"{key!r} (closest known: {', '.join(closest_keys(key))}); a language outside the bundled and "
        "released lists needs --allow-unknown-languages"
    )
    err = UnknownLanguageError(f"{where + ': ' if where else ''}unknown language key {detail}")
    err.detail = detail
    raise err


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
