"""The paper's network and the model registry: shapes for every embedding x classifier x compact switch,
gradients, bagging, batch-norm modes, state_dict round-trip, modalities, and flag warnings."""

import dataclasses
import itertools
import logging
import subprocess
import sys

import pytest
import torch

from compactvid.config import Config, fields_in_group
from compactvid.errors import ConfigError
from compactvid.layers.circulant import CirculantLinear
from compactvid.models.aggregation import DBoF, Moments, NetFV, NetVLAD
from compactvid.models.args import EMBEDDINGS, ModelArgs
from compactvid.models.classifiers import LogisticModel, MoeModel
from compactvid.models.flag_effects import ineffective_flags
from compactvid.models.network import CirculantDiagonalNetwork, average_over_bags
from compactvid.models.nextvlad import NeXtVLAD
from compactvid.models.registry import MODELS, create_model
from compactvid.models.report import parameter_report

VIDEO, AUDIO, CLASSES, FRAMES, BAGS = 16, 8, 6, 5, 2
EMBEDDING_FLAGS = {name: embedding.add_flag for name, embedding in EMBEDDINGS.items()}
ALL_EMBEDDINGS = {flag: True for flag in EMBEDDING_FLAGS.values()}
CLASSIFIER_NAMES = ["MoeModel", "Circulant_MoeModel", "CirculantWithFactor_MoeModel", "LogisticModel"]
SWITCHES = {
    "dense": {},
    "fc_circulant": {"fc_dbof_circulant": True, "fc_netvlad_circulant": True, "fc_fisher_circulant": True,
                     "fc_moment_circulant": True},
    "fc_sign_circulant": {"fc_dbof_circulant": True, "fc_netvlad_circulant": True, "fc_fisher_circulant": True,
                          "fc_moment_circulant": True, "use_d_matrix": True},
    "dbof_circulant": {"dbof_circulant": True},
    "k_factor_2": {"fc_dbof_circulant": True, "fc_netvlad_circulant": True, "fc_fisher_circulant": True,
                   "fc_moment_circulant": True, "dbof_circulant": True, "k_factor": 2},
}


pytestmark = pytest.mark.usefixtures("one_thread")


def small_args(**overrides) -> ModelArgs:
    """A small network's arguments: models are built without the command line's Config."""
    values = dict(model="CirulantDiagonalNetwork", feature_sizes=(VIDEO, AUDIO), num_classes=CLASSES,
                  iterations=FRAMES, n_bagging=BAGS, dbof_cluster_size=8, netvlad_cluster_size=4,
                  fv_cluster_size=4, fc_hidden_size=8, moe_num_mixtures=2)
    values.update(overrides)
    return ModelArgs(**values)


