"""Batches whose order and augmentation depend only on (seed, epoch), and that survive bad files.

`make_loader` returns a `SeededLoader` (a DataLoader). Every batch is a 3-tuple

    images, labels, n_skipped = batch

`images` is N x 3 x H x W, `labels` is N (int64), and `n_skipped` is how many samples of this
batch were dropped because their file could not be decoded (so N can be below batch_size; when
every sample failed, N is 0 and `images` is an empty tensor: skip the batch). `n_skipped` is an
int; it also carries the skipped (path, reason) pairs found by a worker process in
`n_skipped.files`, which the loader merges into `dataset.skipped` in the parent process, so
`dataset.skipped` is complete whatever `workers` is.

Repeatability: call `loader.set_epoch(epoch)` (or `loader.sampler.set_epoch`) before each epoch.
The sample order comes from a generator seeded with (seed, epoch); random augmentation runs on
a torch RNG seeded the same way (in workers, torch seeds each one from the loader's generator;
with workers=0, the loader swaps in its own RNG state while it fetches a batch, so the training
loop's RNG is untouched). Two loaders with the same seed, epoch and number of workers give
identical batches (workers draw augmentation from their own RNGs, so a different number of
workers gives the same order but different crops).
"""

from __future__ import annotations

import functools
import os
import signal
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, get_worker_info

from inceptionlab.data.skipped import SkippedFiles
from inceptionlab.errors import UserError

__all__ = ["make_loader", "collate_skipping", "SeededLoader", "EpochSampler", "SkipCount"]

_WORKER_ERROR_PREFIX = "Caught UserError in DataLoader worker"


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    train: bool,
    workers: int = 0,
    seed: int = 0,
    distributed: bool = False,
    drop_last: bool | None = None,
    pin_memory: bool | None = None,
) -> "SeededLoader":
    """A DataLoader over `dataset`: shuffled by (seed, epoch) when `train`, in order otherwise.

    drop_last defaults to `train` (a ragged last batch upsets batch norm), but never drops a
    dataset smaller than one batch. pin_memory defaults to whether CUDA is available.
    distributed=True shards with a DistributedSampler (needs torch.distributed initialised).
    """
    _check_positive_int("batch_size", batch_size, minimum=1)
    _check_positive_int("workers", workers, minimum=0)
    if drop_last is None:
        drop_last = train and len(dataset) >= batch_size
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    if distributed:
        if not (dist.is_available() and dist.is_initialized()):
            raise UserError("distributed=True needs torch.distributed initialised first: "
                            "call torch.distributed.init_process_group, or launch with torchrun")
        sampler = DistributedSampler(dataset, shuffle=train, seed=seed, drop_last=drop_last)
    else:
        sampler = EpochSampler(len(dataset), shuffle=train, seed=seed)
    return SeededLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
        collate_fn=collate_skipping, pin_memory=pin_memory, drop_last=drop_last,
        generator=torch.Generator(), seed=seed,
    )


class EpochSampler(Sampler[int]):
    """0..size-1, shuffled by a generator seeded with (seed, epoch) when `shuffle`."""

    def __init__(self, size: int, *, shuffle: bool, seed: int = 0) -> None:
        self.size = size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.size))
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


