"""The relations every correct recurrent layer satisfies, whatever its conventions (no reference needed).

Each :class:`Property` states one relation, says when it applies, what extra it draws, and judges a case by
computing both sides of the relation through the adapter (:meth:`core.Context.relation`: float64 always,
float32 when asked). Arrays are time-major (see :mod:`.adapters`); the batch axis is axis 1 of every
tensor but the parameters, the time axis axis 0 of ``out``, ``dx``, ``x`` and ``dout``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

from ...gradcheck import NOISE_UNITS, U
from .adapters import Call, LayerError, RelabelUnavailable, Result, inverse_perms, parse_name
from .core import EPS32, F32_DTYPE_ULPS, F64_TOL, Comparison, Outcome, draw_array, draw_arrays


@dataclass(frozen=True)
class Property:
    """One relation: ``name``, ``statement`` (what must hold), ``evaluate(ctx, case) -> Outcome``,
    ``applies(adapter, dtypes) -> None or the reason it does not``, ``draw_extra(draw, case) -> dict``, and what
    its cases need: at least ``min_T`` steps, ``min_B`` rows, ``min_H`` units; ``lengths``: "maybe", "never" or
    "padded" (some row shorter than T); ``states``: "maybe", "never" (zero) or "always" (drawn)."""

    name: str
    statement: str
    evaluate: Callable
    applies: Callable = lambda adapter, dtypes: None
    draw_extra: Callable = lambda draw, case, adapter: {}
    min_T: int = 1
    min_B: int = 1
    min_H: int = 1
    lengths: str = "maybe"
    states: str = "maybe"
    float32_only: bool = False  # its cases are always moderate (the dtype property)
    hint: Callable | None = None  # (outcome) -> a sentence on what the broken tensors suggest, or None
    diagnose: Callable | None = None  # evaluate(ctx, case) with more detail, run once on the smallest failing case


# -- moving rows, steps, units and directions around -----------------------------------------------------
def _tuple(parts, fn):
    return None if parts is None else tuple(fn(p) for p in parts)


def call_rows(call: Call, idx) -> Call:
    """The call on batch rows ``idx`` (in that order)."""
    idx = np.asarray(idx)
    take = lambda a: a.take(idx, axis=1)  # noqa: E731
    return Call(call.params, take(call.x), _tuple(call.states, take),
                None if call.lengths is None else call.lengths[idx],
                None if call.dout is None else take(call.dout), _tuple(call.dstates, take))


def result_rows(result: Result, idx) -> Result:
    take = lambda a: a.take(np.asarray(idx), axis=1)  # noqa: E731
    return Result(take(result.out), _tuple(result.finals, take), None if result.dx is None else take(result.dx),
                  _tuple(result.dstate0, take), result.grads)


def join_rows(results) -> Result:
    """Results of separate row runs as one batch: tensors side by side, parameter gradients summed."""
    cat = lambda parts: np.concatenate(parts, axis=1)  # noqa: E731
    first = results[0]
    return Result(cat([r.out for r in results]),
                  tuple(cat([r.finals[k] for r in results]) for k in range(len(first.finals))),
                  cat([r.dx for r in results]),
                  tuple(cat([r.dstate0[k] for r in results]) for k in range(len(first.dstate0))),
                  {name: sum(r.grads[name] for r in results) for name in first.grads})


def _pad_time(a, T):
    return np.concatenate([a, np.zeros((T - a.shape[0], *a.shape[1:]), a.dtype)], axis=0) if a.shape[0] < T else a


def reverse_time(a, lengths):
    """``a`` (T, B, ...) with each row's valid steps in reverse order (padding stays where it is)."""
    if lengths is None:
        return a[::-1].copy()
    out = a.copy()
    for b, n in enumerate(lengths):
        out[:n, b] = a[:n, b][::-1]
    return out


def _pairs(variant, got: dict, expected: dict, names=None):
    return {(variant, k): (got[k], expected[k]) for k in (names or expected)}


def _structure(ctx):
    a = ctx.adapter
    return a.num_layers, a.num_directions, a.hidden_size


