"""The seed's flags that have no effect here: accepted on the command line, each with a one-line note.

They are the original's flags defined but never read by its network, or replaced by ours. A seed
command line with them still runs; the flag parser reports each one given (once) and drops it, so
they are no part of `Config` or of a run's config.json.
"""

from __future__ import annotations

from typing import NamedTuple, Union

__all__ = ["IgnoredFlag", "IGNORED_FLAGS"]


class IgnoredFlag(NamedTuple):
    """The seed's default (its type is the flag's type) and what to use instead."""

    default: Union[bool, int]
    note: str


IGNORED_FLAGS: dict[str, IgnoredFlag] = {
    "log_device_placement": IgnoredFlag(False, "PyTorch places ops itself; use --device."),
    "export_model_steps": IgnoredFlag(
        1000, "Models are not exported separately: every checkpoint is loadable by `compactvid eval` / "
        "`compactvid inference`; use --checkpoint_steps."),
    "dbof_hidden_size": IgnoredFlag(1024, "Defined but never used by the original; use --fc_hidden_size."),
    "dbof_add_batch_norm": IgnoredFlag(True, "Never used by the original network; use --embedding_add_batch_norm."),
    "dbof_gating": IgnoredFlag(True, "Never used by the original network."),
    "netvlad_hidden_size": IgnoredFlag(1024, "Never used by the original network; use --fc_hidden_size."),
    "netvlad_gating": IgnoredFlag(True, "Never used by the original network."),
    "netvlad_add_batch_norm": IgnoredFlag(True, "Never used by the original network; "
                                          "use --embedding_add_batch_norm."),
    "fv_hidden_size": IgnoredFlag(1024, "Never used by the original network; use --fc_hidden_size."),
    "fv_add_batch_norm": IgnoredFlag(True, "Never used by the original network; use --embedding_add_batch_norm."),
    "fv_gating": IgnoredFlag(True, "Never used by the original network."),
    "full_hidden_size": IgnoredFlag(1024, "Never used by the original network."),
    "full_add_batch_norm": IgnoredFlag(True, "Never used by the original network."),
    "full_gating": IgnoredFlag(True, "Never used by the original network."),
    "video_add_batch_norm": IgnoredFlag(True, "Never used by the original network."),
    "audio_add_batch_norm": IgnoredFlag(True, "Never used by the original network."),
    "video_hidden_size": IgnoredFlag(1024, "Never used by the original network."),
    "audio_hidden_size": IgnoredFlag(1024, "Never used by the original network."),
    "fc_circulant": IgnoredFlag(True, "Never used by the original network; use "
                                "--fc_{dbof,netvlad,fisher,moment}_circulant."),
    "fc_gating": IgnoredFlag(False, "Never used by the original network."),
}
