"""Multilingual math word problems (MGSM, MSVAMP): read, prompt, generate greedily, extract the answer, score.

    data = read_math_dir("../shared/data/mgsm")            # {"de": [{"question", "answer"}], "en": [...], ...}
    res = evaluate_math(model, tok, data, template="qalign", out="eval/")   # resumable; eval/generations.jsonl
    res["accuracy"]["de"], res["average"]
    extract_answer("She pays $1,250.50 in total.")          # 1250.5
    rows = evaluate_math_dir(model, tok, "mgsm/", "eval/")    # read, answer, results.json, accuracy.png: `eval math`

The answer rule is the reference evaluations' (QAlign, MathOctopus, SLAM):
1. every comma is removed, so thousands separators vanish ("1,250" -> 1250); a decimal comma therefore joins its
   digits ("3,5" -> 35), as in the reference scripts;
2. numbers are found with the pattern `-?\\d+\\.?\\d*`: a minus sign directly before digits belongs to the number
   ("-3" is -3, and "5-3" reads as 5 and -3); a trailing dot is dropped ("18." is 18);
3. the last number in the output is the prediction; an output with no number has none and counts as wrong;
4. a prediction is correct when |prediction - gold| < 1e-3.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from neuronlab.data.corpora import label_pairs
from neuronlab.data.templates import prompt_format
from neuronlab.dist import writes_here
from neuronlab.errors import NeuronlabError
from neuronlab.io import read_json, write_bytes, write_json
from neuronlab.models.load import model_info
from neuronlab.progress import progress_bar
from neuronlab.report.plots import accuracy_bars

NUMBER = re.compile(r"-?\d+\.?\d*")
TOLERANCE = 1e-3
LANGUAGE_NAMES = {
    "English": "en",
    "German": "de",
    "French": "fr",
    "Spanish": "es",
    "Japanese": "ja",
    "Chinese": "zh",
    "Russian": "ru",
    "Thai": "th",
    "Swahili": "sw",
    "Bengali": "bn",
    "Telugu": "te",
}
NAMES = {code: name for name, code in LANGUAGE_NAMES.items()}
MAX_NEW_TOKENS = {"mgsm": 600, "msvamp": 300}  # the reference evaluations' budgets


def extract_answer(text: str) -> float | None:
    """The last number in `text` under the reference rule (module doc), or None if there is none."""
    found = NUMBER.findall(text.replace(",", ""))
    return float(found[-1].rstrip(".")) if found else None


def is_correct(prediction: float | None, gold: float) -> bool:
    return prediction is not None and abs(prediction - gold) < TOLERANCE


def _number(value, where: str) -> float:
    try:
        return float(str(value).replace(",", ""))
    except ValueError:
        raise NeuronlabError(f"{where}: the answer {value!r} is not a number") from None


def read_mgsm(path: str | Path) -> list[dict]:
    """MGSM TSV: `question<TAB>answer` per line, no header."""
    from neuronlab.data.corpora import read_lines

    items = []
    for n, line in enumerate(read_lines(path), 1):
        question, tab, answer = line.rpartition("\t")
        if not tab or not question.strip():
            raise NeuronlabError(f"{path}:{n} is not `question<TAB>answer`")
        items.append({"question": question.strip(), "answer": _number(answer, f"{path}:{n}")})
    return items


def read_msvamp(path: str | Path) -> list[dict]:
    """MSVAMP JSON lines with `m_query` (the problem in the file's language) and `response` (the answer)."""
    from neuronlab.data.corpora import read_jsonl

    items = []
    for n, row in read_jsonl(path, "MSVAMP"):
        if not isinstance(row, dict) or "m_query" not in row or "response" not in row:
            raise NeuronlabError(f"{path}:{n} needs the keys m_query and response")
        items.append({"question": str(row["m_query"]).strip(), "answer": _number(row["response"], f"{path}:{n}")})
    return items


def language_of(path: Path) -> str:
    """Language code from a file name: mgsm_de.tsv -> de, test_German.jsonl -> de."""
    stem = path.name.split(".")[0]
    for prefix in ("mgsm_", "test_"):
        stem = stem.removeprefix(prefix)
    return LANGUAGE_NAMES.get(stem, stem)


def read_math_dir(
    folder: str | Path, languages: Sequence[str] | None = None, limit: int | None = None
) -> dict[str, list[dict]]:
    """{language: items} from a folder of MGSM (.tsv) or MSVAMP (.jsonl) files, one language a file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NeuronlabError(f"no folder at {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix in (".tsv", ".jsonl"))
    if not files:
        raise NeuronlabError(f"{folder} has no .tsv (MGSM) or .jsonl (MSVAMP) files: one language a file")
    data = {}
    for path in files:
        lang = language_of(path)
        if languages and lang not in languages:
            continue
        items = read_mgsm(path) if path.suffix == ".tsv" else read_msvamp(path)
        for item in items:
            item["dataset"] = "mgsm" if path.suffix == ".tsv" else "msvamp"  # it sets the default answer budget
        data[lang] = items[:limit] if limit else items
    if not data:
        raise NeuronlabError(f"none of the languages {list(languages or [])} is in {folder}")
    return data


def math_prompt(question: str, template: str, lang: str) -> str:
    return prompt_format(template).format(query=question, language=NAMES.get(lang, lang))


def evaluate_math(
    model,
    tokenizer,
    data: dict[str, list[dict]],
    template: str = "qalign",
    max_new_tokens: int | None = None,
    batch_size: int = 8,
    out: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """Greedy answers to every question; {"accuracy": {lang: share}, "average", "n": {lang: items}, ...}. With `out`,
    every generation goes to out/generations.jsonl as it is made (an interrupted run resumes there, never answering
    a question twice) and the result to out/results.json. `max_new_tokens` defaults to the reference evaluations'
    budget for the data (MAX_NEW_TOKENS: 600 for MGSM, 300 for MSVAMP; the larger where both are given)."""
    from neuronlab.evaluate.steering import generate

    if max_new_tokens is None:
        kinds = {item.get("dataset", "mgsm") for items in data.values() for item in items}
        max_new_tokens = max(MAX_NEW_TOKENS[k] for k in kinds or {"mgsm"})

    done = (
        _resume(Path(out), {"template": template, "max_new_tokens": max_new_tokens, "model": model_info(model)})
        if out is not None
        else {}
    )
    todo = [(lang, i) for lang, items in data.items() for i in range(len(items)) if (lang, i) not in done]
    bar = progress_bar(total=len(todo), desc="math", unit="question", enabled=progress)
    for start in range(0, len(todo), batch_size):
        part = todo[start : start + batch_size]
        prompts = [math_prompt(data[lang][i]["question"], template, lang) for lang, i in part]
        outputs = generate(model, tokenizer, prompts, max_new_tokens, batch_size)
        rows = []
        for (lang, i), text in zip(part, outputs, strict=True):
            gold, pred = data[lang][i]["answer"], extract_answer(text)
            row = {
                "lang": lang,
                "index": i,
                "question": data[lang][i]["question"],
                "answer": gold,
                "output": text,
                "prediction": pred,
                "correct": is_correct(pred, gold),
            }
            done[(lang, i)] = row
            rows.append(row)
        if out is not None and writes_here():  # every rank has every row (generate gathers them); one appends
            _append(Path(out) / "generations.jsonl", rows)
        bar.update(len(part))
    bar.close()
    accuracy = {
        lang: sum(done[(lang, i)]["correct"] for i in range(len(items))) / len(items)
        for lang, items in data.items()
        if items
    }
    result = {
        "accuracy": accuracy,
        "average": sum(accuracy.values()) / len(accuracy),
        "n": {lang: len(items) for lang, items in data.items()},
        "template": template,
        "max_new_tokens": max_new_tokens,
    }
    if out is not None:  # an atomic write: under ranks only rank 0 writes (neuronlab.dist.writes_here)
        write_json(Path(out) / "results.json", result)
    return result


def _resume(out: Path, run: dict) -> dict[tuple[str, int], dict]:
    """The answers already in out/generations.jsonl, if out/run.json says they were made the same way (model,
    template, budget); the file is rewritten without a line an interruption cut short."""
    from neuronlab.io import read_json, write_text
    from neuronlab.models.load import same_model

    path = out / "generations.jsonl"
    if (out / "run.json").is_file() and path.is_file():
        before = read_json(out / "run.json", "math run")
        differs = same_model(before.get("model", {}), run["model"])
        if differs or any(before.get(k) != run[k] for k in ("template", "max_new_tokens")):
            raise NeuronlabError(
                f"{out} holds answers made another way ({differs or 'template or max_new_tokens'}): "
                "use another --out, or the same model and settings to resume"
            )
    write_json(out / "run.json", run)
    if not path.is_file():
        return {}
    done, lines = {}, []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
            done[(row["lang"], int(row["index"]))] = row
            lines.append(line)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            continue  # a line cut by an interruption: that question is asked again
    write_text(path, "".join(f"{line}\n" for line in lines))
    return done


def _append(path: Path, rows: list[dict]) -> None:
    """Append whole lines and flush them to disk: an interruption loses at most the line being written."""
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def comparison(results: dict[str, dict]) -> list[dict]:
    """Rows of a side-by-side table: per language, the accuracy of each labelled run, then the average."""
    langs = list(dict.fromkeys(lang for r in results.values() for lang in r["accuracy"]))
    rows = [{"language": lang, **{label: r["accuracy"].get(lang) for label, r in results.items()}} for lang in langs]
    rows.append({"language": "average", **{label: r["average"] for label, r in results.items()}})
    return rows


def evaluate_math_dir(
    model,
    tokenizer,
    data: str | Path,
    out: str | Path,
    *,
    template: str = "qalign",
    languages: Sequence[str] | None = None,
    limit: int | None = None,
    max_new_tokens: int | None = None,
    batch_size: int = 8,
    compare: Mapping[str, str | Path] | Sequence[str] = (),
) -> list[dict]:
    """rows = evaluate_math_dir(model, tok, "mgsm/", "eval/", compare={"base": "base-eval/results.json"})

    `evaluate_math` on a folder of MGSM (.tsv) or MSVAMP (.jsonl) files (`read_math_dir`), into out/results.json,
    out/generations.jsonl (resumable) and out/accuracy.png, beside the runs of `compare` ({label: results.json},
    or `LABEL=results.json` strings, the CLI's --compare); returns `comparison`'s rows, "this run" the last
    column. `neuronlab eval math` is this call."""
    if not isinstance(compare, Mapping):
        compare = label_pairs(list(compare), "--compare", "results.json", "base=base-eval/results.json", label="LABEL")
    others = {label: read_json(path, "math results") for label, path in compare.items()}
    found = read_math_dir(data, languages, limit)
    result = evaluate_math(model, tokenizer, found, template, max_new_tokens, batch_size, out)
    runs = {**others, "this run": result}
    write_bytes(Path(out) / "accuracy.png", accuracy_bars(runs))
    return comparison(runs)
