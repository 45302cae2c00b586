"""Compare finished runs: seed statistics, paired baseline comparisons and the success-criteria verdicts.

``collect`` reads run folders, ``stats`` and ``verdicts`` judge them, ``compare`` assembles comparison.json,
``report`` prints and writes it.
"""

from strato_peft.experiments.collect import RunRecord, collect_runs
from strato_peft.experiments.compare import build_comparison
from strato_peft.experiments.errors import CompareError
from strato_peft.experiments.report import format_table, write_outputs

__all__ = ["CompareError", "RunRecord", "build_comparison", "collect_runs", "format_table", "write_outputs"]
