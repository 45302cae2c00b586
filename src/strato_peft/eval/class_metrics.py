"""Classification scores shared by training's evaluation and ``strato eval``, and the check that a classifier
learned more than the class prior (a run stuck at "always the most common label" scores that label's share)."""

from __future__ import annotations

from collections import Counter
from typing import Optional, Sequence

PRIOR_MARGIN = 0.01  # accuracy within this of always predicting the most common label counts as the class prior


def classification_scores(labels: Sequence[int], preds: Sequence[int],
                          num_labels: Optional[int] = None) -> dict[str, float]:
    """Accuracy, macro-F1/precision/recall (over classes 0..num_labels-1, or the classes present when None), the
    accuracy of always predicting the most common label (``majority_baseline``) and the share of rows given the
    most often predicted class (``top_class_share``; 1.0: one class for every row)."""
    from sklearn.metrics import precision_recall_fscore_support

    labels, preds = [int(y) for y in labels], [int(p) for p in preds]
    classes = list(range(num_labels)) if num_labels else None
    precision, recall, f1, _ = precision_recall_fscore_support(labels, preds, average="macro", zero_division=0,
                                                               labels=classes)
    n = max(len(labels), 1)
    return {"accuracy": sum(p == y for p, y in zip(preds, labels)) / n, "macro_f1": float(f1),
            "precision": float(precision), "recall": float(recall),
            "majority_baseline": Counter(labels).most_common(1)[0][1] / n if labels else 0.0,
            "top_class_share": Counter(preds).most_common(1)[0][1] / n if preds else 0.0}


def prior_warning(scores: dict[str, float], prefix: str = "") -> Optional[str]:
    """A warning where the accuracy is no better than always predicting the most common label (within
    PRIOR_MARGIN), else None; ``prefix`` is the metrics' key prefix (``eval_`` for Trainer's)."""
    acc, base = scores.get(f"{prefix}accuracy"), scores.get(f"{prefix}majority_baseline")
    if acc is None or base is None or acc > base + PRIOR_MARGIN:
        return None
    share = scores.get(f"{prefix}top_class_share")
    one_class = "" if share is None else f"; {share:.1%} of rows get the same predicted class"
    return (f"the classifier learned nothing past the class prior: accuracy {acc:.2%} against {base:.2%} for "
            f"always predicting the most common label{one_class}. A stuck run: retrain with a learning-rate "
            "warmup (training.warmup_ratio: 0.1), another seed or a lower learning rate")
