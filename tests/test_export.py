"""Export to ONNX and torch.export: parity with the eager model for every registry model, low-precision
and int8 artifacts, serving from an artifact, and the errors of bad input."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import torch

from compactvid.errors import CompactVidError, ConfigError
from compactvid.export import export_model, input_shape, load_artifact
from compactvid.layers import circulant_export
from compactvid.layers.circulant import CirculantLinear
from compactvid.layers.circulant_export import circulant_product
from compactvid.models.args import ModelArgs
from compactvid.models.registry import MODELS, create_model, is_frame_level

pytestmark = pytest.mark.usefixtures("one_thread")

# Compact switches of the frame-level models, all on (the paper's network with every embedding) or all off.
COMPACT = dict(dbof_circulant=True, fc_dbof_circulant=True, fc_netvlad_circulant=True, fc_fisher_circulant=True,
               fc_moment_circulant=True, video_level_classifier_model="Circulant_MoeModel",
               fc_nextvlad_circulant=True, nextvlad_expansion_circulant=True, nextvlad_cluster_circulant=True,
               gating_circulant=True)


def tiny_args(name: str, **flags) -> ModelArgs:
    """Small arguments of registry model `name` (frame-level: every embedding)."""
    values = dict(model=name, num_classes=5, moe_num_mixtures=2, fc_hidden_size=8, iterations=3, n_bagging=2,
                  feature_sizes=(12, 6), frame_features=is_frame_level(name))
    if is_frame_level(name):
        values.update(add_dbof=True, add_netvlad=True, add_fisher_vector=True, add_moments=True,
                      dbof_cluster_size=16, netvlad_cluster_size=4, fv_cluster_size=4, nextvlad_cluster_size=4,
                      nextvlad_hidden_size=8, groups=2, gating_reduction=2)
    values.update(flags)
    return ModelArgs(**values)


def trained_like(model: torch.nn.Module) -> torch.nn.Module:
    """`model` in eval mode with batch-norm statistics away from their initial values, as after training."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.normal_(0, 0.1, generator=generator)
            module.running_var.uniform_(0.5, 1.5, generator=generator)
    return model.eval()


@pytest.mark.parametrize("folded", [True, False])
@pytest.mark.parametrize("n,out,diag,k", [(12, 30, "learned", 1), (67, 20, "none", 1), (96, 96, "sign", 2),
                                          (4096, 300, "learned", 1), (130, 1000, "learned", 2),
                                          (15, 40, "learned", 1), (16, 200, "sign", 2)])
def test_export_formulation_equals_the_layer(n, out, diag, k, folded, monkeypatch):
    """Real-arithmetic product == the FFT autograd Function, in both forms: folded (odd n2, n1 = 1 for a
    prime n, several factors, block by block and, past PER_BLOCK_MAX blocks, all at once) and transforms
    (matrix DFTs, four-step splits, pruned outputs)."""
    if not folded:
        monkeypatch.setattr(circulant_export, "FOLDED_MAX_VALUES", 0)
    layer = CirculantLinear(n, out, bias=False, diag=diag, k_factor=k, dtype=torch.float64)
    x = torch.randn(5, n, dtype=torch.float64)
    with torch.no_grad():
        expected = layer(x)
        got = circulant_product(x, layer.weight, layer.diag, layer.sign, out)
    assert torch.allclose(got, expected, atol=1e-10, rtol=1e-10)


# One name per builder (the seed's spelling CirulantDiagonalNetwork is an alias).
REGISTRY_MODELS = sorted({builder: name for name, builder in reversed(list(MODELS.items()))}.values())


@pytest.mark.slow
@pytest.mark.parametrize("name", REGISTRY_MODELS)
@pytest.mark.parametrize("compact", [False, True])
def test_every_registry_model_exports_in_both_formats(name, compact, tmp_path):
    if compact and not is_frame_level(name):
        pytest.skip("video-level models have no compact switches of their own (Circulant_MoeModel is one)")
    # One bag: bags are unrolled in the graph, and tracing is most of this test's time.
    args = tiny_args(name, n_bagging=1, **(COMPACT if compact else {}))
    model = trained_like(create_model(args))
    frames = torch.rand(3, *input_shape(args))
    with torch.no_grad():
        expected = model(frames).numpy()
    for format in ("onnx", "pt2"):
        path = str(tmp_path / f"model.{format}")
        export_model(model, path, input_shape(args), format=format, metadata={"note": "x"})
        artifact = load_artifact(path)
        assert artifact.metadata["note"] == "x" and artifact.input_shape == input_shape(args)
        np.testing.assert_allclose(artifact.predict(frames), expected, atol=1e-4, rtol=0)
        np.testing.assert_allclose(artifact.predict(frames[:1]), expected[:1], atol=1e-4, rtol=0)


