"""Binarizing uint8 grey levels (tfds `mnist`-like data): the `binarize` op's fixed forms
through `PreprocessedSource`, its dynamic form in the pipeline at grey_max=255, and the config
keys (old and new spellings) that turn them on.

Synthetic in-memory sources (no tfds build): every example holds each grey level 0..255
once, in its own order, so the per-level bit frequencies are measured on N samples each.
"""

import ml_collections
import numpy as np
import pytest

from ssl_gen import data
from ssl_gen.train import config_check
from tests.train.conftest import load_config

N = 400  # examples; each has the 256 levels once, so 400 samples per level
BINS = 16  # levels 16 b .. 16 b + 15 pooled: 6,400 samples per bin


def _grey(n=N, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(256) for _ in range(n)]).astype(np.uint8).reshape(
        n, 16, 16, 1)


@pytest.fixture(scope="module")
def grey():
    return _grey()


@pytest.fixture(scope="module")
def mnist_like(grey):
    """Like tfds `mnist`: a uint8 `image` of grey levels and a `label`, no `id` field."""
    return data.InMemorySource({"image": grey, "label": np.arange(N) % 10,
                                "weight": np.linspace(0, 1, N).astype(np.float32)})


def binarized_view(source, mode, grey_max=16, seed=0):
    """The eval-time binarization the trainer builds (`binarize` op, fixed mode)."""
    return data.PreprocessedSource(
        source, [{"name": "binarize", "mode": mode, "grey_max": grey_max}], seed=seed)


class ListSource:
    """A source with `len` and `source[i]` only (no get_batch, __getitems__ or arrays)."""

    def __init__(self, source):
        self._records = [source[i] for i in range(len(source))]

    def __len__(self):
        return len(self._records)

    def __getitem__(self, i):
        return self._records[i]