# -- well-formed -----------------------------------------------------------------------------------------
def _well_formed(ctx, case):
    """Shapes and dtypes are checked by the adapter on every call; here: finite results, inputs left as they
    were, and the same results when the same call is repeated."""
    outcome = Outcome()
    call = case.call
    try:
        scale = ctx.scales(call)
        for dtype in ctx.dtypes:
            first = ctx.adapters[dtype].run(call)
            if first.changed_inputs:
                outcome.problems.append(f"changed its input {', '.join(first.changed_inputs)} in place ({dtype})")
            named = ctx.named(first)
            bad = [k for k, v in named.items() if not np.isfinite(v).all()]
            if bad:
                outcome.problems.append(f"NaN or infinity in {', '.join(bad)} ({dtype}) from finite weights, inputs "
                                        "and gradients in [-2, 2]")
                continue
            again = ctx.named(ctx.adapters[dtype].run(call))
            for k, v in named.items():
                allowed = (F64_TOL if dtype == "float64" else F32_DTYPE_ULPS * EPS32) * scale[k]
                err = float(np.abs(np.asarray(again[k], np.float64) - v).max(initial=0.0))
                outcome.comparisons.append(Comparison("the same call repeated", k, dtype, err, allowed, scale[k]))
    except LayerError as exc:
        outcome.failed_call(exc)
    return outcome


# -- batch -----------------------------------------------------------------------------------------------
def _batch(ctx, case):
    call, perm = case.call, np.asarray(case.extra["perm"])
    B = call.x.shape[1]

    def sides(run):
        plain = ctx.named(run(call))
        permuted = ctx.named(result_rows(run(call_rows(call, perm)), np.argsort(perm)))
        alone = ctx.named(join_rows([run(call_rows(call, [b])) for b in range(B)]))
        return {**_pairs("the batch permuted (mapped back)", permuted, plain),
                **_pairs("each row run alone (parameter gradients summed)", alone, plain)}

    return ctx.relation(sides, call)


# -- split -----------------------------------------------------------------------------------------------
def _split(ctx, case):
    call, k = case.call, case.extra["split_after"]

    def sides(run):
        plain = ctx.named(run(call))
        head = call.but(x=call.x[:k], dout=call.dout[:k])
        first = run(head, backward=False)  # the state after k steps, carried into the rest
        second = run(call.but(x=call.x[k:], states=first.finals, dout=call.dout[k:]))
        first = run(head.but(dstates=second.dstate0))  # the carried state's gradient passed back
        joined = Result(np.concatenate([first.out, second.out]), second.finals,
                        np.concatenate([first.dx, second.dx]), first.dstate0,
                        {n: first.grads[n] + second.grads[n] for n in first.grads})
        return _pairs(f"steps 0..{k - 1}, then steps {k}.. from the carried state", ctx.named(joined), plain)

    return ctx.relation(sides, call)


def _split_extra(draw, case, adapter):
    return {"split_after": draw(st.integers(1, case.sizes["T"] - 1), label="split_after")}


# -- padding ---------------------------------------------------------------------------------------------
def _padding(ctx, case):
    call = case.call
    T, B, _ = call.x.shape
    lengths = call.lengths
    valid = (np.arange(T)[:, None] < lengths[None, :])[:, :, None]

    def sides(run):
        plain = ctx.named(run(call))
        rows = []
        for b in range(B):
            n = int(lengths[b])
            one = call_rows(call, [b])
            r = run(one.but(x=one.x[:n], dout=one.dout[:n], lengths=None))
            rows.append(Result(_pad_time(r.out, T), r.finals, _pad_time(r.dx, T), r.dstate0, r.grads))
        alone = ctx.named(join_rows(rows))
        other = ctx.named(run(call.but(x=np.where(valid, call.x, case.extra["x_padding"]),
                                       dout=np.where(valid, call.dout, case.extra["dout_padding"]))))
        return {**_pairs("each row run alone at its length (zeros past it)", alone, plain),
                **_pairs("other values in the padding of x and dout", other, plain)}

    return ctx.relation(sides, call)


def _padding_extra(draw, case, adapter):
    c = case.call
    x, dout = draw_arrays(draw, [(c.x.shape, case.regime.x), (c.dout.shape, 1.0)], label="padding")
    return {"x_padding": x, "dout_padding": dout}


# -- bidirectional ---------------------------------------------------------------------------------------
def _swap_state(s, L):
    """(L*2, B, H): the two directions of each layer exchanged."""
    return s.reshape(L, 2, *s.shape[1:])[:, ::-1].reshape(s.shape)


