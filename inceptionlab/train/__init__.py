"""The training engine: one loop for every model of the zoo, resumable, robust, single- or multi-process.

    from inceptionlab.train import TrainConfig, train, evaluate
    summary = train(TrainConfig(model="inception_v3", data="photos/", out="runs/v3", epochs=10,
                                model_kwargs=dict(stem="low_res", depth_multiplier=0.25)))
    summary = train(resume="runs/v3")          # continue from the latest checkpoint
    result = evaluate(run="runs/v3")            # top-1/5, loss, per-class accuracy, confusion matrix

Modules: `config` (TrainConfig and its checks), `loss` (label smoothing + aux), `optim` (RMSpropTF,
no-decay groups, schedules, EMA), `checkpoint` (atomic files, random state), `distributed`
(torchrun, sharding, CPU SyncBatchNorm), `engine` (the loop), `evaluation`, `logs`.

`train` and `evaluate` are imported on first use (PEP 562), like the package's own names:
`inceptionlab.train.config` has no torch, and the commands that only need it to parse their
options (`summary --help`, `eval --help`) start in a fraction of a second.
"""
from inceptionlab.lazy import lazy_names
from inceptionlab.train.config import TrainConfig

__all__ = ["TrainConfig", "train", "evaluate"]

# public name -> the module that defines it
_LAZY = {"train": "inceptionlab.train.engine", "evaluate": "inceptionlab.train.evaluation"}


__getattr__, __dir__ = lazy_names(__name__, _LAZY, __all__)
