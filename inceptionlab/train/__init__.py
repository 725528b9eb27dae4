"""The training engine: one loop for every model of the zoo, resumable, robust, single- or multi-process.

    from inceptionlab.train import TrainConfig, train, evaluate
    summary = train(TrainConfig(model="inception_v3", data="photos/", out="runs/v3", epochs=10,
                                model_kwargs=dict(stem="low_res", depth_multiplier=0.25)))
    summary = train(resume="runs/v3")          # continue from the latest checkpoint
    result = evaluate(run="runs/v3")            # top-1/5, loss, per-class accuracy, confusion matrix

Modules: `config` (TrainConfig and its checks), `loss` (label smoothing + aux), `optim` (RMSpropTF,
no-decay groups, schedules, EMA), `checkpoint` (atomic files, random state), `distributed`
(torchrun, sharding, CPU SyncBatchNorm), `engine` (the loop), `evaluate`, `logs`.
"""
from inceptionlab.train.config import TrainConfig
from inceptionlab.train.engine import train
from inceptionlab.train.evaluate import evaluate

__all__ = ["TrainConfig", "train", "evaluate"]
