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

What a run writes into --train_dir: ``config.json`` (every flag), ``params.json`` (parameter counts),
``checkpoints/ckpt-<step>.pt`` (the newest 3), ``metrics.jsonl`` (one JSON object per logged step or
validation), TensorBoard event files. Without --start_new_model a run resumes from the newest
checkpoint (model, optimizer, learning-rate schedule, step, epoch and position in it, RNG states);
a resume with different data or model flags is refused. SIGINT/SIGTERM write a checkpoint and stop.
With several machines, --train_dir must be a directory they all see (rank 0 writes, all read).

Semantics, as the seed (code/train.py): Adam; learning rate
``base_learning_rate * learning_rate_decay ** floor(examples / learning_rate_decay_examples)`` with
`examples` the videos (batch rows, or half of them with --data_augmentation) of all processes
together, so that a step of --batch_size per process counts as the seed counted it; each parameter
tensor's gradient clipped to norm --clip_gradient_norm separately; loss = label loss +
regularization_penalty * the model's L2 penalties. --batch_size is per process. One difference: the
seed *summed* the gradients of its GPU towers, DDP *averages* them over processes, so N GPUs here take
steps 1/N the size of the seed's (before Adam's normalization, which makes the two nearly the same).
Each process reads a disjoint share of every epoch; shares may differ by a batch, which
torch.distributed's Join absorbs at the end of the epoch.

