import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


import shutil  # noqa: E402

import pytest  # noqa: E402

# `make test` shares the files between pytest-xdist workers (--dist loadfile --no-loadscope-reorder), each file
# whole, in collection order. These files take the longest (minutes, from `make test --durations` on a 2-CPU
# machine): they start first, so that the workers finish together instead of one running a long file alone at
# the end. The order is all this changes; the other files follow in their usual order.
LONGEST_FIRST = [
    "test_train_backends.py", "test_finetune.py", "test_mixed_precision.py", "test_tuning.py", "test_training.py",
    "test_backends.py", "test_service.py", "test_soak.py", "test_bench.py", "test_bench_gpu.py", "test_export.py",
    "test_examples.py", "test_shards.py", "test_fuzz_datasets.py", "test_ema.py", "test_study.py",
]


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file's tests keep their order


def pytest_report_header(config):
    """Tests needing ffmpeg skip with the reason where it is missing (`make test` installs it): say which it is."""
    found = shutil.which("ffmpeg")
    return f"ffmpeg: {found}" if found else "ffmpeg: not installed: the tests that write H.264 videos skip"


@pytest.fixture(scope="session")
def motion_run(tmp_path_factory):
    """One training run that learns (tests/test_finetune.py: the learning test and the fine-tuning tests; about 2-3
    minutes)."""
    from keras_r21d.data import make_synthetic_dataset
    from keras_r21d.training import TrainConfig, train
    from tests.test_case import MOTION_RECIPE

    root = tmp_path_factory.mktemp("learn")
    data = make_synthetic_dataset(str(root / "syn"), classes=4, videos_per_class=64, seed=0)
    return train(TrainConfig(data=data, out=str(root / "run"), **MOTION_RECIPE))
