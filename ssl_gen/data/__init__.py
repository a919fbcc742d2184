"""Data: the embedded datasets as TF-free tfds builders, datasets by name, the grain pipeline.

```python
from ssl_gen import data
data.check_config(config.dataset)                   # one-line ValueError; reads nothing
inputs = data.build_inputs(config.dataset, batch_size=128, seed=0)  # what a run reads
batch = next(inputs.pipeline)                       # this host's part of a training batch
state = inputs.pipeline.get_state()                 # {"next_batch": 1}: into the checkpoint
batch = data.make_global_batch(batch, batch_sharding)
batch, state = next(data.DevicePrefetcher(inputs.pipeline, batch_sharding))  # ahead, a thread
for eval_batch in data.eval_batches(inputs.eval_source, 120):
    ...                                             # eval_batch["example_mask"]: 0 = padding

source = data.get_source("digits", "train")         # builds once into the tfds data dir
spec = data.dataset_info("digits")                  # shapes, num_classes, grey_levels
pipeline = data.InputPipeline(source, global_batch_size=128, seed=0, num_workers=2,
                              preprocess=["flip", {"name": "normalize", "scale": 1 / 16}])
fixed = data.PreprocessedSource(source, [{"name": "binarize", "mode": "bernoulli"}])
```

`config.dataset.preprocess` is a list of named ops (`ssl_gen.data.preprocess`: normalize,
binarize fixed or dynamic, random_resized_crop, flip, color_jitter, grayscale, views), pure
and deterministic given (seed, epoch, example); evaluations read their deterministic forms.

Embedded datasets (`EMBEDDED_DATASETS`; no network, no TensorFlow): `digits`,
`digits_binarized`, `mnist1d`, `photo_patches`, `labelled_photos` (see
`ssl_gen.data.builders`). Any other tfds dataset is read if it is prepared (array_record) in
the data dir; nothing is downloaded.

Modules: `builders` (the tfds builders and the arrays they are made from), `sources`
(lookup by name, `InMemorySource`, `DatasetSpec`), `preprocess` (the ops and their keyed
randomness), `pipeline` (the grain pipeline, `eval_batches`, `PreprocessedSource`),
`prefetch` (device prefetch), `inputs` (`config.dataset` -> `Inputs`).
"""

from ssl_gen.data.inputs import Inputs, build_inputs, check_config
from ssl_gen.data.pipeline import (
    BinarizedSource,
    InputPipeline,
    PreprocessedSource,
    eval_batches,
    gather,
    make_global_batch,
)
from ssl_gen.data.prefetch import DevicePrefetcher
from ssl_gen.data.preprocess import BINARIZE_MODES, FIXED_EPOCH, bernoulli_bits
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
    "FIXED_EPOCH",
    "DatasetNotFoundError",
    "DatasetSpec",
    "InMemorySource",
    "InputPipeline",
    "Inputs",
    "PreprocessedSource",
    "bernoulli_bits",
    "build_inputs",
    "check_config",
    "check_dataset",
    "dataset_info",
    "eval_batches",
    "gather",
    "get_source",
    "make_global_batch",
    "prepare_embedded",
]