def _swap_halves(a, H):
    return np.concatenate([a[..., H:], a[..., :H]], axis=-1)


def _bidirectional(ctx, case):
    call = case.call
    L, _, H = _structure(ctx)
    lengths = call.lengths
    R = lambda a: reverse_time(a, lengths)  # noqa: E731
    swap = lambda parts: _tuple(parts, lambda s: _swap_state(s, L))  # noqa: E731
    mirrored = Call(ctx.adapter.swap_directions(call.params), R(call.x), swap(call.states), lengths,
                    _swap_halves(R(call.dout), H), swap(call.dstates))
    T, B, _ = call.x.shape
    last = (np.full(B, T) if lengths is None else lengths) - 1

    def sides(run):
        plain = run(call)
        r = run(mirrored)
        back = Result(_swap_halves(R(r.out), H), swap(r.finals), R(r.dx), swap(r.dstate0),
                      ctx.adapter.swap_directions(r.grads))
        h_n = plain.finals[0][2 * (L - 1):]  # the top layer's final h: forward, reverse
        at_ends = np.stack([plain.out[last, np.arange(B), :H], plain.out[0, :, H:]])
        return {**_pairs("the time-reversed input through the exchanged directions (mapped back)", ctx.named(back),
                         ctx.named(plain)),
                ("the top layer's h_n against its outputs (forward: each row's last valid step; reverse: step 0)",
                 "h_n"): (h_n, at_ends)}

    return ctx.relation(sides, call)


def _bidirectional_applies(adapter, dtypes):
    if adapter.num_directions != 2:
        return "does not apply: unidirectional"
    try:
        adapter.swap_directions(adapter.parameters())
    except RelabelUnavailable as exc:
        return f"not available: {exc}"
    return None


# -- relabel ---------------------------------------------------------------------------------------------
def _permute_states(s, perms, L, D):
    out = s.copy()
    for l in range(L):
        for d in range(D):
            out[l * D + d] = s[l * D + d][..., perms[l, d]]
    return out


def _permute_out(a, perms, L, D, H):
    return np.concatenate([a[..., d * H:(d + 1) * H][..., perms[L - 1, d]] for d in range(D)], axis=-1)


def _relabel(ctx, case):
    call = case.call
    L, D, H = _structure(ctx)
    perms = {key: np.asarray(p) for key, p in case.extra["perms"].items()}
    inverse = inverse_perms(perms)
    ps = lambda parts, p: _tuple(parts, lambda s: _permute_states(s, p, L, D))  # noqa: E731
    relabelled = Call(ctx.adapter.relabel(call.params, perms), call.x, ps(call.states, perms), call.lengths,
                      _permute_out(call.dout, perms, L, D, H), ps(call.dstates, perms))

    def sides(run):
        r = run(relabelled)
        back = Result(_permute_out(r.out, inverse, L, D, H), ps(r.finals, inverse), r.dx, ps(r.dstate0, inverse),
                      ctx.adapter.relabel(r.grads, inverse))
        return _pairs("hidden units relabelled (mapped back)", ctx.named(back), ctx.named(run(call)))

    return ctx.relation(sides, call)


def _relabel_extra(draw, case, adapter):
    H = case.sizes["H"]
    return {"perms": {(l, d): draw(st.permutations(range(H)), label=f"perm_l{l}_d{d}")
                      for l in range(adapter.num_layers) for d in range(adapter.num_directions)}}


def _relabel_applies(adapter, dtypes):
    try:
        H = adapter.hidden_size
        adapter.relabel(adapter.parameters(), {(l, d): np.arange(H) for l in range(adapter.num_layers)
                                               for d in range(adapter.num_directions)})
    except RelabelUnavailable as exc:
        return f"not available: {exc}"
    return None


# -- linearity -------------------------------------------------------------------------------------------
COEFFICIENTS = (-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0)


