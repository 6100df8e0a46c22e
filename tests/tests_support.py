"""Small models, batches and exactness checks shared by the tests."""

import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from scipy import stats


class TinyClassifier(nnx.Module):
    def __init__(self, rngs: nnx.Rngs, features: int = 6, classes: int = 3):
        self.dense = nnx.Linear(features, classes, rngs=rngs)

    def __call__(self, x):
        return self.dense(x)


def classification_loss(model, batch, rng):
    del rng
    logits = model(batch["x"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean(), {}


def classification_batch(step: int, batch_size: int = 8):
    rng = np.random.default_rng(step)
    x = rng.normal(size=(batch_size, 6)).astype(np.float32)
    return {"x": jnp.asarray(x), "y": jnp.asarray((x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 1))}


def exact_joint(model, prompt, config, lm) -> np.ndarray:
    """The exact law of the next three tokens after `prompt` under `lm`'s model and `config`'s sampling
    settings (temperature, top_k, top_p), flattened to [vocab**3] in float64."""
    from papers.ssd import sampling

    vocab = model.config.vocab_size
    probs = lambda seq: np.asarray(sampling.sampling_probs(
        jnp.asarray(lm.next_logits(model, np.asarray(seq))), config.temperature, config.top_k,
        config.top_p), np.float64)
    joint = np.zeros((vocab,) * 3)
    p1 = probs(prompt)
    for a in range(vocab):
        p2 = probs(prompt + (a,))
        for b in range(vocab):
            joint[a, b] = p1[a] * p2[b] * probs(prompt + (a, b))
    return (joint / joint.sum()).reshape(-1)


def joint_g_test(tokens: np.ndarray, joint: np.ndarray, vocab: int) -> tuple[float, float]:
    """(p-value, G) of the observed 3-token sequences against `joint`; cells expected < 5 are pooled. A
    sequence the law gives probability 0 returns p = 0."""
    observed = np.bincount(tokens @ np.array([vocab**2, vocab, 1]), minlength=vocab**3).astype(float)
    if observed[joint == 0].sum():
        return 0.0, np.inf
    expected = joint * len(tokens)
    big = expected >= 5
    obs, exp = np.append(observed[big], observed[~big].sum()), np.append(expected[big], expected[~big].sum())
    keep = exp > 0
    g, pvalue = stats.power_divergence(obs[keep], exp[keep] * obs[keep].sum() / exp[keep].sum(),
                                       lambda_="log-likelihood")
    return float(pvalue), float(g)
