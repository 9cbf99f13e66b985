"""Late joiners: the jump-start picks the most similar ticket (or the global model) and the run carries them."""

from __future__ import annotations

import numpy as np
import pytest

from privagg.errors import ConfigurationError
from privagg.randomness import torch_generator
from protocols.models import build_model, get_flat_params
from protocols.personalization import (
    PersonalizationOptions,
    Ticket,
    client_splits,
    compare_personalization,
    jump_start,
    run_fedltn,
)
from protocols.training import TrainConfig, train_local
from tests.protocols.personalization.task import shards_task

RC = shards_task(5)


@pytest.fixture(scope="module")
def clients():  # type: ignore[no-untyped-def]
    return client_splits(RC)


def _model():  # type: ignore[no-untyped-def]
    return build_model("mlp", (1, 8, 8), 10, generator=torch_generator(0, "js"), hidden=(16,))


def test_jump_start_takes_the_ticket_trained_on_the_newcomers_classes(clients) -> None:  # type: ignore[no-untyped-def]
    """A ticket trained on the newcomer's own data beats one trained on other classes and the untrained global."""
    newcomer = clients[0]
    other = next(c for c in clients[1:] if not set(np.unique(c.y_train)) & set(np.unique(newcomer.y_train)))
    tickets = []
    for cid, data in ((7, other), (3, newcomer)):
        m = _model()
        train_local(m, data.x_train, data.y_train, TrainConfig(epochs=3, lr=0.1), generator=torch_generator(1, cid))
        w = get_flat_params(m)
        mask = np.abs(w) >= np.quantile(np.abs(w), 0.5)  # any sparse mask
        tickets.append(Ticket(cid, mask, w * mask))
    model = _model()
    init = get_flat_params(model)
    shared = np.ones(len(init), dtype=bool)
    js = jump_start(
        model, newcomer.x_train, newcomer.y_train, client=9, candidates=tickets, global_w=init, shared=shared
    )
    assert js.source == 3
    assert set(js.scores) == {None, 3, 7}
    assert js.scores[3][0] > max(js.scores[7][0], js.scores[None][0])
    np.testing.assert_array_equal(js.mask, tickets[1].mask)
    np.testing.assert_allclose(get_flat_params(model), tickets[1].weights)  # loaded into the newcomer's model
    # rule="global": dense mask on the global model, candidates ignored
    g = jump_start(
        _model(),
        newcomer.x_train,
        newcomer.y_train,
        client=9,
        candidates=tickets,
        global_w=init,
        shared=shared,
        rule="global",
    )
    assert g.source is None and g.mask.all() and set(g.scores) == {None}
    with pytest.raises(ConfigurationError, match="jump_start"):
        jump_start(
            _model(),
            newcomer.x_train,
            newcomer.y_train,
            client=9,
            candidates=(),
            global_w=init,
            shared=shared,
            rule="best",
        )  # type: ignore[arg-type]


def test_late_clients_join_with_a_jump_start(clients) -> None:  # type: ignore[no-untyped-def]
    opts = PersonalizationOptions(
        name="fedltn",
        rounds=4,
        late_clients=1,
        join_round=2,
        prune_rate=0.5,
        target_sparsity=0.75,
        acc_threshold=0.0,
    )
    r = run_fedltn(RC, opts, clients=clients)
    late = len(clients) - 1
    for x in r.rounds[:2]:  # absent before joining: no accuracy, no upload
        assert np.isnan(x.accuracies[late]) and x.upload_bytes[late] == 0
        assert x.mean_accuracy == pytest.approx(np.mean(x.accuracies[:late]))
    assert all(not np.isnan(x.accuracies[late]) and x.upload_bytes[late] > 0 for x in r.rounds[2:])
    (js,) = r.joins
    assert js.client == late and js.source in {None, 0, 1, 2, 3}
    if js.source is not None:  # started from a pruned ticket: sparse from its first round
        assert r.rounds[2].nonzeros[late] < r.num_params
    assert np.isfinite(r.client_accuracies).all()
    with pytest.raises(ConfigurationError, match="join_round"):
        PersonalizationOptions(late_clients=1, join_round=4, rounds=4)
    with pytest.raises(ConfigurationError, match="late_clients"):
        run_fedltn(RC, PersonalizationOptions(late_clients=5, join_round=1, rounds=2), clients=clients)


def test_comparison_rows_and_fine_tuning_curve(clients) -> None:  # type: ignore[no-untyped-def]
    opts = PersonalizationOptions(name="fedltn", rounds=2, fine_tune_epochs=3, acc_threshold=0.0)
    comp = compare_personalization(RC, opts, clients=clients)
    assert comp.fedavg is not None and comp.fedavg.fine_tuned_curve is not None
    assert comp.fedavg.fine_tuned_curve.shape == (3, 5)
    np.testing.assert_array_equal(comp.fedavg.fine_tuned_accuracies, comp.fedavg.fine_tuned_curve[-1])
    best = comp.fedavg.best_fine_tuned()
    assert best is not None and best.mean() == comp.fedavg.fine_tuned_curve.mean(axis=1).max()
    rows = comp.rows()
    assert [r.client for r in rows] == list(range(5))
    assert all(len(r.classes) == 2 for r in rows)
    assert sum(r.upload_bytes for r in rows) == comp.result.total_upload_bytes
    assert [r.accuracy for r in rows] == [float(a) for a in comp.result.client_accuracies]
    assert [r.fedavg_accuracy for r in rows] == [float(a) for a in comp.fedavg.client_accuracies]
    assert sum(r.train_size + r.test_size for r in rows) == 1797
