"""The probe's undersampling is imbalanced-learn's RandomUnderSampler with the three caps."""

from __future__ import annotations

import numpy as np
import pytest
from imblearn.under_sampling import RandomUnderSampler

from dermbench.paradigms.probe.trainset import undersample


@pytest.mark.parametrize("kwargs,counts", [({"mode": "min_class"}, [12, 12]),
                                           ({"mode": "max_per_class", "max_per_class": 7}, [7, 7]),
                                           ({"mode": "max_per_class", "max_per_class": 20}, [20, 12]),
                                           ({"mode": "ratio", "ratio": 1.5}, [18, 12])])
def test_caps_are_those_of_the_mode_and_rows_are_imblearns(kwargs, counts):
    labels = np.array([0] * 40 + [1] * 12)
    kept = undersample(labels, seed=5, **kwargs)
    assert list(np.bincount(labels[kept])) == counts
    assert np.all(np.diff(kept) > 0)  # sorted, no repeats
    sampler = RandomUnderSampler(sampling_strategy={0: counts[0], 1: counts[1]}, random_state=5)
    sampler.fit_resample(np.zeros((len(labels), 1)), labels)
    assert list(kept) == sorted(sampler.sample_indices_)


def test_seeded():
    labels = np.array([0] * 40 + [1] * 12)
    assert list(undersample(labels, seed=1)) == list(undersample(labels, seed=1))
    assert list(undersample(labels, seed=1)) != list(undersample(labels, seed=2))


def test_bad_modes_are_errors():
    labels = np.array([0, 0, 1])
    with pytest.raises(ValueError, match="ratio"):
        undersample(labels, mode="ratio", ratio=0.5)
    with pytest.raises(ValueError, match="max_per_class"):
        undersample(labels, mode="max_per_class")
    with pytest.raises(ValueError, match="unknown undersampling mode"):
        undersample(labels, mode="tomek")
