"""Tests of the model zoo: plans, forward passes, registry, BN baseline."""

import functools
import os

import chex
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from nf_jax.models import registry
from nf_jax.models.errors import UnknownNameError
from nf_jax.models.nf_regnet import NF_REGNET_VARIANTS
from nf_jax.models.nfnet import NFNET_VARIANTS
from nf_jax.models.resnet import RESNET_VARIANTS, plan_blocks

NUM_CLASSES = 7


def _key(seed):
  # `unsafe_rbg` keys compile several times faster than threefry on CPU.
  return jax.random.key(seed, impl="unsafe_rbg")


def _specs(name, variant=None, **kw):
  """The block plan of a registry model (modules need a transform context)."""
  return hk.transform(
      lambda: registry.create(name, NUM_CLASSES, variant, **kw).specs
  ).apply({}, None)


def _num_blocks(name, variant):
  params = registry.MODELS[name][2][variant]
  depths = params[1] if isinstance(params, tuple) else params["depth"]
  return sum(depths)


def _fast_init(name, variant, x, seed=0, **kw):
  """Parameters and state of a registry model, without compiling its init.

  Compiling a model's `init` is dominated by one random-number kernel per
  parameter (tens of seconds on CPU for the bigger nets), so the forward tests
  record every initializer during one abstract trace and draw the random ones
  with numpy instead: same names, shapes and constants (gains, biases, skip
  gains, BN state), and weights with the initializer's standard deviation.
  The real `init` is exercised by `test_determinism_for_a_given_rng` and
  by the abstract build of every variant.
  """
  records = {"params": [], "state": []}

  def recorder(kind):
    def creator(next_creator, shape, dtype, init, context):
      records[kind].append((context.module_name, context.name, tuple(shape),
                            dtype, init))
      return next_creator(shape, dtype, lambda s, d: jnp.zeros(s, d))
    return creator

  def forward(x):
    with hk.custom_creator(recorder("params")), hk.custom_creator(
        recorder("state"), params=False, state=True):
      registry.create(name, NUM_CLASSES, variant, **kw)(x, is_training=True)

  shapes = jax.eval_shape(hk.transform_with_state(forward).init, _key(seed),
                          jax.ShapeDtypeStruct(x.shape, x.dtype))
  rng = np.random.default_rng(seed)
  inits = hk.initializers

  def value(shape, dtype, init):
    if isinstance(init, inits.VarianceScaling):
      assert init.mode == "fan_in"
      std = np.sqrt(init.scale / np.prod(shape[:-1]))
    elif isinstance(init, (inits.RandomNormal, inits.TruncatedNormal)):
      std = init.stddev
    else:
      return jnp.asarray(init(shape, dtype))
    return jnp.asarray(rng.normal(0.0, std, shape), dtype)

  out = []
  for kind, abstract in zip(("params", "state"), shapes):
    tree = {}
    for module, pname, shape, dtype, init in records[kind]:
      tree.setdefault(module, {})[pname] = value(shape, dtype, init)
    # State written with `hk.set_state` only (the BN moving averages) has no
    # initializer: start it at zero.
    for module, leaves in abstract.items():
      for pname, leaf in leaves.items():
        tree.setdefault(module, {}).setdefault(
            pname, jnp.zeros(leaf.shape, leaf.dtype))
    chex.assert_trees_all_equal_shapes_and_dtypes(tree, abstract)
    out.append(tree)
  return tuple(out)


@functools.lru_cache(maxsize=None)
def _apply_fn(name, variant, is_training, kw_items=()):
  model = registry.transform(name, NUM_CLASSES, variant, **dict(kw_items))
  return jax.jit(lambda p, s, rng, x: model.apply(p, s, rng, x, is_training,
                                                  True))


def _run(name, variant, x, is_training=False, init_seed=0, apply_seed=1,
         **kw):
  """(params, state, logits, stats, new_state) of one jitted forward pass."""
  params, state = _fast_init(name, variant, x, init_seed, **kw)
  apply = _apply_fn(name, variant, is_training, tuple(sorted(kw.items())))
  (logits, stats), new_state = apply(params, state, _key(apply_seed), x)
  return params, state, logits, stats, new_state


