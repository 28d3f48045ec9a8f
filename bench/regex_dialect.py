"""Does tintdb's ``$regex`` match what chromadb's does? A differential run, by hand.

    python bench/regex_dialect.py --chroma-python /path/to/chromadb-venv/bin/python
    python bench/regex_dialect.py --chroma-python ... --patterns 3000 --seed 2

Generates patterns from pieces of Rust's regex syntax (flags, classes, Unicode
properties, repetition, groups) and short documents of awkward characters (case pairs
such as k/K/KELVIN SIGN, combining marks, digits of other scripts, newlines); with
``--code-points``, instead, class patterns (\\w, \\d, \\s, \\p{..}, case folding) over one
document per code point of planes 0 and 1 and every 97th of the others.
chromadb answers in its own interpreter (a ``PersistentClient`` in a temporary
directory), tintdb in this one; the report counts patterns both answer alike, patterns
tintdb refuses, patterns only tintdb accepts, and mismatches, listing the last two.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tintdb import _regex
from tintdb.errors import InvalidArgumentError

ATOMS = [
    *"abAéÉßkKsS 1Ω_",
    "ω",
    "٣",
    "\u212a",
    "\u017f",
    "\u00a0",
    "\u2028",
    r"\n",
    r"\t",
    ".",
    "^",
    "$",
    r"\d",
    r"\w",
    r"\s",
    r"\D",
    r"\W",
    r"\S",
    r"\pL",
    r"\p{Lu}",
    r"\p{Ll}",
    r"\P{Greek}",
    r"\p{Greek}",
    r"\pN",
    "[a-c]",
    "[^ab]",
    "[[:alpha:]]",
    "[[:^digit:]]",
    r"[\w]",
    r"[^\s]",
    "[a-z&&[^aeiou]]",
    r"[\d\s]",
    r"[^\pL]",
    "[é-ü]",
    r"\x{e9}",
    r"\u00DF",
    r"\.",
    r"\-",
    "[a[b]]",
    r"\A",
    r"\z",
    r"(?-u:\b)",
    "[-a]",
    "[a-]",
]
FLAGS = ["(?i)", "(?m)", "(?s)", "(?U)", "(?-i)", "(?is)", "(?im)", "(?x)"]
QUANTIFIERS = ["*", "+", "?", "{2}", "{1,2}", "{0,}", "*?", "+?", "??", "{1,3}?"]
CHARS = [*"abABéÉßkKsS \n\t1Ω_.-xcü\r", "\u212a", "\u017f", "٣", "ω", "\u00a0", "\u2028"]
CLASS_PATTERNS = [
    r"^\w$",
    r"^\d$",
    r"^\s$",
    r"^\W$",
    r"(?i)^k$",
    r"(?i)^s$",
    r"^\pL$",
    r"(?i)^\p{Lu}$",
    r"^\p{Greek}$",
    r"^\p{Han}$",
    r"^.$",
    r"(?i)^[^k]$",
]

ORACLE = """
import json, sys, tempfile, chromadb
data = json.load(open(sys.argv[1]))
col = chromadb.PersistentClient(path=tempfile.mkdtemp()).create_collection("oracle")
docs = data["docs"]
for s in range(0, len(docs), 5000):
    part = docs[s:s + 5000]
    col.add(ids=[str(i) for i in range(s, s + len(part))], embeddings=[[1.0, 0.0]] * len(part),
            documents=part)
out = {}
for p in data["patterns"]:
    try:
        out[p] = sorted(int(i) for i in col.get(where_document={"$regex": p}, include=[])["ids"])
    except Exception as e:
        out[p] = "refused: " + str(e)
json.dump(out, open(sys.argv[2], "w"))
"""


def pattern(rng: random.Random, depth: int = 0) -> str:
    parts = []
    for _ in range(rng.randint(1, 4)):
        r = rng.random()
        if r < 0.1:
            parts.append(rng.choice(FLAGS))
            continue
        if r < 0.25 and depth < 2:
            inner = pattern(rng, depth + 1)
            if rng.random() < 0.3:
                inner += "|" + pattern(rng, depth + 1)
            atom = rng.choice(["(", "(?:", "(?i:", "(?-i:", "(?s:", "(?m:"]) + inner + ")"
        else:
            atom = rng.choice(ATOMS)
        if rng.random() < 0.3:
            atom += rng.choice(QUANTIFIERS)
        parts.append(atom)
    return "".join(parts)


def tintdb_answers(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in data["patterns"]:
        try:
            _regex.check(p)
        except InvalidArgumentError as exc:
            out[p] = "refused: " + str(exc)
            continue
        out[p] = [i for i, d in enumerate(data["docs"]) if _regex.search(p, d)]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chroma-python", required=True, help="a python with chromadb 1.5.9")
    parser.add_argument("--patterns", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--code-points", action="store_true", help="class patterns over single code points"
    )
    args = parser.parse_args()
    rng = random.Random(args.seed)
    docs = ["".join(rng.choice(CHARS) for _ in range(rng.randint(0, 6))) for _ in range(300)]
    docs += CHARS
    patterns = list(dict.fromkeys(pattern(rng) for _ in range(args.patterns)))
    if args.code_points:  # the class patterns alone, one document per code point
        planes_0_1 = [c for c in range(0x20000) if not 0xD800 <= c <= 0xDFFF]
        docs = [chr(c) for c in planes_0_1 + list(range(0x20000, 0x110000, 97))]
        patterns = CLASS_PATTERNS
    data = {"docs": docs, "patterns": patterns}
    with tempfile.TemporaryDirectory() as tmp:
        given, taken = Path(tmp) / "in.json", Path(tmp) / "out.json"
        given.write_text(json.dumps(data))
        script = Path(tmp) / "oracle.py"
        script.write_text(ORACLE)
        subprocess.run([args.chroma_python, str(script), str(given), str(taken)], check=True)
        chroma = json.loads(taken.read_text())
    ours = tintdb_answers(data)
    counts = {"same": 0, "refused by tintdb": 0, "accepted by tintdb only": 0, "mismatch": 0}
    for p in patterns:
        theirs, mine = chroma[p], ours[p]
        refused_theirs, refused_mine = isinstance(theirs, str), isinstance(mine, str)
        if (refused_theirs and refused_mine) or theirs == mine:
            counts["same"] += 1
        elif refused_mine:
            counts["refused by tintdb"] += 1
        elif refused_theirs:
            counts["accepted by tintdb only"] += 1
            print(f"accepted by tintdb only: {p!r}: chromadb says {theirs}")
        else:
            counts["mismatch"] += 1
            only_theirs = sorted(set(theirs) - set(mine))[:5]
            only_mine = sorted(set(mine) - set(theirs))[:5]
            print(
                f"MISMATCH {p!r}: chromadb only {[docs[i] for i in only_theirs]!r}, "
                f"tintdb only {[docs[i] for i in only_mine]!r}"
            )
    print(", ".join(f"{k}: {v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
