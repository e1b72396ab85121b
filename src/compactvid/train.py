"""Train a video classifier: one process on CPU or GPU, or DDP over the GPUs of one or many machines.

The seed's command lines work unchanged (`python3 code/train.py` becomes `compactvid train`)::

    # CPU, or one GPU (picked automatically; --device=cpu forces the CPU)
    compactvid train --train_dir=runs/dbof --train_data_pattern='data/train*.tfrecord' \\
        --eval_data_pattern='data/validate*.tfrecord' --add_dbof --batch_size=80 --num_epochs=15

    # the GPUs of this machine, one DDP process each (fewer present: those; none: one CPU process)
    compactvid train --num_gpu=4 ...
    torchrun --standalone --nproc_per_node=4 $(which compactvid) train ...      # the same

    # several machines: run this on each of them (here 2 nodes x 4 GPUs; HOST = the first node)
    torchrun --nnodes=2 --nproc_per_node=4 --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 \\
        $(which compactvid) train ...

    tensorboard --logdir runs/

What a run writes into --train_dir, and which directories it accepts: see `compactvid.run_dir`. Without
--start_new_model a run resumes from the newest checkpoint (model, optimizer, learning-rate schedule,
step, epoch and position in it, RNG states); a resume with different data or model flags is refused.
SIGINT/SIGTERM write a checkpoint and stop. With several machines, --train_dir must be a directory they
all see (rank 0 writes, all read).

Counts: a video is a record; an example is a row the model sees (two per video under
--data_augmentation); a step is one optimizer update; all of them over all processes together.

Semantics, as the seed (code/train.py): Adam; learning rate
``base_learning_rate * learning_rate_decay ** floor(videos / learning_rate_decay_examples)`` (the seed's
"examples" there are step x batch size x GPUs: videos); each parameter tensor's gradient clipped to norm
--clip_gradient_norm separately; loss = label loss + regularization_penalty * the model's L2 penalties.
--batch_size is per process. The seed *summed* the gradients of its GPU towers, DDP *averages* them over
processes, so N GPUs here take steps 1/N the size of the seed's before clipping and Adam's normalization;
--sum_gradients sums them as the seed did. Each process reads a disjoint share of every epoch; shares
may differ by a batch, which torch.distributed's Join absorbs at the end of the epoch.

Segments (2019 release): --segment_labels trains on the rated 5-frame segments, one example per segment,
the loss on its rated classes only (the starter code's label weights); validation is then the segment
mAP@N. --init_from=RUN_DIR starts a new run from the weights of another run's newest checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import json
import logging
import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Optional

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms.join import Join
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from compactvid import checkpoint as ckpt
from compactvid.config import Config
from compactvid.data.loader import make_loader, prepare_frames
from compactvid.device import autocast, resolve_device
from compactvid.distributed import (JoinableSum, Process, from_main, launched_by_torchrun, local_processes,
                                    max_over_processes, process_group, spawn)
from compactvid.errors import CompactVidError, ConfigError, DataError
from compactvid.evaluate import evaluate, initialize_from_run
from compactvid.losses import create_loss
from compactvid.models.flag_effects import ineffective_flags
from compactvid.models.registry import create_model
from compactvid.models.report import parameter_report
from compactvid.run_dir import (METRICS_FILE, PARAMS_FILE, claimed, event_files, explained_os_errors,
                                prepare_train_dir, record_event_files, truncate_metrics)
from compactvid.segment_evaluation import evaluate_segments

log = logging.getLogger(__name__)

# The seed's optimizer names (tf.train classes) -> torch.optim classes (used with torch's defaults).
TF_OPTIMIZERS = {"AdamOptimizer": "Adam", "GradientDescentOptimizer": "SGD", "AdagradOptimizer": "Adagrad",
                 "AdadeltaOptimizer": "Adadelta", "RMSPropOptimizer": "RMSprop"}


class NonFiniteLossError(CompactVidError):
    """The training loss became NaN or infinite; the run stopped without writing a checkpoint."""


# --- the pieces of one training step ------------------------------------------------------------------

def learning_rate(config: Config, videos: int) -> float:
    """The staircase-decayed learning rate after `videos` videos (all processes together), as the seed
    (its "examples" in --learning_rate_decay_examples are videos: global step x batch size x GPUs)."""
    decays = math.floor(videos / config.learning_rate_decay_examples)
    return config.base_learning_rate * config.learning_rate_decay ** decays


def clip_gradient_norms(parameters: Iterator[nn.Parameter], max_norm: float) -> None:
    """Scale each parameter's gradient to L2 norm at most `max_norm`, each tensor on its own.

    ``g * max_norm / max(||g||, max_norm)``: tf.clip_by_norm per variable, as the seed's
    clip_gradient_norms (not torch's clip_grad_norm_, which clips the norm of all gradients together).
    """
    for parameter in parameters:
        if parameter.grad is not None:
            norm = torch.linalg.vector_norm(parameter.grad)
            parameter.grad.mul_(max_norm / norm.clamp(min=max_norm))


def create_optimizer(config: Config, parameters: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """`--optimizer`: a seed name (AdamOptimizer, ...) or a torch.optim class name, with torch's defaults.

    Where those defaults decay weights (AdamW), parameters flagged ``_is_structured`` (the vectors and
    diagonals that define circulant layers) form a group without weight decay, as torch_butterfly does
    with its flag: a decay meant for dense weights is no prior for the few numbers of a structured matrix.
    """
    name = TF_OPTIMIZERS.get(config.optimizer, config.optimizer)
    cls = getattr(torch.optim, name, None)
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise ConfigError(f"--optimizer={config.optimizer!r}: not an optimizer; use one of "
                          f"{', '.join(TF_OPTIMIZERS)} or a torch.optim class name (e.g. AdamW, SGD)")
    parameters = list(parameters)
    optimizer = cls(parameters, lr=config.base_learning_rate)
    structured = [p for p in parameters if getattr(p, "_is_structured", False)]
    if not structured or not optimizer.defaults.get("weight_decay"):
        return optimizer  # one group, as checkpoints written before the groups existed hold
    others = [p for p in parameters if not getattr(p, "_is_structured", False)]
    groups = [{"params": others}, {"params": structured, "weight_decay": 0.0}]
    return cls([group for group in groups if group["params"]], lr=config.base_learning_rate)


# --- processes ------------------------------------------------------------------------------------------

def train(config: Config) -> int:
    """Run `compactvid train`: pick the processes, prepare --train_dir, train. Returns the exit status
    (0 done; 128 + signal number when stopped by SIGINT/SIGTERM after checkpointing)."""
    if not config.train_data_pattern:
        raise ConfigError("--train_data_pattern is empty: give the training TFRecord files (a glob)")
    if launched_by_torchrun():
        if config.num_gpu > 1:
            log.info("--num_gpu=%d has no effect under torchrun: it started %s processes",
                     config.num_gpu, os.environ["WORLD_SIZE"])
        return _run_process(config)
    processes = 1
    if config.num_gpu > 1:
        available = torch.cuda.device_count() if resolve_device(config.device).type == "cuda" else 0
        processes = min(config.num_gpu, available)
        if available == 0:
            log.info("--num_gpu=%d: no GPU in use, training in one CPU process (as the original)", config.num_gpu)
            processes = 1
        elif available < config.num_gpu:
            log.info("--num_gpu=%d: only %d GPUs present, training on those", config.num_gpu, available)
    if processes == 1:
        return _run_process(config)
    return train_spawned(config, processes)


def train_spawned(config: Config, processes: int) -> int:
    """Train in `processes` DDP processes started here (what --num_gpu=N does with N GPUs). This process
    holds --train_dir for them, and prepares it first, so that a refusal is reported once."""
    with claimed(config.train_dir), explained_os_errors(config.train_dir):
        prepare_train_dir(config)
        return spawn(functools.partial(_run_process, prepared=True), config, processes)


def _run_process(config: Config, prepared: bool = False) -> int:
    """Train in this process: alone, or as one rank of a process group described by the environment.
    Unless the directory is `prepared` (and held) by the parent, rank 0 claims and prepares it."""
    with process_group(config.device) as process, contextlib.ExitStack() as held, \
            explained_os_errors(config.train_dir):
        def prepare() -> bool:
            if prepared:
                return bool(ckpt.list_checkpoints(config.train_dir))
            held.enter_context(claimed(config.train_dir))
            with explained_os_errors(config.train_dir):  # a RunDirError reaches the other ranks, an OSError not
                return prepare_train_dir(config)

        resume = from_main(process, prepare)
        status = Trainer(config, process, resume).run()
        if process.distributed:
            dist.barrier()  # rank 0 may still be writing the last checkpoint: nobody exits before it is done
        return status


# --- the loop -------------------------------------------------------------------------------------------

class EpochEnd(enum.Enum):
    """How an epoch ended, the same in every process; when processes differ, the highest value wins."""

    COMPLETE = 0  # its data ran out
    MAX_STEPS = 1
    STOPPED = 2  # SIGINT or SIGTERM
    INFINITE = 3  # a non-finite loss; that step was not applied
    NAN = 4


@dataclass
class Counters:
    """How far training has gone, all processes together; saved in every checkpoint (as "position").

    A video is a record of the data; an example is a row the model sees (the two halves of each video
    under --data_augmentation); a step is one optimizer update.
    """

    step: int = 0
    epoch: int = 0  # epochs completed; the one in progress has this 0-based index
    batches_in_epoch: int = 0  # batches each process has consumed in the epoch in progress
    videos: int = 0  # the learning-rate schedule counts these, as the seed did
    examples: int = 0
    examples_per_epoch: Optional[int] = None  # known after the first complete epoch
    epoch_loss: float = 0.0  # label loss summed over the examples of the epoch in progress
    epoch_examples: int = 0
    window_loss: float = 0.0  # the same since the last logged step
    window_examples: int = 0

    def add_step(self, loss: float, examples: int, videos: int) -> None:
        """Count one step over `examples` examples from `videos` videos, whose label losses sum to `loss`."""
        self.step += 1
        self.batches_in_epoch += 1
        self.videos += videos
        self.examples += examples
        self.epoch_loss += loss
        self.epoch_examples += examples
        self.window_loss += loss
        self.window_examples += examples

    def start_epoch(self) -> None:
        self.batches_in_epoch, self.epoch_loss, self.epoch_examples = 0, 0.0, 0

    # Counts that only grow during an epoch: their maximum over processes is the full count, which a
    # process whose share ran out first missed (losses are never negative).
    _GROWING = ("step", "batches_in_epoch", "videos", "examples", "epoch_loss", "epoch_examples",
                "window_loss", "window_examples")

    def agree(self, process: Process) -> None:
        """Take every process's count to the largest one (after an epoch, when shares differed)."""
        values = max_over_processes(process, [getattr(self, name) for name in self._GROWING])
        for name, value in zip(self._GROWING, values):
            setattr(self, name, type(getattr(self, name))(value))

    @classmethod
    def from_checkpoint(cls, saved: dict[str, Any], examples_per_video: int) -> "Counters":
        """The counters a checkpoint saved; format 1 counted videos as "examples" and had no sums."""
        if "videos" not in saved:
            saved = {**saved, "videos": saved["examples"], "examples": saved["examples"] * examples_per_video}
            if saved.get("examples_per_epoch"):
                saved["examples_per_epoch"] *= examples_per_video
        return cls(**saved)


def _without_single_video_batches(batches: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """`batches`, with a batch of one video (the last of a reader's share) merged into the one before.

    Batch normalization cannot train on a single video (PyTorch refuses; TF normalized it to zero), and
    such batches are common at the end of an epoch, with several readers and processes.
    """
    previous = None
    for batch in batches:
        if previous is not None and len(batch["ids"]) == 1:
            previous = {key: previous[key] + batch[key] if isinstance(batch[key], list)
                        else torch.cat([previous[key], batch[key]]) for key in batch}
            continue
        if previous is not None:
            yield previous
        previous = batch
    if previous is not None:
        if len(previous["ids"]) > 1:
            yield previous
        else:
            log.warning("video %s is the only one of this process's share of the epoch; skipped (batch "
                        "normalization needs two videos per batch)", previous["ids"][0])


class Trainer:
    """One process's training run: model, optimizer, data, and the files of --train_dir (rank 0)."""

    def __init__(self, config: Config, process: Process, resume: bool) -> None:
        self.config = config
        self.process = process
        self.device = process.device
        torch.manual_seed(config.seed)
        model_args = config.model_args()
        self.model = create_model(model_args).to(self.device)
        if process.is_main:
            for message in ineffective_flags(model_args):
                log.warning(message)
        self.optimizer = create_optimizer(config, self.model.parameters())
        self.loss_fn = create_loss(config.label_loss)
        self.examples_per_video = 2 if config.data_augmentation and config.frame_features \
            and not config.segment_labels else 1
        self.counters = Counters()
        self.stop_signal: Optional[int] = None
        self.validated_step: Optional[int] = None
        if resume:
            self._restore()
        elif config.init_from:
            step = initialize_from_run(self.model, config)
            if process.is_main:
                log.info("weights from step %d of %s (--init_from)", step, config.init_from)
        self.ddp = (DistributedDataParallel(self.model, device_ids=[self.device] if self.device.type == "cuda"
                                            else None) if process.distributed else self.model)
        # Per step: [label loss x examples, examples, videos, stop requested, 1 per process still in the epoch].
        self.step_sums = JoinableSum(process, 5)
        self.writer = None
        self.bar = None
        if process.is_main:
            from torch.utils.tensorboard import SummaryWriter  # imports TensorBoard: only where used

            ckpt.write_text_atomically(os.path.join(config.train_dir, PARAMS_FILE),
                                       json.dumps(parameter_report(self.model, model_args), indent=2) + "\n")
            truncate_metrics(self._metrics_path, self.counters.step)
            before = event_files(config.train_dir)
            self.writer = SummaryWriter(config.train_dir, purge_step=self.counters.step + 1 if resume else None)
            record_event_files(config.train_dir, sorted(event_files(config.train_dir) - before))

    @property
    def _metrics_path(self) -> str:
        return os.path.join(self.config.train_dir, METRICS_FILE)

    # -- the loop --

    def run(self) -> int:
        """Train until --num_epochs, --max_steps or a stop signal. Returns the exit status (0, or 128 + the
        signal's number)."""
        config, counters = self.config, self.counters
        if counters.epoch >= config.num_epochs or (config.max_steps and counters.step >= config.max_steps):
            if self.process.is_main:
                log.info("the run in %s is complete (epoch %d, step %d): nothing to do; raise --num_epochs or "
                         "--max_steps to train further", config.train_dir, counters.epoch, counters.step)
            return 0
        handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        # The bar shows on a terminal only (rank 0); logs get the epoch and validation lines instead.
        self.bar = tqdm(total=self._total_examples(), initial=counters.examples, unit="ex", unit_scale=True,
                        dynamic_ncols=True, disable=None if self.process.is_main else True, smoothing=0.1)
        try:
            while counters.epoch < config.num_epochs:
                epoch_start = time.perf_counter()
                ended = self._train_epoch()
                if ended in (EpochEnd.NAN, EpochEnd.INFINITE):
                    self._stop_on_non_finite_loss(ended)
                if ended is EpochEnd.COMPLETE and counters.batches_in_epoch == 0:
                    self._stop_on_empty_epoch()
                self._log({"epoch_loss": counters.epoch_loss / counters.epoch_examples,
                           "epoch_complete": ended is EpochEnd.COMPLETE})
                if ended is not EpochEnd.COMPLETE:
                    if ended is EpochEnd.MAX_STEPS and config.eval_data_pattern:
                        self._validate()
                    self._save()
                    break
                if counters.examples_per_epoch is None:
                    counters.examples_per_epoch = counters.examples
                    self.bar.total = self._total_examples()
                    self.bar.refresh()
                self._say(f"epoch {counters.epoch + 1} done at step {counters.step}: {counters.epoch_examples} "
                          f"examples in {time.perf_counter() - epoch_start:.1f} s, mean training loss "
                          f"{counters.epoch_loss / counters.epoch_examples:.4f}")
                if config.eval_data_pattern:
                    self._validate()
                counters.epoch += 1
                counters.start_epoch()
                self._save()
        finally:
            self.bar.close()
            if self.writer is not None:
                self.writer.close()
            for s, handler in handlers.items():
                signal.signal(s, handler)
        if self.stop_signal is not None:
            if self.process.is_main:
                log.info("stopped at step %d by %s; run the same command to resume", counters.step,
                         signal.Signals(self.stop_signal).name)
            return 128 + self.stop_signal
        return 0

    def _train_epoch(self) -> EpochEnd:
        """Train until this epoch's data, --max_steps, a stop signal or a non-finite loss ends it; one
        iteration is one step: forward and backward, the optimizer's update, log, validate, checkpoint."""
        config, counters = self.config, self.counters
        ended = EpochEnd.COMPLETE
        window_start = time.perf_counter()
        joinables = [self.ddp, self.step_sums] if self.process.distributed else []
        self.model.train()
        with Join(joinables) if joinables else contextlib.nullcontext():
            for batch in self._batches():
                loss_sum, examples = self._forward_backward(batch)
                # The step's sums over the processes still in the epoch (shares may differ by a batch).
                loss, examples, videos, stop, active = self.step_sums.sum(
                    [loss_sum, examples, examples // self.examples_per_video, self.stop_signal is not None, 1])
                if not math.isfinite(loss):
                    ended = EpochEnd.NAN if math.isnan(loss) else EpochEnd.INFINITE
                    break
                self._optimizer_step()
                counters.add_step(loss, int(examples), int(videos))
                self.bar.update(int(examples))
                if counters.step % config.log_every_steps == 0:
                    self._log({"loss": counters.window_loss / counters.window_examples, "lr": self._lr(),
                               "examples_per_sec": counters.window_examples / (time.perf_counter() - window_start)})
                    self.bar.set_postfix(loss=f"{counters.window_loss / counters.window_examples:.3f}",
                                         epoch=counters.epoch + 1)
                    counters.window_loss, counters.window_examples = 0.0, 0
                    window_start = time.perf_counter()
                everyone = active == self.process.world_size  # the collectives below need every process
                if everyone and config.eval_every_steps and counters.step % config.eval_every_steps == 0 \
                        and config.eval_data_pattern:
                    self._validate()
                if everyone and config.checkpoint_steps and counters.step % config.checkpoint_steps == 0:
                    self._save()
                if stop:
                    ended = EpochEnd.STOPPED
                    break
                if config.max_steps and counters.step >= config.max_steps:
                    ended = EpochEnd.MAX_STEPS
                    break
        if self.stop_signal is not None and ended is EpochEnd.COMPLETE:
            ended = EpochEnd.STOPPED  # a signal during the last step of the epoch
        counters.agree(self.process)
        return EpochEnd(max_over_processes(self.process, [ended.value])[0])

    def _forward_backward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, int]:
        """Forward and backward on this process's batch. Returns (its label loss summed over its examples,
        a tensor, NaN when the full loss is not finite; its examples)."""
        frames = prepare_frames(batch["frames"].to(self.device, non_blocking=True), batch["num_frames"])
        labels = batch["labels"].to(self.device, non_blocking=True)
        with autocast(self.device, self.config.mixed_precision):
            predictions = self.ddp(frames)
        # segments: only the rated classes count (label_weights), as the starter code's segment training
        weights = (batch["label_weights"].to(self.device, non_blocking=True),) if "label_weights" in batch else ()
        label_loss = self.loss_fn(predictions.float(), labels, *weights)
        loss = label_loss + self.config.regularization_penalty * self.model.regularization_loss()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        examples = len(batch["ids"])
        # NaN when the full loss (penalties included) is not finite, without a device-to-host sync here.
        loss_sum = torch.where(torch.isfinite(loss.detach()), label_loss.detach() * examples, torch.nan)
        return loss_sum, examples

    def _optimizer_step(self) -> None:
        if self.config.sum_gradients and self.process.distributed:
            for parameter in self.model.parameters():  # DDP averaged them; the seed's towers summed
                if parameter.grad is not None:
                    parameter.grad.mul_(self.process.world_size)
        if self.config.clip_gradient_norm > 0:
            clip_gradient_norms(self.model.parameters(), self.config.clip_gradient_norm)
        lr = learning_rate(self.config, self.counters.videos)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()

    def _lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def _batches(self) -> Iterator[dict[str, Any]]:
        """This process's batches of the epoch in progress, after those a resumed run already consumed."""
        loader = make_loader(self.config.train_data_pattern, self.config, training=True,
                             epoch=self.counters.epoch, rank=self.process.rank,
                             world_size=self.process.world_size, local_processes=local_processes(),
                             dequantize=False, segments="rated" if self.config.segment_labels else None)
        batches = _without_single_video_batches(self._interruptible(iter(loader)))
        for _ in range(self.counters.batches_in_epoch):
            if next(batches, None) is None:
                return
        yield from batches

    def _interruptible(self, batches: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        while True:
            try:
                yield next(batches)
            except StopIteration:
                return
            except RuntimeError:
                # Ctrl-C also reaches the DataLoader's workers, which then die; the stop is what matters.
                if self.stop_signal is None:
                    raise
                return

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self.stop_signal is None:
            self.stop_signal = signum
            if self.process.is_main:
                log.info("%s: writing a checkpoint after this step, then stopping", signal.Signals(signum).name)

    def _stop_on_non_finite_loss(self, ended: EpochEnd) -> None:
        saved = ckpt.list_checkpoints(self.config.train_dir)
        kept = (f"the last good checkpoint, {saved[-1][1]} (step {saved[-1][0]}), is kept: lower "
                f"--base_learning_rate (or --clip_gradient_norm) and run again to resume from it"
                if saved else "no checkpoint had been written yet: lower --base_learning_rate (or "
                "--clip_gradient_norm) and start again")
        raise NonFiniteLossError(f"step {self.counters.step + 1}: the loss is {ended.name.lower()}; training "
                                 f"stopped before applying that step; {kept}")

    def _stop_on_empty_epoch(self) -> None:
        """A complete epoch without a single step trains nothing: say why (rank 0), write nothing more."""
        if not self.process.is_main:
            raise SystemExit(1)
        raise DataError(f"--train_data_pattern={self.config.train_data_pattern}: an epoch gave no batch to train "
                        f"on: the files hold no video, or a single one per process (batch normalization needs "
                        f"two videos per batch); nothing was trained and no checkpoint was written")

    # -- checkpoints --

    def _restore(self) -> None:
        found = ckpt.load_latest_checkpoint(self.config.train_dir)
        if found is None:
            raise ckpt.CheckpointError(f"{ckpt.checkpoint_dir(self.config.train_dir)}: no checkpoint loads; "
                                       f"use --start_new_model to start over")
        path, state = found
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (KeyError, RuntimeError, ValueError) as error:
            raise ckpt.CheckpointError(f"{path}: does not fit this model ({error}); use --start_new_model "
                                       f"or another --train_dir") from error
        self.counters = Counters.from_checkpoint(state["position"], self.examples_per_video)
        rng = state["rng"]
        if len(rng) == self.process.world_size:
            ckpt.restore_rng_state(rng[self.process.rank])
        else:
            # Each process's share of an epoch depends on the number of processes: the position inside
            # the epoch in progress has no meaning for the new shares.
            if self.process.is_main:
                log.info("%d processes now, %d when saved: random generators re-seeded%s",
                         self.process.world_size, len(rng), ", and the epoch in progress restarts from its "
                         "beginning" if self.counters.batches_in_epoch else "")
            self.counters.start_epoch()
            torch.manual_seed(self.config.seed + self.counters.step + self.process.rank)
        if self.process.is_main:
            log.info("resuming from step %d (epoch %d, %d examples) of %s", self.counters.step,
                     self.counters.epoch + 1, self.counters.examples, path)

    def _save(self) -> None:
        """Checkpoint (a collective: every process calls it; rank 0 writes)."""
        # Every process holds the same weights, so every process reaches the same verdict here.
        if not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            raise NonFiniteLossError(f"step {self.counters.step}: the weights hold NaN or infinite values, so "
                                     f"no checkpoint was written; lower --base_learning_rate and resume from "
                                     f"the last checkpoint in {ckpt.checkpoint_dir(self.config.train_dir)}")
        rng = [ckpt.capture_rng_state()]
        if self.process.distributed:
            rng = [None] * self.process.world_size
            dist.all_gather_object(rng, ckpt.capture_rng_state())
        if not self.process.is_main:
            return
        state = {"format": 2, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "position": dataclasses.asdict(self.counters), "rng": rng, "config": self.config.to_dict()}
        ckpt.save_checkpoint(self.config.train_dir, self.counters.step, state)

    # -- logging and validation --

    def _log(self, record: dict[str, Any]) -> None:
        """Append a record to metrics.jsonl and its numbers to TensorBoard (rank 0)."""
        if not self.process.is_main:
            return
        record = {"step": self.counters.step, "epoch": self.counters.epoch + 1,
                  "examples": self.counters.examples, "videos": self.counters.videos, **record}
        with open(self._metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        for key, value in record.items():
            if key not in ("step", "epoch", "examples", "videos") and not isinstance(value, bool):
                group = "validation" if key.startswith("val_") else "train"
                self.writer.add_scalar(f"{group}/{key.removeprefix('val_')}", value, self.counters.step)
        self.writer.flush()

    def _validate(self) -> None:
        """Evaluate on --eval_data_pattern (each process its share), log val_* (a collective). Once per
        step: the end of an epoch may also be an --eval_every_steps step."""
        if self.validated_step == self.counters.step:
            return
        self.validated_step = self.counters.step
        if self.config.segment_labels:
            self._validate_segments()
            return
        loader = make_loader(self.config.eval_data_pattern, self.config, training=False,
                             rank=self.process.rank, world_size=self.process.world_size,
                             local_processes=local_processes(), dequantize=False)
        start = time.perf_counter()
        results = evaluate(self.model, loader, self.loss_fn, self.device, self.config.num_classes,
                           mixed_precision=self.config.mixed_precision, distributed=self.process.distributed)
        self.model.train()
        self._log({f"val_{k}": v for k, v in results.items()})
        self._say(f"validation at step {self.counters.step} (epoch {self.counters.epoch + 1}): "
                  f"GAP {results['gap']:.4f}  mAP {results['map']:.4f}  Hit@1 {results['hit_at_1']:.4f}  "
                  f"PERR {results['perr']:.4f}  loss {results['loss']:.4f}  ({time.perf_counter() - start:.1f} s)")

    def _validate_segments(self) -> None:
        """Log the segment mAP@N over --eval_data_pattern as val_map_at_n (a collective: rank 0 ranks
        every segment, the others wait)."""
        if self.process.is_main:
            start = time.perf_counter()
            score = evaluate_segments(self.model, self.config, self.config.eval_data_pattern, device=self.device)
            self._log({"val_map_at_n": score.map_at_n})
            self._say(f"validation at step {self.counters.step} (epoch {self.counters.epoch + 1}): segment mAP@N "
                      f"{score.map_at_n:.4f} over {score.num_classes} classes ({time.perf_counter() - start:.1f} s)")
        self.model.train()
        if self.process.distributed:
            dist.barrier()

    def _say(self, message: str) -> None:
        """A line for the user (rank 0), printed above the progress bar."""
        if self.process.is_main:
            tqdm.write(message, file=sys.stderr)

    def _total_examples(self) -> Optional[int]:
        """Examples of the whole run, for the progress bar's ETA (unknown during a first epoch)."""
        candidates = []
        if self.counters.examples_per_epoch:
            candidates.append(self.counters.examples_per_epoch * self.config.num_epochs)
        if self.config.max_steps:
            candidates.append(self.config.max_steps * self.config.batch_size * self.process.world_size
                              * self.examples_per_video)
        return min(candidates) if candidates else None
