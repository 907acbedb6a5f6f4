"""Value checks of `rnnjax._checks`: concrete values raise a ValueError naming the first offending value, its index
and the valid range; traced values are checked by checkify (free without it); `raise_if_failed` raises from inside
a jitted function, and only when a check failed."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

from rnnjax import _checks


def test_concrete_values_raise_naming_the_value_its_index_and_the_range():
    with pytest.raises(ValueError, match=r"^tokens must lie in \[0, 5\) \(vocab_size 5\), got 7 at index \(1, 0\) "
                                         r"\(2 of 4 out of range; min -1, max 7\)$"):
        _checks.check_index_range("tokens", np.array([[0, 4], [7, -1]]), 5, what="vocab_size 5")
    with pytest.raises(ValueError, match=r"^n must lie in \[0, 3\], got -2$"):
        _checks.check_value_range("n", np.int32(-2), 0, 3)
    ids = jnp.array([0, 4, 2])
    assert _checks.check_index_range("tokens", ids, 5) is ids  # in range: returned unchanged
    with pytest.raises(TypeError, match="tokens must be an integer array, got float32"):
        _checks.check_index_range("tokens", jnp.ones(3), 5)


def test_only_valid_entries_are_checked():
    labels = np.array([1, -100, 2])  # -100 is PyTorch's ignore index, at a masked position
    _checks.check_index_range("labels", labels, 3, valid=np.array([True, False, True]))
    with pytest.raises(ValueError, match=r"got -100 at index \(1,\) \(1 of 2 out of range; min -100, max 1\)"):
        _checks.check_index_range("labels", labels, 3, valid=np.array([True, True, False]))


def test_narrow_and_unsigned_dtypes_compare_without_overflow():
    _checks.check_index_range("ids", np.array([0, 255], np.uint8), 300)  # 300 does not fit in uint8
    with pytest.raises(ValueError, match="got 200"):
        _checks.check_index_range("ids", np.array([0, 200], np.uint8), 100)


def test_traced_values_are_checked_by_checkify_and_free_without_it():
    def embed(ids):
        return jnp.take(jnp.eye(5), _checks.check_index_range("tokens", ids, 5, what="vocab_size 5"), axis=0)

    bad = jnp.array([[1, 2], [9, 0]])
    assert jax.jit(embed)(bad).shape == (2, 2, 5)  # a plain jit: no check, no error (documented)
    error, _ = jax.jit(checkify.checkify(embed))(bad)
    assert error.get() == ("tokens must lie in [0, 5) (vocab_size 5), got 9 at flat index 2 of shape (2, 2) "
                           "(`check` failed)")
    error, _ = jax.jit(checkify.checkify(embed))(jnp.array([[1, 2], [4, 0]]))
    assert error.get() is None
    error, _ = jax.jit(checkify.checkify(jax.vmap(embed)))(bad)  # under vmap: the offending example's row
    assert error.get().startswith("tokens must lie in [0, 5) (vocab_size 5), got 9 at flat index 0 of shape (2,)")


def test_raise_if_failed_raises_from_inside_jit_only_on_failure():
    checked = checkify.checkify(lambda n: _checks.check_value_range("lengths", n, 0, 4, what="the time axis") * 2)

    @jax.jit
    def run(n):
        error, out = checked(n)
        _checks.raise_if_failed(error)
        return out

    np.testing.assert_array_equal(run(jnp.array([0, 4])), [0, 8])
    with pytest.raises(jax.errors.JaxRuntimeError,
                       match=r"InvalidInputError: lengths must lie in \[0, 4\] \(the time axis\), got 5"):
        jax.block_until_ready(run(jnp.array([0, 5])))
    error, _ = jax.jit(checked)(jnp.array([5]))  # a concrete Error, outside any trace: checkify's own throw
    with pytest.raises(checkify.JaxRuntimeError, match="got 5"):
        _checks.raise_if_failed(error)


def test_under_vmap_the_host_is_called_only_when_an_example_failed(monkeypatch):
    calls = []
    raise_failed_check = _checks._raise_failed_check
    monkeypatch.setattr(_checks, "_raise_failed_check", lambda error: calls.append(1) or raise_failed_check(error))
    checked = checkify.checkify(lambda n: _checks.check_value_range("lengths", n, 0, 4) + 1)

    def step(n):
        error, out = checked(n)
        _checks.raise_if_failed(error)
        return out

    run = jax.jit(jax.vmap(lambda n: jax.lax.scan(lambda n, _: (step(n), None), n, length=3)[0]))
    np.testing.assert_array_equal(run(jnp.array([0, 1])), [3, 4])
    assert calls == []  # a batched cond would have become a select calling the host every step
    with pytest.raises(jax.errors.JaxRuntimeError, match=r"at mapped index 1: lengths must lie in \[0, 4\], got 5"):
        jax.block_until_ready(run(jnp.array([0, 3])))  # the second example reaches 5 at its third step
    assert calls == [1]


def test_the_error_a_failed_check_raises_is_public_under_the_name_its_message_shows():
    import rnnjax

    assert rnnjax.InvalidInputError is _checks.InvalidInputError and issubclass(rnnjax.InvalidInputError, ValueError)
    error, _ = jax.jit(checkify.checkify(lambda n: _checks.check_value_range("lengths", n, 0, 4)))(jnp.array([5]))
    with pytest.raises(rnnjax.InvalidInputError, match="lengths must lie in"):
        _checks._raise_failed_check(error)  # what the host callback runs inside a jitted step