def _linearity(ctx, case):
    call, e = case.call, case.extra
    a, b = e["a"], e["b"]
    other = call.but(dout=e["dout2"], dstates=e["dstates2"])
    mix = lambda u, v: None if u is None else tuple(a * p + b * q for p, q in zip(u, v))  # noqa: E731
    combined = call.but(dout=a * call.dout + b * e["dout2"], dstates=mix(call.dstates, e["dstates2"]))
    size = lambda u, v: abs(a) * np.abs(u) + abs(b) * np.abs(v)  # noqa: E731
    sizes = call.but(dout=size(call.dout, e["dout2"]), dstates=tuple(map(size, call.dstates, e["dstates2"])))

    def sides(run):
        u, v, w = run(call), run(other), run(combined)
        expected = Result(w.out, w.finals, a * u.dx + b * v.dx, mix(u.dstate0, v.dstate0),
                          {k: a * u.grads[k] + b * v.grads[k] for k in u.grads})
        got, exp = ctx.named(w), ctx.named(expected)
        names = [k for k in exp if k not in ("out",) and not k.endswith("_n")]
        return _pairs(f"the gradients of {a:g} (dout, dstate_n) + {b:g} (dout', dstate_n') against {a:g} g + {b:g} g'",
                      got, exp, names)

    return ctx.relation(sides, sizes)


def _linearity_extra(draw, case, adapter):
    c = case.call
    dout2, *dstates2 = draw_arrays(draw, [(c.dout.shape, 1.0)] + [(s.shape, 1.0) for s in c.dstates], label="u'")
    return {"a": draw(st.sampled_from(COEFFICIENTS), label="a"), "b": draw(st.sampled_from(COEFFICIENTS), label="b"),
            "dout2": dout2, "dstates2": tuple(dstates2)}


# -- directional derivative ------------------------------------------------------------------------------
FD_STEP = 1e-5  # along a direction of unit length; with Richardson's extrapolation the truncation error is O(step^4)
FD_REL = 1e-6  # of the terms' scale sum |g_i delta_i|, as the finite-difference tests of the gradients


def _blocks(call, direction):
    """[(label, value array, direction array)] for x, each initial-state part and each parameter."""
    blocks = [("x", call.x, direction["x"])]
    blocks += [(f"state{k}", s, direction["states"][k]) for k, s in enumerate(call.states)]
    blocks += [(name, call.params[name], direction["params"][name]) for name in sorted(call.params)]
    return blocks


def _moved(call, direction, t):
    x = call.x + t * direction["x"]
    states = tuple(s + t * d for s, d in zip(call.states, direction["states"]))
    params = {k: v + t * direction["params"][k] for k, v in call.params.items()}
    return call.but(params=params, x=x, states=states)


def directional_check(ctx, call, direction, labels):
    """(finite difference, inner product, tolerance, why undecided or None) along ``direction``.

    L(t) = sum(dout * out) + sum(dstate_n * state_n) at call + t * direction. Central differences with steps h
    and h/2 combined by Richardson, D = (4 D(h/2) - D(h)) / 3; compared with <gradient, direction>. Tolerance:
    FD_REL of sum |g_i d_i|, or NOISE_UNITS times the differences' rounding noise u * M / h (M = sum of |terms|
    of L) when larger. Undecided where L is not smooth along the direction within the step (relu's kink): the
    two central differences disagree, or the curvature estimate does not shrink with the step."""
    run = ctx.runner("float64")
    res = run(call)
    grads = {"x": res.dx, **{f"state{k}": d for k, d in enumerate(res.dstate0)}, **res.grads}
    inner = terms = 0.0
    for label, _, d in _blocks(call, direction):
        if label in labels:
            inner += float((grads[label] * d).sum())
            terms += float(np.abs(grads[label] * d).sum())

    def loss(t):
        r = run(_moved(call, direction, t), backward=False)
        return float((r.out * call.dout).sum() + sum((f * d).sum() for f, d in zip(r.finals, call.dstates)))

    magnitude = float(np.abs(res.out * call.dout).sum() + sum(np.abs(f * d).sum()
                                                                for f, d in zip(res.finals, call.dstates)))
    h = FD_STEP
    f0, fp, fm, fp2, fm2 = loss(0.0), loss(h), loss(-h), loss(h / 2), loss(-h / 2)
    d1, d2 = (fp - fm) / (2 * h), (fp2 - fm2) / h
    fd = (4 * d2 - d1) / 3
    tol = max(FD_REL * terms, NOISE_UNITS * U * magnitude / (h / 2))
    curve1, curve2 = (fp + fm - 2 * f0) / h, (fp2 + fm2 - 2 * f0) / (h / 2)
    undecided = None
    if abs(d1 - d2) > tol or (abs(curve2) > 0.75 * abs(curve1) and abs(curve2) > tol):
        undecided = "the loss is not differentiable along the drawn direction within the step (a kink, as relu's at 0)"
    return fd, inner, tol, undecided, terms