Segments (2019 release): --segment_labels trains on the rated 5-frame segments, one example per segment,
the loss on its rated classes only (the starter code's label weights); validation is then the segment
mAP@N. --init_from=RUN_DIR starts a new run from the weights of another run's newest checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms.join import Join
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from compactvid import checkpoint as ckpt
from compactvid.config import Config
from compactvid.data.loader import make_loader, prepare_frames
from compactvid.distributed import (Process, StepStats, from_main, launched_by_torchrun, local_processes,
                                    max_over_processes, process_group, spawn)
from compactvid.errors import CompactVidError, ConfigError
from compactvid.evaluate import evaluate, initialize_from_run
from compactvid.losses import create_loss
from compactvid.models.flag_effects import ineffective_flags
from compactvid.models.registry import create_model
from compactvid.models.report import parameter_report
from compactvid.run_dir import METRICS_FILE, PARAMS_FILE, prepare_train_dir, truncate_metrics
from compactvid.segment_evaluation import evaluate_segments

log = logging.getLogger(__name__)

# The seed's optimizer names (tf.train classes) -> torch.optim classes (used with torch's defaults).
TF_OPTIMIZERS = {"AdamOptimizer": "Adam", "GradientDescentOptimizer": "SGD", "AdagradOptimizer": "Adagrad",
                 "AdadeltaOptimizer": "Adadelta", "RMSPropOptimizer": "RMSprop"}


class NonFiniteLossError(CompactVidError):
    """The training loss became NaN or infinite; the run stopped without writing a checkpoint."""


# --- the pieces of one training step ------------------------------------------------------------------

def learning_rate(config: Config, examples: int) -> float:
    """The staircase-decayed learning rate after `examples` videos (all processes together)."""
    decays = math.floor(examples / config.learning_rate_decay_examples)
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


def create_optimizer(config: Config, parameters: Iterator[nn.Parameter]) -> torch.optim.Optimizer:
    """`--optimizer`: a seed name (AdamOptimizer, ...) or a torch.optim class name, with torch's defaults."""
    name = TF_OPTIMIZERS.get(config.optimizer, config.optimizer)
    cls = getattr(torch.optim, name, None)
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise ConfigError(f"--optimizer={config.optimizer!r}: not an optimizer; use one of "
                          f"{', '.join(TF_OPTIMIZERS)} or a torch.optim class name (e.g. AdamW, SGD)")
    return cls(parameters, lr=config.base_learning_rate)


# --- processes ------------------------------------------------------------------------------------------

def _use_cuda(config: Config) -> bool:
    if config.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device=cuda but PyTorch sees no CUDA GPU; use --device=cpu or auto")
    return config.device != "cpu" and torch.cuda.is_available()


def _capped_readers(config: Config, processes: int) -> Config:
    """--num_readers capped at the CPU cores of each process (the seed's 100 reader threads fit TF, not
    DataLoader worker processes)."""
    cap = max(1, (os.cpu_count() or 1) // processes)
    if config.num_readers > cap:
        log.info("--num_readers=%d: using %d data-loading workers per process (%d CPU cores, %d process(es))",
                 config.num_readers, cap, os.cpu_count() or 1, processes)
        return dataclasses.replace(config, num_readers=cap)
    return config


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
        available = torch.cuda.device_count() if _use_cuda(config) else 0
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
    """Train in `processes` DDP processes started here (what --num_gpu=N does with N GPUs)."""
    prepare_train_dir(config)  # here, so that a refused resume is reported once, before any process starts
    return spawn(functools.partial(_run_process, prepared=True), config, processes)


def _run_process(config: Config, prepared: bool = False) -> int:
    """Train in this process: alone, or as one rank of a process group described by the environment."""
    with process_group(_use_cuda(config)) as process:
        resume = from_main(process, lambda: bool(ckpt.list_checkpoints(config.train_dir)) if prepared
                           else prepare_train_dir(config))
        status = Trainer(_capped_readers(config, local_processes()), process, resume).run()
        if process.distributed:
            dist.barrier()  # rank 0 may still be writing the last checkpoint: nobody exits before it is done
        return status


# --- the loop -------------------------------------------------------------------------------------------

@dataclass
class Position:
    """How far training has gone; saved in every checkpoint."""

    step: int = 0  # optimizer steps (all processes step together)
    epoch: int = 0  # epochs completed; the one in progress has this 0-based index
    batches_in_epoch: int = 0  # batches each process has consumed in the epoch in progress
    examples: int = 0  # examples (batch rows) of all processes together
    examples_per_epoch: Optional[int] = None  # known after the first complete epoch


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
        self.position = Position()
        self.stop_signal: Optional[int] = None
        self.validated_step: Optional[int] = None
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                         if self.device.type == "cuda" and config.mixed_precision else contextlib.nullcontext())
        if resume:
            self._restore()
        elif config.init_from:
            step = initialize_from_run(self.model, config)
            if process.is_main:
                log.info("weights from step %d of %s (--init_from)", step, config.init_from)
        self.ddp = (DistributedDataParallel(self.model, device_ids=[self.device] if self.device.type == "cuda"
                                            else None) if process.distributed else self.model)
        self.stats = StepStats(process)
        # --data_augmentation makes two examples (batch rows) of every video; `examples` counts videos.
        self.rows_per_video = 2 if config.data_augmentation and config.frame_features and not config.segment_labels \
            else 1
        self.writer = None
        self.bar = None
        if process.is_main:
            from torch.utils.tensorboard import SummaryWriter  # imports TensorBoard: only where used

            ckpt.write_text_atomically(os.path.join(config.train_dir, PARAMS_FILE),
                                       json.dumps(parameter_report(self.model, model_args), indent=2) + "\n")
            truncate_metrics(self._metrics_path, self.position.step)
            self.writer = SummaryWriter(config.train_dir, purge_step=self.position.step + 1 if resume else None)

    @property
    def _metrics_path(self) -> str:
        return os.path.join(self.config.train_dir, METRICS_FILE)

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
        self.position = Position(**state["position"])
        rng = state["rng"]
        if len(rng) == self.process.world_size:
            ckpt.restore_rng_state(rng[self.process.rank])
        else:
            # Each process's share of an epoch depends on the number of processes: the position inside
            # the epoch in progress has no meaning for the new shares.
            if self.process.is_main:
                log.info("%d processes now, %d when saved: random generators re-seeded%s",
                         self.process.world_size, len(rng), ", and the epoch in progress restarts from its "
                         "beginning" if self.position.batches_in_epoch else "")
            self.position.batches_in_epoch = 0
            torch.manual_seed(self.config.seed + self.position.step + self.process.rank)
        if self.process.is_main:
            log.info("resuming from step %d (epoch %d, %d examples) of %s", self.position.step,
                     self.position.epoch + 1, self.position.examples, path)

    def _save(self) -> None:
        """Checkpoint (a collective: every process calls it; rank 0 writes)."""
        # Every process holds the same weights, so every process reaches the same verdict here.
        if not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            raise NonFiniteLossError(f"step {self.position.step}: the weights hold NaN or infinite values, so "
                                     f"no checkpoint was written; lower --base_learning_rate and resume from "
                                     f"the last checkpoint in {ckpt.checkpoint_dir(self.config.train_dir)}")
        rng = [ckpt.capture_rng_state()]
        if self.process.distributed:
            rng = [None] * self.process.world_size
            dist.all_gather_object(rng, ckpt.capture_rng_state())
        if not self.process.is_main:
            return
        state = {"format": 1, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "position": dataclasses.asdict(self.position), "rng": rng, "config": self.config.to_dict()}
        ckpt.save_checkpoint(self.config.train_dir, self.position.step, state)

    # -- logging --

    def _log(self, record: dict[str, Any]) -> None:
        """Append a record to metrics.jsonl and TensorBoard (rank 0)."""
        if not self.process.is_main:
            return
        record = {"step": self.position.step, "epoch": self.position.epoch + 1,
                  "examples": self.position.examples, **record}
        with open(self._metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        for key, value in record.items():
            if key not in ("step", "epoch", "examples"):
                group = "validation" if key.startswith("val_") else "train"
                self.writer.add_scalar(f"{group}/{key.removeprefix('val_')}", value, self.position.step)
        self.writer.flush()

    def _validate(self) -> None:
        """Evaluate on --eval_data_pattern (each process its share), log val_* (a collective). Once per
        step: the end of an epoch may also be an --eval_every_steps step."""
        if self.validated_step == self.position.step:
            return
        self.validated_step = self.position.step
        if self.config.segment_labels:
            self._validate_segments()
            return
        loader = make_loader(self.config.eval_data_pattern, self.config, training=False,
                             rank=self.process.rank, world_size=self.process.world_size, dequantize=False)
        start = time.perf_counter()
        results = evaluate(self.model, loader, self.loss_fn, self.device, self.config.num_classes,
                           mixed_precision=self.config.mixed_precision, distributed=self.process.distributed)
        self.model.train()
        self._log({f"val_{k}": v for k, v in results.items()})
        if self.process.is_main:
            message = (f"validation at step {self.position.step} (epoch {self.position.epoch + 1}): "
                       f"GAP {results['gap']:.4f}  mAP {results['map']:.4f}  Hit@1 {results['hit_at_1']:.4f}  "
                       f"PERR {results['perr']:.4f}  loss {results['loss']:.4f}  "
                       f"({time.perf_counter() - start:.1f} s)")
            self._say(message)

    def _validate_segments(self) -> None:
        """Log the segment mAP@N over --eval_data_pattern as val_map_at_n (a collective: rank 0 ranks
        every segment, the others wait)."""
        if self.process.is_main:
            start = time.perf_counter()
            score = evaluate_segments(self.model, self.config, self.config.eval_data_pattern, device=self.device)
            self._log({"val_map_at_n": score.map_at_n})
            self._say(f"validation at step {self.position.step} (epoch {self.position.epoch + 1}): segment mAP@N "
                      f"{score.map_at_n:.4f} over {score.num_classes} classes ({time.perf_counter() - start:.1f} s)")
        self.model.train()
        if self.process.distributed:
            dist.barrier()

    def _say(self, message: str) -> None:
        """A line for the user (rank 0), printed above the progress bar."""
        if self.process.is_main:
            tqdm.write(message, file=sys.stderr)

    # -- training --

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self.stop_signal is None:
            self.stop_signal = signum
            if self.process.is_main:
                log.info("%s: writing a checkpoint after this step, then stopping", signal.Signals(signum).name)

    def _total_examples(self) -> Optional[int]:
        """Examples of the whole run, for the progress bar's ETA (unknown during a first epoch)."""
        candidates = []
        if self.position.examples_per_epoch:
            candidates.append(self.position.examples_per_epoch * self.config.num_epochs)
        if self.config.max_steps:
            candidates.append(self.config.max_steps * self.config.batch_size * self.process.world_size)
        return min(candidates) if candidates else None

    def run(self) -> int:
        config, position = self.config, self.position
        if position.epoch >= config.num_epochs or (config.max_steps and position.step >= config.max_steps):
            if self.process.is_main:
                log.info("the run in %s is complete (epoch %d, step %d): nothing to do; raise --num_epochs or "
                         "--max_steps to train further", config.train_dir, position.epoch, position.step)
            return 0
        handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        # The bar shows on a terminal only (rank 0); logs get the epoch and validation lines instead.
        self.bar = tqdm(total=self._total_examples(), initial=position.examples, unit="ex", unit_scale=True,
                        dynamic_ncols=True, disable=None if self.process.is_main else True, smoothing=0.1)
        try:
            while position.epoch < config.num_epochs:
                outcome = self._train_epoch()
                if outcome in ("nan", "infinite"):
                    saved = ckpt.list_checkpoints(config.train_dir)
                    kept = (f"the last good checkpoint, {saved[-1][1]} (step {saved[-1][0]}), is kept: lower "
                            f"--base_learning_rate (or --clip_gradient_norm) and run again to resume from it"
                            if saved else "no checkpoint had been written yet: lower --base_learning_rate (or "
                            "--clip_gradient_norm) and start again")
                    raise NonFiniteLossError(f"step {position.step + 1}: the loss is {outcome}; training stopped "
                                             f"before applying that step; {kept}")
                if outcome == "stopped":
                    self._save()
                    break
                if outcome == "max_steps":
                    if config.eval_data_pattern:
                        self._validate()
                    self._save()
                    break
                if position.examples_per_epoch is None:
                    position.examples_per_epoch = position.examples
                    self.bar.total = self._total_examples()
                    self.bar.refresh()
                self._say(f"epoch {position.epoch + 1} done at step {position.step}: {self.epoch_examples} "
                          f"examples in {time.perf_counter() - self.epoch_start:.1f} s, mean training loss "
                          f"{self.epoch_loss / max(self.epoch_rows, 1):.4f}")
                if config.eval_data_pattern:
                    self._validate()
                position.epoch += 1
                position.batches_in_epoch = 0
                self._save()
        finally:
            self.bar.close()
            if self.writer is not None:
                self.writer.close()
            for s, handler in handlers.items():
                signal.signal(s, handler)
        if self.stop_signal is not None:
            if self.process.is_main:
                log.info("stopped at step %d by %s; run the same command to resume", position.step,
                         signal.Signals(self.stop_signal).name)
            return 128 + self.stop_signal
        return 0

    def _batches(self) -> Iterator[dict[str, Any]]:
        """This process's batches of the epoch in progress, after those a resumed run already consumed."""
        loader = make_loader(self.config.train_data_pattern, self.config, training=True,
                             epoch=self.position.epoch, rank=self.process.rank,
                             world_size=self.process.world_size, dequantize=False,
                             segments="rated" if self.config.segment_labels else None)
        batches = _without_single_video_batches(self._interruptible(iter(loader)))
        for _ in range(self.position.batches_in_epoch):
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

    def _train_epoch(self) -> str:
        """Train until this epoch's data, --max_steps, a stop signal or a non-finite loss ends it.

        Returns how it ended, the same in every process: "complete", "max_steps", "stopped", or the
        non-finite loss ("nan" or "infinite", that step not applied).
        """
        config, position = self.config, self.position
        ended = "complete"
        window_loss, window_rows, window_examples, window_start = 0.0, 0, 0, time.perf_counter()
        self.epoch_loss, self.epoch_rows, self.epoch_examples, self.epoch_start = 0.0, 0, 0, window_start
        joinables = [self.ddp, self.stats] if self.process.distributed else []
        self.model.train()
        with Join(joinables) if joinables else contextlib.nullcontext():
            for batch in self._batches():
                loss_sum, rows = self._forward_backward(batch)
                loss_total, rows, stop, active = self.stats.reduce(loss_sum, rows, self.stop_signal is not None)
                videos = int(rows) // self.rows_per_video
                if not math.isfinite(loss_total):
                    ended = "nan" if math.isnan(loss_total) else "infinite"
                    break
                self._optimizer_step()
                position.step += 1
                position.batches_in_epoch += 1
                position.examples += videos
                window_loss += loss_total
                window_rows += int(rows)
                window_examples += videos
                self.epoch_loss += loss_total
                self.epoch_rows += int(rows)
                self.epoch_examples += videos
                self.bar.update(videos)
                if position.step % config.log_every_steps == 0:
                    elapsed = time.perf_counter() - window_start
                    self._log({"loss": window_loss / window_rows, "lr": self._lr(),
                               "examples_per_sec": window_examples / elapsed})
                    self.bar.set_postfix(loss=f"{window_loss / window_rows:.3f}", epoch=position.epoch + 1)
                    window_loss, window_rows, window_examples, window_start = 0.0, 0, 0, time.perf_counter()
                everyone = active == self.process.world_size  # the collectives below need every process
                if everyone and config.eval_every_steps and position.step % config.eval_every_steps == 0 \
                        and config.eval_data_pattern:
                    self._validate()
                if everyone and config.checkpoint_steps and position.step % config.checkpoint_steps == 0:
                    self._save()
                if stop:
                    ended = "stopped"
                    break
                if config.max_steps and position.step >= config.max_steps:
                    ended = "max_steps"
                    break
        return self._agree(ended)

    def _forward_backward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, int]:
        """Forward and backward on one batch. Returns (label loss x rows, a tensor; rows = examples of
        the batch, two per video under --data_augmentation)."""
        frames = prepare_frames(batch["frames"].to(self.device, non_blocking=True), batch["num_frames"])
        labels = batch["labels"].to(self.device, non_blocking=True)
        with self.autocast:
            predictions = self.ddp(frames)
        # segments: only the rated classes count (label_weights), as the starter code's segment training
        weights = (batch["label_weights"].to(self.device, non_blocking=True),) if "label_weights" in batch else ()
        label_loss = self.loss_fn(predictions.float(), labels, *weights)
        loss = label_loss + self.config.regularization_penalty * self.model.regularization_loss()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        rows = len(batch["ids"])
        # NaN when the full loss (penalties included) is not finite, without a device-to-host sync here.
        loss_sum = torch.where(torch.isfinite(loss.detach()), label_loss.detach() * rows, torch.nan)
        return loss_sum, rows

    def _optimizer_step(self) -> None:
        if self.config.clip_gradient_norm > 0:
            clip_gradient_norms(self.model.parameters(), self.config.clip_gradient_norm)
        lr = learning_rate(self.config, self.position.examples)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()

    def _lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    _OUTCOMES = ("complete", "max_steps", "stopped", "infinite", "nan")  # later ones take precedence

    def _agree(self, ended: str) -> str:
        """After an epoch's Join: agree on how it ended and on the position (processes that ran out of
        data early did not count the last steps)."""
        if self.stop_signal is not None and ended == "complete":
            ended = "stopped"  # a signal during the last step of the epoch
        p = self.position
        p.step, p.batches_in_epoch, p.examples, outcome = max_over_processes(
            self.process, [p.step, p.batches_in_epoch, p.examples, self._OUTCOMES.index(ended)])
        return self._OUTCOMES[outcome]
