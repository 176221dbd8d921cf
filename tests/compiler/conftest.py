"""Fixtures: the small test models, exported and quantized once per session."""
import pytest


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("sdac-models"))


@pytest.fixture(scope="session")
def build_model(model_dir):
    from sdac import models

    def build(name, weights="int4"):
        return models.build(name, weights=weights, cache_dir=model_dir)
    return build