def frames_for(args: ModelArgs, batch: int = 3, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    dim = sum(args.feature_sizes)
    frames = torch.randn(batch, args.n_bagging, args.iterations, dim, generator=generator)
    return torch.nn.functional.normalize(frames, dim=-1)


def n_params(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("embedding,classifier,switch", list(itertools.product(
    [*EMBEDDING_FLAGS, "all"], CLASSIFIER_NAMES, SWITCHES)))
def test_output_shapes(embedding, classifier, switch):
    flags = ALL_EMBEDDINGS if embedding == "all" else {EMBEDDING_FLAGS[embedding]: True}
    args = small_args(**flags, **SWITCHES[switch], video_level_classifier_model=classifier)
    torch.manual_seed(0)
    model = create_model(args)
    probabilities = model(frames_for(args))
    assert probabilities.shape == (3, CLASSES)
    assert torch.isfinite(probabilities).all()
    assert (probabilities >= 0).all() and (probabilities <= 1).all()
    assert model.regularization_loss().shape == ()
    report = parameter_report(model, args)  # its components cover every parameter
    assert report["total"] == n_params(model) and report["dense_total"] >= report["total"]


@pytest.mark.parametrize("classifier", CLASSIFIER_NAMES)
@pytest.mark.parametrize("switch", ["dense", "fc_circulant", "k_factor_2"])
def test_gradients_reach_every_trainable_parameter(classifier, switch):
    args = small_args(**ALL_EMBEDDINGS, **SWITCHES[switch], video_level_classifier_model=classifier,
                          input_add_batch_norm=True, moe_l2=1e-3)
    torch.manual_seed(0)
    model = create_model(args)
    loss = torch.nn.functional.binary_cross_entropy(
        model(frames_for(args)), torch.randint(0, 2, (3, CLASSES)).float()) + model.regularization_loss()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_compact_switches_pick_the_original_layers():
    model = create_model(small_args(**ALL_EMBEDDINGS, fc_dbof_circulant=True, fc_fisher_circulant=True,
                                      use_d_matrix=True, dbof_circulant=True, k_factor=3))
    video = model.branches["video"]
    # --use_d_matrix switches the FC layers to the fixed +-1 diagonal; the DBoF projection keeps a learned one.
    assert isinstance(video["dbof"].fc, CirculantLinear) and video["dbof"].fc.diag_variant == "sign"
    assert video["fisher_vector"].fc.diag_variant == "sign" and video["fisher_vector"].fc.k_factor == 3
    assert isinstance(video["netvlad"].fc, torch.nn.Linear) and isinstance(video["moments"].fc, torch.nn.Linear)
    projection = video["dbof"].aggregation.projection
    assert isinstance(projection, CirculantLinear) and projection.diag_variant == "learned"
    assert projection.k_factor == 3
    assert isinstance(model.classifier.gates, torch.nn.Linear)  # the MoE stays dense


def test_audio_uses_half_of_every_cluster_size():
    model = create_model(small_args(**ALL_EMBEDDINGS))
    for modality, size, divisor in (("video", VIDEO, 1), ("audio", AUDIO, 2)):
        branch = model.branches[modality]
        assert isinstance(branch["dbof"].aggregation, DBoF)
        assert branch["dbof"].aggregation.output_size == 8 // divisor
        assert isinstance(branch["netvlad"].aggregation, NetVLAD)
        assert branch["netvlad"].aggregation.output_size == size * (4 // divisor)
        assert isinstance(branch["fisher_vector"].aggregation, NetFV)
        assert branch["fisher_vector"].aggregation.output_size == 2 * size * (4 // divisor)
        assert branch["moments"].aggregation.output_size == 2 * size


def test_classifier_sees_video_then_audio_fc_outputs():
    model = create_model(small_args(add_dbof=True, add_netvlad=True))
    assert list(model.branches) == ["video", "audio"]
    assert list(model.branches["video"]) == ["dbof", "netvlad"]
    assert model.classifier.gates.in_features == 4 * 8


def test_no_audio_ignores_the_audio_dimensions():
    args = small_args(**ALL_EMBEDDINGS, no_audio=True)
    torch.manual_seed(0)
    model = create_model(args).eval()
    assert list(model.branches) == ["video"]
    frames = frames_for(args)
    changed = frames.clone()
    changed[..., VIDEO:] = torch.randn_like(changed[..., VIDEO:])
    torch.testing.assert_close(model(frames), model(changed))
    with_audio = create_model(small_args(**ALL_EMBEDDINGS)).eval()
    assert not torch.allclose(with_audio(frames), with_audio(changed))


def test_every_feature_after_the_first_is_audio():
    args = small_args(add_dbof=True, feature_sizes=(VIDEO, 4, 4))
    model = create_model(args)
    assert model.modality_sizes == {"video": VIDEO, "audio": 8}
    assert model(frames_for(args)).shape == (3, CLASSES)


def test_bagging_shares_one_set_of_embedding_weights():
    torch.manual_seed(0)
    one = create_model(small_args(**ALL_EMBEDDINGS, n_bagging=1))
    many = create_model(small_args(**ALL_EMBEDDINGS, n_bagging=10))
    assert n_params(one) == n_params(many)
    assert one.state_dict().keys() == many.state_dict().keys()
    # The same sample repeated in every bag gives the single-bag output (batch statistics included).
    many.load_state_dict(one.state_dict())
    frames = frames_for(small_args(n_bagging=1))
    torch.testing.assert_close(many(frames.expand(-1, 10, -1, -1)), one(frames))


def test_bags_are_averaged_so_their_order_does_not_matter():
    args = small_args(**ALL_EMBEDDINGS, n_bagging=3)
    torch.manual_seed(0)
    model = create_model(args).eval()
    frames = frames_for(args)
    torch.testing.assert_close(model(frames), model(frames[:, [2, 0, 1]]))
    # A 3-d input is one bag.
    torch.testing.assert_close(model(frames[:, 0]), model(frames[:, :1]))


@pytest.mark.parametrize("name,switch", [("CirulantDiagonalNetwork", "dense"),
                                         ("CirulantDiagonalNetwork", "k_factor_2"), ("NeXtVLADModel", "dense")])
def test_eval_mode_embeds_every_bag_in_one_call_as_training_does_bag_by_bag(name, switch):
    """With running statistics the per-bag path (training) and the one-call path (eval: one product per
    layer, one copy of each aggregation in an exported graph) compute the same probabilities."""
    flags = dict(nextvlad_cluster_size=4, nextvlad_hidden_size=8, groups=2, gating_reduction=2,
                 n_bagging=4) if name == "NeXtVLADModel" else dict(ALL_EMBEDDINGS, n_bagging=4)
    args = small_args(model=name, **flags, **SWITCHES[switch], input_add_batch_norm=True)
    torch.manual_seed(0)
    model = create_model(args)
    model(frames_for(args, seed=1))  # batch-norm statistics away from their initial values
    model.eval()
    frames = frames_for(args, batch=5)
    aggregations = [m for m in model.modules() if isinstance(m, (DBoF, NetVLAD, NetFV, Moments, NeXtVLAD))]
    calls = []
    for aggregation in aggregations:
        aggregation.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    expected = model(frames)
    assert calls == [5 * 4] * len(aggregations)
    calls.clear()
    for aggregation in aggregations:
        aggregation.training = True  # the per-bag path; the modules inside keep their running statistics
    torch.testing.assert_close(model(frames), expected)
    assert calls == [5] * 4 * len(aggregations)


@pytest.mark.parametrize("pooling", ["max", "average"])
def test_training_sums_the_bags_as_the_mean_of_each_bags_aggregation(pooling):
    # The bags' outputs are added in place into one tensor: values and gradients are those of the mean of
    # the stacked outputs, for every aggregation (max pooling keeps its output for its backward).
    args = small_args(**ALL_EMBEDDINGS, n_bagging=4, dbof_pooling_method=pooling)
    torch.manual_seed(0)
    model = create_model(args).double().train()
    bags = frames_for(args).double()[..., :VIDEO]
    for embedding in model.branches["video"].values():
        inputs = bags.clone().requires_grad_()
        expected = torch.stack([embedding.aggregation(inputs[:, i]) for i in range(4)]).mean(dim=0)
        pooled = average_over_bags(embedding.aggregation, inputs)
        torch.testing.assert_close(pooled, expected, rtol=1e-12, atol=1e-15)
        grad = torch.randn_like(pooled)
        params = [inputs, *embedding.aggregation.parameters()]
        torch.testing.assert_close(torch.autograd.grad(pooled, params, grad, allow_unused=True),
                                   torch.autograd.grad(expected, params, grad, allow_unused=True),
                                   rtol=1e-10, atol=1e-13)


def test_batch_norm_train_and_eval_modes():
    args = small_args(**ALL_EMBEDDINGS, input_add_batch_norm=True)
    torch.manual_seed(0)
    model = create_model(args)
    frames = frames_for(args, batch=4)
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    model.train()
    train_out = model(frames)
    # Training mode: batch statistics, so a video's output depends on the other videos of the batch.
    assert not torch.allclose(model(frames[:2])[0], train_out[0])
    after = {k: v for k, v in model.state_dict().items() if "running" in k}
    assert any(not torch.equal(before[k], after[k]) for k in before)
    model.eval()
    eval_out = model(frames)
    torch.testing.assert_close(model(frames[:2]), eval_out[:2])
    assert not torch.allclose(eval_out, train_out)
    frozen = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    model(frames)
    assert all(torch.equal(frozen[k], v) for k, v in model.state_dict().items() if "running" in k)


@pytest.mark.parametrize("switch", ["dense", "fc_sign_circulant", "k_factor_2"])
def test_state_dict_round_trip(switch, tmp_path):
    args = small_args(**ALL_EMBEDDINGS, **SWITCHES[switch], input_add_batch_norm=True)
    torch.manual_seed(0)
    model = create_model(args)
    model.train()
    model(frames_for(args))  # move the batch-norm statistics away from their initial values
    torch.save(model.state_dict(), tmp_path / "model.pt")
    torch.manual_seed(1)
    restored = create_model(args)
    restored.load_state_dict(torch.load(tmp_path / "model.pt"))
    frames = frames_for(args, seed=5)
    torch.testing.assert_close(restored.eval()(frames), model.eval()(frames))


def test_registry_names_and_alias():
    assert {"CirculantDiagonalNetwork", "CirulantDiagonalNetwork", "LogisticModel", "MoeModel"} <= set(MODELS)
    seed_spelling = create_model(small_args(add_dbof=True, model="CirulantDiagonalNetwork"))
    correct_spelling = create_model(small_args(add_dbof=True, model="CirculantDiagonalNetwork"))
    assert type(seed_spelling) is type(correct_spelling) is CirculantDiagonalNetwork


@pytest.mark.parametrize("name,cls", [("MoeModel", MoeModel), ("LogisticModel", LogisticModel),
                                      ("Circulant_MoeModel", MoeModel)])
def test_video_level_models_alone(name, cls):
    args = ModelArgs(model=name, frame_features=False, num_classes=CLASSES, feature_sizes=(16, 8))
    model = create_model(args)
    assert isinstance(model, cls)
    out = model(torch.randn(5, 24))
    assert out.shape == (5, CLASSES) and ((out >= 0) & (out <= 1)).all()
    assert model.regularization_loss().shape == ()


def test_configuration_errors():
    with pytest.raises(ConfigError, match="--model=Nope"):
        create_model(small_args(model="Nope"))
    with pytest.raises(ConfigError, match="at least one embedding"):
        create_model(small_args())
    with pytest.raises(ConfigError, match="frame_features=True"):
        create_model(small_args(add_dbof=True, frame_features=False))
    with pytest.raises(ConfigError, match="video-level model"):
        create_model(ModelArgs(model="MoeModel"))
    with pytest.raises(ConfigError, match="video_level_classifier_model=Nope"):
        create_model(small_args(add_dbof=True, video_level_classifier_model="Nope"))


def test_wrong_frame_width_is_reported():
    model = create_model(small_args(add_dbof=True))
    with pytest.raises(ValueError, match=f"{VIDEO + AUDIO}"):
        model(torch.zeros(2, 1, FRAMES, VIDEO))


def test_seed_netfv_compact_command_warns_that_fc_netvlad_circulant_does_nothing():
    warnings = ineffective_flags(small_args(add_fisher_vector=True, fc_netvlad_circulant=True))
    assert any("--fc_netvlad_circulant=True has no effect" in w and "--add_netvlad" in w for w in warnings)
    assert len([w for w in warnings if "fc_netvlad_circulant" in w]) == 1


@pytest.mark.parametrize("flags,expected", [
    ({"add_dbof": True}, []),
    ({"add_dbof": True, "fc_dbof_circulant": True, "use_d_matrix": True, "k_factor": 2}, []),
    ({"add_dbof": True, "use_d_matrix": True}, ["use_d_matrix"]),
    ({"add_dbof": True, "k_factor": 2}, ["k_factor"]),
    ({"add_dbof": True, "k_factor": 2, "video_level_classifier_model": "CirculantWithFactor_MoeModel"}, []),
    ({"add_dbof": True, "k_factor": 2, "video_level_classifier_model": "Circulant_MoeModel"}, ["k_factor"]),
    ({"add_netvlad": True, "dbof_circulant": True, "fv_couple_weights": True}, ["dbof_circulant", "fv_couple_weights"]),
    ({"add_fisher_vector": True, "fv_coupling_factor": 0.5}, ["fv_coupling_factor"]),
    ({"add_fisher_vector": True, "fv_couple_weights": True, "fv_coupling_factor": 0.5}, []),
    ({"add_moments": True, "embedding_add_batch_norm": False}, ["embedding_add_batch_norm"]),
    ({"add_dbof": True, "video_level_classifier_model": "Circulant_MoeModel", "MoE_gating": False,
      "moe_add_batch_norm": False, "moe_l2": 0.1}, ["MoE_gating", "moe_add_batch_norm", "moe_l2"]),
    ({"add_dbof": True, "MoE_gating": False, "moe_add_batch_norm": False}, ["moe_add_batch_norm"]),
    ({"add_dbof": True, "video_level_classifier_model": "LogisticModel", "moe_num_mixtures": 4},
     ["moe_num_mixtures"]),
    ({"add_dbof": True, "no_audio": True, "feature_sizes": (16,)}, ["no_audio"]),
    # --compact_layer and its sizes act only through a compact switch, each size only for its kind, the
    # budget only where a size is 0; the circulant layer's own flags then shape only the budget.
    ({"add_dbof": True, "compact_layer": "monarch", "monarch_blocks": 4, "compact_budget": 4.0},
     ["compact_layer", "monarch_blocks", "compact_budget"]),
    ({"add_dbof": True, "fc_dbof_circulant": True, "lowrank_rank": 4}, ["lowrank_rank"]),
    ({"add_dbof": True, "fc_dbof_circulant": True, "compact_layer": "lowrank", "lowrank_rank": 4,
      "compact_budget": 4.0, "use_d_matrix": True, "k_factor": 2}, ["compact_budget", "use_d_matrix", "k_factor"]),
    ({"add_dbof": True, "fc_dbof_circulant": True, "compact_layer": "monarch", "compact_budget": 4.0,
      "use_d_matrix": True, "k_factor": 2}, []),
    ({"add_dbof": True, "video_level_classifier_model": "Circulant_MoeModel", "compact_layer": "lowrank",
      "monarch_blocks": 2}, ["monarch_blocks"]),
])
def test_ineffective_flags(flags, expected):
    messages = ineffective_flags(small_args(**{"moe_num_mixtures": 2, "fc_hidden_size": 8, **flags}))
    named = sorted(m.split("=")[0].lstrip("-") for m in messages
                   if not m.startswith(("--dbof_cluster_size", "--netvlad_cluster_size", "--fv_cluster_size")))
    assert named == sorted(expected), messages


def test_cluster_sizes_of_disabled_embeddings_are_reported():
    messages = ineffective_flags(small_args(add_dbof=True))
    assert any(m.startswith("--netvlad_cluster_size=4 has no effect") for m in messages)
    assert not any(m.startswith("--dbof_cluster_size") for m in messages)


def test_network_flags_are_reported_for_video_level_models():
    args = ModelArgs(model="MoeModel", frame_features=False, add_dbof=True, n_bagging=10, fc_dbof_circulant=True)
    messages = ineffective_flags(args)
    assert {m.split("=")[0] for m in messages} == {"--add_dbof", "--n_bagging", "--fc_dbof_circulant"}
    assert all("video-level model" in m for m in messages)


def test_model_flags_are_the_model_arguments():
    """Every model flag is a ModelArgs field with the same default, and a run's model gets the run's values."""
    assert {f.name for f in fields_in_group("model")} <= {f.name for f in dataclasses.fields(ModelArgs)}
    assert Config().model_args() == ModelArgs()
    config = Config(add_dbof=True, feature_sizes="16,8", num_classes=7, batch_norm_decay=0.9, batch_size=3)
    assert config.model_args() == ModelArgs(add_dbof=True, feature_sizes=(16, 8), num_classes=7,
                                            batch_norm_decay=0.9)


def test_reading_the_flags_does_not_import_torch():
    """`compactvid train --help` parses flags built from ModelArgs; torch takes seconds to import."""
    code = "import sys, compactvid.flags; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_a_flag_with_no_effect_is_reported_once_per_run(tmp_path, caplog):
    """Training reports it (once, however often the run builds its model); loading the run does not."""
    from compactvid.evaluate import load_trained_model
    from tiny_dataset import train_tiny_run

    with caplog.at_level(logging.WARNING):
        train_tiny_run(str(tmp_path / "run"), str(tmp_path / "data"), "--netvlad_cluster_size=64")
        load_trained_model(str(tmp_path / "run"))
    notes = [r.getMessage() for r in caplog.records if "--netvlad_cluster_size=64 has no effect" in r.getMessage()]
    assert len(notes) == 1, notes
