"""The grain input pipeline: the documented stream, resumption, multi-host slicing, workers,
preprocessing keyed by example, eval batches.

Runs on a synthetic in-memory source (no tfds build), so it is fast; `test_sources.py`
runs the pipeline on the real digits.
"""

import json

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ssl_gen import data

N = 103  # prime: no batch size divides it


@pytest.fixture(scope="module")
def source():
    rng = np.random.default_rng(123)
    grey = rng.integers(0, 17, size=(N, 8, 8, 1)).astype(np.uint8)
    return data.InMemorySource({
        "image": (grey >= 8).astype(np.uint8),
        "grey": grey,
        "label": rng.integers(0, 10, size=N),
        "id": 1000 + 7 * np.arange(N),  # ids are not positions
    })


def _pipeline(source, **kwargs):
    kwargs = {"global_batch_size": 16, "seed": 3, "process_index": 0, "process_count": 1,
              **kwargs}
    return data.InputPipeline(source, **kwargs)


def _take(pipeline, n):
    return [next(pipeline) for _ in range(n)]


def _assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


DYNAMIC = [{"name": "binarize", "mode": "dynamic"}]
AUGMENT = [{"name": "normalize", "scale": 1 / 16}, {"name": "random_resized_crop", "size": 6},
           "flip", {"name": "color_jitter", "hue": 0.05}]


