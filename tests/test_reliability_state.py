"""State round trips and structure errors for every optimizer in the registry (issue 14, 4 and 5).

- ``state_dict`` -> ``.npz`` -> ``load_state_dict`` gives back every leaf bit for bit (values and
  dtypes), and three steps from the loaded state equal three steps of uninterrupted training
  bit for bit; the loaded state shares no memory with the arrays it was loaded from.
- A mapping with a key removed, an extra key, a leaf of another shape or a leaf of a dtype the
  slot cannot hold without loss is refused with a message that lists exactly the offending
  keys, and the caller's template state and mapping are left as they were.
- ``tests/fixtures/state_layout.npz`` holds states written by a released version (see
  ``tests/fixtures/make_state_fixture.py``). It must keep loading: when a state's fields change
  (a field renamed, added, split or re-shaped), the change must ship a migration in
  :func:`gradtx.load_state_dict` that maps the old keys onto the new layout, and
  :func:`test_previous_release_checkpoint_loads_and_training_continues` keeps the old file
  loading. Never regenerate the fixture to make that test pass.
- ``update`` before ``init`` says that init was not called; a state built by another optimizer
  is refused naming the member and the first path where it differs from what ``init`` builds;
  updates whose tree differs from the state's or the parameters' name the first differing path,
  with both node kinds ("list vs dict"), the missing key, or both shapes.
"""

from __future__ import annotations

import ast
import importlib.util
import pathlib
import re
from functools import cache

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from registry import BY_NAME, CASES

import gradtx

IDS = [c.name for c in CASES]
CATEGORIES = ("missing", "unexpected", "mis-shaped", "mis-typed")


def _params():
    rng = np.random.default_rng(0)
    return {
        "w": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32),
        "b": jnp.asarray(rng.normal(size=(2,)), jnp.float32),
    }


def _grads(params, t):
    return jax.tree_util.tree_map(lambda p: p - 0.5 * jnp.cos(p * (t + 1)), params)


def _extra(case, params, grads):
    return case.extra_args(params, grads) if case.extra_args else {}


def _step(opt, case, params, state, t):
    g = _grads(params, t)
    u, state = opt.update(g, state, params, **_extra(case, params, g))
    return gradtx.apply_updates(params, u), state


_jit_step = jax.jit(_step, static_argnums=(1,))


@cache
def _init_state(name):
    case = BY_NAME[name]
    return case.make(case.lr).init(_params())


def _assert_bit_identical(got, want):
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
    for (path, x), y in zip(
        jax.tree_util.tree_leaves_with_path(got), jax.tree_util.tree_leaves(want), strict=True
    ):
        x, y = np.asarray(x), np.asarray(y)
        where = jax.tree_util.keystr(path)
        assert (x.dtype, x.shape) == (y.dtype, y.shape), where
        assert x.tobytes() == y.tobytes(), (where, x, y)


# ----------------------------------------------------------------------------------------------
# Round trip through .npz and bit-for-bit resume.


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_npz_round_trip_is_exact_and_resumes_bit_for_bit(case, tmp_path):
    params = _params()
    opt = case.make(case.lr)
    p3, s3 = params, opt.init(params)
    for t in range(3):
        p3, s3 = _jit_step(opt, case, p3, s3, t)
    saved = gradtx.state_dict(s3)
    np.savez(tmp_path / "opt.npz", **{k: np.asarray(v) for k, v in saved.items()})
    with np.load(tmp_path / "opt.npz") as f:
        archive = {k: f[k] for k in f.files}
    assert sorted(archive) == sorted(saved)
    before = _snapshot_mapping(archive)

    fresh = case.make(case.lr)  # as in a new process: a new optimizer and a fresh init
    loaded = gradtx.load_state_dict(fresh.init(params), archive)
    _assert_bit_identical(loaded, s3)
    assert _snapshot_mapping(archive) == before
    for value in archive.values():  # the loaded state does not share the archive's memory
        value.reshape(-1).view(np.uint8)[...] ^= 0xFF
    _assert_bit_identical(loaded, s3)

    p_a, s_a, p_b, s_b = p3, s3, p3, loaded
    for t in range(3, 6):
        p_a, s_a = _jit_step(opt, case, p_a, s_a, t)
        p_b, s_b = _jit_step(fresh, case, p_b, s_b, t)
    _assert_bit_identical((p_b, s_b), (p_a, s_a))