class SeededLoader(DataLoader):
    """A DataLoader whose batches depend on (seed, epoch) only; see the module docstring."""

    def __init__(self, dataset: Dataset, *, seed: int, **kwargs) -> None:
        kwargs.setdefault("generator", torch.Generator())  # reseeded every epoch in __iter__
        kwargs["worker_init_fn"] = functools.partial(_start_worker, kwargs.get("worker_init_fn"))
        super().__init__(dataset, **kwargs)
        self.seed = seed

    @property
    def epoch(self) -> int:
        return getattr(self.sampler, "epoch", 0)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order and augmentation the next iteration gives."""
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple]:
        seed = epoch_seed(self.seed, self.epoch)
        self.generator.manual_seed(seed)  # seeds the workers' RNGs, and nothing else
        loader_iter = super().__iter__()
        batches = _with_private_rng(loader_iter, seed) if self.num_workers == 0 else loader_iter
        skipped = _skip_record(self.dataset)
        try:
            for batch in batches:
                if skipped is not None:
                    skipped.merge(getattr(batch[2], "files", ()))
                yield batch
        except UserError as exc:  # strict mode, from a worker: back to the one-line message
            raise UserError(_original_message(exc)) from exc
        finally:  # after an error or an early break, stop workers now, not at garbage collection
            stop_workers = getattr(loader_iter, "_shutdown_workers", None)
            if stop_workers is not None:
                stop_workers()


def _start_worker(then, worker_id: int) -> None:
    """A loader worker leaves stopping to the training process, which finishes its step, saves a
    checkpoint and then closes the loader. The SIGTERM a scheduler or torchrun sends the whole
    process group had killed the workers first, and the run failed ("DataLoader worker is killed by
    signal: Terminated") without its checkpoint; a Ctrl-C's notice was printed by every worker too.
    Ctrl-C is ignored here; a first SIGTERM too, a second one (the loader's own fallback when a
    worker does not stop, or Python's at exit) ends the worker."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _SecondTermEnds())
    if then is not None:
        then(worker_id)


class _SecondTermEnds:
    """A SIGTERM handler that lets the first signal pass and exits on the second."""

    def __init__(self) -> None:
        self.received = 0

    def __call__(self, signum, frame) -> None:
        self.received += 1
        if self.received > 1:
            os._exit(0)


class SkipCount(int):
    """The number of samples dropped from a batch; `files` holds a worker's (path, reason) pairs."""

    def __new__(cls, count: int, files: tuple[tuple[str, str], ...] = ()) -> "SkipCount":
        self = super().__new__(cls, count)
        self.files = files
        return self


def collate_skipping(samples: list) -> tuple[torch.Tensor, torch.Tensor, SkipCount]:
    """(images N x C x H x W, labels N, n_skipped): stack the samples, dropping the Nones."""
    kept = [sample for sample in samples if sample is not None]
    n_skipped = SkipCount(len(samples) - len(kept), _new_worker_skips())
    if not kept:
        return torch.empty(0), torch.empty(0, dtype=torch.int64), n_skipped
    images = torch.stack([image for image, _ in kept])  # N x C x H x W
    labels = torch.tensor([label for _, label in kept], dtype=torch.int64)
    return images, labels, n_skipped


def epoch_seed(seed: int, epoch: int) -> int:
    """One 63-bit seed from (seed, epoch), so that (seed 0, epoch 1) differs from (seed 1, epoch 0)."""
    return (int(seed) * 0x9E3779B97F4A7C15 + int(epoch) * 0xBF58476D1CE4E5B9 + 1) % 2**63


def _with_private_rng(batches: Iterator, seed: int) -> Iterator:
    """Fetch each batch with torch's CPU RNG set to a private, seeded state; restore it after."""
    private = torch.Generator().manual_seed(seed).get_state()
    while True:
        outer = torch.get_rng_state()
        torch.set_rng_state(private)
        try:
            batch = next(batches)
        except StopIteration:
            return
        finally:
            private = torch.get_rng_state()
            torch.set_rng_state(outer)
        yield batch


def _skip_record(dataset) -> SkippedFiles | None:
    """The dataset's SkippedFiles (looking through a torch Subset-style `.dataset`), if any."""
    for candidate in (dataset, getattr(dataset, "dataset", None)):
        record = getattr(candidate, "skipped", None)
        if isinstance(record, SkippedFiles):
            return record
    return None


def _new_worker_skips() -> tuple[tuple[str, str], ...]:
    """In a worker process: the skips its dataset copy recorded since the last batch."""
    worker = get_worker_info()
    if worker is None:  # main process: the dataset recorded into the parent's object already
        return ()
    record = _skip_record(worker.dataset)
    return record.take_new() if record is not None else ()


def _original_message(exc: UserError) -> str:
    """The last line of a worker's re-raised traceback ('...UserError: <message>')."""
    text = str(exc)
    if not text.startswith(_WORKER_ERROR_PREFIX):
        return text
    last = text.strip().splitlines()[-1]
    return last.split("UserError: ", 1)[-1]


def _check_positive_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"{name} must be an integer >= {minimum}, got {value!r}")