def _assert_frequencies(bits, grey, grey_max=255):
    """Bits pooled by bins of 16 levels have mean grey / grey_max, within 0.025: ~4 standard
    deviations of a bin mean (<= 0.5 / sqrt(6,400) = 0.00625). Level 0 gives only 0 bits,
    level grey_max only 1 bits, exactly."""
    bits, grey = bits.astype(np.float64).ravel(), grey.astype(np.float64).ravel()
    bin_of = (grey // (256 // BINS)).astype(int)
    observed = np.bincount(bin_of, bits, BINS) / np.bincount(bin_of, minlength=BINS)
    expected = np.bincount(bin_of, grey / grey_max, BINS) / np.bincount(bin_of, minlength=BINS)
    np.testing.assert_allclose(observed, expected, atol=0.025)
    assert bits[grey == 0].max() == 0 and bits[grey == grey_max].min() == 1


def test_bernoulli_bits_lut_path_at_255():
    assert (1 << 24) % 255  # 255 does not divide 2**24: the lookup-table path
    levels = np.arange(256, dtype=np.uint8)[None].repeat(2000, 0)
    bits = data.bernoulli_bits(levels, np.arange(2000), seed=0, epoch=0, grey_max=255)
    assert bits.dtype == np.uint8 and bits.shape == levels.shape
    _assert_frequencies(bits, levels)
    # Wider dtypes: levels above grey_max are clipped to probability 1.
    wide = np.array([[0, 255, 300, 1000]], dtype=np.int64)
    np.testing.assert_array_equal(
        data.bernoulli_bits(wide, np.array([7]), seed=1, epoch=2, grey_max=255)[0, 1:], 1)


def test_bernoulli_is_fixed_with_the_right_frequency(mnist_like, grey):
    fixed = binarized_view(mnist_like, "bernoulli", grey_max=255)
    bits = fixed.get_batch(np.arange(N))["image"]
    assert bits.dtype == np.uint8 and bits.shape == grey.shape and set(np.unique(bits)) == {0, 1}
    _assert_frequencies(bits, grey)
    # Deterministic: the same bits twice, from a fresh wrapper, and through every access path.
    np.testing.assert_array_equal(fixed.get_batch(np.arange(N))["image"], bits)
    again = binarized_view(mnist_like, "bernoulli", grey_max=255)
    np.testing.assert_array_equal(again.arrays["image"], bits)
    np.testing.assert_array_equal(fixed[7]["image"], bits[7])
    np.testing.assert_array_equal(fixed[-1]["image"], bits[-1])
    np.testing.assert_array_equal(
        np.stack([r["image"] for r in fixed.__getitems__([3, 1, 4])]), bits[[3, 1, 4]])
    np.testing.assert_array_equal(data.gather(fixed, np.array([9, 2]))["image"], bits[[9, 2]])
    # A function of (seed, example index: no `id` field) at the reserved epoch.
    np.testing.assert_array_equal(bits, data.bernoulli_bits(
        grey, np.arange(N), seed=0, epoch=data.FIXED_EPOCH, grey_max=255))
    # Another seed, other bits; and not the bits of the pipeline's first epoch at seed 0.
    other = binarized_view(mnist_like, "bernoulli", grey_max=255, seed=1)
    assert 0.3 < np.mean(other.get_batch(np.arange(N))["image"] != bits) < 0.4  # ~1/3
    epoch0 = data.bernoulli_bits(grey, np.arange(N), seed=0, epoch=0, grey_max=255)
    assert not np.array_equal(epoch0, bits)


def test_bernoulli_follows_the_id_field_when_there_is_one(grey):
    ids = 1000 + 7 * np.arange(N)
    source = data.InMemorySource({"image": grey, "id": ids})
    order = np.random.default_rng(1).permutation(N)
    shuffled = data.InMemorySource({"image": grey[order], "id": ids[order]})
    bits = binarized_view(source, "bernoulli", grey_max=255).get_batch(np.arange(N))
    moved = binarized_view(shuffled, "bernoulli", grey_max=255).get_batch(np.arange(N))
    np.testing.assert_array_equal(moved["image"], bits["image"][order])


def test_threshold_is_exact():
    g255 = _grey(n=4)
    out = binarized_view(data.InMemorySource({"image": g255}), "threshold",
                               grey_max=255).get_batch(np.arange(4))
    np.testing.assert_array_equal(out["image"], (g255 >= 128).astype(np.uint8))
    assert out["image"].dtype == np.uint8
    # digits' 0..16 levels at grey_max=16: digits_binarized's threshold (>= 8).
    g16 = np.arange(17, dtype=np.uint8).reshape(1, 17, 1, 1)
    out = binarized_view(data.InMemorySource({"image": g16}), "threshold")[0]["image"]
    np.testing.assert_array_equal(out.ravel(), np.arange(17) >= 8)


def test_grey_field_is_read_and_other_fields_pass_through(grey):
    arrays = {"image": np.zeros_like(grey), "grey": grey, "label": np.arange(N) % 10,
              "id": np.arange(N) + 5, "x": np.ones((N, 3), np.float32)}
    source = data.InMemorySource(arrays)
    for mode in data.BINARIZE_MODES:
        out = binarized_view(source, mode, grey_max=255).get_batch(np.arange(N))
        assert list(out) == list(arrays)
        for k in ("grey", "label", "id", "x"):
            np.testing.assert_array_equal(out[k], arrays[k], err_msg=k)
            assert out[k].dtype == arrays[k].dtype
        assert out["image"].mean() > 0.4  # from `grey`, not the all-zero `image`


@pytest.mark.parametrize("mode", data.BINARIZE_MODES)
def test_eval_batches_and_sources_without_get_batch(mnist_like, mode):
    fixed = binarized_view(mnist_like, mode, grey_max=255)
    expected = fixed.get_batch(np.arange(N))
    plain = binarized_view(ListSource(mnist_like), mode, grey_max=255)
    assert not hasattr(plain, "arrays") and hasattr(fixed, "arrays")
    for source in (fixed, plain):
        batches = list(data.eval_batches(source, 48, process_index=0, process_count=1))
        mask = np.concatenate([b["example_mask"] for b in batches]) > 0
        assert mask.sum() == N
        for k in expected:
            np.testing.assert_array_equal(
                np.concatenate([b[k] for b in batches])[mask], expected[k], err_msg=k)
    assert len(plain) == len(fixed) == N
    np.testing.assert_array_equal(plain[N - 1]["image"], expected["image"][-1])
    # `arrays` (what pixel_baseline reads) is computed once, read-only, the same bits.
    np.testing.assert_array_equal(fixed.arrays["image"], expected["image"])
    np.testing.assert_array_equal(fixed.arrays["label"], expected["label"])
    assert fixed.arrays is fixed.arrays and not fixed.arrays["image"].flags.writeable


def test_bad_wrapper_arguments_are_one_line(mnist_like):
    for kwargs, message in [(dict(mode="bernouli"), "mode='bernouli' must be None, 'dynamic'"),
                            (dict(mode="threshold", grey_max=0), "grey_max=0 must be an int"),
                            (dict(mode="bernoulli", seed=-1), "seed must be non-negative")]:
        with pytest.raises(ValueError, match=message) as e:
            binarized_view(mnist_like, **kwargs)
        assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="needs a 'grey' or 'image' field"):
        binarized_view(data.InMemorySource({"x": np.zeros((3, 2))}), "threshold")[0]  # on read
    with pytest.raises(IndexError):
        binarized_view(mnist_like, "threshold")[N]


