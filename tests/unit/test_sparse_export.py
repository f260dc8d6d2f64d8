"""Training front end (TorchRec EBC over a KeyedJaggedTensor) versus the export
front end (nn.Embedding gathers over padded ids): same pooled embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchrec import EmbeddingBagCollection, KeyedJaggedTensor, PoolingType

from features.encoding import encode_padded
from features.spec import FeatureSpec, SparseFeature
from training.export import inference_model_from_checkpoint
from training.models import build_head, make_config
from training.sparse import CTRModel, InferenceModel, PaddedEmbedding, padded_to_kjt, table_name, table_width

SPEC = FeatureSpec(
    sparse=(
        SparseFeature("user_id", 40, "user"),
        SparseFeature("genres", 9, "item", max_len=4),
        SparseFeature("item_id", 30, "item"),
        SparseFeature("tags", 5, "item", max_len=2),
    )
)


def _padded(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random encoded rows; roughly a quarter of the multi-valued features are empty."""
    rng = np.random.default_rng(seed)
    columns: dict[str, list] = {}
    for f in SPEC.sparse:
        if f.multi_valued:
            columns[f.name] = [list(rng.integers(1, f.vocab_size, rng.integers(0, f.max_len + 1))) if rng.random() > 0.25 else []
                               for _ in range(n)]
        else:
            columns[f.name] = rng.integers(0, f.vocab_size, n)
    columns["genres"][0] = []  # at least one empty bag of each kind
    columns["tags"][1] = []
    columns["genres"][2] = [1, 2, 3, 4]  # and one full bag
    ids, mask = encode_padded(SPEC, columns)
    return torch.from_numpy(ids), torch.from_numpy(mask)


@pytest.mark.parametrize("head_dim,width", [(1, 4), (3, 4), (4, 4), (5, 8), (16, 16), (17, 20)])
def test_table_width_pads_to_multiple_of_four(head_dim: int, width: int) -> None:
    assert table_width(head_dim) == width
    assert table_width(head_dim) % 4 == 0 and table_width(head_dim) >= head_dim


def test_padded_to_kjt_round_trip() -> None:
    ids, mask = _padded(64)
    kjt = padded_to_kjt(SPEC, ids, mask)
    assert isinstance(kjt, KeyedJaggedTensor)
    assert kjt.keys() == SPEC.names
    assert kjt.stride() == 64
    jagged = kjt.to_dict()
    for f, (start, end) in SPEC.slot_ranges().items():
        jt = jagged[f]
        lengths = jt.lengths()
        assert lengths.dtype == torch.int64
        torch.testing.assert_close(lengths, mask[:, start:end].sum(dim=1).to(torch.int64))
        rows = jt.to_dense()
        for r in range(64):
            expected = ids[r, start:end][mask[r, start:end] > 0]
            torch.testing.assert_close(rows[r], expected)
    # single-valued features always have exactly one value, multi-valued ones include empty rows
    assert (jagged["user_id"].lengths() == 1).all()
    assert (jagged["genres"].lengths() == 0).any() and (jagged["tags"].lengths() == 0).any()
    assert jagged["genres"].lengths().max() == 4


def _ctr_model(name: str, embedding_dim: int, seed: int = 0) -> CTRModel:
    torch.manual_seed(seed)
    head = build_head(name, len(SPEC.sparse), embedding_dim, 0, make_config(name))
    model = CTRModel(SPEC, head)  # unsharded, on CPU
    with torch.no_grad():  # non-trivial tables (the default init is tiny)
        for p in model.ebc.parameters():
            p.normal_()
    return model.eval()


def test_ctr_model_configures_the_ebc() -> None:
    model = _ctr_model("deepfm", 6)
    assert isinstance(model.ebc, EmbeddingBagCollection)
    configs = {c.name: c for c in model.ebc.embedding_bag_configs()}
    assert set(configs) == {table_name(f.name) for f in SPEC.sparse}
    for f in SPEC.sparse:
        c = configs[table_name(f.name)]
        assert c.feature_names == [f.name]
        assert c.num_embeddings == f.vocab_size
        assert c.embedding_dim == table_width(6 + 1) == 8  # DeepFM reads d+1 columns, padded to 8
        assert c.pooling == (PoolingType.MEAN if f.multi_valued else PoolingType.SUM)


@pytest.mark.parametrize("dim", [4, 8])
def test_padded_embedding_equals_ebc(dim: int) -> None:
    model = _ctr_model("dcnv2", dim)
    weights = {table_name(f.name): model.ebc.embedding_bags[table_name(f.name)].weight.detach() for f in SPEC.sparse}
    padded = PaddedEmbedding.from_state(SPEC, weights)
    for f, table in zip(SPEC.sparse, padded.tables):
        assert torch.equal(table.weight, weights[table_name(f.name)])
    ids, mask = _padded(200, seed=dim)
    with torch.no_grad():
        pooled = model.ebc(padded_to_kjt(SPEC, ids, mask)).to_dict()
        expected = torch.stack([pooled[n] for n in SPEC.names], dim=1)
        got = padded(ids, mask)
    assert got.shape == (200, len(SPEC.sparse), dim)
    assert (got - expected).abs().max() <= 1e-6
    # empty multi-valued bags pool to zeros in both
    empty = mask[:, 1:5].sum(dim=1) == 0
    assert empty.any()
    assert (got[empty, 1] == 0).all()
    # a multi-valued bag is the mean of its rows (not the sum)
    r = 2
    torch.testing.assert_close(got[r, 1], weights["t_genres"][ids[r, 1:5]].mean(dim=0))


@pytest.mark.parametrize("name", ["lr", "deepfm", "dlf"])
def test_inference_model_from_unsharded_state_matches_ctr_model(name: str) -> None:
    model = _ctr_model(name, 6, seed=1)
    best = {"model": name, "hparams": {}, "embedding_dim": 6, "spec": SPEC.to_json(), "state_dict": model.state_dict()}
    inference = inference_model_from_checkpoint(best)
    assert isinstance(inference, InferenceModel) and not inference.training
    ids, mask = _padded(50, seed=3)
    with torch.no_grad():
        expected = torch.sigmoid(model(padded_to_kjt(SPEC, ids, mask), torch.zeros(50, 0)))
        got = inference(ids, mask)
    assert got.shape == (50, 1)
    assert (got[:, 0] - expected).abs().max() <= 1e-6
    # the prediction depends on the inputs
    assert got.std() > 0
