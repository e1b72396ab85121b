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
from seed_commands import SEED_LINES, seed_argv

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


# The seed README's lines (`seed_commands.SEED_LINES`) -> their trainable parameters.
COUNTS = {
    "exp1 dense": dbof(1024, 8192) + fc(8192) + dbof(128, 4096) + fc(4096) + moe(2 * H),
    "exp1 fc circulant, +-1 diagonal":
        dbof(1024, 8192) + fc(8192, sign_circulant) + dbof(128, 4096) + fc(4096, sign_circulant) + moe(2 * H),
    "exp2 DBoF dense": dbof(1024, 8192) + fc(8192) + dbof(128, 4096) + fc(4096) + moe(2 * H),
    "exp2 DBoF fc circulant":
        dbof(1024, 8192) + fc(8192, diag_circulant) + dbof(128, 4096) + fc(4096, diag_circulant) + moe(2 * H),
    "exp2 NetVLAD dense": netvlad(1024, 64) + fc(1024 * 64) + netvlad(128, 32) + fc(128 * 32) + moe(2 * H),
    "exp2 NetVLAD fc circulant":
        netvlad(1024, 64) + fc(1024 * 64, diag_circulant) + netvlad(128, 32) + fc(128 * 32, diag_circulant)
        + moe(2 * H),
    "exp2 NetFV dense": netfv(1024, 64) + fc(2 * 1024 * 64) + netfv(128, 32) + fc(2 * 128 * 32) + moe(2 * H),
    # The README's compact NetFV line passes --fc_netvlad_circulant, which does nothing without NetVLAD.
    "exp2 NetFV 'compact'": netfv(1024, 64) + fc(2 * 1024 * 64) + netfv(128, 32) + fc(2 * 128 * 32) + moe(2 * H),
    "exp3 dense": dbof(1024, 8192) + fc(8192) + moe(H),
    "exp3 DBoF circulant": dbof(1024, 8192, diag_circulant) + fc(8192) + moe(H),
    "exp3 fc circulant": dbof(1024, 8192) + fc(8192, diag_circulant) + moe(H),
    "exp3 circulant MoE": dbof(1024, 8192) + fc(8192) + circulant_moe(H),
}


pytestmark = pytest.mark.usefixtures("one_thread")


def seed_args(name: str):
    """The model arguments of the seed README's line ``name``."""
    config, _ = parse_config(seed_argv(name))
    return config.model_args()


def meta_model(args):
    with torch.device("meta"):
        return create_model(args)


def test_the_issue_pins_two_totals():
    assert COUNTS["exp3 dense"] == 45_334_632
    assert COUNTS["exp2 DBoF dense"] == 65_761_384


def test_every_seed_line_has_its_count():
    assert set(COUNTS) == set(SEED_LINES)


@pytest.mark.parametrize("name", SEED_LINES)
def test_seed_line_parameter_count(name):
    expected = COUNTS[name]
    args = seed_args(name)
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
    args = seed_args(compact)
    report = parameter_report(meta_model(args), args)
    assert report["dense_total"] == COUNTS[dense]
    assert report["compression"] == pytest.approx(COUNTS[dense] / COUNTS[compact])


def test_report_components_of_the_exp2_dense_model():
    args = seed_args("exp2 DBoF dense")
    report = parameter_report(meta_model(args), args)
    rows = {row["name"]: row for row in report["components"]}
    assert list(rows) == ["video.dbof.embedding", "video.dbof.fc", "audio.dbof.embedding", "audio.dbof.fc",
                          "classifier", "classifier.gating"]
    assert rows["video.dbof.embedding"]["params"] == dbof(1024, 8192)
    assert rows["audio.dbof.fc"]["params"] == fc(4096)
    assert rows["classifier.gating"]["params"] == dense(C, C) + bn(C)
    assert report["by_modality"]["audio"]["params"] == dbof(128, 4096) + fc(4096)
    assert report["by_kind"]["gating"]["params"] == dense(C, C) + bn(C)
    assert not any(row["structure"] for row in rows.values())


def lowrank(n_in, n_out, rank):  # U [out, rank] and V [rank, in], no bias (batch norm follows)
    return rank * (n_in + n_out)


def monarch(n_in, n_out, k):  # k blocks of p inputs -> q, then q -> s outputs; padded to k*p, cut from k*s
    p, s = math.ceil(n_in / k), math.ceil(n_out / k)
    return k * min(p, s) * (p + s)


def exp2_dbof(video_fc, audio_fc):  # the seed's exp2 DBoF model with the given FC weight counts
    return dbof(1024, 8192) + video_fc + bn(H) + dbof(128, 4096) + audio_fc + bn(H) + moe(2 * H)


