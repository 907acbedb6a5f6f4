"""RevIN round-trips and uses the look-back only."""

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax.models.revin import revin_denormalize, revin_init, revin_normalize


def test_revin_round_trips_and_depends_on_the_window_only():
    xs = jax.random.normal(jax.random.key(0), (4, 12, 3)) * 5.0 + 2.0
    params = revin_init(3)._replace(weight=jnp.array([1.5, 0.5, 2.0]), bias=jnp.array([0.1, -0.2, 0.0]))
    normalized, stats = revin_normalize(params, xs)
    np.testing.assert_allclose(revin_denormalize(params, stats, normalized), xs, rtol=1e-4, atol=1e-4)
    plain, _ = revin_normalize(revin_init(3), xs)
    np.testing.assert_allclose(plain.mean(axis=1), 0.0, atol=1e-5)
    np.testing.assert_allclose(plain.std(axis=1), 1.0, atol=1e-3)