def test_pipeline_dynamic_binarization_at_255_without_grey_or_id(mnist_like, grey):
    pipeline = data.InputPipeline(
        mnist_like, global_batch_size=N, seed=3, process_index=0, process_count=1,
        preprocess=[{"name": "binarize", "mode": "dynamic", "grey_max": 255}])
    batches = [next(pipeline) for _ in range(4)]  # one batch per epoch: 4 epochs
    bits = np.stack([b["image"] for b in batches])
    levels = np.stack([grey[pipeline.permutation(e)] for e in range(4)])
    _assert_frequencies(bits, levels)
    assert not np.array_equal(bits[0], bits[1])
    # Without an `id` field, an example's bits follow its index in the source.
    perm = pipeline.permutation(2)
    np.testing.assert_array_equal(bits[2], data.bernoulli_bits(grey[perm], perm, seed=3,
                                                               epoch=2, grey_max=255))
    np.testing.assert_array_equal(batches[2]["label"], np.arange(N)[perm] % 10)


def _dvae_config():
    return load_config("experiments/dvae_estimators.py", "runlocal")


@pytest.mark.parametrize("key, value, message", [
    ("grey_max", 0, "config.dataset.grey_max=0 must be an int >= 1"),
    ("grey_max", "255", "config.dataset.grey_max='255' must be an int >= 1"),
    ("grey_max", True, "config.dataset.grey_max=True must be an int >= 1"),
    ("binarize_eval", "bernouli", "config.dataset.binarize_eval='bernouli' must be None, "
                                  "'bernoulli' or 'threshold'"),
    ("binarize_eval", True, "config.dataset.binarize_eval=True must be None"),
    ("binarise_eval", "threshold", "unknown key 'binarise_eval'; did you mean 'binarize_eval'"),
])
def test_config_check_rejects_bad_values_in_one_line(key, value, message):
    config = _dvae_config()
    # Untyped fields, as in a config built by hand (the experiment's typed placeholders
    # already refuse a str for grey_max at assignment: see the test below).
    ds = ml_collections.ConfigDict(config.dataset.to_dict())
    ds[key] = value
    with pytest.raises(ValueError) as e:
        data.check_config(ds)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_config_check_wraps_the_data_error_in_a_config_error():
    config = _dvae_config()
    config.dataset.preprocess = ["flop"]
    with pytest.raises(config_check.ConfigError) as e:
        config_check.validate(config)
    assert "config.dataset.preprocess[0]: unknown op 'flop'" in str(e.value)


def test_typed_placeholders_refuse_a_wrong_type_at_assignment():
    config = _dvae_config()
    with pytest.raises(TypeError, match="grey_max"):
        config.dataset.grey_max = "255"
    config.dataset.grey_max = 255  # and take the right one (a CLI override's path)
    assert config.dataset.grey_max == 255


@pytest.mark.parametrize("grey_max, mode", [(255, "bernoulli"), (16, "threshold"), (1, None),
                                            (255, ""), (None, "bernoulli")])
def test_config_check_accepts_good_values(grey_max, mode):
    config = _dvae_config()
    config.dataset.update(name="mnist", grey_max=grey_max, binarize_eval=mode)
    data.check_config(config.dataset)
