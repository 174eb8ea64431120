"""Stage-one feature-set configs are validated by a pydantic model per class (the mechanism of
run configs and settings): kinds from the defaults, strict (a bool is not a number), floats
stored as floats, every mistake in the one ``key: reason, got value`` form."""

from __future__ import annotations

import pytest

from avemo.data.store import config_hash
from avemo.errors import FeatureConfigError
from avemo.extract.registry import FEATURE_SETS, load_all

load_all()
NAMES = FEATURE_SETS.names()


def _hash(name: str, cfg: dict) -> str:
    return config_hash({"feature_set": name, "config": cfg, "weights": {}})


@pytest.mark.parametrize("name", NAMES)
def test_model_fields_are_the_default_keys_and_types_are_strict(name: str) -> None:
    cls = FEATURE_SETS.get(name)
    model = cls.config_model()
    assert model is cls.config_model()  # built once per class
    assert [f.alias for f in model.model_fields.values()] == list(cls.default_config)
    for key, default in cls.default_config.items():
        if type(default) is float and default.is_integer():  # 25 and 25.0: one config, one hash
            as_int = cls.check_config({key: int(default)})
            assert as_int[key] == float(int(default)) and type(as_int[key]) is float
            assert _hash(name, as_int) == _hash(name, cls.check_config({key: float(int(default))}))
        if type(default) in (int, float):
            with pytest.raises(FeatureConfigError, match=rf"feature set {name}: {key}: "):
                cls.check_config({key: True})  # a bool is not a number
        if type(default) is bool:
            with pytest.raises(FeatureConfigError, match=rf"{key}: input should be a valid bool"):
                cls.check_config({key: 1})


def test_every_mistake_is_named_on_one_line() -> None:
    cls = FEATURE_SETS.get("face_fer2013")
    with pytest.raises(FeatureConfigError) as e:
        cls.check_config({"fps": 0, "detect_evry": 2, "max_faces": "x"})
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("feature set face_fer2013: ")
    for part in (
        "fps: must be > 0, got 0",
        "detect_evry: unknown key, did you mean detect_every?",
        "max_faces: input should be a valid integer, got 'x'",
    ):
        assert part in msg
