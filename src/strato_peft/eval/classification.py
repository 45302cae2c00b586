"""Classification: accuracy, macro-F1, macro precision/recall, the majority-label baseline and the confusion matrix
on the held-out split of the run the checkpoint came from (the same split training used, by its split_seed); a
warning in the details where the model scores no better than the class prior."""

from __future__ import annotations

import time

import torch

from strato_peft.eval.base import EvalOptions, EvalTask, TaskResult, register_task
from strato_peft.eval.class_metrics import classification_scores, prior_warning
from strato_peft.eval.target import EvalTarget, heldout_rows


def run_classification(target: EvalTarget, options: EvalOptions) -> TaskResult:
    """Predict the held-out rows in batches and score them."""
    from sklearn.metrics import confusion_matrix

    start = time.perf_counter()
    cfg, data, rows = heldout_rows(target, options.limit, "classification", "classification", "classification")
    tok, model = target.tokenizer, target.model
    device = next(model.parameters()).device
    preds: list[int] = []
    for i in range(0, len(rows), options.batch_size):
        batch = rows[i:i + options.batch_size]
        enc = tok([r["text"] for r in batch], truncation=True, max_length=cfg.task.max_length, padding=True,
                  return_tensors="pt").to(device)
        with torch.no_grad():
            preds += model(**enc).logits.argmax(-1).tolist()
    labels = [r["label"] for r in rows]
    k = len(data.label_names or []) or max(labels + preds) + 1
    metrics: dict = {**classification_scores(labels, preds, k),
                     "confusion_matrix": confusion_matrix(labels, preds, labels=list(range(k))).tolist(),
                     "label_names": data.label_names}
    warning = prior_warning(metrics)
    samples = [{"text": r["text"], "target": y, "prediction": p} for r, y, p in zip(rows, labels, preds)] \
        if options.log_samples else []
    return TaskResult(metrics, len(rows), "argmax of the classifier head over the run's held-out split",
                      details={"split": data.info, "seconds": time.perf_counter() - start,
                               **({"warning": warning} if warning else {})}, samples=samples)


register_task(EvalTask("classification", "held-out accuracy, macro-F1, precision, recall, confusion matrix",
                       run_classification))
