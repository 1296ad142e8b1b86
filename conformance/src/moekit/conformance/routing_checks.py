"""Checkers of routing outputs: a choice is right if its keys match the reference's choice.

Implementations rank float32 keys, the reference float64 ones, so two experts whose keys differ
by less than float32 rounding may come out in either order. A checker therefore compares the
*keys* of the chosen experts slot by slot (within ``KEY_RTOL``), and the weights with those the
spec gives the experts actually chosen.
"""

from __future__ import annotations

import numpy as np

from moekit.conformance.checks import TOLERANCES, ConformanceError

KEY_RTOL = 1e-5
KEY_ATOL = 1e-7


def compare_topk(
    keys: np.ndarray,
    expected_ids: np.ndarray,
    got: tuple[np.ndarray, np.ndarray],
    expected_weights_of,
    *,
    sorted_slots: bool,
    reproduce: str,
    indices_type: str = "int32",
) -> None:
    """Check ``got = (weights, ids)`` against the reference.

    ``keys``: float64 ``[T, E]`` selection keys of the reference; ``expected_ids``: its choice;
    ``expected_weights_of(ids)``: the reference weights of any choice. With ``sorted_slots=False``
    rows are compared as sets (sorted by key).
    """
    weights, ids = (np.asarray(a) for a in got)
    num_tokens, num_experts = keys.shape

    def fail(what: str) -> None:
        raise ConformanceError(what, reproduce)

    if ids.shape != expected_ids.shape or weights.shape != expected_ids.shape:
        fail(f"shapes {weights.shape}/{ids.shape}, expected {expected_ids.shape}")
    if ids.dtype != np.dtype(indices_type):
        fail(f"topk_ids dtype {ids.dtype}, expected {indices_type}")
    if weights.dtype != np.float32:
        fail(f"topk_weights dtype {weights.dtype}, expected float32")
    if np.any((ids < 0) | (ids >= num_experts)):
        fail("topk_ids outside [0, num_experts)")
    for t in range(num_tokens):
        if len(set(ids[t].tolist())) != ids.shape[1]:
            fail(f"row {t}: repeated expert in {ids[t].tolist()}")
    rows = np.arange(num_tokens)[:, None]
    got_keys = keys[rows, ids]
    want_keys = keys[rows, expected_ids]
    if not sorted_slots:
        got_keys = -np.sort(-got_keys, axis=1)
        want_keys = -np.sort(-want_keys, axis=1)
    with np.errstate(invalid="ignore"):  # -inf - -inf: equal keys, caught by ==
        same = (got_keys == want_keys) | (
            np.abs(got_keys - want_keys) <= KEY_ATOL + KEY_RTOL * np.abs(want_keys)
        )
    if not np.all(same):
        t, slot = np.argwhere(~same)[0]
        fail(
            f"row {t} slot {slot}: chose expert {ids[t, slot]} (key {got_keys[t, slot]!r}), "
            f"expected {expected_ids[t, slot]} (key {want_keys[t, slot]!r})"
        )
    want_weights = expected_weights_of(ids)
    atol, rtol = TOLERANCES["float32"]
    if not np.allclose(weights, want_weights, atol=atol, rtol=rtol):
        t, slot = np.argwhere(~np.isclose(weights, want_weights, atol=atol, rtol=rtol))[0]
        fail(
            f"row {t} slot {slot}: weight {weights[t, slot]!r} of expert {ids[t, slot]}, "
            f"expected {want_weights[t, slot]!r}"
        )


def check_routing_call(adapter, op: str, args: dict, sorted_slots: bool, note: str = "") -> None:
    """Call ``adapter.<op>(**args)`` (``fused_topk``, ``fused_topk_bias`` or ``grouped_topk``)
    and check it against :mod:`moekit.reference.routing`."""
    from moekit.conformance.adapters import ReferenceAdapter
    from moekit.conformance.checks import call_repr, round_to_dtype
    from moekit.reference import routing

    reproduce = call_repr(op, args) + (f"  # {note}" if note else "")
    logits = round_to_dtype(args["logits"], args.get("dtype", "float32"))
    grouped = op == "grouped_topk"
    bias = args.get("bias")
    keys = routing.selection_keys(
        logits, args.get("scoring_func", "softmax"),
        None if bias is None else np.asarray(bias, np.float32),
        args.get("num_expert_group") if grouped else None,
        args.get("topk_group") if grouped else None,
    )  # fmt: skip
    _, expected_ids = getattr(ReferenceAdapter(), op)(**args)

    def expected_weights_of(ids):
        return routing.weights_of(
            logits, ids, args["renormalize"], args.get("scoring_func", "softmax"),
            args.get("routed_scaling_factor", 1.0), grouped,
        )  # fmt: skip

    compare_topk(
        keys, expected_ids, getattr(adapter, op)(**args), expected_weights_of,
        sorted_slots=sorted_slots, reproduce=reproduce,
        indices_type=args.get("indices_type", "int32"),
    )  # fmt: skip
