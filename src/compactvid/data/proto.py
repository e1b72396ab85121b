"""TensorFlow's `tf.train.Example` and `tf.train.SequenceExample` protobuf messages, without TensorFlow.

The message classes are built at import time from a descriptor equivalent to TensorFlow's
`tensorflow/core/example/{feature,example}.proto` (proto3, package ``tensorflow``: same field numbers,
types and packing), so their wire format is byte-for-byte TensorFlow's. Building the descriptor in code
avoids shipping generated `_pb2` modules tied to one protobuf release.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto


def _add_message(file: descriptor_pb2.FileDescriptorProto, name: str,
                 fields: Sequence[tuple[str, int, int, int, str | None]]) -> descriptor_pb2.DescriptorProto:
    """Add a message of (name, number, type, label, type_name) fields to `file`."""
    message = file.message_type.add(name=name)
    for field_name, number, kind, label, type_name in fields:
        f = message.field.add(name=field_name, number=number, type=kind, label=label)
        if type_name:
            f.type_name = type_name
    return message


def _add_map(message: descriptor_pb2.DescriptorProto, field_name: str, entry_name: str, value_type: str) -> None:
    """Add a `map<string, value_type> field_name = 1;` to `message`, as protoc lays it out."""
    entry = message.nested_type.add(name=entry_name)
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=_F.TYPE_MESSAGE, label=_F.LABEL_OPTIONAL, type_name=value_type)
    message.field.add(name=field_name, number=1, type=_F.TYPE_MESSAGE, label=_F.LABEL_REPEATED,
                      type_name=f".tensorflow.{message.name}.{entry_name}")


def _build_file() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(name="compactvid/tensorflow_example.proto",
                                              package="tensorflow", syntax="proto3")
    rep, opt = _F.LABEL_REPEATED, _F.LABEL_OPTIONAL
    _add_message(file, "BytesList", [("value", 1, _F.TYPE_BYTES, rep, None)])
    _add_message(file, "FloatList", [("value", 1, _F.TYPE_FLOAT, rep, None)])
    _add_message(file, "Int64List", [("value", 1, _F.TYPE_INT64, rep, None)])
    feature = _add_message(file, "Feature", [
        ("bytes_list", 1, _F.TYPE_MESSAGE, opt, ".tensorflow.BytesList"),
        ("float_list", 2, _F.TYPE_MESSAGE, opt, ".tensorflow.FloatList"),
        ("int64_list", 3, _F.TYPE_MESSAGE, opt, ".tensorflow.Int64List"),
    ])
    feature.oneof_decl.add(name="kind")
    for f in feature.field:
        f.oneof_index = 0
    _add_map(_add_message(file, "Features", []), "feature", "FeatureEntry", ".tensorflow.Feature")
    _add_message(file, "FeatureList", [("feature", 1, _F.TYPE_MESSAGE, rep, ".tensorflow.Feature")])
    _add_map(_add_message(file, "FeatureLists", []), "feature_list", "FeatureListEntry", ".tensorflow.FeatureList")
    _add_message(file, "Example", [("features", 1, _F.TYPE_MESSAGE, opt, ".tensorflow.Features")])
    _add_message(file, "SequenceExample", [
        ("context", 1, _F.TYPE_MESSAGE, opt, ".tensorflow.Features"),
        ("feature_lists", 2, _F.TYPE_MESSAGE, opt, ".tensorflow.FeatureLists"),
    ])
    return file


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_build_file())


def _message_class(name: str) -> type:
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"tensorflow.{name}"))


BytesList = _message_class("BytesList")
FloatList = _message_class("FloatList")
Int64List = _message_class("Int64List")
Feature = _message_class("Feature")
Features = _message_class("Features")
FeatureList = _message_class("FeatureList")
FeatureLists = _message_class("FeatureLists")
Example = _message_class("Example")
SequenceExample = _message_class("SequenceExample")

FeatureValue = bytes | str | Sequence[bytes] | Sequence[int] | Sequence[float] | np.ndarray


def make_feature(value: FeatureValue) -> "Feature":
    """A Feature holding `value`: bytes/str (one bytes entry), a list of bytes, or ints / floats.

    An empty list becomes an empty int64 list (as labels of a video without labels)."""
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return Feature(bytes_list=BytesList(value=[value]))
    if len(value) > 0 and isinstance(value[0], bytes):
        return Feature(bytes_list=BytesList(value=list(value)))
    array = np.asarray(value)
    if array.dtype.kind == "f":
        return Feature(float_list=FloatList(value=array.astype(np.float32).tolist()))
    return Feature(int64_list=Int64List(value=array.astype(np.int64).tolist()))


def make_example(features: Mapping[str, FeatureValue]) -> "Example":
    """A tf.train.Example with one Feature per entry of `features`."""
    return Example(features=Features(feature={k: make_feature(v) for k, v in features.items()}))


def make_sequence_example(context: Mapping[str, FeatureValue],
                          feature_lists: Mapping[str, Sequence[bytes]]) -> "SequenceExample":
    """A tf.train.SequenceExample: context Features, and one bytes Feature per frame per feature list."""
    lists = {name: FeatureList(feature=[Feature(bytes_list=BytesList(value=[frame])) for frame in frames])
             for name, frames in feature_lists.items()}
    return SequenceExample(context=Features(feature={k: make_feature(v) for k, v in context.items()}),
                           feature_lists=FeatureLists(feature_list=lists))
