"""edgegen.train.data.TokenBatches: where training blocks may start."""

import numpy as np

from edgegen.train.data import TokenBatches


def test_token_batches_start_anywhere_in_the_training_part():
    # 70 tokens, 1 validation batch of 8 blocks of 5 tokens: training tokens 0..29, validation 30..69.
    tokens = np.arange(70, dtype=np.uint16)
    tb = TokenBatches(tokens, batch_size=8, seq_len=4, seed=0, val_batches=1)
    assert tb.n_train == 30
    starts, last_targets = set(), set()
    for epoch in range(40):
        for index in range(10):
            x, y = tb.train_batch(epoch, index)
            assert np.array_equal(x[:, 1:].numpy(), y[:, :-1].numpy())
            assert np.array_equal(y.numpy() - x.numpy(), np.ones_like(x.numpy()))  # contiguous blocks
            starts |= set(x[:, 0].tolist())
            last_targets |= set(y[:, -1].tolist())
    # Every start 0..n_train - seq_len - 1 is drawn: the last training token (29) is a target, and no
    # block reaches the validation tokens.
    assert starts == set(range(0, 30 - 4))
    assert max(last_targets) == 29