@pytest.mark.parametrize("flags,video_fc,audio_fc,structure", [
    (["--compact_layer=lowrank", "--lowrank_rank=4"], lowrank(8192, H, 4), lowrank(4096, H, 4), "lowrank"),
    (["--compact_layer=monarch", "--monarch_blocks=8"], monarch(8192, H, 8), monarch(4096, H, 8), "monarch"),
    # At the budget of the learned-diagonal circulant FC (2 x 8192 and 2 x 4096 weights) times 16: the
    # largest rank within it, floor(16 * 16384 / 8704) = 30 and floor(16 * 8192 / 4608) = 28.
    (["--compact_layer=lowrank", "--compact_budget=16"], lowrank(8192, H, 30), lowrank(4096, H, 28), "lowrank"),
    # Within 1x: 8192 -> 512 in 512 blocks (16 -> 1 -> 1: 8,704 <= 16,384), 4096 -> 512 in 512 blocks
    # (8 -> 1 -> 1: 4,608 <= 8,192); no block count gives more weights within either budget.
    (["--compact_layer=monarch"], monarch(8192, H, 512), monarch(4096, H, 512), "monarch"),
])
def test_compact_layer_parameter_report(flags, video_fc, audio_fc, structure):
    args = parse_config([*seed_argv("exp2 DBoF fc circulant"), *flags])[0].model_args()
    report = parameter_report(meta_model(args), args)
    rows = {row["name"]: row for row in report["components"]}
    assert report["total"] == exp2_dbof(video_fc, audio_fc)
    assert rows["video.dbof.fc"]["params"] == video_fc + bn(H)
    assert rows["video.dbof.fc"]["structure"] == rows["audio.dbof.fc"]["structure"] == structure
    assert rows["video.dbof.fc"]["dense_params"] == dense(8192, H) + bn(H)
    assert rows["classifier"]["structure"] == "" and report["dense_total"] == COUNTS["exp2 DBoF dense"]


def test_compact_layer_switches_the_dbof_projection_and_the_circulant_moe(capsys):
    argv = [*seed_argv("exp3 circulant MoE"), "--dbof_circulant", "--compact_layer=monarch", "--monarch_blocks=4"]
    assert main(["params", *argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = {row["name"]: row for row in report["components"]}
    assert rows["video.dbof.embedding"]["structure"] == rows["classifier"]["structure"] == "monarch"
    assert rows["video.dbof.embedding"]["params"] == monarch(1024, 8192, 4) + bn(8192)
    experts = monarch(H, C * M, 4) + C * M  # the experts have a bias
    assert rows["classifier"]["params"] == monarch(H, C * (M + 1), 4) + experts
    assert main(["params", *argv]) == 0
    assert "monarch" in capsys.readouterr().out


def test_compact_layer_errors_name_the_flag(capsys):
    argv = [*seed_argv("exp2 DBoF fc circulant"), "--compact_layer=monarch", "--monarch_blocks=1000"]
    assert main(["params", *argv]) == 1
    err = capsys.readouterr().err
    assert "--compact_layer=monarch" in err and "--monarch_blocks" in err and "Traceback" not in err
    assert main(["params", *seed_argv("exp2 DBoF fc circulant"), "--compact_layer=butterfly"]) == 1
    assert "--compact_layer=butterfly" in capsys.readouterr().err


def test_sign_diagonals_are_buffers_not_parameters():
    args = seed_args("exp1 fc circulant, +-1 diagonal")
    report = parameter_report(meta_model(args), args)
    dense_report = parameter_report(meta_model(seed_args("exp1 dense")), args)
    assert report["buffers"] - dense_report["buffers"] == 8192 + 4096


def test_params_command_json(capsys):
    assert main(["params", *seed_argv("exp3 circulant MoE"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["total"] == COUNTS["exp3 circulant MoE"]
    assert report["classifier"] == "Circulant_MoeModel"
    assert {row["name"] for row in report["components"]} == {"video.dbof.embedding", "video.dbof.fc", "classifier"}


def test_params_command_table(capsys):
    assert main(["params", *seed_argv("exp2 DBoF fc circulant")]) == 0
    out = capsys.readouterr().out
    assert f"{COUNTS['exp2 DBoF fc circulant']:,}" in out
    assert "video.dbof.fc" in out and "circulant" in out and "float16" in out


def test_params_command_video_level_model(capsys):
    assert main(["params", "--model=MoeModel", "--frame_features=False", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    d, mixtures = 1024 + 128, 2
    # Alone, MoeModel's context gating has a bias (C), not batch norm (2 C), as the original's train.py.
    assert report["total"] == d * C * (mixtures + 1) + d * C * mixtures + C * mixtures + C * C + C


def test_params_command_reports_flag_errors(capsys):
    assert main(["params", "--model=CirulantDiagonalNetwork"]) == 1
    assert "at least one embedding" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in SEED_LINES if n not in ("exp1 dense", "exp2 NetFV 'compact'")])
def test_full_size_seed_model_trains_one_step_on_cpu(name):
    """Every distinct seed model, at full size, runs forward and backward on a batch of 2 videos."""
    args = seed_args(name)
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