def test_float16_onnx_file_is_its_weights_in_float16_and_the_graph(tmp_path):
    """No float32 copies of float16 weights (folded casts), no stored DFT, twiddle or index constants of
    the circulant layers, no per-node tracing metadata: the file is 2 bytes per weight plus the graph."""
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    # A circulant projection and FC (DBoF), circulant mixtures of experts, batch norms with biases.
    args = tiny_args("CirculantDiagonalNetwork", n_bagging=1, add_netvlad=False, add_fisher_vector=False,
                     add_moments=False, **COMPACT)
    model = trained_like(create_model(args))
    path = str(tmp_path / "model.onnx")
    size = export_model(model, path, input_shape(args), dtype="float16")
    weights = sum(t.numel() for t in [*model.parameters(), *model.buffers()] if t.is_floating_point())
    graph = onnx.load(path).graph
    tensors = [*graph.initializer, *(a.t for node in graph.node if node.op_type == "Constant"
                                     for a in node.attribute if a.name == "value")]
    stored = [(t.data_type, int(np.prod(t.dims))) for t in tensors]
    floating = [(dtype, n) for dtype, n in stored if tensor_dtype_to_np_dtype(dtype).kind == "f" and n > 1]
    assert {dtype for dtype, _ in floating} == {onnx.TensorProto.FLOAT16}
    assert sum(n for _, n in floating) <= weights  # equal but for identical tensors stored once
    assert max(n for _, n in stored if (_, n) not in floating) <= 64  # shapes; scalars (2 pi / n, eps)
    # A node (op type, names, attributes, shape of its output) takes about 160 bytes here; its tracing
    # metadata, 1.3 kB more.
    assert size <= 2 * weights + 200 * len(graph.node)


def test_pt2_file_keeps_no_example_input(tmp_path):
    """torch.export.save would store the zeros the program was traced with (1.4 MB at the README's sizes)."""
    args = tiny_args("CirculantDiagonalNetwork", add_netvlad=False, add_fisher_vector=False, add_moments=False)
    model = trained_like(create_model(args))
    path = str(tmp_path / "model.pt2")
    export_model(model, path, input_shape(args), format="pt2")
    with zipfile.ZipFile(path) as archive:
        assert [info.file_size for info in archive.infolist() if "sample_inputs" in info.filename] in ([], [0])
    frames = torch.randn(3, *input_shape(args))
    with torch.no_grad():
        np.testing.assert_allclose(load_artifact(path).predict(frames), model(frames).numpy(), atol=1e-5)


@pytest.mark.slow
def test_int8_onnx_stores_every_linear_weight_in_int8_and_circulant_vectors_in_float(tmp_path):
    """Every ``nn.Linear`` product (the exporter's Gemm, and MatMul by a transposed weight) reaches ONNX
    Runtime's quantizer: its weight is stored in int8, none left in float; circulant vectors stay float."""
    import onnx

    args = tiny_args("CirulantDiagonalNetwork", n_bagging=1, fc_dbof_circulant=True)
    model = trained_like(create_model(args))
    path = str(tmp_path / "int8.onnx")
    export_model(model, path, input_shape(args), quantize="int8")
    stored = {t.name: (t.data_type, int(np.prod(t.dims))) for t in onnx.load(path).graph.initializer}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            mine = [value for key, value in stored.items() if key.startswith(f"{name}.weight")]
            assert (onnx.TensorProto.INT8, module.weight.numel()) in mine, name
            assert all(size < module.weight.numel() for kind, size in mine if kind == onnx.TensorProto.FLOAT), name
    assert stored["branches.video.dbof.fc.weight"][0] == onnx.TensorProto.FLOAT  # the circulant FC
    frames = torch.rand(3, *input_shape(args))
    with torch.no_grad():
        difference = np.abs(load_artifact(path).predict(frames) - model(frames).numpy()).max()
    assert 0 < difference < 0.1


def test_artifact_refuses_frames_of_another_shape(tmp_path):
    args = tiny_args("LogisticModel")
    path = str(tmp_path / "logistic.onnx")
    export_model(create_model(args), path, input_shape(args))
    with pytest.raises(CompactVidError, match=r"expects frames \[batch, 18\], got \[2, 20\]"):
        load_artifact(path).predict(np.zeros((2, 20), np.float32))


def test_bad_choices_and_foreign_files_are_refused(tmp_path):
    args = tiny_args("LogisticModel")
    model = create_model(args)
    with pytest.raises(ConfigError, match="--format=tflite"):
        export_model(model, str(tmp_path / "m.tflite"), input_shape(args), format="tflite")
    with pytest.raises(ConfigError, match="--quantize=int8 .* --dtype=float16"):
        export_model(model, str(tmp_path / "m.onnx"), input_shape(args), dtype="float16", quantize="int8")
    foreign = tmp_path / "notes.onnx"
    foreign.write_text("not mine")
    with pytest.raises(ConfigError, match="not a compactvid artifact"):
        export_model(model, str(foreign), input_shape(args))
    assert foreign.read_text() == "not mine"
    with pytest.raises(CompactVidError, match="not a readable onnx artifact"):
        load_artifact(str(foreign))


