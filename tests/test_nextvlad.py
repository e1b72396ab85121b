"""NeXtVLAD and NeXtVLADModel: their code's parameter count, the aggregation against a per-frame,
per-group reference written from their equations, shapes, bagging, compact switches, training steps."""

import functools
import json
import math
import os
import shlex
import shutil
import tempfile

import pytest
import torch

from compactvid.cli import main
from compactvid.errors import ConfigError
from compactvid.flags import parse_config
from compactvid.layers.circulant import CirculantLinear
from compactvid.layers.gating import SEGating
from compactvid.layers.initializers import variance_scaling_
from compactvid.models.classifiers import LogisticModel
from compactvid.models.flag_effects import ineffective_flags
from compactvid.models.nextvlad import NeXtVLAD, NeXtVLADModel
from compactvid.models.registry import create_model
from compactvid.models.report import parameter_report
from tiny_dataset import write_tiny_dataset

pytestmark = pytest.mark.usefixtures("one_thread")


def n_params(module):
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def their_count(F, K, G, lam):
    """Trainable parameters of one NeXtVLAD branch, read off linrongc/youtube-8m nextvlad.py variable by variable."""
    return ((F * lam * F + lam * F)            # expansion: slim.fully_connected, weights + biases
            + (lam * F * G + G)                # attention: slim.fully_connected to G, weights + biases
            + lam * F * G * K                  # cluster_weights [lam F, G K]
            + 2 * G * K                        # cluster_bn: beta, gamma
            + (lam * F // G) * K               # cluster_weights2 [1, lam F / G, K]
            + 2 * K * (lam * F // G))          # vlad_bn


def test_parameter_count_equals_their_local_script():
    # scripts/train_nextvlad_local.sh: --groups=8 --nextvlad_cluster_size=128 --nextvlad_hidden_size=2048
    # --expansion=2 --gating_reduction=8, LogisticModel on 3862 classes.
    K, G, lam, H, r, classes = 128, 8, 2, 2048, 8, 3862
    vlad_dim = K * (lam * 1024 // G) + (K // 2) * (lam * 128 // (G // 2))
    expected = (their_count(1024, K, G, lam) + their_count(128, K // 2, G // 2, lam)
                + vlad_dim * H + 2 * H                       # hidden1_weights (no bias), hidden1_bn
                + H * (H // r) + 2 * (H // r) + (H // r) * H  # gating_weights_1, gating_bn, gating_weights_2
                + H * classes + classes)                     # LogisticModel: weights + biases
    assert vlad_dim == 36864
    assert expected == 88_889_378  # summed by hand from the same list, so that a slip in the formula shows
    with torch.device("meta"):
        model = NeXtVLADModel({"video": 1024, "audio": 128}, LogisticModel(H, classes), cluster_size=K,
                              hidden_size=H, groups=G, expansion=lam, gating_reduction=r, drop_rate=0.5)
    assert n_params(model) == expected
    assert model.hidden.in_features == vlad_dim


def reference_nextvlad(module: NeXtVLAD, frames: torch.Tensor) -> torch.Tensor:
    """Their equations, one frame and one group at a time (eval mode: batch norm uses running statistics)."""
    G, K, D = module.groups, module.cluster_size, module.group_size
    norm = module.assignment_norm
    out = []
    for video in frames:
        expanded = module.expand(video)  # [T, lam F]
        vlad = torch.zeros(D, K, dtype=frames.dtype)
        for t in range(video.shape[0]):
            attention = torch.sigmoid(module.attention(expanded[t]))  # [G]
            logits = (module.assignment(expanded[t]) - norm.running_mean) / torch.sqrt(norm.running_var + norm.eps)
            logits = logits * norm.weight + norm.bias
            for g in range(G):
                a = torch.softmax(logits[g * K:(g + 1) * K], dim=0) * attention[g]  # [K]
                x = expanded[t, g * D:(g + 1) * D]  # [D]
                vlad += torch.outer(x, a) - module.centers * a
        vlad = vlad / vlad.norm(dim=0, keepdim=True).clamp_min(1e-6)
        out.append(module.output_norm(vlad.reshape(1, D * K))[0])  # feature-major: index d * K + k
    return torch.stack(out)


def test_aggregation_matches_per_group_reference():
    torch.manual_seed(0)
    module = NeXtVLAD(feature_size=6, cluster_size=3, groups=4, expansion=2).double()
    with torch.no_grad():  # non-trivial batch-norm statistics and affine terms
        for norm in (module.assignment_norm, module.output_norm):
            norm.running_mean.uniform_(-0.5, 0.5)
            norm.running_var.uniform_(0.5, 2.0)
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.5, 0.5)
    module.eval()
    frames = torch.randn(2, 5, 6, dtype=torch.float64)
    assert module.output_size == 3 * (2 * 6 // 4)
    torch.testing.assert_close(module(frames), reference_nextvlad(module, frames))


def test_groups_must_divide_the_expanded_size():
    with pytest.raises(ValueError, match="multiple of groups"):
        NeXtVLAD(feature_size=6, cluster_size=3, groups=5, expansion=2)


def test_variance_scaling_matches_slim():
    torch.manual_seed(0)
    weights = variance_scaling_(torch.empty(200_000), fan_in=512)
    bound = 2 * math.sqrt(1.3 * 2 / 512)
    assert weights.abs().max() <= bound
    # A normal truncated at two standard deviations keeps 0.774 of its variance: 1.3 * 0.774 ~ 1.
    assert weights.var().item() == pytest.approx(2 / 512 * 1.3 * 0.774, rel=0.02)


def tiny_model(**switches):
    torch.manual_seed(0)
    return NeXtVLADModel({"video": 8, "audio": 4}, LogisticModel(16, 5), cluster_size=4, hidden_size=16,
                         groups=4, expansion=2, gating_reduction=4, drop_rate=0.5, **switches)


def test_shapes_bags_and_audio_halves():
    model = tiny_model()
    assert model.aggregations["video"].cluster_size == 4 and model.aggregations["video"].groups == 4
    assert model.aggregations["audio"].cluster_size == 2 and model.aggregations["audio"].groups == 2
    assert model.hidden.in_features == 4 * (16 // 4) + 2 * (8 // 2)
    frames = torch.randn(3, 2, 7, 12)
    assert model(frames).shape == (3, 5)
    model.eval()
    one_bag = frames[:, :1]
    torch.testing.assert_close(model(one_bag), model(one_bag[:, 0]))
    # Bags are averaged: two identical bags give the one-bag output.
    torch.testing.assert_close(model(one_bag.expand(3, 2, 7, 12)), model(one_bag))
    with pytest.raises(ValueError, match="expected frames"):
        model(torch.randn(3, 7, 11))


def test_video_only():
    model = NeXtVLADModel({"video": 8}, LogisticModel(16, 5), cluster_size=4, hidden_size=16, groups=4)
    assert list(model.aggregations) == ["video"] and model(torch.randn(2, 1, 3, 8)).shape == (2, 5)


def test_no_audio_reads_the_video_features_of_full_frames():
    """--no_audio: the loader still gives every feature (rgb then audio); the model reads the first 1024."""
    config, _ = parse_config(["--model=NeXtVLADModel", "--no_audio", "--num_classes=5", "--nextvlad_cluster_size=4",
                              "--nextvlad_hidden_size=16", "--groups=4", "--video_level_classifier_model=LogisticModel"])
    model = create_model(config.model_args()).eval()
    assert list(model.aggregations) == ["video"]
    frames = torch.randn(2, 1, 3, 1152)
    changed_audio = frames.clone()
    changed_audio[..., 1024:] = torch.randn(2, 1, 3, 128)
    torch.testing.assert_close(model(frames), model(changed_audio))


CIRCULANT = functools.partial(CirculantLinear, diag="learned")
SWITCHES = ("fc_compact", "expansion_compact", "cluster_compact", "gating_compact")


@pytest.mark.parametrize("switch", SWITCHES)
def test_compact_switches_make_their_layer_circulant(switch):
    model = tiny_model(**{switch: CIRCULANT})
    video = model.aggregations["video"]
    layers = {"fc_compact": [model.hidden], "expansion_compact": [video.expand],
              "cluster_compact": [video.assignment], "gating_compact": [model.gating.squeeze, model.gating.excite]}
    for name, candidates in layers.items():
        for layer in candidates:
            assert isinstance(layer, CirculantLinear) == (name == switch), name
    assert isinstance(video.attention, torch.nn.Linear)  # G outputs: never worth compacting
    assert n_params(model) < n_params(tiny_model())
    assert model(torch.randn(2, 1, 3, 12)).shape == (2, 5)


def test_se_gating_parameters():
    gating = SEGating(64, reduction=8)
    assert n_params(gating) == 2 * 64 * 8 + 2 * 8
    assert gating(torch.randn(4, 64)).shape == (4, 64)


@pytest.mark.parametrize("switches", [{}, dict.fromkeys(SWITCHES, CIRCULANT)])
def test_training_steps_fit_a_batch(switches):
    model = tiny_model(**switches)
    frames = torch.nn.functional.normalize(torch.randn(8, 1, 6, 12), dim=-1)
    labels = (torch.rand(8, 5) < 0.3).float()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(20):
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy(model(frames), labels) + model.regularization_loss()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert losses[-1] < 0.7 * losses[0]


# --- through the registry and the command line ---------------------------------------------------------

# Their scripts/train_nextvlad_local.sh: its `parameters`, then its train.py line with ${datapath} and
# ${train_dir} to fill in, verbatim (the space-separated --learning_rate_decay_examples and --max_step too).
THEIR_PARAMETERS = ("--groups=8 --nextvlad_cluster_size=128 --nextvlad_hidden_size=2048 --expansion=2 "
                    "--gating_reduction=8 --drop_rate=0.5")
THEIR_TRAIN_LINE = (
    "{parameters} --model=NeXtVLADModel  --num_readers=8 --learning_rate_decay_examples 2000000 "
    "--video_level_classifier_model=LogisticModel --label_loss=CrossEntropyLoss --start_new_model=False "
    "--train_data_pattern={datapath}/train*.tfrecord --train_dir={train_dir} --frame_features=True "
    "--feature_names=\"rgb,audio\" --feature_sizes=\"1024,128\" --batch_size=80 --base_learning_rate=0.0002 "
    "--learning_rate_decay=0.8 --l2_penalty=1e-5 --max_step=700000 --num_gpu=2")


def their_argv(datapath: str, train_dir: str) -> list[str]:
    return shlex.split(THEIR_TRAIN_LINE.format(parameters=THEIR_PARAMETERS, datapath=datapath, train_dir=train_dir))


def test_their_script_flags_build_their_model():
    config, _ = parse_config(their_argv("data", "run"))
    assert (config.max_steps, config.learning_rate_decay_examples, config.l2_penalty) == (700000, 2e6, 1e-5)
    with torch.device("meta"):
        model = create_model(config.model_args())
    assert isinstance(model, NeXtVLADModel) and n_params(model) == 88_889_378
    assert isinstance(model.classifier, LogisticModel) and model.classifier.l2_penalty == 1e-5
    assert model.dropout.p == 0.5 and model.gating.squeeze.out_features == 2048 // 8
    assert ineffective_flags(config.model_args()) == []


def test_compact_switches_through_the_flags():
    flags = ["--model=NeXtVLADModel", "--nextvlad_cluster_size=128", "--nextvlad_hidden_size=2048", "--k_factor=2"]
    dense = parameter_report(*create_meta(flags))["components"]
    compact = parameter_report(*create_meta(flags + ["--fc_nextvlad_circulant", "--nextvlad_expansion_circulant",
                                                     "--nextvlad_cluster_circulant", "--gating_circulant"]))
    rows = {row["name"]: row for row in compact["components"]}
    # Diagonal-circulant, learned diagonal, 2 factors: 2 * 2 * n weights per block of n = in_features.
    assert rows["nextvlad.fc"]["params"] == 4 * 36864 + 2 * 2048  # + hidden batch norm
    assert rows["nextvlad.gating"]["params"] == 4 * 2048 + 8 * 4 * 256 + 2 * 256  # W1, W2 (8 blocks), BN
    video = 4 * 1024 * 2 + 2048 + (2048 * 8 + 8) + 4 * 2048 + 2 * 1024 + 256 * 128 + 2 * 128 * 256
    assert rows["video.nextvlad.embedding"]["params"] == video
    assert [row["dense_params"] for row in compact["components"]] == [row["params"] for row in dense]
    assert rows["classifier"]["structure"] == "" and rows["nextvlad.fc"]["structure"] == "circulant"


def test_gating_circulant_in_the_papers_network():
    report = parameter_report(*create_meta(["--add_dbof", "--dbof_cluster_size=64", "--fc_hidden_size=32",
                                            "--num_classes=3862", "--gating_circulant"]))
    gating = next(row for row in report["components"] if row["name"] == "classifier.gating")
    assert gating["params"] == 2 * 3862 + 2 * 3862  # circulant vector and learned diagonal, batch norm
    assert gating["dense_params"] == 3862 ** 2 + 2 * 3862 and gating["structure"] == "circulant"


@pytest.mark.parametrize("flags,message", [
    (["--model=NeXtVLADModel", "--add_dbof"], "--add_dbof=True has no effect: --model=NeXtVLADModel does not"),
    (["--add_dbof", "--groups=4"], "--groups=4 has no effect: only --model=NeXtVLADModel reads it"),
    (["--add_dbof", "--gating_circulant", "--MoE_gating=False"], "--gating_circulant=True has no effect"),
    (["--add_dbof", "--l2_penalty=1e-5"], "--l2_penalty=1e-05 has no effect: only LogisticModel"),
    (["--model=NeXtVLADModel", "--k_factor=2"], "--k_factor=2 has no effect"),
])
def test_flags_without_effect_are_named(flags, message):
    config, _ = parse_config(flags)
    assert any(m.startswith(message) for m in ineffective_flags(config.model_args()))


def test_groups_that_do_not_divide_are_refused_naming_the_flags():
    config, _ = parse_config(["--model=NeXtVLADModel", "--groups=3"])
    with pytest.raises(ConfigError, match="--groups=3 .*the video NeXtVLAD"):
        create_model(config.model_args())
    config, _ = parse_config(["--model=NeXtVLADModel", "--groups=1"])
    with pytest.raises(ConfigError, match="audio NeXtVLAD .* 0 groups"):
        create_model(config.model_args())


def create_meta(flags):
    """(model on the meta device, its ModelArgs) for a command line."""
    args = parse_config(flags)[0].model_args()
    with torch.device("meta"):
        return create_model(args), args


@pytest.mark.slow
def test_their_script_trains_a_step(tmp_path):
    data = tmp_path / "data"
    write_tiny_dataset(str(data), 2, num_files=1, rgb=1024, audio=128, classes=3862)
    # A checkpoint of their model with Adam's moments is about 1 GB: in memory where there is room.
    in_memory = os.path.isdir("/dev/shm") and shutil.disk_usage("/dev/shm").free > 4 * 2**30
    run = tempfile.mkdtemp(prefix="compactvid-nextvlad-", dir="/dev/shm" if in_memory else str(tmp_path))
    try:
        assert main(["train", *their_argv(str(data), run), "--max_steps=1"]) == 0
        with open(os.path.join(run, "params.json")) as f:
            assert json.load(f)["total"] == 88_889_378
    finally:
        shutil.rmtree(run, ignore_errors=True)