def _images(batch, res, seed=100):
  return jax.random.normal(_key(seed), (batch, res, res, 3))


# ---------------------------------------------------------------------------
# The alpha / beta plan.
# ---------------------------------------------------------------------------


def _reference_plan(depths, alpha):
  """(beta, expected output var) per block, written out independently."""
  out, var = [], 1.0  # the stem output has unit variance
  for depth in depths:
    for i in range(depth):
      beta = 1.0 / np.sqrt(var)
      var = (1.0 if i == 0 else var) + alpha ** 2
      out.append((beta, var))
  return out


@pytest.mark.parametrize("depths,alpha", [((2, 2, 2), 0.2), ((3, 4, 6, 3), 0.2),
                                          ((1, 3, 6, 6), 0.5), ((5,), 1.0)])
def test_plan_blocks_beta_recursion(depths, alpha):
  widths = [16 * 2 ** i for i in range(len(depths))]
  strides = [1] + [2] * (len(depths) - 1)
  specs = plan_blocks(depths, widths, strides, stem_ch=8, alpha=alpha,
                      stochdepth_rate=0.0)
  ref = _reference_plan(depths, alpha)
  assert len(specs) == sum(depths)
  for spec, (beta, var) in zip(specs, ref):
    np.testing.assert_allclose(spec.beta, beta, rtol=1e-12)
    np.testing.assert_allclose(spec.expected_var, var, rtol=1e-12)
  # Transition blocks reset to 1 + alpha^2 and every later block adds alpha^2.
  k = 0
  for stage, depth in enumerate(depths):
    for i in range(depth):
      spec = specs[k]
      assert (spec.index, spec.stage, spec.index_in_stage) == (k, stage, i)
      np.testing.assert_allclose(spec.expected_var, 1.0 + (i + 1) * alpha ** 2)
      np.testing.assert_allclose(spec.beta, 1.0 if k == 0 else
                                 1.0 / np.sqrt(specs[k - 1].expected_var))
      assert spec.stride == (strides[stage] if i == 0 else 1)
      assert spec.out_ch == widths[stage]
      assert spec.in_ch == (8 if k == 0 else specs[k - 1].out_ch)
      k += 1


def test_plan_blocks_without_beta_and_stochdepth_ramp():
  specs = plan_blocks((2, 3), (8, 16), (1, 2), 8, 1.0, 0.3, use_beta=False)
  assert all(s.beta == 1.0 for s in specs)
  np.testing.assert_allclose([s.stochdepth_rate for s in specs],
                             0.3 * np.arange(5) / 5)


@pytest.mark.parametrize("name,variant", [("nf_resnet", "50"),
                                          ("nf_regnet", "B3"),
                                          ("nfnet", "F1")])
def test_model_stochdepth_rate_ramps_linearly(name, variant):
  specs = _specs(name, variant, stochdepth_rate=0.25)
  n = len(specs)
  assert n == _num_blocks(name, variant)
  np.testing.assert_allclose([s.stochdepth_rate for s in specs],
                             0.25 * np.arange(n) / n, rtol=1e-12)
  # The published default of the NF-RegNets and NFNets is 0.1.
  if name != "nf_resnet":
    assert _specs(name, variant)[-1].stochdepth_rate == pytest.approx(
        0.1 * (n - 1) / n)


def test_model_plans_follow_the_recursion():
  for name, variant in [("nf_resnet", "small"), ("nf_resnet", "101"),
                        ("nf_regnet", "B0"), ("nfnet", "F0+")]:
    specs = _specs(name, variant)
    depths = [sum(1 for s in specs if s.stage == st)
              for st in range(specs[-1].stage + 1)]
    for spec, (beta, var) in zip(specs, _reference_plan(depths, 0.2)):
      np.testing.assert_allclose((spec.beta, spec.expected_var), (beta, var))
  # BN and SkipInit ResNets use alpha = 1 and no beta.
  for name in ("bn_resnet", "skipinit_resnet"):
    assert all(s.beta == 1.0 for s in _specs(name, "26"))


# ---------------------------------------------------------------------------
# Forward passes at small resolution (really run, under jit).
# ---------------------------------------------------------------------------


