"""Parameter counts of the seed README's twelve command lines, derived by hand from the original's
layers, and the `compactvid params` report and command."""

import json
import math

import pytest
import torch

from compactvid.cli import main
from compactvid.flags import parse_config
from compactvid.models.registry import create_model
from compactvid.models.report import parameter_report

# The seed README's PARAMS, verbatim except the data patterns and output folder.
PARAMS = ("--frame_features=True --feature_names=rgb,audio --feature_sizes=1024,128 --iterations=15 "
          "--sample_random_frames=True --num_gpu=4 --num_readers=100 --batch_size=80 --num_epochs=15 "
          "--base_learning_rate=0.0002 --learning_rate_decay=0.8 --data_augmentation=True --n_bagging=10 "
          "--moe_num_mixtures=4 --moe_add_batch_norm=True --k_factor=1 --dbof_cluster_size=8192 "
          "--fc_hidden_size=512 --fv_cluster_size=64 --netvlad_cluster_size=64 "
          "--model=CirulantDiagonalNetwork --start_new_model").split()

# Layer counts of the original (utils_layer.py, video_level_models.py), written out independently of
# the code under test. C classes, M mixtures, H = fc_hidden_size.
C, M, H = 3862, 4, 512


def bn(n):  # slim.batch_norm(center=True, scale=True): beta and gamma
    return 2 * n


def dense(n_in, n_out):  # a weight matrix with no bias (each is followed by batch norm)
    return n_in * n_out


def diag_circulant(n_in, n_out):  # CirculantLayerWithFactor, k=1: circulant vector + diagonal per block
    return math.ceil(n_out / n_in) * 2 * n_in


def sign_circulant(n_in, n_out):  # CirculantLayerWithDiag, k=1: the +-1 diagonal is not trainable
    return math.ceil(n_out / n_in) * n_in


def plain_circulant(n_in, n_out):  # CirculantLayer: one vector per block
    return math.ceil(n_out / n_in) * n_in


def dbof(d, k, projection=dense):
    return projection(d, k) + bn(k)


def netvlad(d, k):  # cluster weights + BN + cluster centers
    return dense(d, k) + bn(k) + d * k


def netfv(d, k):  # cluster weights + BN + covariances + centers
    return dense(d, k) + bn(k) + d * k + d * k


def fc(n_in, layer=dense):
    return layer(n_in, H) + bn(H)


def moe(n_in):  # gates (no bias) + experts (bias) + context gating (weights + BN)
    return dense(n_in, C * (M + 1)) + dense(n_in, C * M) + C * M + dense(C, C) + bn(C)


def circulant_moe(n_in):  # circulant gates + circulant experts with bias; no context gating
    return plain_circulant(n_in, C * (M + 1)) + plain_circulant(n_in, C * M) + C * M


SEED_LINES = {
    "exp1 dense": ("--add_dbof=True --video_level_classifier_model=MoeModel",
                   dbof(1024, 8192) + fc(8192) + dbof(128, 4096) + fc(4096) + moe(2 * H)),
    "exp1 fc circulant, +-1 diagonal": (
        "--add_dbof=True --use_d_matrix=True --fc_dbof_circulant=True --video_level_classifier_model=MoeModel",
        dbof(1024, 8192) + fc(8192, sign_circulant) + dbof(128, 4096) + fc(4096, sign_circulant) + moe(2 * H)),
    "exp2 DBoF dense": ("--add_dbof=True --video_level_classifier_model=MoeModel",
                        dbof(1024, 8192) + fc(8192) + dbof(128, 4096) + fc(4096) + moe(2 * H)),
    "exp2 DBoF fc circulant": (
        "--add_dbof=True --fc_dbof_circulant=True --video_level_classifier_model=MoeModel",
        dbof(1024, 8192) + fc(8192, diag_circulant) + dbof(128, 4096) + fc(4096, diag_circulant) + moe(2 * H)),
    "exp2 NetVLAD dense": ("--add_netvlad=True --video_level_classifier_model=MoeModel",
                           netvlad(1024, 64) + fc(1024 * 64) + netvlad(128, 32) + fc(128 * 32) + moe(2 * H)),
    "exp2 NetVLAD fc circulant": (
        "--add_netvlad=True --fc_netvlad_circulant=True --video_level_classifier_model=MoeModel",
        netvlad(1024, 64) + fc(1024 * 64, diag_circulant) + netvlad(128, 32) + fc(128 * 32, diag_circulant)
        + moe(2 * H)),
    "exp2 NetFV dense": ("--add_fisher_vector=True --video_level_classifier_model=MoeModel",
                         netfv(1024, 64) + fc(2 * 1024 * 64) + netfv(128, 32) + fc(2 * 128 * 32) + moe(2 * H)),
    # The README's compact NetFV line passes --fc_netvlad_circulant, which does nothing without NetVLAD.
    "exp2 NetFV 'compact'": (
        "--add_fisher_vector=True --fc_netvlad_circulant=True --video_level_classifier_model=MoeModel",
        netfv(1024, 64) + fc(2 * 1024 * 64) + netfv(128, 32) + fc(2 * 128 * 32) + moe(2 * H)),
    "exp3 dense": ("--add_dbof=True --no_audio=True --video_level_classifier_model=MoeModel",
                   dbof(1024, 8192) + fc(8192) + moe(H)),
    "exp3 DBoF circulant": (
        "--add_dbof=True --no_audio=True --dbof_circulant=True --video_level_classifier_model=MoeModel",
        dbof(1024, 8192, diag_circulant) + fc(8192) + moe(H)),
    "exp3 fc circulant": (
        "--add_dbof=True --no_audio=True --fc_dbof_circulant=True --video_level_classifier_model=MoeModel",
        dbof(1024, 8192) + fc(8192, diag_circulant) + moe(H)),
    "exp3 circulant MoE": (
        "--add_dbof=True --no_audio=True --video_level_classifier_model=Circulant_MoeModel",
        dbof(1024, 8192) + fc(8192) + circulant_moe(H)),
}


