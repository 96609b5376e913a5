"""Validation on the datasets' official held-out splits: the same examples and the same
validation loss whatever the batch size or the training limit; a fixed prefix with val_limit;
the held-out tail where a dataset has no official split."""

import numpy as np
import pytest
import torch

from edgegen.data.celeba import CelebA
from edgegen.data.cifar import CIFAR10
from edgegen.train.config import DataConfig
from edgegen.train.data import build_batches
from tests.data.test_celeba import make_celeba
from tests.data.test_cifar import make_cifar
from tests.train.helpers import tiny


@pytest.fixture
def cifar_root(tmp_path, monkeypatch):
    make_cifar(tmp_path / "data", n=12)
    monkeypatch.setenv("EDGEGEN_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "data"


@pytest.mark.parametrize("batch, limit", [(5, None), (7, 40), (12, 24)], ids=["b5", "b7-limit40", "b12-limit24"])
def test_cifar_validates_on_the_test_split(cifar_root, batch, limit):
    b = build_batches(DataConfig(name="cifar10", root=str(cifar_root), limit=limit), batch, seed=0)
    val = torch.cat(list(b.val_batches()))
    test = CIFAR10(cifar_root, "test", image_size=64)
    expected = torch.stack([test[i][0] for i in range(len(test))])
    torch.testing.assert_close(val, expected)  # all 12 test images, a partial last batch included
    assert b.n_train == (limit or 60)  # the whole training limit is training data


def test_val_limit_and_holdout(cifar_root):
    b = build_batches(DataConfig(name="cifar10", root=str(cifar_root), val_limit=5), 4, seed=0)
    assert [v.shape[0] for v in b.val_batches()] == [4, 1]
    h = build_batches(DataConfig(name="cifar10", root=str(cifar_root), val_split="holdout", val_batches=2), 4,
                      seed=0)
    train = CIFAR10(cifar_root, "train", image_size=64)
    val = torch.cat(list(h.val_batches()))
    torch.testing.assert_close(val, torch.stack([train[i][0] for i in range(52, 60)]))  # the tail
    assert h.n_train == 52


def test_celeba_trains_on_train_and_validates_on_valid(tmp_path, monkeypatch):
    make_celeba(tmp_path / "data", parts=(0,) * 6 + (1,) * 3 + (2,) * 2)
    monkeypatch.setenv("EDGEGEN_CACHE_DIR", str(tmp_path / "cache"))
    b = build_batches(DataConfig(name="celeba", root=str(tmp_path / "data")), 2, seed=0)
    assert b.n_train == 6 and b.n_val == 3
    valid = CelebA(tmp_path / "data", "valid", image_size=64)
    torch.testing.assert_close(torch.cat(list(b.val_batches())), torch.stack([valid[i][0] for i in range(3)]))


@pytest.mark.parametrize("task", ["vae", "gan"])
def test_validation_loss_does_not_depend_on_the_batch_size(task, cifar_root, tmp_path):
    from edgegen.train.loop import Trainer

    losses = []
    for batch in (4, 6):
        cfg = tiny(task, tmp_path, data={"name": "cifar10", "root": str(cifar_root)},
                   train={"batch_size": batch, "steps_per_epoch": 1})
        trainer = Trainer(cfg, tmp_path / f"run{batch}", progress=False)
        val = trainer.task.validate(trainer.batches.val_batches())
        assert val["val_examples"] == 12.0
        losses.append(val["val_loss"])
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_lm_official_split_is_token_weighted(tmp_path):
    from edgegen.train.data import TokenBatches

    tokens, val = np.arange(400) % 50, np.arange(100) % 50
    b3 = TokenBatches(tokens, 3, 8, 0, 1, val_tokens=val)
    b5 = TokenBatches(tokens, 5, 8, 0, 1, val_tokens=val)
    x3 = torch.cat([x for x, _ in b3.val_batches()])
    x5 = torch.cat([x for x, _ in b5.val_batches()])
    torch.testing.assert_close(x3, x5)
    assert x3.shape == (100 // 9, 8) and int(x3[1, 0]) == 9  # non-overlapping blocks of seq_len + 1
    with pytest.raises(ValueError, match="the validation split has 5 tokens"):
        TokenBatches(tokens, 3, 8, 0, 1, val_tokens=val[:5])


def test_bad_val_settings():
    with pytest.raises(ValueError, match="val_limit: expected a value > 0"):
        DataConfig(name="cifar10", val_limit=0)