def _direction_for(direction, keep):
    """The direction with every block but ``keep`` zeroed."""
    zero = lambda k, a: a if k == keep else np.zeros_like(a)  # noqa: E731
    return {"x": zero("x", direction["x"]),
            "states": tuple(zero(f"state{k}", s) for k, s in enumerate(direction["states"])),
            "params": {k: zero(k, v) for k, v in direction["params"].items()}}


def _directional(ctx, case, per_block=False):
    call, direction = case.call, case.extra["direction"]
    labels = [label for label, _, _ in _blocks(call, direction)]
    outcome = Outcome()
    try:
        fd, inner, tol, undecided, terms = directional_check(ctx, call, direction, labels)
        if undecided:
            outcome.undecided = undecided
            return outcome
        outcome.comparisons.append(Comparison("central differences of L along a random direction", "dL/dt", "float64",
                                              abs(fd - inner), tol, terms))
        outcome.details.append(f"finite differences give dL/dt = {fd:.6g}; the gradients give <g, direction> = "
                               f"{inner:.6g}")
        if per_block and not outcome.ok:  # which gradient: the same check along each block alone
            names = {"x": "dx", **{f"state{k}": f"d{s}0" for k, s in enumerate(ctx.state_names)}}
            wrong, right = [], []
            for label in labels:
                d = _direction_for(direction, label)
                fd, inner, tol, und, _ = directional_check(ctx, call, d, [label])
                name = names.get(label, f"d {label}")
                if und is None and abs(fd - inner) > tol:
                    wrong.append(f"{name} ({inner:.4g} against {fd:.4g})")
                elif und is None:
                    right.append(name)
            if wrong:
                outcome.details.append(f"along each input alone, these gradients disagree: {', '.join(wrong)}; "
                                       f"these agree: {', '.join(right) or 'none'}")
    except LayerError as exc:
        outcome.failed_call(exc)
    return outcome


def _unit(draw, shapes):
    """Arrays of a random direction of unit length (0 when everything drawn is 0)."""
    parts = draw_arrays(draw, [(s, 1.0) for s in shapes], label="direction")
    norm = float(np.sqrt(sum((p**2).sum() for p in parts)))
    return [p / norm if norm > 0 else p for p in parts]


def _directional_extra(draw, case, adapter):
    c = case.call
    names = sorted(c.params)
    parts = _unit(draw, [c.x.shape, *[s.shape for s in c.states], *[c.params[n].shape for n in names]])
    S = len(c.states)
    return {"direction": {"x": parts[0], "states": tuple(parts[1:1 + S]),
                          "params": dict(zip(names, parts[1 + S:]))}}


# -- zero weights ----------------------------------------------------------------------------------------
def _roles_applies(adapter, dtypes):
    return None if adapter.roles() is not None else (
        "not available: the layer declares no torch parameter layout (weight_ih_l0, weight_hh_l0, bias_*)")


def _zeroed(params, which):
    return {k: np.zeros_like(v) if which(k) else v for k, v in params.items()}


def _zero_input(ctx, case):
    call = case.call
    roles = ctx.adapter.roles()
    first_layer_input = lambda k: roles[k] == "input" and parse_name(k)[1] == 0  # noqa: E731
    base = call.but(params=_zeroed(call.params, first_layer_input),
                    states=tuple(np.zeros_like(d) for d in call.dstates))
    zero_at_zero = ctx.adapter.zero_at_zero

    def sides(run):
        r, other = ctx.named(run(base)), ctx.named(run(base.but(x=case.extra["x2"])))
        fwd = [k for k in r if k == "out" or k.endswith("_n")]
        alike = {k: np.broadcast_to(r[k][:, :1], r[k].shape) for k in fwd}
        pairs = {**_pairs("another input x'", other, r, fwd),
                 ("the input gradient", "dx"): (r["dx"], np.zeros_like(r["dx"])),
                 **_pairs("every batch row alike", r, alike, fwd)}
        if zero_at_zero:
            z = ctx.named(run(base.but(params=_zeroed(call.params, lambda k: True)), backward=False))
            pairs.update(_pairs("every parameter zero: zero outputs", z, {k: np.zeros_like(z[k]) for k in fwd}, fwd))
        return pairs

    return ctx.relation(sides, base)