def _check_forward(name, variant, res, batch=2, **kw):
  """Runs a jitted forward pass; checks logits and the per-block stats."""
  x = _images(batch, res)
  params, _, logits, stats, _ = _run(name, variant, x, **kw)
  chex.assert_shape(logits, (batch, NUM_CLASSES))
  chex.assert_tree_all_finite((params, logits, stats))
  n = _num_blocks(name, variant)
  assert sorted(stats) == ["avg_sq_mean", "avg_var", "res_var"]
  for v in stats.values():
    chex.assert_shape(v, (n + 1,))
  assert float(stats["res_var"][0]) == 0.0
  return params, logits, stats


# nf_resnet small / 26 run in the variance test, bn_resnet in the BN tests.
@pytest.mark.parametrize("name,variant,res", [
    ("unnorm_resnet", "small", 32), ("skipinit_resnet", "small", 32),
    ("nf_regnet", "B0", 32), ("nfnet", "F0", 32)])
def test_forward_runs(name, variant, res):
  params, logits, stats = _check_forward(name, variant, res)
  assert float(jnp.min(stats["avg_var"])) > 0
  if name in ("nf_regnet",):
    # Zero-initialised classifier: logits are exactly zero at init.
    np.testing.assert_array_equal(logits, 0.0)
  else:
    assert float(jnp.std(logits)) > 0
  # SkipInit: residual branches are switched off at init, and the param tree
  # holds one scalar skip gain per block.
  gains = [p["skip_gain"] for m, p in params.items() if "skip_gain" in p]
  assert len(gains) == _num_blocks(name, variant)
  assert all(float(g) == 0.0 for g in gains)


def test_variance_tracks_the_analytic_expectation():
  """With the skip gain at 1, block outputs follow the beta recursion."""
  for variant, start in (("small", 0), ("26", 1)):
    # A unit-Gaussian batch; 64 px keeps the last stage's spatial extent (and
    # so the number of samples per channel statistic) reasonable.
    _, logits, stats = _check_forward("nf_resnet", variant, 64, batch=8,
                                      skip_gain_init=1.0)
    assert float(jnp.std(logits)) > 0
    expected = np.array([1.0] + [s.expected_var
                                 for s in _specs("nf_resnet", variant)])
    ratio = np.asarray(stats["avg_var"]) / expected
    # Entry 0 of the ImageNet stem is after the max-pool, which is not unit
    # variance; the first (transition) block restores it.
    np.testing.assert_allclose(ratio[start:], 1.0, rtol=0.25,
                               err_msg=f"{variant}: {ratio}")
    # The stream is not mean-shifted (WS removes the mean shift).
    assert float(jnp.max(stats["avg_sq_mean"][1:])) < 0.1
    # Every residual branch carries signal at init (skip gain 1).
    assert float(jnp.min(stats["res_var"][1:])) > 0.25


# Small NF-ResNet with every source of randomness switched on.
_NOISY = dict(skip_gain_init=1.0, drop_rate=0.5, stochdepth_rate=0.5)


def test_determinism_for_a_given_rng():
  """The real (compiled) init and apply are pure functions of the rng."""
  x = _images(4, 16)
  model = registry.transform("nf_resnet", NUM_CLASSES, "small", **_NOISY)
  init = jax.jit(model.init, static_argnums=2)
  p1, s1 = init(_key(3), x, True)
  p2, s2 = init(_key(3), x, True)
  p3, _ = init(_key(4), x, True)
  chex.assert_trees_all_equal((p1, s1), (p2, s2))
  weights = 0
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(p1),
                          jax.tree_util.tree_leaves(p3)):
    if jax.tree_util.keystr(path).endswith("['w']"):
      weights += 1
      assert not np.array_equal(a, b), path
  assert weights == 1 + 6 * 2 + 2 + 1  # stem, 2 per block, 2 shortcuts, fc
  # Initial values: WS gain 1, bias 0, skip gain as configured.
  for module, p in p1.items():
    if "gain" in p:
      np.testing.assert_array_equal(p["gain"], 1.0)
      np.testing.assert_array_equal(p["b"], 0.0)
    if "skip_gain" in p:
      assert float(p["skip_gain"]) == _NOISY["skip_gain_init"]
  np.testing.assert_allclose(np.std(p1["res_net/classifier"]["w"]), 0.01,
                             rtol=0.25)
  # apply: same rng -> identical outputs, even in training mode.
  apply = _apply_fn("nf_resnet", "small", True, tuple(sorted(_NOISY.items())))
  a = apply(p1, s1, _key(9), x)
  b = apply(p2, s2, _key(9), x)
  chex.assert_trees_all_equal(a, b)
  chex.assert_tree_all_finite(a)