pytestmark = pytest.mark.usefixtures("one_thread")


def seed_args(line: str):
    """The model arguments of a seed command line."""
    config, _ = parse_config(line.split() + PARAMS)
    return config.model_args()


def meta_model(args):
    with torch.device("meta"):
        return create_model(args)


def test_the_issue_pins_two_totals():
    assert SEED_LINES["exp3 dense"][1] == 45_334_632
    assert SEED_LINES["exp2 DBoF dense"][1] == 65_761_384


@pytest.mark.parametrize("name", SEED_LINES)
def test_seed_line_parameter_count(name):
    line, expected = SEED_LINES[name]
    args = seed_args(line)
    model = meta_model(args)
    report = parameter_report(model, args)
    assert report["total"] == expected
    assert report["total"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert sum(row["params"] for row in report["components"]) == expected
    assert report["bytes"] == {"float32": 4 * expected, "float16": 2 * expected}


@pytest.mark.parametrize("compact,dense", [("exp1 fc circulant, +-1 diagonal", "exp1 dense"),
                                           ("exp2 DBoF fc circulant", "exp2 DBoF dense"),
                                           ("exp2 NetVLAD fc circulant", "exp2 NetVLAD dense"),
                                           ("exp3 DBoF circulant", "exp3 dense"),
                                           ("exp3 fc circulant", "exp3 dense")])
def test_dense_equivalent_of_a_compact_model_is_the_dense_model(compact, dense):
    args = seed_args(SEED_LINES[compact][0])
    report = parameter_report(meta_model(args), args)
    assert report["dense_total"] == SEED_LINES[dense][1]
    assert report["compression"] == pytest.approx(SEED_LINES[dense][1] / SEED_LINES[compact][1])


def test_report_components_of_the_exp2_dense_model():
    args = seed_args(SEED_LINES["exp2 DBoF dense"][0])
    report = parameter_report(meta_model(args), args)
    rows = {row["name"]: row for row in report["components"]}
    assert list(rows) == ["video.dbof.embedding", "video.dbof.fc", "audio.dbof.embedding", "audio.dbof.fc",
                          "classifier", "classifier.gating"]
    assert rows["video.dbof.embedding"]["params"] == dbof(1024, 8192)
    assert rows["audio.dbof.fc"]["params"] == fc(4096)
    assert rows["classifier.gating"]["params"] == dense(C, C) + bn(C)
    assert report["by_modality"]["audio"]["params"] == dbof(128, 4096) + fc(4096)
    assert report["by_kind"]["gating"]["params"] == dense(C, C) + bn(C)
    assert not any(row["circulant"] for row in rows.values())


def test_sign_diagonals_are_buffers_not_parameters():
    args = seed_args(SEED_LINES["exp1 fc circulant, +-1 diagonal"][0])
    report = parameter_report(meta_model(args), args)
    dense_report = parameter_report(meta_model(seed_args(SEED_LINES["exp1 dense"][0])), args)
    assert report["buffers"] - dense_report["buffers"] == 8192 + 4096


def test_params_command_json(capsys):
    assert main(["params", *SEED_LINES["exp3 circulant MoE"][0].split(), *PARAMS, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["total"] == SEED_LINES["exp3 circulant MoE"][1]
    assert report["classifier"] == "Circulant_MoeModel"
    assert {row["name"] for row in report["components"]} == {"video.dbof.embedding", "video.dbof.fc", "classifier"}


def test_params_command_table(capsys):
    assert main(["params", *SEED_LINES["exp2 DBoF fc circulant"][0].split(), *PARAMS]) == 0
    out = capsys.readouterr().out
    assert f"{SEED_LINES['exp2 DBoF fc circulant'][1]:,}" in out
    assert "video.dbof.fc" in out and "circulant" in out and "float16" in out


def test_params_command_video_level_model(capsys):
    assert main(["params", "--model=MoeModel", "--frame_features=False", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    d, mixtures = 1024 + 128, 2
    assert report["total"] == d * C * (mixtures + 1) + d * C * mixtures + C * mixtures + C * C + 2 * C


def test_params_command_reports_flag_errors(capsys):
    assert main(["params", "--model=CirulantDiagonalNetwork"]) == 1
    assert "at least one embedding" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in SEED_LINES if n not in ("exp1 dense", "exp2 NetFV 'compact'")])
def test_full_size_seed_model_trains_one_step_on_cpu(name):
    """Every distinct seed model, at full size, runs forward and backward on a batch of 2 videos."""
    args = seed_args(SEED_LINES[name][0])
    torch.manual_seed(0)
    model = create_model(args)
    frames = torch.nn.functional.normalize(torch.randn(2, args.n_bagging, args.iterations, 1152), dim=-1)
    probabilities = model(frames)
    assert probabilities.shape == (2, 3862) and torch.isfinite(probabilities).all()
    labels = torch.zeros(2, 3862)
    labels[:, :3] = 1
    loss = torch.nn.functional.binary_cross_entropy(probabilities, labels) + model.regularization_loss()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
