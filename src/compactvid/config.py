"""One typed configuration holding every flag of a training run.

The flags are the original code's (google/youtube-8m and the circulant fork), with the same names,
defaults and meanings, so that its command lines can be pasted unchanged; a few flags of our own
(`--num_classes`, `--device`, `--seed`, ...) are added. `config.json` in a train_dir is this object.

Each field carries metadata:
- ``group``: ``data`` / ``model`` (define the model's shape: a resume with a different value is refused),
  or ``train`` (may change between resumes).
- ``help``: the flag's help text.

The model flags' defaults are `ModelArgs`'s; ``Config.model_args()`` gives a run's model its arguments.
The seed's flags that have no effect here are in `compactvid.ignored_flags`, apart from this Config.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Optional

from compactvid.errors import ConfigError
from compactvid.ignored_flags import IGNORED_FLAGS
from compactvid.models.args import ModelArgs

FRAME_FEATURES_DEFAULT = ("rgb,audio", "1024,128")
VIDEO_FEATURES_DEFAULT = ("mean_rgb,mean_audio", "1024,128")


_M = ModelArgs()  # the model flags' defaults


def _flag(default: Any, group: str, help: str) -> Any:
    return field(default=default, metadata={"group": group, "help": help})


@dataclass
class Config:
    """Every flag of `compactvid train`; field name = flag name."""

    # --- data -----------------------------------------------------------------------------------
    train_data_pattern: str = _flag(
        "", "train", "Training files: a glob, or several globs separated by commas (their union). "
        "Any fsspec path (local, gs://, s3://, memory://).")
    eval_data_pattern: str = _flag(
        "", "train", "Validation files (same syntax); evaluated every --eval_every_steps and at the end "
        "of each epoch. Empty: no validation.")
    frame_features: bool = _flag(
        _M.frame_features, "data", "True: frame-level SequenceExamples (rgb, audio per frame). False: "
        "video-level Examples (mean_rgb, mean_audio), for LogisticModel / MoeModel.")
    feature_names: Optional[str] = _flag(
        None, "data", "Comma-separated features, concatenated in this order. Default: rgb,audio for "
        "frame-level data, mean_rgb,mean_audio for video-level data.")
    feature_sizes: Optional[str] = _flag(
        None, "data", "Comma-separated sizes of --feature_names. Default: 1024,128.")
    num_classes: int = _flag(_M.num_classes, "data",
                             "Vocabulary size (3862 for the 2018 release, 4716 for 2017).")
    max_frames: int = _flag(300, "data", "Frames kept per video (the rest are dropped, as the original).")
    num_readers: int = _flag(
        8, "train", "DataLoader worker processes per training process; capped at the CPUs available to each "
        "training process of the machine (0: read in the training process).")
    shuffle_buffer_size: int = _flag(
        512, "train", "Videos each reader holds to shuffle training data (besides shuffling the file order "
        "every epoch); memory: next to none for local files (the buffer holds views of the memory-mapped "
        "file), the record's bytes (~300 KB per frame-level video) for remote ones.")
    skip_corrupt_records: bool = _flag(
        False, "train", "Skip (and count) corrupt records instead of stopping at the first one.")
    data_augmentation: bool = _flag(
        False, "train", "Use the first and the second half of each video as two examples (same labels).")
    segment_labels: bool = _flag(
        False, "data", "Train on the rated 5-frame segments of the 2019 release (segment_start_times, "
        "segment_labels, segment_scores): one example per rated segment, the loss on its rated classes only. "
        "Validation reports the segment mAP@N. Usually with --init_from.")

    # --- model: network (defaults: ModelArgs's) -------------------------------------------------------
    model: str = _flag(_M.model, "model", "Model name from the registry (`compactvid params --help` lists them). "
                       "The seed's spelling CirulantDiagonalNetwork is accepted.")
    video_level_classifier_model: str = _flag(
        _M.video_level_classifier_model, "model", "Classifier on top of the embeddings: MoeModel, "
        "Circulant_MoeModel, CirculantWithFactor_MoeModel or LogisticModel.")
    iterations: int = _flag(_M.iterations, "model", "Frames sampled per video (and per bag).")
    sample_random_frames: bool = _flag(
        _M.sample_random_frames, "model", "True: frames sampled at random with replacement. False: a random "
        "contiguous window.")
    n_bagging: int = _flag(_M.n_bagging, "model", "Independent frame samples per video, embedded by one shared "
                           "module and averaged.")
    no_audio: bool = _flag(_M.no_audio, "model", "Drop the audio branch (use the first 1024 dims only).")
    add_dbof: bool = _flag(_M.add_dbof, "model", "Add the Deep Bag-of-Frames embedding.")
    add_netvlad: bool = _flag(_M.add_netvlad, "model", "Add the NetVLAD embedding.")
    add_fisher_vector: bool = _flag(_M.add_fisher_vector, "model", "Add the NetFV (Fisher vector) embedding.")
    add_moments: bool = _flag(_M.add_moments, "model", "Add the moments (mean, variance) embedding.")
    dbof_cluster_size: int = _flag(_M.dbof_cluster_size, "model", "DBoF clusters (audio uses half).")
    dbof_pooling_method: str = _flag(_M.dbof_pooling_method, "model", "DBoF pooling over frames: max or average.")
    dbof_circulant: bool = _flag(_M.dbof_circulant, "model", "Make the DBoF projection diagonal-circulant.")
    netvlad_cluster_size: int = _flag(_M.netvlad_cluster_size, "model", "NetVLAD clusters (audio uses half).")
    fv_cluster_size: int = _flag(_M.fv_cluster_size, "model", "NetFV clusters (audio uses half).")
    fv_couple_weights: bool = _flag(
        _M.fv_couple_weights, "model", "NetFV: derive the cluster centers from the assignment weights "
        "(--fv_coupling_factor times them) instead of learning them.")
    fv_coupling_factor: float = _flag(_M.fv_coupling_factor, "model",
                                      "NetFV coupling factor (with --fv_couple_weights).")
    embedding_add_batch_norm: bool = _flag(_M.embedding_add_batch_norm, "model", "Batch norm inside the embeddings.")
    input_add_batch_norm: bool = _flag(_M.input_add_batch_norm, "model", "Batch norm on the sampled input frames.")
    fc_hidden_size: int = _flag(_M.fc_hidden_size, "model", "Width of the FC layer after each embedding.")
    fc_add_batch_norm: bool = _flag(_M.fc_add_batch_norm, "model", "Batch norm after each FC layer (else a bias).")
    fc_dbof_circulant: bool = _flag(_M.fc_dbof_circulant, "model", "Circulant FC after DBoF.")
    fc_netvlad_circulant: bool = _flag(_M.fc_netvlad_circulant, "model", "Circulant FC after NetVLAD.")
    fc_fisher_circulant: bool = _flag(_M.fc_fisher_circulant, "model", "Circulant FC after NetFV.")
    fc_moment_circulant: bool = _flag(_M.fc_moment_circulant, "model", "Circulant FC after moments.")
    use_d_matrix: bool = _flag(
        _M.use_d_matrix, "model", "Circulant FC layers use a fixed random +-1 diagonal (Cheng et al.) instead of "
        "a learned one. Does not affect the DBoF projection or the MoE.")
    k_factor: int = _flag(_M.k_factor, "model",
                          "Diagonal-circulant factors per block in every diagonal-circulant layer.")
    compact_layer: str = _flag(
        _M.compact_layer, "model", "Structure of every compact switch (--fc_*_circulant, --dbof_circulant, the "
        "circulant MoE): circulant (the paper's), lowrank (U V) or monarch (Dao et al. 2022).")
    lowrank_rank: int = _flag(
        _M.lowrank_rank, "model", "Rank of every low-rank layer (--compact_layer=lowrank); 0: the largest within "
        "--compact_budget.")
    monarch_blocks: int = _flag(
        _M.monarch_blocks, "model", "Blocks of every Monarch layer (--compact_layer=monarch); 0: the count with "
        "the most parameters within --compact_budget.")
    compact_budget: float = _flag(
        _M.compact_budget, "model", "Parameter budget of each low-rank or Monarch layer sized by it, as a multiple "
        "of the weights of the circulant layer the switch builds with --compact_layer=circulant (same "
        "--use_d_matrix and --k_factor): 1 compares the structures at equal size.")

    # --- model: classifier ------------------------------------------------------------------------
    moe_num_mixtures: int = _flag(_M.moe_num_mixtures, "model", "MoE experts per class (plus one dummy 'no' expert).")
    moe_add_batch_norm: bool = _flag(_M.moe_add_batch_norm, "model",
                                     "Batch norm inside the MoE's output context gating.")
    MoE_gating: bool = _flag(_M.MoE_gating, "model", "Context gating on the MoE's class probabilities.")
    moe_l2: float = _flag(_M.moe_l2, "model", "L2 penalty on the MoE gate and expert weights.")
    l2_penalty: float = _flag(_M.l2_penalty, "model", "L2 penalty on LogisticModel's weights (NeXtVLAD's flag; "
                              "its authors' script sets 1e-5).")

    # --- model: NeXtVLADModel (its authors' flags, github linrongc/youtube-8m) ------------------------
    nextvlad_cluster_size: int = _flag(_M.nextvlad_cluster_size, "model",
                                       "NeXtVLAD clusters per group (audio uses half).")
    nextvlad_hidden_size: int = _flag(_M.nextvlad_hidden_size, "model", "Width of the hidden FC after NeXtVLAD.")
    groups: int = _flag(_M.groups, "model", "Groups of the video NeXtVLAD (audio uses half).")
    expansion: int = _flag(_M.expansion, "model", "NeXtVLAD's expansion ratio of the frame features.")
    gating_reduction: int = _flag(_M.gating_reduction, "model",
                                  "Bottleneck ratio of NeXtVLADModel's SE context gating.")
    drop_rate: float = _flag(_M.drop_rate, "train", "Dropout rate on the NeXtVLAD descriptors (0: none).")
    fc_nextvlad_circulant: bool = _flag(_M.fc_nextvlad_circulant, "model",
                                        "Compact (diagonal-circulant) hidden FC after NeXtVLAD.")
    nextvlad_expansion_circulant: bool = _flag(_M.nextvlad_expansion_circulant, "model",
                                               "Compact (diagonal-circulant) expansion FC in NeXtVLAD.")
    nextvlad_cluster_circulant: bool = _flag(_M.nextvlad_cluster_circulant, "model",
                                             "Compact (diagonal-circulant) cluster projection in NeXtVLAD.")
    gating_circulant: bool = _flag(_M.gating_circulant, "model",
                                   "Compact (diagonal-circulant) context gating: MoeModel's (--MoE_gating) and "
                                   "NeXtVLADModel's SE gating.")
    batch_norm_decay: float = _flag(
        _M.batch_norm_decay, "train", "Decay of the batch-norm moving averages used at evaluation (TF-slim's "
        "default, as the original), reached after a warm-up: update t uses min(decay, (1+t)/(10+t)), as "
        "TensorFlow's ExponentialMovingAverage with num_updates, so that short runs evaluate correctly too.")

    # --- training ---------------------------------------------------------------------------------
    train_dir: str = _flag("/tmp/yt8m_model/", "train", "Directory of the run: config, checkpoints, metrics.")
    init_from: str = _flag(
        "", "train", "A --train_dir whose newest checkpoint initializes the model's weights when this run "
        "starts (e.g. a video-level run to fine-tune on segments); its model flags must be these. The "
        "optimizer, step and learning-rate schedule start anew. Ignored when resuming.")
    start_new_model: bool = _flag(
        False, "train", "Start over: remove what a previous run of compactvid wrote in --train_dir "
        "(never other files). Without it, training resumes from the newest checkpoint.")
    batch_size: int = _flag(
        1024, "train", "Videos per batch, per process (each video is two examples under --data_augmentation).")
    num_epochs: int = _flag(5, "train", "Passes over the training data.")
    max_steps: Optional[int] = _flag(None, "train", "Stop after this many steps (all processes together).")
    base_learning_rate: float = _flag(0.01, "train", "Initial learning rate.")
    learning_rate_decay: float = _flag(
        0.95, "train", "Multiply the learning rate by this every --learning_rate_decay_examples (staircase).")
    learning_rate_decay_examples: float = _flag(
        4000000, "train", "Videos (all processes together) between learning-rate decays; the seed's "
        "\"examples\" here are videos.")
    optimizer: str = _flag(
        "AdamOptimizer", "train", "AdamOptimizer (Adam) or the name of a torch.optim optimizer.")
    clip_gradient_norm: float = _flag(
        1.0, "train", "Clip each parameter tensor's gradient to this norm, as the original (0: off).")
    sum_gradients: bool = _flag(
        False, "train", "Sum the gradients of the DDP processes before clipping, as the seed's GPU towers "
        "did, instead of averaging them (DDP's way; then the clipping binds on a gradient --num_gpu "
        "times smaller).")
    regularization_penalty: float = _flag(1.0, "train", "Weight of the L2 penalties in the loss.")
    label_loss: str = _flag("CrossEntropyLoss", "train", "CrossEntropyLoss, HingeLoss or SoftmaxLoss.")
    num_gpu: int = _flag(
        1, "train", "GPUs to train on, one DDP process each (none present: one CPU process).")
    device: str = _flag("auto", "train", "auto (CUDA when present), cpu or cuda.")
    mixed_precision: bool = _flag(True, "train", "bfloat16 autocast on GPU (no effect on CPU).")
    seed: int = _flag(0, "train", "Seed of every random choice (initialization, shuffling, sampling).")
    eval_every_steps: int = _flag(0, "train", "Validate every this many steps (0: only at the end of each epoch).")
    checkpoint_steps: int = _flag(1000, "train", "Write a checkpoint every this many steps (and at the end).")
    log_every_steps: int = _flag(10, "train", "Append a line to metrics.jsonl every this many steps.")

    # --- derived values -----------------------------------------------------------------------------
    @property
    def feature_name_list(self) -> list[str]:
        """Feature names in concatenation order, with the frame/video-level default resolved."""
        names = self.feature_names
        if names is None:
            names = (FRAME_FEATURES_DEFAULT if self.frame_features else VIDEO_FEATURES_DEFAULT)[0]
        return [n.strip() for n in names.split(",") if n.strip()]

    @property
    def feature_size_list(self) -> list[int]:
        """Sizes of `feature_name_list`, in the same order."""
        sizes = self.feature_sizes or FRAME_FEATURES_DEFAULT[1]
        try:
            return [int(s) for s in sizes.split(",") if s.strip()]
        except ValueError:
            raise ConfigError(f"--feature_sizes={sizes!r}: expected comma-separated integers, e.g. 1024,128")

    def model_args(self) -> ModelArgs:
        """The arguments of this run's model: the model flags, with the feature sizes resolved."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(ModelArgs)
                  if f.name != "feature_sizes"}
        return ModelArgs(feature_sizes=tuple(self.feature_size_list), **values)

    def validate(self) -> None:
        """Raise ConfigError for values no run can use, naming the flag and a valid value."""
        names, sizes = self.feature_name_list, self.feature_size_list
        if len(names) != len(sizes):
            raise ConfigError(
                f"--feature_names has {len(names)} entries ({','.join(names)}) but --feature_sizes has "
                f"{len(sizes)} ({','.join(map(str, sizes))}): give one size per feature")
        self.model_args().validate()
        for name in ("max_frames", "batch_size", "num_epochs"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name}={getattr(self, name)}: must be a positive integer")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"--device={self.device!r}: use auto, cpu or cuda")
        if self.max_steps is not None and self.max_steps <= 0:
            raise ConfigError(f"--max_steps={self.max_steps}: must be a positive integer")
        if self.segment_labels and not self.frame_features:
            raise ConfigError("--segment_labels trains on 5-frame segments of frame-level data: drop "
                              "--frame_features=False")
        if self.segment_labels and self.label_loss != "CrossEntropyLoss":
            raise ConfigError(f"--segment_labels weighs the loss to the rated classes, which only "
                              f"CrossEntropyLoss does (as the starter code's); --label_loss={self.label_loss} "
                              f"would count unrated classes as absent")

    # --- serialization --------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> "Config":
        """Build a Config from a dict (e.g. config.json), refusing unknown keys.

        The seed's flags with no effect (`IGNORED_FLAGS`), which config.json held before they left the
        Config, are dropped."""
        values = {k: v for k, v in values.items() if k not in IGNORED_FLAGS}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown setting(s) {', '.join(unknown)}; was it written by a newer "
                              f"compactvid? Remove them or upgrade")
        return cls(**values)

    @classmethod
    def from_json_file(cls, path: str) -> "Config":
        try:
            with open(path) as f:
                values = json.load(f)
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such file; is this a train_dir written by `compactvid train`?")
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON ({e}); restore it or start a new run")
        return cls.from_dict(values, source=path)


def fields_in_group(*groups: str) -> list[dataclasses.Field]:
    """The Config fields whose metadata group is one of `groups`, in declaration order."""
    return [f for f in dataclasses.fields(Config) if f.metadata["group"] in groups]