def test_dropout_and_stochdepth_only_in_training():
  x = _images(4, 16)
  # Evaluation: the apply rng is irrelevant.
  a = _run("nf_resnet", "small", x, apply_seed=1, **_NOISY)
  b = _run("nf_resnet", "small", x, apply_seed=2, **_NOISY)
  np.testing.assert_array_equal(a[2], b[2])
  # Training: dropout and stochastic depth make it depend on the rng.
  a = _run("nf_resnet", "small", x, True, apply_seed=1, **_NOISY)
  b = _run("nf_resnet", "small", x, True, apply_seed=2, **_NOISY)
  assert not np.allclose(a[2], b[2])
  c = _run("nf_resnet", "small", x, True, apply_seed=1, **_NOISY)
  np.testing.assert_array_equal(a[2], c[2])


# ---------------------------------------------------------------------------
# Every family and variant builds (abstractly, via eval_shape).
# ---------------------------------------------------------------------------


def _cheap_zeros_creator(next_creator, shape, dtype, init, context):
  del init, context
  return next_creator(shape, dtype, lambda s, d: jnp.zeros(s, d))


def _abstract(name, variant, res=32, batch=2, **kw):
  """Shapes of params and of (logits, stats), from a single abstract trace."""

  def forward(x):
    # Initializers are irrelevant to shapes; zeros trace faster.
    with hk.custom_creator(_cheap_zeros_creator):
      out = registry.create(name, NUM_CLASSES, variant, **kw)(
          x, is_training=True, return_stats=True)
    hk.set_state("__forward_output__", out)
    return out

  init = hk.transform_with_state(forward).init
  params, state = jax.eval_shape(
      init, _key(0), jax.ShapeDtypeStruct((batch, res, res, 3), jnp.float32))
  return params, state.pop("~")["__forward_output__"]


ALL_VARIANTS = [(name, v) for name, entry in registry.MODELS.items()
                for v in entry[2]]

# Tracing costs ~0.02-0.05 CPU-s per block, and all variants together have
# ~4000 blocks. By default every variant of up to 50 blocks is traced for every
# family, plus the deepest variant of each model class; the deep rest (whose
# blocks are identical to those of a traced variant: only the depths differ)
# is checked through its plan in `test_every_variant_plan`, and traced too
# when NF_JAX_SLOW_TESTS=1.
_ALWAYS_TRACED = {("nf_resnet", "600"), ("bn_resnet", "288"),
                  ("nf_regnet", "B8"), ("nfnet", "F7+")}
_SLOW = os.environ.get("NF_JAX_SLOW_TESTS", "") not in ("", "0")


def _traced_by_default(name, variant):
  return (_num_blocks(name, variant) <= 50 or
          (name, variant) in _ALWAYS_TRACED)


@pytest.mark.parametrize("name,variant", ALL_VARIANTS)
def test_every_variant_plan(name, variant):
  """Instant structural check of every variant: depths, widths, strides."""
  specs = _specs(name, variant)
  params = registry.MODELS[name][2][variant]
  if isinstance(params, tuple):
    _, depths, widths, _ = params
    strides = [1] + [2] * (len(depths) - 1)
  else:
    depths, widths = params["depth"], params["width"]
    strides = (2, 2, 2, 2) if name == "nf_regnet" else (1, 2, 2, 2)
    if name == "nf_regnet":
      widths = [int(w * 0.75) for w in widths]
  assert len(specs) == sum(depths) == _num_blocks(name, variant)
  for stage, (depth, width, stride) in enumerate(zip(depths, widths, strides)):
    stage_specs = [s for s in specs if s.stage == stage]
    assert len(stage_specs) == depth
    assert [s.stride for s in stage_specs] == [stride] + [1] * (depth - 1)
    assert {s.out_ch for s in stage_specs} == {width}
  assert [s.index for s in specs] == list(range(len(specs)))


