"""Metrics: the sample quality of generative techniques (`quality.py`: Frechet distance and KID on the features of
a chosen network, class accuracy of conditional samples, as the `SampleQuality` callback), its feature networks
(`features.py`), and the super-resolution metrics (`sr.py`)."""

from lightning_gen.metrics.features import (
    ClassifierFeatures,
    FeatureNetwork,
    InceptionFeatures,
    TFInceptionFeatures,
    metric_name,
    tf_inception_weights_default,
)
from lightning_gen.metrics.quality import (
    CACHE_ENV,
    SampleQuality,
    dataset_features,
    default_cache_dir,
    frechet_distance,
    kernel_distance,
    random_subset,
)

__all__ = [
    "CACHE_ENV",
    "ClassifierFeatures",
    "FeatureNetwork",
    "InceptionFeatures",
    "SampleQuality",
    "TFInceptionFeatures",
    "dataset_features",
    "default_cache_dir",
    "frechet_distance",
    "kernel_distance",
    "metric_name",
    "random_subset",
    "tf_inception_weights_default",
]
