"""Seed-compatible flag parsing: every syntax the original's absl flags accepted."""

import pytest

from compactvid.config import Config
from compactvid.errors import ConfigError
from compactvid.flags import parse_bool, parse_config


@pytest.mark.parametrize("text,value", [("True", True), ("true", True), ("1", True), ("False", False),
                                        ("false", False), ("0", False)])
def test_parse_bool_accepts_absl_spellings(text, value):
    assert parse_bool(text) is value


def test_bool_flag_forms():
    config, given = parse_config(["--add_dbof", "--no_audio=True", "--nosample_random_frames",
                                  "--data_augmentation", "false", "--fc_dbof_circulant=1"])
    assert config.add_dbof and config.no_audio and config.fc_dbof_circulant
    assert not config.sample_random_frames and not config.data_augmentation
    assert {"add_dbof", "no_audio", "sample_random_frames", "data_augmentation"} <= given


def test_negating_a_flag_whose_name_starts_with_no():
    config, _ = parse_config(["--nono_audio"])
    assert config.no_audio is False


def test_value_flags_and_defaults():
    config, given = parse_config(["--batch_size=80", "--base_learning_rate", "0.0002",
                                  "--learning_rate_decay_examples=4000000", "--max_steps=1"])
    assert (config.batch_size, config.base_learning_rate, config.max_steps) == (80, 0.0002, 1)
    assert config.num_epochs == Config().num_epochs == 5
    assert given == {"batch_size", "base_learning_rate", "learning_rate_decay_examples", "max_steps"}


def test_feature_defaults_follow_frame_features():
    frame, _ = parse_config([])
    assert frame.feature_name_list == ["rgb", "audio"] and frame.feature_size_list == [1024, 128]
    video, _ = parse_config(["--frame_features=False"])
    assert video.feature_name_list == ["mean_rgb", "mean_audio"]
    explicit, _ = parse_config(["--frame_features=False", "--feature_names=mean_rgb", "--feature_sizes=1024"])
    assert explicit.feature_name_list == ["mean_rgb"] and explicit.feature_size_list == [1024]


def test_abbreviations_are_refused():
    # --no_a would otherwise silently match --no_audio
    with pytest.raises(ConfigError):
        parse_config(["--no_a"])


@pytest.mark.parametrize("argv,flag", [
    (["--feature_names=rgb,audio", "--feature_sizes=1024"], "--feature_names"),
    (["--batch_size=0"], "--batch_size"),
    (["--dbof_pooling_method=median"], "--dbof_pooling_method"),
    (["--feature_sizes=10x4"], "--feature_sizes"),
])
def test_invalid_values_name_the_flag(argv, flag):
    with pytest.raises(ConfigError, match=flag):
        parse_config(argv)


def test_ignored_flag_is_accepted_with_a_note_and_not_recorded(caplog, tmp_path):
    config, _ = parse_config(["--log_device_placement=True", "--export_model_steps=5", "--nofc_circulant"])
    assert config == Config()  # flags with no effect are not in the Config that config.json records
    notes = [r.getMessage() for r in caplog.records]
    assert any("--log_device_placement has no effect" in n and "--device" in n for n in notes)
    assert any("--export_model_steps has no effect" in n for n in notes)


def test_json_round_trip(tmp_path):
    config, _ = parse_config(["--add_netvlad", "--netvlad_cluster_size=64", "--max_steps=3"])
    path = tmp_path / "config.json"
    path.write_text(config.to_json())
    assert Config.from_json_file(str(path)) == config


def test_config_json_written_with_the_seed_flags_with_no_effect_still_loads(tmp_path):
    """Before the flags with no effect left the Config, config.json recorded them."""
    path = tmp_path / "config.json"
    path.write_text('{"batch_size": 8, "fc_gating": false, "dbof_hidden_size": 1024}')
    assert Config.from_json_file(str(path)) == Config(batch_size=8)


def test_unknown_key_in_config_json_is_refused(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"batch_size": 8, "warp_drive": true}')
    with pytest.raises(ConfigError, match="warp_drive"):
        Config.from_json_file(str(path))