@pytest.mark.parametrize("name,variant", ALL_VARIANTS)
def test_every_variant_builds(name, variant):
  if not (_SLOW or _traced_by_default(name, variant)):
    pytest.skip("deep variant: set NF_JAX_SLOW_TESTS=1 to trace it too "
                "(its plan is checked by test_every_variant_plan)")
  params, (logits, stats) = _abstract(name, variant)
  chex.assert_shape(logits, (2, NUM_CLASSES))
  assert logits.dtype == jnp.float32
  n = _num_blocks(name, variant)
  for v in stats.values():
    chex.assert_shape(v, (n + 1,))
  blocks = {k.split("/")[1] for k in params if k.count("/") >= 1
            and k.split("/")[1].startswith("block_")}
  assert blocks == {f"block_{i}" for i in range(n)}
  classifier = [k for k in params if k.endswith("/classifier")]
  assert len(classifier) == 1
  assert params[classifier[0]]["w"].shape[-1] == NUM_CLASSES


def test_plus_variants_are_wider():
  base, _ = _abstract("nfnet", "F0")
  plus, _ = _abstract("nfnet", "F0+")
  n = lambda p: sum(np.prod(v.shape) for v in jax.tree_util.tree_leaves(p))
  assert n(plus) > 1.5 * n(base)
  assert NFNET_VARIANTS["F3+"]["depth"] == NFNET_VARIANTS["F3"]["depth"]


# ---------------------------------------------------------------------------
# Lookup by name.
# ---------------------------------------------------------------------------


def test_unknown_model_lists_valid_names():
  with pytest.raises(UnknownNameError) as e:
    registry.transform("nf_resnext", 10)
  assert isinstance(e.value, ValueError)
  for name in registry.MODELS:
    assert name in str(e.value)
  with pytest.raises(ValueError, match="nf_regnet"):
    registry.validate("resnet")


def test_unknown_variant_lists_valid_names():
  with pytest.raises(UnknownNameError) as e:
    registry.transform("nfnet", 10, "F9")
  msg = str(e.value)
  assert "F9" in msg and "F0" in msg and "F7+" in msg
  with pytest.raises(UnknownNameError, match="small"):
    registry.resolve_variant("nf_resnet", "34")
  with pytest.raises(UnknownNameError, match="B8"):
    registry.create("nf_regnet", 10, "B9")


def test_variant_defaults_and_info():
  assert registry.resolve_variant("nf_resnet") == "50"
  assert registry.resolve_variant("nf_regnet", "") == "B0"
  assert registry.resolve_variant("nfnet", None) == "F0"
  assert registry.variant_info("nfnet", "F0") == {
      "train_imsize": 192, "test_imsize": 256, "drop_rate": 0.2,
      "ra_level": "405"}
  assert registry.variant_info("nf_regnet", "B0")["test_imsize"] == 224
  assert registry.variant_info("bn_resnet", "50")["train_imsize"] == 224
  assert registry.module_class("nfnet").__name__ == "NFNet"


def test_unknown_activation_via_registry():
  with pytest.raises(UnknownNameError) as e:
    registry.transform("nf_resnet", 10, "small", activation="rleu")
  assert "relu" in str(e.value) and "rleu" in str(e.value)


def test_validate_rejects_unknown_kwargs():
  with pytest.raises(ValueError) as e:
    registry.validate("nfnet", "F0", drop_rat=0.1)
  msg = str(e.value)
  assert "drop_rat" in msg and "drop_rate" in msg and "nfnet" in msg
  # Options fixed by the registry entry cannot be overridden.
  with pytest.raises(ValueError, match="normalization"):
    registry.transform("nf_resnet", 10, "small", normalization="batchnorm")
  registry.validate("nf_resnet", "small", se_ratio=0.25, width=0.5)


@pytest.mark.parametrize("name", sorted(registry.MODELS))
def test_missing_drop_rate_and_activation_alias_do_not_fail(name):
  variant = "small" if "resnet" in name else None
  kw = dict(drop_rate=None, activation="swish", stochdepth_rate=None)
  registry.validate(name, variant, **kw)
  _, (logits, stats) = _abstract(name, variant, **kw)
  chex.assert_shape(logits, (2, NUM_CLASSES))
  model = hk.transform(
      lambda: registry.create(name, NUM_CLASSES, variant, **kw).drop_rate)
  drop = model.apply({}, None)
  expected = registry.variant_info(name, variant)["drop_rate"]
  assert drop == expected


