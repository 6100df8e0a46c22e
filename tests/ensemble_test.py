"""Ensembles: the vmapped step equals running each member's step alone."""

import chex
import jax.numpy as jnp
import numpy as np

from core import ensemble, train as train_lib

from tests.tests_support import TinyClassifier, classification_loss, classification_batch  # noqa: F401


def test_vmapped_ensemble_step_equals_members_trained_alone():
    optimizer = train_lib.make_optimizer(train_lib.optim_config(learning_rate=1e-2, warmup_steps=1, total_steps=5))
    graphdef, states = ensemble.init_ensemble(lambda rngs: TinyClassifier(rngs), optimizer, num_members=3)
    step = ensemble.make_ensemble_step(graphdef, classification_loss, optimizer, jnp.float32)
    single = train_lib.make_train_step(graphdef, classification_loss, optimizer, jnp.float32, donate=False)
    alone = [ensemble.member(states, i) for i in range(3)]
    for i in range(3):
        batch = classification_batch(i)
        states, metrics = step(states, batch)
        alone = [single(s, batch)[0] for s in alone]
    assert metrics["loss"].shape == (3,)
    for i in range(3):
        chex.assert_trees_all_close(ensemble.member(states, i).params, alone[i].params, atol=1e-5)
    # Members start differently, so they must differ after training too.
    w = states.params["dense"]["kernel"].get_value()
    assert not np.allclose(w[0], w[1])
    log_p = ensemble.ensemble_log_probs(graphdef, states, lambda m, x: m(x), classification_batch(9)["x"])
    np.testing.assert_allclose(jnp.exp(log_p).sum(-1), 1.0, rtol=1e-5)
