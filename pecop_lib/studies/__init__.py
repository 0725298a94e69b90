"""The paper's studies on top of pretraining and fine-tuning: Fig. 5 (the five strategies), Table 5 (the
pretext), Table 6 (the backbone), the fidelity switches and notebook 08's score distributions.

:mod:`~pecop_lib.studies.plans` lists the runs and runs them (cached per run), and
:mod:`~pecop_lib.studies.tables` turns their results into numbers (cells, summaries, ours next to the
paper's, costs), :mod:`~pecop_lib.studies.verdicts` into statements computed from those numbers, and
:mod:`~pecop_lib.studies.explorer` into the model of notebook 08's explorer.
"""


from pecop_lib.studies.plans import AblationResult, AblationRun, ablation_plan, run_ablation

__all__ = [
    "AblationResult",
    "AblationRun",
    "ablation_plan",
    "run_ablation",
]
