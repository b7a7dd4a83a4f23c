from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.daemon import LocalCA


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCA:
    return LocalCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