# ---------------------------------------------------------------------------
# BatchNorm baseline.
# ---------------------------------------------------------------------------


def test_bn_resnet_updates_state_in_training():
  x = _images(4, 16) * 2.0 + 1.0
  params, state, logits, stats, new_state = _run("bn_resnet", "small", x, True)
  chex.assert_shape(logits, (4, NUM_CLASSES))
  chex.assert_tree_all_finite((logits, stats, new_state))
  assert not any("skip_gain" in p for p in params.values())
  chex.assert_trees_all_equal_structs(state, new_state)
  emas = [k for k in new_state if k.endswith("_ema")]
  # bn0 (+ bn1) per block and the final BN, each with a mean and a var EMA.
  assert len(emas) == 2 * (2 * 6 + 1)
  assert "res_net/final_bn/~/mean_ema" in emas
  for k in emas:
    assert not np.array_equal(new_state[k]["average"], state[k]["average"]), k
    assert int(new_state[k]["counter"]) == int(state[k]["counter"]) + 1
  # The first block's BN sees the stem conv output: after one step its
  # (zero-debiased) moving mean is the per-channel batch mean of that output.
  stem = jax.lax.conv_general_dilated(
      x, params["res_net/stem_conv"]["w"], (1, 1), "SAME",
      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(
      new_state["res_net/block_0/bn0/~/mean_ema"]["average"].reshape(-1),
      np.asarray(stem).mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-5)
  # In evaluation the state is left untouched.
  _, state_e, _, _, new_state_e = _run("bn_resnet", "small", x, False)
  chex.assert_trees_all_equal(state_e, new_state_e)


def _mesh():
  return jax.make_mesh((8,), ("data",))


def _bn_sharded(axis):
  """Training-mode apply of a BN ResNet with the batch split over 8 devices."""
  mesh = _mesh()
  kw = {} if axis is None else {"bn_cross_replica_axis": axis}
  model = registry.transform("bn_resnet", NUM_CLASSES, "small", **kw)

  def per_device(params, state, x):
    (logits, _), new_state = model.apply(params, state, None, x, True, True)
    # Add a leading device axis so that out_specs P("data") stacks them.
    return logits, jax.tree.map(lambda s: s[None], new_state)

  return jax.jit(jax.shard_map(per_device, mesh=mesh,
                               in_specs=(P(), P(), P("data")),
                               out_specs=(P("data"), P("data"))))


def test_bn_cross_replica_sync():
  assert jax.device_count() == 8
  x = _images(16, 16, seed=7) * 2.0 + 0.5  # 2 examples per device
  params, state, logits_full, _, state_full = _run("bn_resnet", "small", x,
                                                   True)
  x_sharded = jax.device_put(x, NamedSharding(_mesh(), P("data")))
  logits_sync, state_sync = _bn_sharded("data")(params, state, x_sharded)
  logits_local, state_local = _bn_sharded(None)(params, state, x_sharded)
  emas = [k for k in state_full if k.endswith("mean_ema")]
  assert len(emas) > 5
  for k in emas:
    sync = np.asarray(state_sync[k]["average"])
    local = np.asarray(state_local[k]["average"])
    chex.assert_shape(sync, (8,) + state_full[k]["average"].shape)
    # Synced: every device holds the same statistics, which are those of the
    # whole (global) batch.
    np.testing.assert_allclose(sync, np.broadcast_to(sync[:1], sync.shape),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sync[0], state_full[k]["average"], rtol=1e-3,
                               atol=1e-4)
    # Per device: each device sees only its own 2 examples.
    assert not np.allclose(local, local[:1], rtol=1e-3, atol=1e-4), k
  # The synced forward is the global-batch forward; the local one is not.
  np.testing.assert_allclose(logits_sync, logits_full, rtol=1e-3, atol=1e-4)
  assert not np.allclose(logits_local, logits_full, rtol=1e-3, atol=1e-4)
