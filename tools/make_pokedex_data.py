"""Rebuild the Pokédex facts shipped inside the package from PokéAPI's CSVs.

    python tools/make_pokedex_data.py               # nearest ../shared/data/pokedex -> the package
    python tools/make_pokedex_data.py --src /path/to/pokedex --out src/pokemon_classifier/pokedex_data

Keeps ids 1..151 and the types they use, sorted, validated (every id has a name in every language,
one or two types); copies the licence notice and the source description beside them. tests/test_pokedex.py checks that the
shipped files equal this script's output whenever the shared folder exists.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def find_src() -> Path | None:
    """The nearest ../shared/data/pokedex above the checkout (a worktree sits one level deeper)."""
    for parent in ROOT.parents:
        if (parent / "shared" / "data" / "pokedex" / "names.csv").is_file():
            return parent / "shared" / "data" / "pokedex"
    return None


DEFAULT_OUT = ROOT / "src" / "pokemon_classifier" / "pokedex_data"
N = 151
LICENCE = "LICENSE-PokeAPI.md"


def _rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _csv(header: list[str], rows) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def build(src: Path) -> dict[str, str]:
    """File name -> exact text of every shipped file (raises ValueError on incomplete sources)."""
    src = Path(src)
    names = [r for r in _rows(src / "names.csv") if 1 <= int(r["dex_id"]) <= N]
    langs = sorted({r["lang"] for r in names})
    have = {(int(r["dex_id"]), r["lang"]) for r in names}
    missing = [(i, lang) for i in range(1, N + 1) for lang in langs if (i, lang) not in have]
    if missing or "en" not in langs:
        raise ValueError(f"{src / 'names.csv'}: missing names for (dex_id, lang) {missing[:5]}")
    names.sort(key=lambda r: (int(r["dex_id"]), r["lang"]))

    types = [r for r in _rows(src / "types.csv") if 1 <= int(r["dex_id"]) <= N]
    types.sort(key=lambda r: (int(r["dex_id"]), int(r["slot"])))
    per_id = {i: [r for r in types if int(r["dex_id"]) == i] for i in range(1, N + 1)}
    bad = [i for i, t in per_id.items() if len(t) not in (1, 2)]
    if bad:
        raise ValueError(f"{src / 'types.csv'}: ids without one or two types: {bad[:5]}")
    used = {r["type"] for r in types}
    tnames = sorted((r for r in _rows(src / "type_names.csv") if r["type"] in used),
                    key=lambda r: (r["type"], r["lang"]))
    if {(t, "en") for t in used} - {(r["type"], r["lang"]) for r in tnames}:
        raise ValueError(f"{src / 'type_names.csv'}: a used type has no English name")
    return {
        "names.csv": _csv(["dex_id", "lang", "name", "genus"],
                          ([r["dex_id"], r["lang"], r["name"], r["genus"]] for r in names)),
        "types.csv": _csv(["dex_id", "slot", "type"], ([r["dex_id"], r["slot"], r["type"]] for r in types)),
        "type_names.csv": _csv(["type", "lang", "name"], ([r["type"], r["lang"], r["name"]] for r in tnames)),
        LICENCE: (src / LICENCE).read_text(encoding="utf-8"),
        "SOURCES.md": (src / "SOURCES.md").read_text(encoding="utf-8"),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", type=Path, default=find_src(), help="default: the nearest ../shared/data/pokedex")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    if args.src is None or not (args.src / "names.csv").is_file():
        print(f"error: {args.src}: no names.csv (PokéAPI CSVs expected)", file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT / "src"))
    from pokemon_classifier.fileio import atomic_write_text

    for name, text in build(args.src).items():
        atomic_write_text(args.out / name, text)
        print(f"wrote {args.out / name} ({len(text.encode()):,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
