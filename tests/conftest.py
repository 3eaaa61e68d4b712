import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


import shutil  # noqa: E402

import pytest  # noqa: E402


def pytest_report_header(config):
    """Tests needing ffmpeg skip with the reason where it is missing (`make test` installs it): say which it is."""
    found = shutil.which("ffmpeg")
    return f"ffmpeg: {found}" if found else "ffmpeg: not installed: the tests that write H.264 videos skip"


@pytest.fixture(scope="session")
def motion_run(tmp_path_factory):
    """One training run that learns (shared by the learning test and the fine-tuning tests: about 2 minutes)."""
    from keras_r21d.data import make_synthetic_dataset
    from keras_r21d.training import TrainConfig, train
    from tests.test_case import MOTION_RECIPE

    root = tmp_path_factory.mktemp("learn")
    data = make_synthetic_dataset(str(root / "syn"), classes=4, videos_per_class=64, seed=0)
    return train(TrainConfig(data=data, out=str(root / "run"), **MOTION_RECIPE))