# ----------------------------------------------------------------------------------------------
# Mappings that do not fit: every offending key listed, nothing of the caller's touched.


def _reported(message):
    """The keys each category of a load_state_dict error lists, e.g. {"missing": ["0/count"]}."""
    head = message.split("\n")[0]
    found = dict.fromkeys(CATEGORIES, ())
    alternatives = "|".join(CATEGORIES)
    pattern = rf"({alternatives}) keys (\[.*?\])(?=; (?:{alternatives}) keys |$)"
    for category, listed in re.findall(pattern, head):
        entries = ast.literal_eval(listed)
        found[category] = tuple(sorted(e.split(" (")[0] for e in entries))
    return found


def _snapshot_tree(tree):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return treedef, [(id(x), np.asarray(x).dtype, np.asarray(x).tobytes()) for x in leaves]


def _snapshot_mapping(mapping):
    return [
        (k, id(v), v.dtype, v.shape, v.flags.writeable, v.tobytes()) for k, v in mapping.items()
    ]


def _expect_refused(template, mapping, **offending):
    """Loading ``mapping`` raises listing exactly ``offending`` ({category: keys}) and leaves
    the template and the mapping as they were."""
    template_before, mapping_before = _snapshot_tree(template), _snapshot_mapping(mapping)
    with pytest.raises(ValueError, match="^load_state_dict: the mapping does not fit") as e:
        gradtx.load_state_dict(template, mapping)
    want = {c: tuple(sorted(offending.get(c.replace("-", ""), ()))) for c in CATEGORIES}
    assert _reported(str(e.value)) == want, str(e.value)
    assert _snapshot_tree(template) == template_before
    assert _snapshot_mapping(mapping) == mapping_before
    return str(e.value)


def _reshaped(x):
    return np.stack([x, x])  # same dtype and values, one more axis


def _lossy(x):
    """``x`` in a dtype its slot cannot take back without loss (see load_state_dict)."""
    if x.dtype == np.bool_:
        return x.astype(np.float64)  # another kind of number
    if np.issubdtype(x.dtype, np.integer):
        return x.astype(np.int64) + 2**40  # beyond int32 and uint32
    x = np.where(np.isfinite(x), x, 0)  # inf + 1/3 would still be inf
    if np.issubdtype(x.dtype, np.complexfloating):
        return x.astype(np.complex128) + (1 + 1j) / 3  # thirds are not float32 numbers
    return x.astype(np.float64) + 1 / 3


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_mappings_that_do_not_fit_list_exactly_the_offending_keys(case):
    template = _init_state(case.name)
    saved = {k: np.array(v) for k, v in gradtx.state_dict(template).items()}
    _expect_refused(
        template, dict(saved, **{"extra/count": np.zeros((), np.int32)}), unexpected=["extra/count"]
    )
    keys = sorted(saved)
    if not keys:
        # a stateless optimizer: there is nothing to remove, re-shape or re-type, and the empty
        # mapping loads back into the same (empty) structure
        assert gradtx.state_dict(template) == {}
        restored = gradtx.load_state_dict(template, {})
        assert jax.tree_util.tree_structure(restored) == jax.tree_util.tree_structure(template)
        return
    for k in keys:
        _expect_refused(template, {j: v for j, v in saved.items() if j != k}, missing=[k])
        x = saved[k]
        message = _expect_refused(template, dict(saved, **{k: _reshaped(x)}), misshaped=[k])
        assert f"{k} (expected {x.shape}, got {(2, *x.shape)})" in message
        bad = _lossy(x)
        message = _expect_refused(template, dict(saved, **{k: bad}), mistyped=[k])
        assert f"{k} (expected {x.dtype}, got {bad.dtype}" in message
    # all at once, on different keys: a renamed field shows as missing + unexpected
    renamed = keys[0] + "_v0"
    mixed = {j: v for j, v in saved.items() if j != keys[0]}
    mixed[renamed] = saved[keys[0]]
    offending = {"missing": [keys[0]], "unexpected": [renamed]}
    if len(keys) > 1:
        mixed[keys[1]] = _reshaped(saved[keys[1]])
        offending["misshaped"] = [keys[1]]
    if len(keys) > 2:
        mixed[keys[2]] = _lossy(saved[keys[2]])
        offending["mistyped"] = [keys[2]]
    _expect_refused(template, mixed, **offending)


