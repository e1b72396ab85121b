"""The processes of a training run: where each one sits, starting them, and what they compute together.

One process alone, N processes spawned on this machine (`--num_gpu=N`), or the processes torchrun started
(one or many machines): each learns its rank, world size and device from the environment torchrun (or
`spawn`) sets, joins the process group (NCCL on GPUs, gloo on CPUs) and leaves it at the end.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.algorithms.join import Join, Joinable, JoinHook

from compactvid.config import Config
from compactvid.device import resolve_device
from compactvid.errors import CompactVidError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Process:
    """Where this process sits: its rank among `world_size` processes and its device."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """Whether torchrun (or another launcher with its environment) started this process."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def local_processes() -> int:
    """How many processes of the run share this machine."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))


@contextlib.contextmanager
def process_group(requested_device: str) -> Iterator[Process]:
    """This process, on its device of --device=`requested_device`, in the process group the environment
    describes (joined, then left at the end)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = resolve_device(requested_device, int(os.environ.get("LOCAL_RANK", "0")))
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.set_device(device)
    process = Process(rank, world_size, device)
    if process.distributed:
        dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world_size,
                                device_id=device if cuda else None)
    try:
        yield process
    finally:
        if process.distributed:
            dist.destroy_process_group()


def from_main(process: Process, compute: Callable[[], Any]) -> Any:
    """`compute()` on rank 0, its result broadcast to every rank; a CompactVidError it raises is raised on
    rank 0 and ends the others quietly (SystemExit(1)), so the user reads it once."""
    outcome: list[Any] = [None]
    if process.is_main:
        try:
            outcome[0] = compute()
        except CompactVidError as error:
            outcome[0] = error
    if process.distributed:
        dist.broadcast_object_list(outcome, src=0)
    if isinstance(outcome[0], CompactVidError):
        raise outcome[0] if process.is_main else SystemExit(1)
    return outcome[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(target: Callable[[Config], int], config: Config, processes: int) -> int:
    """Run `target(config)` in `processes` DDP processes on this machine; forward SIGINT/SIGTERM to them;
    wait. Returns the exit status (the first failing process's; 128 + n after signal n)."""
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": str(processes)}
    context = mp.start_processes(_spawned_process, args=(target, config, env), nprocs=processes, join=False,
                                 start_method="spawn")
    stop_signals = []

    def forward(signum, _frame):
        stop_signals.append(signum)
        for process in context.processes:
            if process.is_alive():
                os.kill(process.pid, signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while True:
            try:
                if context.join(timeout=1):
                    break
            except mp.ProcessExitedException as failure:
                # Processes report their own errors; 128+n codes are the clean stop after a signal.
                return failure.exit_code if failure.exit_code > 0 else 1
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 128 + stop_signals[0] if stop_signals else 0


def _spawned_process(rank: int, target: Callable[[Config], int], config: Config, env: dict[str, str]) -> None:
    os.environ.update(env, RANK=str(rank), LOCAL_RANK=str(rank))
    logging.basicConfig(level=logging.INFO, format=f"%(levelname)s rank{rank} %(name)s: %(message)s")
    try:
        status = target(config)
    except CompactVidError as error:
        if rank == 0:
            print(f"compactvid train: error: {error}", file=sys.stderr, flush=True)
        raise SystemExit(1)
    if status:
        raise SystemExit(status)


class JoinableSum(Joinable):
    """Sums of `size` numbers over the processes still in an epoch, once per step.

    A Joinable, so that a process whose share of the epoch ran out first (shares differ by up to one
    batch) answers the all_reduce with zeros while the others finish, as DDP's own join hook does.
    """

    def __init__(self, process: Process, size: int) -> None:
        super().__init__()
        self.process = process
        self.size = size

    def sum(self, values: list[torch.Tensor | float]) -> list[float]:
        """The element-wise sum of `values` (numbers or one-element tensors) over the processes."""
        total = torch.stack([torch.as_tensor(v, device=self.process.device).reshape(()).to(torch.float64)
                             for v in values])
        if self.process.distributed:
            Join.notify_join_context(self)
            dist.all_reduce(total)
        return total.tolist()

    def join_hook(self, **kwargs: Any) -> JoinHook:
        summed = self

        class AnswerWithZeros(JoinHook):
            def main_hook(self) -> None:
                dist.all_reduce(torch.zeros(summed.size, dtype=torch.float64, device=summed.process.device))

        return AnswerWithZeros()

    @property
    def join_device(self) -> torch.device:
        return self.process.device

    @property
    def join_process_group(self) -> Any:
        return dist.group.WORLD


def max_over_processes(process: Process, values: list[float]) -> list[float]:
    """The element-wise maximum of `values` over all processes (`values` itself when alone)."""
    if not process.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=process.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor.tolist()