def test_batches_follow_the_documented_stream(source):
    pipeline = _pipeline(source)
    stream = np.concatenate([np.random.default_rng([3, e]).permutation(N) for e in range(3)])
    for b in range(3 * N // 16):  # batches straddle the epoch boundaries; nothing is dropped
        np.testing.assert_array_equal(next(pipeline)["id"],
                                      1000 + 7 * stream[b * 16:(b + 1) * 16])
    np.testing.assert_array_equal(pipeline.permutation(2), np.random.default_rng([3, 2])
                                  .permutation(N))


def test_deterministic_and_epochs_reshuffle(source):
    first, second = _take(_pipeline(source), 18), _take(_pipeline(source), 18)
    _assert_batches_equal(first, second)
    ids = np.concatenate([b["id"] for b in first])
    epoch0, epoch1 = ids[:N], ids[N:2 * N]
    assert len(set(epoch0)) == N and len(set(epoch1)) == N  # each example once per epoch
    assert not np.array_equal(epoch0, epoch1)
    other_seed = np.concatenate([b["id"] for b in _take(_pipeline(source, seed=4), 6)])
    assert not np.array_equal(ids[:96], other_seed)


def test_no_shuffle_is_source_order(source):
    batch = next(_pipeline(source, shuffle=False))
    np.testing.assert_array_equal(batch["id"], source.arrays["id"][:16])


def test_a_batch_larger_than_the_source_holds_several_epochs(source):
    batch = next(_pipeline(source, global_batch_size=2 * N + 2))
    np.testing.assert_array_equal(np.sort(batch["id"][:N]), np.sort(source.arrays["id"]))
    np.testing.assert_array_equal(np.sort(batch["id"][N:2 * N]), np.sort(source.arrays["id"]))


def test_preprocess_keys_follow_the_example_not_the_batch(source):
    batches = _take(_pipeline(source, preprocess=DYNAMIC), 14)  # two epochs and a bit
    for b, batch in enumerate(batches):
        q = b * 16 + np.arange(16)
        np.testing.assert_array_equal(batch["image"], data.bernoulli_bits(
            batch["grey"], batch["id"], seed=3, epoch=q // N), err_msg=str(b))


@pytest.mark.parametrize("ops", [[], DYNAMIC, AUGMENT], ids=["none", "dynamic", "augment"])
@pytest.mark.parametrize("stop_after", [0, 4, 6, 13])
def test_resumed_pipeline_continues_exactly(source, ops, stop_after):
    uninterrupted = _pipeline(source, preprocess=ops)
    expected = _take(uninterrupted, stop_after + 10)[stop_after:]
    original = _pipeline(source, preprocess=ops)
    _take(original, stop_after)
    state = json.loads(json.dumps(original.get_state()))
    assert state == {"next_batch": stop_after}
    restored = _pipeline(source, preprocess=ops)
    restored.set_state(state)
    _assert_batches_equal(_take(restored, 10), expected)
    _assert_batches_equal(_take(original, 10), expected)
    # Random access: the grain dataset's batch b is the iterator's b-th batch.
    _assert_batches_equal([restored.dataset[stop_after + 3]], expected[3:4])


@pytest.mark.parametrize("kwargs", [{}, {"preprocess": DYNAMIC}, {"preprocess": AUGMENT},
                                    {"shuffle": False}], ids=["plain", "dynamic", "augment",
                                                              "no_shuffle"])
def test_two_hosts_together_make_the_single_host_batch(source, kwargs):
    single = _take(_pipeline(source, **kwargs), 15)
    hosts = [_take(_pipeline(source, process_index=p, process_count=2, **kwargs), 15)
             for p in range(2)]
    assert hosts[0][0]["id"].shape == (8,)
    merged = [{k: np.concatenate([h0[k], h1[k]]) for k in h0}
              for h0, h1 in zip(*hosts, strict=True)]
    _assert_batches_equal(merged, single)


def test_dynamic_binarization_deterministic_with_the_right_mean(source):
    pipeline = _pipeline(source, preprocess=DYNAMIC, global_batch_size=N)
    batches = _take(pipeline, 200)  # one batch per epoch: every example, in a new order
    bits = np.stack([b["image"][np.argsort(b["id"])] for b in batches]).astype(np.float64)
    grey = batches[0]["grey"][np.argsort(batches[0]["id"])]
    assert set(np.unique(bits)) == {0.0, 1.0}
    # Different epochs, different bits; the fixed threshold is not what is returned.
    assert not np.array_equal(bits[0], bits[1])
    # Per-level frequencies over all epochs and examples match grey / 16.
    mean_by_level = [bits[:, grey == level].mean() for level in range(17)]
    np.testing.assert_allclose(mean_by_level, np.arange(17) / 16, atol=0.01)
    assert mean_by_level[0] == 0 and mean_by_level[16] == 1
    # A pure function of (seed, epoch, id): the same example gets the same bits anywhere.
    again = data.bernoulli_bits(batches[5]["grey"][::-1], batches[5]["id"][::-1], seed=3,
                                epoch=5)
    np.testing.assert_array_equal(again[::-1], batches[5]["image"])


@pytest.mark.slow  # spawns grain workers: ~10-30 s on 2 busy cores (spawn, imports)
def test_workers_give_the_same_batches_from_a_resumed_position(source):
    want = _take(_pipeline(source, preprocess=AUGMENT), 12)[5:]
    pipeline = _pipeline(source, preprocess=AUGMENT, num_workers=2)
    pipeline.set_state({"next_batch": 5})  # before the first batch: the workers start once
    try:
        _assert_batches_equal(_take(pipeline, 7), want)
        assert pipeline.get_state() == {"next_batch": 12}
    finally:
        pipeline.close()


@pytest.mark.parametrize("process_count", [1, 2])
def test_eval_batches_cover_every_example_once(source, process_count):
    per_host = [list(data.eval_batches(source, 32, process_index=p, process_count=process_count))
                for p in range(process_count)]
    assert all(len(h) == 4 for h in per_host)
    ids, mask = [], []
    for step in range(4):
        for host in per_host:
            assert host[step]["id"].shape == (32 // process_count,)
            ids.append(host[step]["id"])
            mask.append(host[step]["example_mask"])
    ids, mask = np.concatenate(ids), np.concatenate(mask)
    assert mask.dtype == np.float32 and mask.sum() == N
    np.testing.assert_array_equal(ids[mask == 1], source.arrays["id"])  # in order
    assert np.all(mask[:N] == 1) and np.all(mask[N:] == 0)


def _one_line_value_error(match, fn):
    with pytest.raises(ValueError, match=match) as err:
        fn()
    assert "\n" not in str(err.value)


def test_bad_batch_sizes_and_states_are_one_line_errors(source):
    _one_line_value_error("multiple of the process count 3",
                          lambda: _pipeline(source, process_count=3, global_batch_size=16))
    _one_line_value_error("multiple of the process count",
                          lambda: next(data.eval_batches(source, 5, process_index=0,
                                                         process_count=2)))
    _one_line_value_error("pre-grain pipeline", lambda: _pipeline(source).set_state(
        {"epoch": 0, "batch_in_epoch": 3}))
    _one_line_value_error("invalid pipeline state",
                          lambda: _pipeline(source).set_state({"next_batch": -1}))
    _one_line_value_error("process_index 2",
                          lambda: _pipeline(source, process_index=2, process_count=2))
    _one_line_value_error("unknown op 'flop'", lambda: _pipeline(source, preprocess=["flop"]))


def test_gather_from_sources_without_get_batch(source):
    records = [source[i] for i in range(N)]  # a plain list: source[i] only

    class WithGetitems:
        def __len__(self):
            return N

        def __getitem__(self, i):
            raise AssertionError("should use __getitems__")

        def __getitems__(self, indices):
            return [records[i] for i in indices]

    expected = _take(_pipeline(source), 8)
    _assert_batches_equal(_take(_pipeline(records), 8), expected)
    _assert_batches_equal(_take(_pipeline(WithGetitems()), 8), expected)


def test_make_global_batch_on_the_device_mesh(source, devices):
    mesh = Mesh(np.array(devices), ("data",))
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    local = next(_pipeline(source))
    batch = data.make_global_batch(local, sharding)
    for k, v in local.items():
        assert isinstance(batch[k], jax.Array) and batch[k].sharding == sharding
        assert len(batch[k].addressable_shards) == 8
        np.testing.assert_array_equal(np.asarray(batch[k]), v)
    per_field = data.make_global_batch(local, {k: sharding for k in local})
    np.testing.assert_array_equal(np.asarray(per_field["grey"]), local["grey"])
    only_image = data.make_global_batch(local, sharding, keys=["image"])
    assert list(only_image) == ["image"]
    np.testing.assert_array_equal(np.asarray(only_image["image"]), local["image"])