# ----------------------------------------------------------------------------------------------
# A checkpoint in the previous release's layout.


def _fixture_module():
    path = pathlib.Path(__file__).parent / "fixtures" / "make_state_fixture.py"
    spec = importlib.util.spec_from_file_location("make_state_fixture", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_previous_release_checkpoint_loads_and_training_continues():
    fx = _fixture_module()
    assert fx.PATH.stat().st_size < 100_000
    with np.load(fx.PATH) as f:
        stored = {k: f[k] for k in f.files}
    version = str(stored.pop(fx.VERSION_KEY))
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", version), version
    by_opt: dict[str, dict] = {}
    for key, value in stored.items():
        name, state_key = key.split(":", 1)
        by_opt.setdefault(name, {})[state_key] = value
    assert sorted(by_opt) == sorted(fx.OPTIMIZERS)
    for name, make in fx.OPTIMIZERS.items():
        opt, mapping = make(), by_opt[name]
        template = opt.init(fx.params())
        loaded = gradtx.load_state_dict(template, mapping)  # strict: every key accounted for
        got = gradtx.state_dict(loaded)
        assert sorted(got) == sorted(mapping), name
        for k, v in mapping.items():
            assert np.asarray(got[k]).dtype == v.dtype, (name, k)
            assert np.asarray(got[k]).tobytes() == v.tobytes(), (name, k)
        # the checkpoint describes the same training as running the steps in memory now ...
        p3, in_memory, _ = fx.train(opt, fx.params(), template, fx.STEPS)
        for k, v in gradtx.state_dict(in_memory).items():
            np.testing.assert_allclose(got[k], v, rtol=1e-6, atol=1e-7, err_msg=f"{name} {k}")
        # ... and training continues from it as from the state in memory
        p_a, s_a, u_a = fx.train(opt, p3, loaded, 1, start=fx.STEPS)
        p_b, s_b, u_b = fx.train(opt, p3, in_memory, 1, start=fx.STEPS)
        for x, y in zip(
            jax.tree_util.tree_leaves((p_a, s_a, u_a)),
            jax.tree_util.tree_leaves((p_b, s_b, u_b)),
            strict=True,
        ):
            np.testing.assert_allclose(
                np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7, err_msg=name
            )
        assert not np.array_equal(np.asarray(p_a["dense"]["w"]), np.asarray(p3["dense"]["w"]))


def test_a_migration_maps_an_old_layout_onto_the_current_one(monkeypatch):
    """How a future layout change keeps old checkpoints loading: pretend the previous release
    named Adam's first moment ``m`` instead of ``mu``; a migration renames the keys."""
    fx = _fixture_module()
    with np.load(fx.PATH) as f:
        current = {k[len("adam:") :]: f[k] for k in f.files if k.startswith("adam:")}
    old = {k.replace("0/mu/", "0/m/"): v for k, v in current.items()}
    template = fx.OPTIMIZERS["adam"]().init(fx.params())
    _expect_refused(
        template,
        old,
        missing=[k for k in current if k.startswith("0/mu/")],
        unexpected=[k for k in old if k.startswith("0/m/")],
    )

    def rename_m_to_mu(mapping, template_keys):
        renamed = {k.replace("0/m/", "0/mu/"): v for k, v in mapping.items()}
        return renamed if set(renamed) <= template_keys else mapping

    monkeypatch.setattr(gradtx.checkpoint, "_MIGRATIONS", [rename_m_to_mu])
    before = _snapshot_mapping(old)
    loaded = gradtx.state_dict(gradtx.load_state_dict(template, old))
    assert _snapshot_mapping(old) == before
    assert sorted(loaded) == sorted(current)
    for k, v in current.items():
        assert np.asarray(loaded[k]).tobytes() == v.tobytes(), k


# ----------------------------------------------------------------------------------------------
# Structure errors: update before init, a state from another optimizer, mismatched trees.


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_update_before_init_says_init_was_not_called(case):
    params = _params()
    g = _grads(params, 0)
    opt = case.make(case.lr)
    extra = _extra(case, params, g)
    for update in (opt.update, jax.jit(opt.update)):
        with pytest.raises(ValueError) as e:
            update(g, None, params, **extra)
        message = str(e.value).split("\n")[0]
        assert re.search(r"state is None\b|before init|init was not called", message), message
        assert ".init(" in message, message


def _node(x):
    """The children of a tree node as [(key string, child)], or None for a leaf."""
    if x is None:
        return None  # a masked-out leaf
    kids, _ = jax.tree_util.tree_flatten_with_path(x, is_leaf=lambda n: n is not x)
    if len(kids) == 1 and kids[0][0] == () and kids[0][1] is x:
        return None
    return [(jax.tree_util.keystr(p), c) for p, c in kids]


def _first_difference(a, b, path=()):
    """The issue's rule, written out: (path as a tuple of keys, kind of difference, details)."""
    ka, kb = _node(a), _node(b)
    if ka is None and kb is None:
        same = a is None or b is None or np.shape(a) == np.shape(b)
        return None if same else (path, "shape", None)
    if ka is None or kb is None or type(a) is not type(b):
        return (path, "kind", "leaf" if kb is None else type(b).__name__)
    keys_a, keys_b = [k for k, _ in ka], [k for k, _ in kb]
    if keys_a != keys_b:
        if isinstance(a, (list, tuple)):
            return (path, "length", (len(keys_a), len(keys_b)))
        return (path + (min(set(keys_a) ^ set(keys_b)),), "key", None)
    for (k, x), (_, y) in zip(ka, kb, strict=True):
        diff = _first_difference(x, y, (*path, k))
        if diff is not None:
            return diff
    return None


def _names_the_place(message, diff):
    """The message locates ``diff``: at its path relative to a member it names (or the root);
    or names the kind of state it got where the kinds differ (``the state is a dict``), the
    counts where a chain gets another number of member states, or the member missing from a
    named chain's state."""
    path, kind, details = diff
    for cut in range(len(path) + 1):
        prefix, rest = path[:cut], "".join(path[cut:])
        if f"at {rest or 'the root'}" not in message:
            continue
        if not prefix:
            return True
        member = prefix[-1].strip("[]")  # "[0]" -> 0, "['adam']" -> 'adam'
        if f"member {member}" in message:
            return True
    if kind == "kind":
        return re.search(rf"\b{details}\b", message) is not None
    if kind == "length":
        return all(re.search(rf"\b{n}\b", message) for n in details)
    if kind == "key":
        return path[-1].strip("[]") in message
    return False


def _donor(case):
    """The next case in the registry whose state has other keys (so a path differs)."""
    own = set(gradtx.state_dict(_init_state(case.name)))
    i = IDS.index(case.name)
    for other in CASES[i + 1 :] + CASES[:i]:
        if set(gradtx.state_dict(_init_state(other.name))) != own:
            return other
    raise AssertionError("every case has the same state keys")


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_state_from_another_optimizer_names_the_member_and_first_difference(case):
    params = _params()
    g = _grads(params, 0)
    donor = _donor(case)
    wrong = _init_state(donor.name)
    diff = _first_difference(_init_state(case.name), wrong)
    assert diff is not None
    opt = case.make(case.lr)
    with pytest.raises(ValueError) as e:
        opt.update(g, wrong, params, **_extra(case, params, g))
    message = str(e.value).split("\n")[0]
    assert "init" in message, message
    assert _names_the_place(message, diff), (donor.name, diff, message)


def _nested(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "layer": {
            "w": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32),
            "b": jnp.asarray(rng.normal(size=(2,)), jnp.float32),
        },
        "s": jnp.asarray(0.5, jnp.float32),
    }


