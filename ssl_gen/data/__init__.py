"""Data: the embedded datasets as TF-free tfds builders, datasets by name, the input pipeline.

```python
from ssl_gen import data
data.check_dataset("digits", "train")               # one-line error if unreadable; cheap
source = data.get_source("digits", "train")         # builds once into the tfds data dir
spec = data.dataset_info("digits")                  # shapes, num_classes, grey_levels
pipeline = data.InputPipeline(source, global_batch_size=128, seed=0)
state = pipeline.get_state()                        # {"epoch": 0, "batch_in_epoch": 0}
batch = data.make_global_batch(next(pipeline), batch_sharding)
batch, state = next(data.DevicePrefetcher(pipeline, batch_sharding))  # built ahead, in a thread
for eval_batch in data.eval_batches(data.get_source("digits", "test"), 128):
    ...                                             # eval_batch["mask"] marks padding
fixed = data.BinarizedSource(source, "bernoulli", grey_max=16)  # image: one fixed sample
```

Embedded datasets (`EMBEDDED_DATASETS`; no network, no TensorFlow): `digits`,
`digits_binarized`, `mnist1d`, `photo_patches` (see `ssl_gen.data.builders`). Any other tfds
dataset is read if it is prepared (array_record) in the data dir; nothing is downloaded.

Modules: `builders` (the tfds builders and the arrays they are made from), `sources`
(lookup by name, `InMemorySource`, `DatasetSpec`), `pipeline` (batches, resumable state, the fixed
binarization `BinarizedSource`).
"""

from ssl_gen.data.pipeline import (
    BINARIZE_MODES,
    BinarizedSource,
    InputPipeline,
    bernoulli_bits,
    eval_batches,
    gather,
    make_global_batch,
)
from ssl_gen.data.prefetch import DevicePrefetcher
from ssl_gen.data.sources import (
    EMBEDDED_DATASETS,
    DatasetNotFoundError,
    DatasetSpec,
    InMemorySource,
    check_dataset,
    dataset_info,
    get_source,
    prepare_embedded,
)

__all__ = [
    "BINARIZE_MODES",
    "BinarizedSource",
    "DevicePrefetcher",
    "EMBEDDED_DATASETS",
    "DatasetNotFoundError",
    "DatasetSpec",
    "InMemorySource",
    "InputPipeline",
    "bernoulli_bits",
    "check_dataset",
    "dataset_info",
    "eval_batches",
    "gather",
    "get_source",
    "make_global_batch",
    "prepare_embedded",
]
