"""Stage 3, AQA fine-tuning on the :class:`~pecop_lib.train.loop.Trainer`: USDL, MUSDL, CoRe, TSA and
the I3D + MLP baseline.

A *recipe* (:data:`RECIPES`) is one head on one dataset with the hyperparameters of its official
code (facts: ``reference/aqa-heads.md`` Sec. 2-6):

=================  =====================  ==================  =====  ============  ======  ======  ===========
head / dataset     windows                Adam lr backbone /  wd     batch         epochs  BN      official
                                          head                                                     protocol
=================  =====================  ==================  =====  ============  ======  ======  ===========
USDL MTL-AQA       10 over 103 (last 87)  1e-4 / 1e-4         0      4             100     train   best test
MUSDL MTL-AQA      same                   1e-4 / 1e-4         1e-5   4             100     train   best test
USDL, MUSDL        10 over 160,           1e-4 / 1e-4         0      4             80      train   mean of the
JIGSAWS            non-overlapping                                                                 last 10
CoRe MTL-AQA       10 over 103 (last 86)  1e-4 / 1e-3         0      1 pair, acc 2 200     frozen  best test
TSA FineDiving     9 over 96 at 112 px    1e-4 / 1e-3         0      8 pairs       200     frozen  best test
=================  =====================  ==================  =====  ============  ======  ======  ===========

The paper's other pairings have no official code and reuse the closest official recipe: USDL on
PD4T (MTL-AQA's USDL recipe on PD4T's 103-frame clips, CoRe windows), CoRe on JIGSAWS (CoRe's
optimisation on JIGSAWS' 160-frame windows), on FineDiving (TSA's clips) and on PD4T. The whole
backbone (and its adapters) is trained, as in every official repository and the paper; the
backbone always pools with ``window2``, which equals the official ``(2, 7, 7)`` pool at 224 px
and FineDiving's ``(2, 4, 4)`` at 112 px.

Per epoch, :func:`finetune` trains one epoch (``trainer.fit(data, e + 1)``, the trainer
continues) and evaluates the test split **and** a validation split carved from the training
split (:func:`pecop_lib.eval.holdout_split`: stratified by difficulty / dive number for diving,
subject-disjoint for JIGSAWS and PD4T). Both protocols are then read off the same run:

* ``official``: the best test epoch (every official repository; optimistic), or for USDL/MUSDL
  on JIGSAWS the mean test rho of the last 10 epochs (``official_last10``);
* ``honest``: the epoch with the best validation rho, and the test rho at that epoch.

The model is trained on the training split *minus* the validation hold-out, so both numbers come
from one trajectory and differ only in how the epoch is chosen; ``val_fraction=0`` trains on the
whole training split and reports the official protocol only. Each reported rho carries a paired
bootstrap confidence interval over the test videos. Evaluation runs with fixed BatchNorm
statistics; CoRe and TSA compare each query with up to ``M`` training exemplars of its group,
encoding every video once per evaluation (:func:`pecop_lib.heads.predict_with_exemplars`).

Export: a run with a run folder writes the model each protocol selects (``export/honest/``, and
``export/official/`` where that is another epoch) as safetensors plus a JSON card
(:mod:`~pecop_lib.finetune.export`); :func:`score` (``pecop score``) scores videos with it alone
(:mod:`~pecop_lib.finetune.scoring`).

Resume: the trainer's checkpoints hold model, optimiser and generators; ``evaluation.json`` in the
run folder holds every evaluated epoch, written atomically after each evaluation. A resumed run
evaluates the checkpoint's epoch if its evaluation is missing and continues.

The room, along the run: :mod:`~pecop_lib.finetune.recipes` (recipes, options, settings),
:mod:`~pecop_lib.finetune.backbone`, :mod:`~pecop_lib.finetune.data`, :mod:`~pecop_lib.finetune.model`,
:mod:`~pecop_lib.finetune.evaluation`, :mod:`~pecop_lib.finetune.results`, :mod:`~pecop_lib.finetune.run`
(:func:`finetune`), then :mod:`~pecop_lib.finetune.runs` (many runs, result files, the command line) and
:mod:`~pecop_lib.finetune.report` (fold aggregation, seeds, ours vs the paper). No module here names a
head: each head answers through its :class:`~pecop_lib.heads.HeadKind`.
"""


from pecop_lib.finetune.backbone import BACKBONE_POOL, load_finetune_backbone, set_trainable
from pecop_lib.finetune.data import FinetuneData, open_finetune_data, validation_split
from pecop_lib.finetune.evaluation import epoch_record
from pecop_lib.finetune.export import EXPORT_DIR, ExportedModel, ModelCardError, load_exported
from pecop_lib.finetune.model import AQAModel, adam_two_rates
from pecop_lib.finetune.recipes import RECIPES, SCOPES, FinetuneOptions, Setting, get_recipe, settings_for
from pecop_lib.finetune.report import aggregate_folds, comparison_table, paper_reference, summarize_seeds
from pecop_lib.finetune.results import FinetuneResult, Reported, difficulty_baseline, select_epochs
from pecop_lib.finetune.run import EVALUATION_FILE, finetune
from pecop_lib.finetune.runs import comparison_backbones, finetune_command, load_result, run_settings
from pecop_lib.finetune.scoring import ScoreReport, VideoScore, score
from pecop_lib.heads import FinetuneRecipe

__all__ = [
    "BACKBONE_POOL",
    "EVALUATION_FILE",
    "EXPORT_DIR",
    "RECIPES",
    "SCOPES",
    "AQAModel",
    "ExportedModel",
    "FinetuneData",
    "FinetuneOptions",
    "FinetuneRecipe",
    "FinetuneResult",
    "ModelCardError",
    "Reported",
    "ScoreReport",
    "Setting",
    "VideoScore",
    "adam_two_rates",
    "aggregate_folds",
    "comparison_backbones",
    "comparison_table",
    "difficulty_baseline",
    "epoch_record",
    "finetune",
    "finetune_command",
    "get_recipe",
    "load_exported",
    "load_finetune_backbone",
    "load_result",
    "open_finetune_data",
    "paper_reference",
    "run_settings",
    "score",
    "select_epochs",
    "set_trainable",
    "settings_for",
    "summarize_seeds",
    "validation_split",
]