def _mismatched_step(case, grads):
    params = _nested()
    opt = case.make(case.lr)
    state = opt.init(params)
    with pytest.raises(ValueError) as e:
        u, _ = opt.update(grads, state, params, **_extra(case, params, grads))
        gradtx.apply_updates(params, u)
    return str(e.value).split("\n")[0]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_updates_of_another_tree_name_the_first_difference(case):
    g = _nested(1)
    layer = g["layer"]
    as_list = dict(g, layer=[layer["b"], layer["w"]])
    message = _mismatched_step(case, as_list)
    assert re.search(r"at \['layer'\]: list vs dict", message), message
    message = _mismatched_step(case, {"layer": layer})
    assert re.search(r"at \['s'\]: missing from the updates", message), message
    transposed = dict(g, layer=dict(layer, w=layer["w"].T))
    message = _mismatched_step(case, transposed)
    assert re.search(r"at \['layer'\]\['w'\]: shape \(2, 3\) vs \(3, 2\)", message), message


def test_first_difference_reports_kinds_missing_keys_lengths_and_shapes():
    first_difference = gradtx.numerics.first_difference
    x, y = np.ones(2), np.ones(3)
    assert first_difference({"a": [x]}, {"a": {"x": x}}) == ("['a']", "list vs dict")
    assert first_difference({"a": x}, {"a": {"x": x}}) == ("['a']", "leaf of shape (2,) vs dict")
    assert first_difference({"a": None}, {"a": {"x": x}}) == ("['a']", "None vs dict")
    assert first_difference({"a": None, "b": x}, {"a": x, "b": x}) is None  # a masked leaf
    # dicts with other keys: the first key found in only one of them, and which one lacks it
    a, b = {"k": {"p": x, "q": x}}, {"k": {"p": x, "r": x}}
    assert first_difference(a, b) == ("['k']['q']", "present in only one of them")
    assert first_difference(a, b, ("updates", "state")) == ("['k']['q']", "missing from the state")
    assert first_difference(b, a, ("updates", "state")) == (
        "['k']['q']",
        "missing from the updates",
    )
    assert first_difference((x, x, x), (x, x)) == ("", "tuple of 3 entries vs 2")
    assert first_difference({"a": [x, x]}, {"a": [x, y]}) == ("['a'][1]", "shape (2,) vs (3,)")
    assert first_difference(jax.ShapeDtypeStruct((2,), jnp.float32), y) == (
        "",
        "shape (2,) vs (3,)",
    )
    # records: by class, and an empty record is a node, not a leaf
    adam, sgd = gradtx.adam(0.1).init({"w": x}), gradtx.sgd(0.1, momentum=0.9).init({"w": x})
    assert first_difference(adam, sgd) == ("[0]", "ScaleByAdamState vs TraceState")
    assert first_difference(gradtx.EmptyState(), adam[0]) == ("", "EmptyState vs ScaleByAdamState")
    assert first_difference(adam, adam) is None


def test_update_with_another_container_says_list_vs_dict_at_its_path():
    x = jnp.ones(2)
    opt = gradtx.adam(0.1)
    state = opt.init({"a": {"x": x}})
    for update in (opt.update, jax.jit(opt.update)):
        with pytest.raises(ValueError, match=r"(?m)at \['a'\]: list vs dict$"):
            update({"a": [x]}, state)
        with pytest.raises(ValueError, match=r"(?m)at \['a'\]\['x'\]: missing from the updates$"):
            update({"a": {"y": x}}, state)
        with pytest.raises(ValueError, match=r"(?m)at \['a'\]\['x'\]: shape \(3,\) vs \(2,\)$"):
            update({"a": {"x": jnp.ones(3)}}, state)
