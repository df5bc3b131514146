"""state_dict / load_state_dict: readable keys, bit-for-bit resume via .npz and orbax, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import random_problem

import gradtx


def _params():
    params, grad = random_problem(0, dtype=np.float32)
    return jax.tree_util.tree_map(jnp.asarray, params), grad


def _make():
    """A composite optimizer with counters, moments in two dtypes, wrappers and a schedule."""
    return gradtx.named_chain(
        ("clip", gradtx.clip_by_global_norm(1.0)),
        ("monitor", gradtx.monitor_norms()),
        (
            "adamw",
            gradtx.apply_if_finite(
                gradtx.adamw(lambda t: 0.05 / (1.0 + 0.1 * t), mu_dtype=jnp.bfloat16), 3
            ),
        ),
        ("avg", gradtx.param_ema(gradtx.identity(), 0.9)),
    )


def _train(opt, params, state, grad, steps, start=0):
    update = jax.jit(opt.update)
    for t in range(start, start + steps):
        g = jax.tree_util.tree_map(jnp.asarray, grad(jax.tree_util.tree_map(np.asarray, params), t))
        if t == 1:
            g = jax.tree_util.tree_map(lambda x: x * jnp.nan, g)  # one skipped step
        u, state = update(g, state, params)
        params = gradtx.apply_updates(params, u)
    return params, state


def _identical(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb, strict=True):
        assert np.asarray(x).dtype == np.asarray(y).dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_keys_are_readable_paths():
    params, _ = _params()
    keys = sorted(gradtx.state_dict(gradtx.adam(0.1).init(params)))
    assert keys == [
        "0/count",
        "0/mu/dense/b",
        "0/mu/dense/w",
        "0/mu/scale",
        "0/nu/dense/b",
        "0/nu/dense/w",
        "0/nu/scale",
    ]
    state = _make().init(params)
    keys = gradtx.state_dict(state)
    assert "adamw/inner_state/0/mu/dense/w" in keys
    assert "adamw/notfinite_count" in keys and "monitor/grad_norm" in keys
    assert "avg/averaged_params/dense/w" in keys
    assert not any(k.startswith("clip") for k in keys)  # stateless: no keys


def test_resume_from_npz_is_bit_for_bit_identical(tmp_path):
    params, grad = _params()
    opt = _make()
    p_full, s_full = _train(opt, params, opt.init(params), grad, 8)

    p_half, s_half = _train(opt, params, opt.init(params), grad, 4)
    path = tmp_path / "ckpt.npz"
    to_np = lambda d: {k: np.asarray(v) for k, v in d.items()}
    np.savez(
        path,
        **to_np(gradtx.state_dict(s_half)),
        **{"params/" + k: v for k, v in to_np(gradtx.state_dict(p_half)).items()},
    )
    del p_half, s_half

    with np.load(path) as f:
        saved = dict(f)
    opt2 = _make()
    state = gradtx.load_state_dict(
        opt2.init(params), {k: v for k, v in saved.items() if not k.startswith("params/")}
    )
    p = gradtx.load_state_dict(
        params, {k[7:]: v for k, v in saved.items() if k.startswith("params/")}
    )
    assert state["adamw"].inner_state[0].mu["dense"]["w"].dtype == jnp.bfloat16
    p_resumed, s_resumed = _train(opt2, p, state, grad, 4, start=4)
    _identical(p_resumed, p_full)
    _identical(s_resumed, s_full)
    assert int(s_resumed["adamw"].total_notfinite) == 1
    assert not np.array_equal(np.asarray(p_full["dense"]["w"]), np.asarray(params["dense"]["w"]))


def test_resume_through_orbax_is_bit_for_bit_identical(tmp_path):
    import orbax.checkpoint as ocp

    params, grad = _params()
    opt = _make()
    p4, s4 = _train(opt, params, opt.init(params), grad, 4)
    ckpt = ocp.StandardCheckpointer()
    ckpt.save(tmp_path / "opt", gradtx.state_dict(s4))
    ckpt.wait_until_finished()
    restored = ckpt.restore(tmp_path / "opt")
    state = gradtx.load_state_dict(jax.eval_shape(opt.init, params), restored)
    a = _train(opt, p4, state, grad, 3, start=4)
    b = _train(opt, p4, s4, grad, 3, start=4)
    _identical(a, b)


def test_loading_into_a_different_chain_lists_missing_unexpected_and_misshaped_keys():
    params, _ = _params()
    saved = gradtx.state_dict(gradtx.adam(0.1).init(params))
    other = gradtx.sgd(0.1, momentum=0.9).init(params)
    with pytest.raises(ValueError) as e:
        gradtx.load_state_dict(other, saved)
    msg = str(e.value)
    assert "missing keys ['0/trace/dense/b', '0/trace/dense/w', '0/trace/scale']" in msg
    assert "unexpected keys ['0/count', '0/mu/dense/b'" in msg
    bigger = dict(params, scale=jnp.zeros(3))
    with pytest.raises(
        ValueError, match=r"mis-shaped keys \['0/mu/scale \(expected \(3,\), got \(\)\)'"
    ):
        gradtx.load_state_dict(gradtx.adam(0.1).init(bigger), saved)


def test_inserting_a_stateless_transform_into_a_named_chain_keeps_old_checkpoints_loadable():
    params, grad = _params()
    old = gradtx.named_chain(("adam", gradtx.scale_by_adam()), ("lr", gradtx.scale(-0.1)))
    _, state = _train(old, params, old.init(params), grad, 3)
    saved = gradtx.state_dict(state)
    new = gradtx.named_chain(
        ("clip", gradtx.clip_by_global_norm(10.0)),
        ("adam", gradtx.scale_by_adam()),
        ("lr", gradtx.scale(-0.1)),
    )
    restored = gradtx.load_state_dict(new.init(params), saved)
    _identical(restored["adam"], state["adam"])
    # with a positional chain the same insertion shifts every key
    old_c = gradtx.chain(gradtx.scale_by_adam(), gradtx.scale(-0.1))
    new_c = gradtx.chain(
        gradtx.clip_by_global_norm(10.0), gradtx.scale_by_adam(), gradtx.scale(-0.1)
    )
    with pytest.raises(ValueError, match="missing keys"):
        gradtx.load_state_dict(new_c.init(params), gradtx.state_dict(old_c.init(params)))


def test_jit_state_round_trip_and_separator():
    params, _ = _params()
    state = gradtx.adam(0.1).init(params)
    d = jax.jit(gradtx.state_dict)(state)
    _identical(gradtx.load_state_dict(state, d), state)
    d2 = gradtx.state_dict(state, sep=".")
    assert "0.mu.dense.w" in d2
    _identical(gradtx.load_state_dict(state, d2, sep="."), state)
    with pytest.raises(ValueError, match="share the key"):
        gradtx.state_dict({"a/b": jnp.ones(1), "a": {"b": jnp.ones(1)}})


def test_readme_composition_examples_run_and_print_what_they_say(capsys):
    import contextlib
    import io
    import pathlib
    import re

    readme = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
    start = readme.index("## Composition beyond `chain`")
    text = readme[start : readme.index("\n## ", start + 1)]
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 5
    for block in blocks:
        expected = [ln[2:] for ln in block.splitlines() if ln.startswith("# ")]
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(block, "composition.md", "exec"), {})
        assert out.getvalue().splitlines() == expected, block


def test_non_strict_loading_keeps_fresh_state_for_a_new_stateful_member():
    params, grad = _params()
    old = gradtx.named_chain(("adam", gradtx.scale_by_adam()), ("lr", gradtx.scale(-0.1)))
    _, state = _train(old, params, old.init(params), grad, 3)
    saved = dict(gradtx.state_dict(state), **{"gone/count": np.zeros((), np.int32)})
    new = gradtx.named_chain(
        ("adam", gradtx.scale_by_adam()), ("ema", gradtx.ema(0.9)), ("lr", gradtx.scale(-0.1))
    )
    with pytest.raises(ValueError, match=r"missing keys \['ema/count', 'ema/ema/dense/b'"):
        gradtx.load_state_dict(new.init(params), saved)
    restored = gradtx.load_state_dict(new.init(params), saved, strict=False)
    _identical(restored["adam"], state["adam"])
    _identical(restored["ema"], new.init(params)["ema"])
    bad = dict(saved, **{"adam/count": np.zeros(2, np.int32)})
    with pytest.raises(ValueError, match="mis-shaped keys"):
        gradtx.load_state_dict(new.init(params), bad, strict=False)


def test_lossy_dtype_casts_are_refused_and_listed_as_mis_typed_keys():
    params, _ = _params()
    template = gradtx.adam(0.1).init(params)  # float32 moments, int32 count
    saved = {k: np.asarray(v) for k, v in gradtx.state_dict(template).items()}
    rng = np.random.default_rng(0)
    bad = dict(saved)
    bad["0/count"] = np.float64(3.7)  # float into an int slot
    bad["0/mu/dense/w"] = rng.normal(size=(3, 4))  # float64 values float32 would round
    bad["0/nu/scale"] = np.complex64(1.0 + 2.0j)  # complex into a real slot
    bad["0/mu/dense/b"] = np.ones(4, np.int32)  # int into a float slot: another kind
    with pytest.raises(ValueError) as e:
        gradtx.load_state_dict(template, bad)
    msg = str(e.value)
    assert "mis-typed keys ['0/count (expected int32, got float64: a different kind" in msg
    for key in (
        "0/mu/dense/w (expected float32, got float64 with values",
        "0/nu/scale",
        "0/mu/dense/b",
    ):
        assert key in msg
    assert "missing" not in msg and "mis-shaped" not in msg
    # an integral float count is still another kind of number; non-strict loading refuses too
    with pytest.raises(ValueError, match=r"mis-typed keys \['0/count"):
        gradtx.load_state_dict(template, dict(saved, **{"0/count": np.float32(3.0)}), strict=False)
    # int64 counts beyond int32 wrap: refused
    with pytest.raises(ValueError, match="int32 cannot hold"):
        gradtx.load_state_dict(template, dict(saved, **{"0/count": np.int64(2**40)}))


def test_exact_same_kind_casts_load():
    params, _ = _params()
    template = gradtx.adam(0.1).init(params)
    saved = {k: np.asarray(v) for k, v in gradtx.state_dict(template).items()}
    rng = np.random.default_rng(1)
    w = rng.normal(size=(3, 4)).astype(np.float32)
    ok = dict(saved)
    ok["0/count"] = np.int64(7)  # e.g. saved under jax_enable_x64
    ok["0/mu/dense/w"] = w.astype(np.float64)  # float32 values widened: exact
    ok["0/nu/scale"] = np.asarray(0.5, jnp.bfloat16)  # bfloat16 -> float32 is exact
    ok["0/nu/dense/b"] = np.array([np.nan, np.inf, -0.0, 1.0])  # specials survive
    out = gradtx.load_state_dict(template, ok)
    assert out[0].count.dtype == jnp.int32 and int(out[0].count) == 7
    assert out[0].mu["dense"]["w"].dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(out[0].mu["dense"]["w"]), w)
    assert out[0].nu["scale"].dtype == jnp.float32 and float(out[0].nu["scale"]) == 0.5
    np.testing.assert_array_equal(np.asarray(out[0].nu["dense"]["b"]), [np.nan, np.inf, 0.0, 1.0])
    # a bfloat16 slot takes float32 values it can hold, and refuses those it would round
    bf = {"m": jnp.zeros(2, jnp.bfloat16)}
    got = gradtx.load_state_dict(bf, {"m": np.array([1.5, -2.0], np.float32)})
    assert got["m"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(got["m"], np.float32), [1.5, -2.0])
    with pytest.raises(ValueError, match=r"mis-typed keys \['m \(expected bfloat16, got float32"):
        gradtx.load_state_dict(bf, {"m": np.array([1.0 + 2.0**-10, 0.0], np.float32)})
