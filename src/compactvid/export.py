"""Deployable artifacts of a model: ONNX and `torch.export` files, low-precision weights, int8 linear
layers, and serving them back (`load_artifact`).

An artifact computes ``probabilities [batch, num_classes]`` from one float32 input named ``frames``:
``[batch, n_bagging, iterations, features]`` for frame-level models (as `prepare_frames` makes them),
``[batch, features]`` for video-level ones; the batch is dynamic, the other axes are fixed at export.
Its metadata (ONNX ``metadata_props`` / a ``.pt2`` extra file, key ``compactvid``) holds a JSON object
with ``input_shape``, ``dtype``, ``quantize`` and whatever the caller adds (the CLI adds the run's
config, so that `compactvid inference --model=...` reads the data as training did).

- ``dtype="float16"|"bfloat16"``: every floating parameter and buffer is stored in that type and cast to
  float32 inside the graph, so arithmetic (circulant FFTs included) stays float32 and the file halves.
- ``quantize="int8"``: dynamic int8 (per-batch activation scales, int8 weights) for the dense
  ``nn.Linear`` layers only; circulant vectors stay floating point (they are tiny). ONNX files go
  through ONNX Runtime's quantizer, ``.pt2`` files through torchao.
- Circulant layers trace through `compactvid.layers.circulant_export` (ONNX has no complex tensors).

Serving an ONNX file needs only onnxruntime (``pip install "compactvid[export]"``), not the model code.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import logging
import math
import os
import sys
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from compactvid.errors import CompactVidError, ConfigError
from compactvid.models.args import ModelArgs

__all__ = ["FORMATS", "DTYPES", "QUANTIZATIONS", "export_model", "load_artifact", "Artifact", "input_shape",
           "load_model", "check_choices", "export_bytes"]

FORMATS = ("onnx", "pt2")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
QUANTIZATIONS = ("int8",)
INPUT_NAME = "frames"
OUTPUT_NAME = "probabilities"
METADATA_KEY = "compactvid"
_PT2_METADATA = "compactvid.json"
_FOLD_MAX_VALUES = 64  # integer tensors folded into the ONNX file: shapes, small indices


class _StoredAs(nn.Module):
    """``model`` with its floating parameters and buffers stored as ``dtype``, cast to float32 for the
    forward pass (the exported graph holds the low-precision tensors and the casts)."""

    def __init__(self, model: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.model = copy.deepcopy(model).to(dtype)

    def forward(self, frames: Tensor) -> Tensor:
        tensors = itertools.chain(self.model.named_parameters(), self.model.named_buffers())
        state = {name: t.float() for name, t in tensors if t.is_floating_point()}
        return torch.func.functional_call(self.model, state, (frames,))


def check_choices(format: str, dtype: str, quantize: str | None) -> None:
    """ConfigError naming the flag if the format, dtype or quantization is unknown or they conflict."""
    if format not in FORMATS:
        raise ConfigError(f"--format={format}: unknown artifact format; use one of {', '.join(FORMATS)}")
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype={dtype}: unknown; use one of {', '.join(DTYPES)}")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ConfigError(f"--quantize={quantize}: unknown; use {', '.join(QUANTIZATIONS)} or leave it out")
    if quantize is not None and dtype != "float32":
        raise ConfigError(f"--quantize={quantize} stores the linear layers in int8 and the rest in float32: "
                          f"leave out --dtype={dtype}")


def _is_artifact(path: str) -> bool:
    """Whether `path` is a file this module wrote (so that it may be overwritten)."""
    try:
        load_artifact(path, session=False)
        return True
    except CompactVidError:
        return False


def export_model(model: nn.Module, path: str, input_shape: tuple[int, ...], *, format: str = "onnx",
                 dtype: str = "float32", quantize: str | None = None,
                 metadata: dict[str, Any] | None = None) -> int:
    """Write ``model`` (eval mode is set on a copy) as an artifact at ``path``; return its size in bytes.

    input_shape: one example's shape without the batch axis, e.g. ``(n_bagging, iterations, features)``.
    format: ``"onnx"`` or ``"pt2"``; dtype: weight storage (see the module doc); quantize: None or
    ``"int8"``; metadata: JSON-ready values stored in the artifact. An existing file at ``path`` is
    replaced only if it is itself an artifact; the file appears complete or not at all.
    """
    check_choices(format, dtype, quantize)
    if os.path.exists(path) and not _is_artifact(path):
        raise ConfigError(f"--output={path}: exists and is not a compactvid artifact; choose another path "
                          f"or remove it")
    model = copy.deepcopy(model).float().eval()
    if quantize is None and dtype != "float32":
        model = _StoredAs(model, DTYPES[dtype]).eval()
    # Batch 2: torch.export specializes a dimension whose example size is 0 or 1.
    example = torch.zeros(2, *input_shape)
    info = json.dumps({"input_shape": list(input_shape), "dtype": dtype, "quantize": quantize,
                       **(metadata or {})})
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=directory, prefix=".tmp-" + os.path.basename(path) + ".")
    os.close(fd)
    try:
        write = _write_onnx if format == "onnx" else _write_pt2
        with _quiet_exporters():
            write(model, example, temp, quantize, info)
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.remove(temp)
    return os.path.getsize(path)


def export_bytes(model: nn.Module, input_shape: tuple[int, ...], format: str = "onnx",
                 dtype: str = "float16") -> int:
    """Bytes of ``model``'s artifact, written to a temporary directory and removed (the values of the
    weights do not matter: a model from ``to_empty`` will do)."""
    with tempfile.TemporaryDirectory() as directory:
        return export_model(model, os.path.join(directory, f"model.{format}"), input_shape, format=format,
                            dtype=dtype)


def _dynamic_batch() -> tuple[dict[int, Any]]:
    return ({0: torch.export.Dim("batch")},)


def _write_onnx(model: nn.Module, example: Tensor, path: str, quantize: str | None, info: str) -> None:
    program = torch.onnx.export(model, (example,), dynamo=True, input_names=[INPUT_NAME],
                                output_names=[OUTPUT_NAME], dynamic_shapes=_dynamic_batch(), verbose=False,
                                optimize=False)
    _optimize_onnx(program.model)
    program.model.metadata_props[METADATA_KEY] = info
    program.save(path)
    if quantize == "int8":
        _quantize_onnx(model, path)


def _optimize_onnx(model: Any) -> None:
    """The exporter's own graph optimization (onnxscript's, on the ``onnx_ir.Model`` ``model``, in place),
    minus what costs bytes in the file and nothing at run time.

    - Only shapes and other small integer tensors (at most ``_FOLD_MAX_VALUES``) are folded into stored
      constants. By default the exporter also stores the float32 result of casting a float16 weight (it
      folds tensors of up to 8192 values: biases, batch-norm statistics, circulant vectors) and the
      DFT, twiddle and index matrices of the circulant layers, which the graph computes from ``Range``,
      ``Cos`` and ``Sin``. ONNX Runtime folds the same nodes when it loads the file, so the session runs
      the same constants.
    - The tracing metadata of every node (the Python stack trace, module path and FX node: about 1.3 kB
      per node, and paths of the exporting machine) is dropped.
    """
    from onnxscript.optimizer import optimize_ir

    def should_fold(node: Any) -> bool | None:
        for value in node.outputs:
            if value.dtype is None or value.dtype.is_floating_point() or value.shape is None:
                return False
            if not value.shape.is_static() or math.prod(value.shape.numpy()) > _FOLD_MAX_VALUES:
                return False
        return None  # onnxscript's default rules

    optimize_ir(model, should_fold=should_fold)
    for node in model.graph.all_nodes():
        node.metadata_props.clear()


def _quantize_onnx(model: nn.Module, path: str) -> None:
    """Dynamic int8 for the products by an ``nn.Linear`` weight, rewritten first as ONNX Runtime's
    quantizer needs them (`_linear_products_as_matmuls`); the DFT products of circulant layers multiply
    by matrices the graph computes, not by a stored weight, and stay float32."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    linear_weights = {f"{name}.weight" for name, module in model.named_modules() if isinstance(module, nn.Linear)}
    proto = onnx.load(path)
    nodes = _linear_products_as_matmuls(proto.graph, linear_weights)
    if not nodes:
        return
    rewritten, quantized = path + ".matmul", path + ".int8"
    try:
        onnx.save(proto, rewritten)
        quantize_dynamic(rewritten, quantized, nodes_to_quantize=nodes, op_types_to_quantize=["MatMul"],
                         weight_type=QuantType.QInt8, extra_options={"MatMulConstBOnly": True})
        os.replace(quantized, path)
    finally:
        for temp in (rewritten, quantized):
            if os.path.exists(temp):
                os.remove(temp)


