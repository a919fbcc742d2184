"""MaskGIT's schedule and decoder against the published rules (Chang et al. 2022; the
reference's mask_schedule.py / parallel_decode.py): the masked counts per step are
floor(N cos(pi/2 (t+1)/T)) (clamped to one fixed token per step) and reach 0; exactly that
many tokens are masked after each step, ties included; a fixed token is never re-masked or
changed; the most confident predictions are the ones kept; a model whose logits put all
mass on a planted sequence decodes to it; the training mask has the cosine law of counts
and uniform positions."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_gen.models import maskgit


def _formula(n, t_steps):
    return [math.floor(n * math.cos(math.pi / 2 * (t + 1) / t_steps)) for t in range(t_steps)]


def test_schedule_is_the_cosine_formula_and_ends_at_zero():
    got = np.asarray(maskgit.schedule(16, 8))
    want = _formula(16, 8)
    assert want == [15, 14, 13, 11, 8, 6, 3, 0]  # by hand: 16 cos(pi/16 · (t + 1))
    np.testing.assert_array_equal(got, want)
    for n, t in ((256, 12), (64, 10), (7, 3)):
        np.testing.assert_array_equal(np.asarray(maskgit.schedule(n, t)), _formula(n, t))
    # Per sample: M_0 = 16 and 10 at once.
    both = np.asarray(maskgit.schedule(jnp.asarray([16, 10]), 4))  # (T, 2)
    np.testing.assert_array_equal(both.T, [_formula(16, 4), _formula(10, 4)])


def test_schedule_clamps_to_one_token_per_step():
    # T = N: the formula repeats 15 (16 cos(pi/32) = 15.9, 16 cos(pi/16) = 15.7); the
    # reference's clamp fixes at least one token per step and keeps one for the next.
    assert _formula(16, 16)[:2] == [15, 15]
    np.testing.assert_array_equal(np.asarray(maskgit.schedule(16, 16)), np.arange(15, -1, -1))
    np.testing.assert_array_equal(np.asarray(maskgit.schedule(5, 1)), [0])  # one step: all


def _random_model(vocab, length, seed=0):
    """Input-dependent random logits: logits[n, i] = sum_j W[tokens[n, j], j, i]."""
    w = jax.random.normal(jax.random.key(seed), (vocab + 1, length, length, vocab))

    def logits_fn(tokens):  # (N, L) in [0, vocab] -> (N, L, vocab)
        onehot = jax.nn.one_hot(tokens, vocab + 1)  # (N, L, V+1)
        return 2.0 * jnp.einsum("njv,vjik->nik", onehot, w)
    return logits_fn


@pytest.mark.parametrize("choice_temperature", [4.5, 0.0])
@pytest.mark.parametrize("constant", [False, True])
def test_exact_counts_per_step_and_fixed_tokens_never_change(choice_temperature, constant):
    vocab, length, steps, n = 5, 16, 8, 64
    mask_id = vocab
    # constant: every logit 0, so with no choice noise every confidence ties (the
    # reference's `confidence < cut_off` would re-mask none of them).
    fn = (lambda t: jnp.zeros(t.shape + (vocab,))) if constant else _random_model(vocab, length)
    tokens, hist = jax.jit(lambda k: maskgit.decode(
        fn, k, mask_id=mask_id, num_samples=n, length=length, num_steps=steps,
        choice_temperature=choice_temperature, history=True))(jax.random.key(1))
    hist = np.asarray(hist)  # (T, N, L)
    masked = (hist == mask_id).sum(-1)  # (T, N)
    want = np.asarray(_formula(length, steps))
    np.testing.assert_array_equal(masked, np.broadcast_to(want[:, None], masked.shape))
    unmasked_per_step = np.diff(np.concatenate([[length], want]))  # -(tokens fixed per step)
    np.testing.assert_array_equal(np.diff(np.concatenate(
        [np.full((1, n), length), masked]), axis=0), np.broadcast_to(
        unmasked_per_step[:, None], masked.shape))
    for t in range(1, steps):
        fixed = hist[t - 1] != mask_id
        assert np.all(hist[t][fixed] == hist[t - 1][fixed])  # never re-masked nor changed
    np.testing.assert_array_equal(np.asarray(tokens), hist[-1])
    assert np.all((hist[-1] >= 0) & (hist[-1] < vocab))


def test_the_most_confident_predictions_are_kept():
    vocab, length, steps = 4, 8, 4
    # Greedy, no choice noise; position i's argmax has a probability rising with a fixed
    # random order, so step 0 must keep the 8 - n_0 = 1 highest and then the next ones.
    order = np.random.default_rng(0).permutation(length)
    margin = jnp.asarray(order + 1, jnp.float32)  # position i: margin order[i] + 1

    def fn(tokens):
        base = jnp.zeros(tokens.shape + (vocab,))
        return base.at[..., 2].set(margin[None, :] * 0.5)
    _, hist = maskgit.decode(fn, jax.random.key(0), mask_id=vocab, num_samples=1,
                             length=length, num_steps=steps, temperature=0.0,
                             choice_temperature=0.0, history=True)
    hist = np.asarray(hist)[:, 0]
    counts = _formula(length, steps)  # [7, 5, 3, 0]
    for t, n_t in enumerate(counts):
        kept = set(np.flatnonzero(hist[t] != vocab))
        assert kept == set(np.argsort(-order)[:length - n_t]), (t, kept)
    assert np.all(hist[-1] == 2)


def test_a_planted_sequence_is_decoded():
    vocab, length = 7, 16
    target = jnp.asarray(np.random.default_rng(3).integers(0, vocab, length))

    def fn(tokens):  # all mass on the target, whatever the input
        return jnp.broadcast_to(40.0 * jax.nn.one_hot(target, vocab), tokens.shape + (vocab,))
    out = maskgit.decode(fn, jax.random.key(2), mask_id=vocab, num_samples=32, length=length)
    np.testing.assert_array_equal(np.asarray(out), np.broadcast_to(target, (32, length)))
    # From a partly given buffer: the given tokens stay, the rest is the target's.
    init = jnp.full((2, length), vocab).at[:, :3].set(0)
    out = np.asarray(maskgit.decode(fn, jax.random.key(2), mask_id=vocab, init=init,
                                    num_steps=4))
    np.testing.assert_array_equal(out[:, :3], 0)
    np.testing.assert_array_equal(out[:, 3:], np.broadcast_to(target[3:], (2, length - 3)))


def test_training_mask_counts_follow_the_cosine_law_and_positions_are_uniform():
    n, length = 20000, 16
    m = np.asarray(maskgit.training_mask(jax.random.key(0), n, length))
    counts = m.sum(1)
    assert counts.min() >= 1 and counts.max() <= length
    # P(ceil(N cos(pi/2 u)) <= c) = P(cos(pi/2 u) <= c/N) = 1 - (2/pi) arccos(c/N).
    for c in (1, 4, 8, 12, 15):
        want = 1 - 2 / math.pi * math.acos(c / length)
        # 20k rows: standard error <= 0.0036; tolerance 0.015 (~4 sigma).
        assert abs(np.mean(counts <= c) - want) < 0.015, (c, np.mean(counts <= c), want)
    # Every position equally likely: each masked with frequency E[count] / N (s.e. 0.0035).
    np.testing.assert_allclose(m.mean(0), counts.mean() / length, atol=0.015)


def test_bad_arguments_are_one_line():
    fn = lambda t: jnp.zeros(t.shape + (3,))
    with pytest.raises(ValueError, match=r"num_steps must be an int in \[1, 4\]"):
        maskgit.decode(fn, jax.random.key(0), mask_id=3, num_samples=1, length=4, num_steps=5)
    with pytest.raises(ValueError, match="choice_temperature"):
        maskgit.decode(fn, jax.random.key(0), mask_id=3, num_samples=1, length=4,
                       num_steps=2, choice_temperature=-1.0)
    with pytest.raises(ValueError, match="give init or num_samples"):
        maskgit.decode(fn, jax.random.key(0), mask_id=3)
