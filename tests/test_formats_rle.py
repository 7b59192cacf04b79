"""RLE wrapper: agrees with pycocotools on random masks of several dtypes and memory layouts; round-trips."""

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from data_pipelines.formats import rle
from data_pipelines.formats.errors import BadExampleError

pytestmark = pytest.mark.filterwarnings("ignore:.*__array__ implementation:DeprecationWarning")


def _random_masks():
    rng = np.random.default_rng(0)
    out = []
    for h, w in [(1, 1), (5, 7), (37, 53), (96, 128)]:
        base = rng.random((h, w)) < rng.uniform(0.05, 0.95)
        out += [
            ("bool_C", base),
            ("uint8_F", np.asfortranarray(base.astype(np.uint8))),
            ("uint8_0_255", base.astype(np.uint8) * 255),
            ("float32", base.astype(np.float32)),
            ("float64_F", np.asfortranarray(base.astype(np.float64))),
            ("int32_strided", np.repeat(base.astype(np.int32), 2, axis=1)[:, ::2]),
        ]
    out += [("all_zero", np.zeros((4, 6), bool)), ("all_one", np.ones((4, 6), np.uint8))]
    return out


@pytest.mark.parametrize("name,mask", _random_masks(), ids=[n for n, _ in _random_masks()])
def test_encode_matches_pycocotools_and_roundtrips(name, mask):
    enc = rle.encode(mask)
    ref = mask_utils.encode(np.asfortranarray(mask != 0, dtype=np.uint8))
    assert enc["size"] == [mask.shape[0], mask.shape[1]]
    assert isinstance(enc["counts"], str) and enc["counts"] == ref["counts"].decode("ascii")
    json.dumps(enc)  # JSON-ready
    dec = rle.decode(json.loads(json.dumps(enc)))
    assert dec.dtype == np.uint8 and dec.flags.c_contiguous
    np.testing.assert_array_equal(dec, (mask != 0).astype(np.uint8))
    assert rle.area(enc) == int((mask != 0).sum())


def test_decode_accepts_bytes_and_uncompressed_counts():
    m = np.zeros((3, 4), np.uint8)
    m[1, 1:3] = 1
    enc = rle.encode(m)
    np.testing.assert_array_equal(rle.decode({"size": enc["size"], "counts": enc["counts"].encode()}), m)
    # column-major runs: 4 zeros (col 0, row 0 of col 1), 1 one, ... built from the Fortran-flattened mask
    flat = m.flatten(order="F")
    runs, cur, n = [], 0, 0
    for v in flat:
        if v != cur:
            runs.append(n)
            cur, n = v, 0
        n += 1
    runs.append(n)
    np.testing.assert_array_equal(rle.decode({"size": [3, 4], "counts": runs}), m)


def test_encode_rejects_non_2d():
    with pytest.raises(ValueError):
        rle.encode(np.zeros((2, 2, 2)))


@pytest.mark.parametrize(
    "bad,needle",
    [
        ({"size": [5, 7], "counts": "!!!"}, "invalid RLE"),
        ({"size": [5, 7], "counts": "0"}, "truncated"),
        ({"size": [5, 7]}, "missing key 'counts'"),
        ({"size": [5], "counts": "0"}, "size"),
        ({"size": [2, 2], "counts": [1, 2]}, "sum"),
        ("not a dict", "must be a dict"),
    ],
)
def test_bad_rle_names_problem(bad, needle):
    with pytest.raises(BadExampleError, match=needle) as exc:
        rle.decode(bad, where="mask_dict.json:7[3]")
    assert "mask_dict.json:7[3]" in str(exc.value) and exc.value.reason == "bad_rle"