def _zero_input_extra(draw, case, adapter):
    return {"x2": draw_array(draw, case.call.x.shape, case.regime.x, label="x'")}


def _zero_recurrent(ctx, case):
    call = case.call
    roles = ctx.adapter.roles()
    L, D, _ = _structure(ctx)
    T = call.x.shape[0]
    base = call.but(params=_zeroed(call.params, lambda k: roles[k] == "recurrent"), dstates=None)

    def sides(run):
        r = run(base)
        steps = [run(base.but(x=base.x[t:t + 1], dout=base.dout[t:t + 1])) for t in range(T)]
        finals = []
        for k in range(len(r.finals)):
            f = np.empty_like(r.finals[k])
            for idx in range(L * D):  # forward directions end at step T-1, reverse ones at step 0
                f[idx] = steps[T - 1 if idx % D == 0 else 0].finals[k][idx]
            finals.append(f)
        recurrent = {k for k in r.grads if roles[k] == "recurrent"}
        got = Result(np.concatenate([s.out for s in steps]), tuple(finals), np.concatenate([s.dx for s in steps]),
                     r.dstate0, {k: sum(s.grads[k] for s in steps) for k in r.grads if k not in recurrent})
        plain = Result(r.out, r.finals, r.dx, tuple(np.zeros_like(d) for d in r.dstate0),
                       {k: v for k, v in r.grads.items() if k not in recurrent})
        return _pairs("each step run alone (any initial state; its own part of dout)", ctx.named(got),
                      ctx.named(plain))

    return ctx.relation(sides, base)


def _zero_recurrent_applies(adapter, dtypes):
    if adapter.roles() is None:
        return _roles_applies(adapter, dtypes)
    if adapter.memoryless is None:
        return "not available: the adapter does not say whether the state reaches the next step only through the " \
               "recurrent weights"
    if not adapter.memoryless:
        return "does not apply: the cell carries its state past the recurrent weights too (an LSTM's c, a GRU's z h)"
    return None


# -- dtype -----------------------------------------------------------------------------------------------
def _dtype(ctx, case):
    outcome = Outcome()
    try:
        scale = ctx.scales(case.call)
        r64, r32 = ctx.named(ctx.run("float64", case.call)), ctx.named(ctx.run("float32", case.call))
        for k, v in r64.items():
            err = float(np.abs(np.asarray(r32[k], np.float64) - v).max(initial=0.0))
            outcome.comparisons.append(Comparison("float32 against float64 on the same numbers", k, "float32", err,
                                                  F32_DTYPE_ULPS * EPS32 * scale[k], scale[k]))
    except LayerError as exc:
        outcome.failed_call(exc)
    return outcome


# -- what a broken relation suggests ---------------------------------------------------------------------
def _forward_or_backward(outcome, forward_text, backward_text):
    """The sentence for what broke in the smallest case: outputs or final states, or only gradients."""
    broken = {c.tensor for c in outcome.broken()}
    if not broken:
        return None
    if "out" in broken or any(t.endswith("_n") for t in broken):
        return forward_text
    return "only gradients break in this case: " + backward_text


def _split_hint(outcome):
    return _forward_or_backward(
        outcome, "the forward differs when the state is carried: the final state returned is not the state the "
                 "next call should start from (or the initial state is not used as given)",
        "the gradient reaching the initial state (or the one carried between steps) is incomplete")


def _padding_hint(outcome):
    variants = {c.variant.split(" ")[0] for c in outcome.broken()}
    if variants == {"other"}:
        return "what sits in the padding reaches the results: padded steps must be skipped, not computed"
    return _forward_or_backward(
        outcome, "padded steps change the state or the outputs (outputs past a row's length must be zero and h_n "
                 "the state at its last valid step)",
        "gradient goes in or out at padded steps (or the forward's padding error does not show in the outputs "
        "of this case)")