def _linear_products_as_matmuls(graph: Any, weights: set[str]) -> list[str]:
    """Rewrite, in place in ``graph`` (an ``onnx.GraphProto``), each product by one of the stored
    ``weights`` ``W [out, in]`` as a ``MatMul`` by a stored ``W^T``: the exporter writes ``Gemm(x, W,
    bias, transB=1)`` (here: ``MatMul`` then ``Add``) or ``MatMul(x, Transpose(W))``, and ONNX Runtime's
    quantizer takes only a ``MatMul`` whose second input is stored (its own Gemm rewrite renames the
    nodes it was asked to quantize, and quantized nothing). Returns the names of those MatMul nodes."""
    from onnx import helper, numpy_helper

    stored = {tensor.name: tensor for tensor in graph.initializer if tensor.name in weights}
    producers = {output: node for node in graph.node for output in node.output}

    def weight_of(node: Any) -> str | None:
        """The weight whose transpose ``node`` multiplies by, if it is such a product."""
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Gemm" and node.input[1] in stored:
            plain = attributes.get("transA", 0) == 0 and attributes.get("alpha", 1.0) == 1.0
            bias_as_is = len(node.input) < 3 or not node.input[2] or attributes.get("beta", 1.0) == 1.0
            return node.input[1] if attributes.get("transB", 0) == 1 and plain and bias_as_is else None
        source = producers.get(node.input[1]) if node.op_type == "MatMul" else None
        if source is not None and source.op_type == "Transpose" and source.input[0] in stored:
            return source.input[0]
        return None

    nodes, matmuls, transposed = [], [], set()
    for node in graph.node:
        weight = weight_of(node)
        if weight is None:
            nodes.append(node)
            continue
        transposed.add(weight)
        name = f"{weight}.matmul{len(matmuls)}"
        matmuls.append(name)
        bias = node.input[2] if node.op_type == "Gemm" and len(node.input) > 2 and node.input[2] else None
        product = f"{name}.output" if bias else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], f"{weight}.T"], [product], name=name))
        if bias:
            nodes.append(helper.make_node("Add", [product, bias], [node.output[0]], name=f"{name}.bias"))
    used = {name for node in nodes for name in node.input} | {output.name for output in graph.output}
    nodes = [node for node in nodes  # the transposes of the stored weights, now unused
             if not (node.op_type == "Transpose" and node.input[0] in transposed and node.output[0] not in used)]
    used = {name for node in nodes for name in node.input}
    del graph.node[:]
    graph.node.extend(nodes)
    kept = [tensor for tensor in graph.initializer if tensor.name not in stored or tensor.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    graph.initializer.extend(numpy_helper.from_array(numpy_helper.to_array(stored[w]).T.copy(), f"{w}.T")
                              for w in sorted(transposed))
    return matmuls


@contextlib.contextmanager
def _quiet_exporters() -> Iterator[None]:
    """Keep the exporters' progress lines, optimizer notes and the int8 quantizer's advice (logged on the
    root logger) off the user's screen, and anything they print off stdout (which `--json` owns)."""
    loggers = [logging.getLogger(name) for name in ("", "onnxscript", "torch.onnx", "torch.export")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _write_pt2(model: nn.Module, example: Tensor, path: str, quantize: str | None, info: str) -> None:
    if quantize == "int8":
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

        quantize_(model, Int8DynamicActivationInt8WeightConfig())  # nn.Linear modules only
    with torch.no_grad():
        program = torch.export.export(model, (example,), dynamic_shapes=_dynamic_batch())
    # Not the example it was traced with: zeros (1.4 MB at the README's sizes), whose shape the metadata has.
    program.example_inputs = None
    with open(path, "wb") as f:  # a file object: the archive is then named for its content, not the path
        torch.export.save(program, f, extra_files={_PT2_METADATA: info})


@dataclass
class Artifact:
    """An exported model, ready to serve: ``predict(frames) -> probabilities``.

    path, format (``onnx``/``pt2``), metadata (the JSON object written at export; ``input_shape``,
    ``dtype``, ``quantize`` and the caller's keys).
    """

    path: str
    format: str
    metadata: dict[str, Any]
    _run: Callable[[np.ndarray], np.ndarray] | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.metadata["input_shape"])

    def predict(self, frames: Tensor | np.ndarray) -> np.ndarray:
        """``frames [batch, *input_shape]`` float32 -> probabilities ``[batch, num_classes]`` float32."""
        array = frames.detach().cpu().numpy() if isinstance(frames, Tensor) else np.asarray(frames)
        if tuple(array.shape[1:]) != self.input_shape:
            raise CompactVidError(
                f"{self.path}: expects {INPUT_NAME} [batch, {', '.join(map(str, self.input_shape))}], got "
                f"{list(array.shape)}; the data must have the feature sizes, --n_bagging and --iterations the "
                f"model was exported with")
        return self._run(np.ascontiguousarray(array, dtype=np.float32))


def load_artifact(path: str, session: bool = True, threads: int | None = None) -> Artifact:
    """The artifact at ``path`` (format from its extension: ``.onnx`` or ``.pt2``); session=False reads
    only its metadata; threads: ONNX Runtime's intra-op threads (default: its own choice, every core; a
    ``.pt2`` program uses torch's setting). CompactVidError naming the file if it is missing or not a
    compactvid artifact."""
    format = os.path.splitext(path)[1].lstrip(".")
    if format not in FORMATS:
        raise ConfigError(f"--model={path}: unknown artifact format; use a .onnx or .pt2 file written by "
                          f"`compactvid export`")
    if not os.path.isfile(path):
        raise ConfigError(f"--model={path}: no such file")
    try:
        metadata, run = _open_onnx(path, session, threads) if format == "onnx" else _open_pt2(path, session)
    except CompactVidError:
        raise
    except Exception as error:  # onnx, onnxruntime and torch raise many types for foreign files
        raise CompactVidError(f"{path}: not a readable {format} artifact ({type(error).__name__}: "
                              f"{str(error).splitlines()[0] if str(error) else ''})") from error
    return Artifact(path, format, metadata, run)


def _parse_metadata(path: str, text: str | None) -> dict[str, Any]:
    if text is None:
        raise CompactVidError(f"{path}: has no {METADATA_KEY} metadata; was it written by `compactvid export`?")
    return json.loads(text)


def _open_onnx(path: str, session: bool, threads: int | None) -> tuple[dict[str, Any], Callable | None]:
    if not session:
        import onnx

        props = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
        return _parse_metadata(path, props.get(METADATA_KEY)), None
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: ONNX Runtime warns about unused initializers
    options.intra_op_num_threads = threads or 0
    sess = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    metadata = _parse_metadata(path, sess.get_modelmeta().custom_metadata_map.get(METADATA_KEY))
    return metadata, lambda frames: sess.run([OUTPUT_NAME], {INPUT_NAME: frames})[0]


def _open_pt2(path: str, session: bool) -> tuple[dict[str, Any], Callable | None]:
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if n.endswith("/extra/" + _PT2_METADATA)]
        metadata = _parse_metadata(path, archive.read(names[0]).decode() if names else None)
    if not session:
        return metadata, None
    if metadata.get("quantize") == "int8":
        import torchao  # noqa: F401  (registers the int8 tensor types the program holds)
    module = torch.export.load(path).module()

    def run(frames: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(frames)).numpy()

    return metadata, run


def input_shape(args: ModelArgs) -> tuple[int, ...]:
    """One example's input shape for the model of ``args``, without the batch axis."""
    features = sum(args.feature_sizes)
    return (args.n_bagging, args.iterations, features) if args.frame_features else (features,)


def load_model(train_dir: str, checkpoint: str | None = None) -> nn.Module:
    """The model of a training run in eval mode on the CPU: built from ``train_dir``'s config.json, weights
    from ``checkpoint`` (a path; default: the newest checkpoint). CheckpointError if there is none."""
    from compactvid.evaluate import load_trained_model

    return load_trained_model(train_dir, checkpoint)[1]