# --- the command line, on a trained tiny run ----------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A trained tiny run with a compact FC (``run``), its data (``data``, test files ``test*``)."""
    from tiny_dataset import train_tiny_run, write_tiny_dataset

    root = tmp_path_factory.mktemp("export")
    train_tiny_run(str(root / "run"), str(root / "data"), "--fc_dbof_circulant", "--n_bagging=2", "--max_steps=2")
    write_tiny_dataset(str(root / "data"), 9, prefix="test", labels=False, seed=3)
    return root


def read_csv(path) -> dict[str, list[tuple[int, float]]]:
    rows = {}
    for line in path.read_text().splitlines()[1:]:
        video, pairs = line.split(",")
        fields = pairs.split(" ")
        rows[video] = [(int(c), float(s)) for c, s in zip(fields[0::2], fields[1::2])]
    return rows


@pytest.mark.slow
@pytest.mark.parametrize("format", ["onnx", "pt2"])
def test_csv_from_the_artifact_equals_csv_from_the_train_dir(tiny_run, format, capsys):
    from compactvid.cli import main

    artifact = tiny_run / f"model.{format}"
    assert main(["export", f"--train_dir={tiny_run / 'run'}", f"--format={format}", f"--output={artifact}"]) == 0
    common = [f"--input_data_pattern={tiny_run}/data/test*", "--top_k=3", "--batch_size=4"]
    assert main(["inference", f"--train_dir={tiny_run / 'run'}", f"--output_file={tiny_run / 'eager.csv'}",
                 *common]) == 0
    assert main(["inference", f"--model={artifact}", f"--output_file={tiny_run / 'artifact.csv'}", *common]) == 0
    eager, served = read_csv(tiny_run / "eager.csv"), read_csv(tiny_run / "artifact.csv")
    assert list(served) == list(eager) and len(eager) == 9
    for video, pairs in eager.items():
        assert [c for c, _ in served[video]] == [c for c, _ in pairs]
        np.testing.assert_allclose([s for _, s in served[video]], [s for _, s in pairs], atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("format,flags", [("onnx", ["--dtype=float16"]), ("pt2", ["--dtype=bfloat16"]),
                                          ("onnx", ["--quantize=int8"]), ("pt2", ["--quantize=int8"])])
def test_low_precision_exports_run_and_report_their_gap(tiny_run, format, flags, capsys):
    from compactvid.cli import main

    output = tiny_run / f"low.{format}"
    assert main(["export", f"--train_dir={tiny_run / 'run'}", f"--format={format}", f"--output={output}",
                 f"--validate={tiny_run}/data/validate*", "--json", *flags]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["bytes"] == output.stat().st_size
    assert 0 < result["artifact_gap"] <= 1 and abs(result["artifact_gap"] - result["checkpoint_gap"]) < 0.1
    artifact = load_artifact(str(output))
    assert artifact.metadata["dtype"] == result["dtype"] and artifact.metadata["quantize"] == result["quantize"]


@pytest.mark.slow
def test_command_line_errors_are_one_line(tiny_run, tmp_path, capsys):
    from tiny_dataset import write_tiny_dataset

    from compactvid.cli import main

    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text((tiny_run / "run" / "config.json").read_text())
    cases = [
        (["export", f"--train_dir={tmp_path / 'empty'}", f"--output={tmp_path / 'm.onnx'}"], "no checkpoint"),
        (["export", f"--train_dir={tiny_run / 'run'}", "--format=tflite", f"--output={tmp_path / 'm.tflite'}"],
         "--format=tflite"),
        (["export", f"--train_dir={tiny_run / 'run'}", "--format=pt2", f"--output={tmp_path / 'm.onnx'}"],
         "extension .pt2"),
    ]
    # An artifact served on data of another feature size (rgb 20 bytes instead of 16).
    artifact = tmp_path / "m.onnx"
    assert main(["export", f"--train_dir={tiny_run / 'run'}", f"--output={artifact}"]) == 0
    write_tiny_dataset(str(tmp_path / "wide"), 3, num_files=1, prefix="test", labels=False, rgb=20)
    cases.append((["inference", f"--model={artifact}", f"--input_data_pattern={tmp_path}/wide/test*",
                   f"--output_file={tmp_path / 'p.csv'}"], "rgb"))
    capsys.readouterr()
    for argv, expected in cases:
        assert main(argv) == 1, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0], err