def _batch_hint(outcome):
    variants = {c.variant for c in outcome.broken()}
    if all(v.startswith("each row") for v in variants):
        return _forward_or_backward(outcome, "rows influence each other: something is shared across the batch",
                                    "the gradients of a batch are not those of its rows: rows are coupled in the "
                                    "backward, or parameter gradients are not summed over rows (a mean?)")
    return "permuting the batch changes the results: rows are not handled alike (an index mixed up across rows?)"


def _bidirectional_hint(outcome):
    broken = {c.variant for c in outcome.broken()}
    if any(v.startswith("the top layer") for v in broken):
        return ("h_n does not match the outputs: the directions' halves of the output (forward first) or of h_n "
                "(forward at even indices) are mixed up")
    return ("the two directions are not mirror images: the reverse direction does not read the sequence backwards "
            "from each row's last valid step, or it uses the forward direction's weights")


def _well_formed_hint(outcome):
    if any(c.variant == "the same call repeated" for c in outcome.broken()):
        return ("the layer is not deterministic: randomness left on (dropout, noise), or state kept between calls "
                "(a buffer, accumulated gradients that are never cleared)")
    return None


PROPERTIES = (
    Property("well-formed", "every call returns finite arrays of the documented shapes and the call's dtype, leaves "
             "its inputs unchanged, and gives the same results when repeated", _well_formed, hint=_well_formed_hint),
    Property("batch", "batch rows are independent: permuting the batch permutes outputs, states and input "
             "gradients; each row run alone gives its row; parameter gradients are sums over rows", _batch,
             draw_extra=lambda draw, case, adapter: {"perm": draw(st.permutations(range(case.sizes["B"])),
                                                                  label="perm")}, min_B=2, hint=_batch_hint),
    Property("split", "splitting a sequence and carrying the state equals the whole sequence: outputs, final state, "
             "and the gradients when the carried state's gradient is passed back", _split,
             applies=lambda a, dtypes: None if a.num_directions == 1 else
             "does not apply to a bidirectional layer (its reverse direction reads the future; see bidirectional)",
             draw_extra=_split_extra, min_T=2, lengths="never", hint=_split_hint),
    Property("padding", "a padded batch with lengths equals each row run alone at its length (zeros past it); "
             "whatever sits in the padding changes nothing", _padding,
             applies=lambda a, dtypes: None if a.supports_lengths else "not available: the layer takes no lengths",
             draw_extra=_padding_extra, min_T=2, lengths="padded", hint=_padding_hint),
    Property("bidirectional", "the reverse direction equals the forward direction of the time-reversed input with "
             "the reverse weights: exchanging the directions' weights and reversing each row in time mirrors every "
             "result", _bidirectional,
             applies=_bidirectional_applies, hint=_bidirectional_hint),
    Property("relabel", "relabelling hidden units (permuting rows and columns of every weight consistently) "
             "permutes the states and nothing else", _relabel, applies=_relabel_applies, draw_extra=_relabel_extra,
             min_H=2),
    Property("linearity", "the backward is linear in the incoming gradients: g(a u + b v) = a g(u) + b g(v)",
             _linearity, draw_extra=_linearity_extra),
    Property("directional", "a directional derivative of the forward (central differences along a random "
             "direction, float64) equals the gradients' inner product with that direction", _directional,
             draw_extra=_directional_extra, states="always",
             diagnose=lambda ctx, case: _directional(ctx, case, per_block=True)),
    Property("zero-input", "zero input weights and zero state give the bias-only response: the same for every input "
             "and every row, no input gradient, and zero when every parameter is zero", _zero_input,
             applies=_roles_applies, draw_extra=_zero_input_extra, lengths="never", states="never"),
    Property("zero-recurrent", "a layer with zero recurrent weights is a per-step feed-forward map: each step alone "
             "gives that step's output and gradients, whatever the initial state", _zero_recurrent,
             applies=_zero_recurrent_applies, lengths="never", states="always"),
    Property("dtype", "float32 results are within the float32 rule of the float64 results on the same numbers",
             _dtype, applies=lambda a, dtypes: None if "float32" in dtypes else "not asked: float64 only",
             float32_only=True),
)
PROPERTY_NAMES = tuple(p.name for p in PROPERTIES)
