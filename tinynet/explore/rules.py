"""Each op's backward rule written out with the numbers of one element.

    backward_rule(op, inputs, output, grad_out, grads) -> {"element": ..., "lines": [...],
                                                          "value": v, "backward": b}

For the element of the op's first input that received the largest gradient, the rule in the
op's docstring is evaluated term by term on the actual values (``value``) and set beside what
the op's ``Function.backward`` returned for that element (``backward``): the page shows both,
and the tests hold them equal. In the written terms, g is grad_out, dL/d(the op's output).
Ops without an entry in ``RULES`` say which backward computed the number and show it.
"""

from __future__ import annotations

import numpy as np

from tinynet.ops.elementwise import unbroadcast

TERMS_SHOWN = 4


def backward_rule(op, inputs, output, grad_out, grads) -> dict:
    """The rule of ``op`` (a ``tinynet.trace.OpRecord``) for one element of its first input
    with a gradient; ``inputs`` are the input values (None for None inputs), ``grads`` what
    its ``Function.backward`` returned."""
    index = next(
        (i for i, grad in enumerate(grads) if grad is not None and np.size(grad) > 0), None
    )
    if index is None:
        return {"lines": [f"{op.op} sends no gradient to its inputs"]}
    grad_in = np.asarray(grads[index], np.float64)
    element = np.unravel_index(int(np.argmax(np.abs(grad_in))), grad_in.shape)
    rule = RULES.get(op.op)
    x = [None if v is None else np.asarray(v, np.float64) for v in inputs]
    g = np.asarray(grad_out, np.float64)
    if rule is None:
        lines, value = [f"grad_in{_at(element)} computed by {op.fn.__name__}.backward"], None
    else:
        lines, value = rule(op, x, np.asarray(output, np.float64), g, element, index)
    entry = {
        "input": index,
        "element": [int(i) for i in element],
        "lines": lines,
        "backward": float(grad_in[element]),
    }
    if value is not None:
        entry["value"] = float(value)
        entry["lines"] = lines + [f"= {_f(value)}   ({op.fn.__name__}.backward gave "
                                  f"{_f(grad_in[element])})"]  # fmt: skip
    return entry


def _f(v) -> str:
    return f"{float(v):.6g}"


def _at(element) -> str:
    """'[i, j]' for an array's element; nothing for a scalar's (lesson 1's grad_in = grad_out)."""
    return "[" + ", ".join(str(int(i)) for i in element) + "]" if len(element) else ""


def _terms(terms: list[tuple[str, float]], name: str) -> tuple[list[str], float]:
    """'name = Σ ...' written as its first terms, then how many there are and their total."""
    total = float(sum(value for _, value in terms))
    shown = " + ".join(text for text, _ in terms[:TERMS_SHOWN])
    more = f" + … ({len(terms)} terms in all)" if len(terms) > TERMS_SHOWN else ""
    return [f"{name} = {shown or '0 (no term)'}{more}"], total


def _relu(op, x, y, g, e, index):
    a = _at(e)
    return [
        f"grad_in{a} = grad_out{a} · [x{a} > 0]",
        f"= {_f(g[e])} · [{_f(x[0][e])} > 0]",
    ], g[e] * (x[0][e] > 0)


def _add(op, x, y, g, e, index):
    a = _at(e)
    value = unbroadcast(g, x[index].shape)[e]
    return [f"grad_in{a} = grad_out{a}  (a sum copies the gradient to each input)"], value


def _mul(op, x, y, g, e, index):
    other = np.broadcast_to(x[1 - index], g.shape)
    total = unbroadcast(g * other, x[index].shape)[e]
    name, other_name = ("a", "b") if index == 0 else ("b", "a")
    rule = f"grad_{name}{_at(e)} = grad_out{_at(e)} · {other_name}{_at(e)}  (a product swaps them)"
    if np.shape(x[index]) != g.shape:
        return [rule + ", summed over the axes broadcasting added"], total
    return [rule, f"= {_f(g[e])} · {_f(other[e])}"], total


def _sub(op, x, y, g, e, index):
    sign = 1 if index == 0 else -1
    value = sign * unbroadcast(g, np.shape(x[index]))[e]
    name = "grad_a" if index == 0 else "grad_b"
    return [f"{name}{_at(e)} = {'' if index == 0 else '-'}grad_out{_at(e)}  (y = a - b)"], value


def _neg(op, x, y, g, e, index):
    return [f"grad_x{_at(e)} = -grad_out{_at(e)} = -({_f(g[e])})"], -g[e]


def _div(op, x, y, g, e, index):
    a, b = (np.broadcast_to(v, g.shape) for v in x)
    if index == 0:
        value = unbroadcast(g / b, np.shape(x[0]))[e]
        rule = [f"grad_a{_at(e)} = grad_out / b  (y = a / b)"]
    else:
        value = unbroadcast(-g * a / b**2, np.shape(x[1]))[e]
        rule = [f"grad_b{_at(e)} = -grad_out · a / b²  (y = a / b)"]
    if np.shape(x[index]) != g.shape:
        return [rule[0] + ", summed over the axes broadcasting added"], value
    numbers = (f"= {_f(g[e])} / {_f(b[e])}" if index == 0
               else f"= -{_f(g[e])} · {_f(a[e])} / {_f(b[e])}²")  # fmt: skip
    return rule + [numbers], value


def _exp(op, x, y, g, e, index):
    return [f"grad_x{_at(e)} = grad_out · e^x = grad_out · y", f"= {_f(g[e])} · {_f(y[e])}"], (
        g[e] * y[e]
    )


def _log(op, x, y, g, e, index):
    return [f"grad_x{_at(e)} = grad_out / x", f"= {_f(g[e])} / {_f(x[0][e])}"], g[e] / x[0][e]


def _softmax(op, x, y, g, e, index):
    dim = op.params["dim"]
    line = [slice(None) if axis == dim else i for axis, i in enumerate(e)]
    dot = float(np.sum(g[tuple(line)] * y[tuple(line)]))
    return ["grad_x_i = y_i · (grad_out_i - Σ_j grad_out_j · y_j)  (along dim "
            f"{dim}; y = softmax(x))", f"= {_f(y[e])} · ({_f(g[e])} - {_f(dot)})"], y[e] * (
        g[e] - dot
    )  # fmt: skip


def _log_softmax(op, x, y, g, e, index):
    dim = op.params["dim"]
    line = [slice(None) if axis == dim else i for axis, i in enumerate(e)]
    total = float(np.sum(g[tuple(line)]))
    p = np.exp(y[e])
    return ["grad_x_i = grad_out_i - softmax(x)_i · Σ_j grad_out_j  (along dim "
            f"{dim})", f"= {_f(g[e])} - {_f(p)} · {_f(total)}"], g[e] - p * total  # fmt: skip


def _reduce(op, x, y, g, e, index):
    kept = g if op.params["keepdim"] else np.expand_dims(g, op.params["axes"])
    count = 1 if op.op == "Sum" else x[0].size // max(g.size, 1)
    value = np.broadcast_to(kept, x[0].shape)[e] / count
    over = "" if count == 1 else f" / {count}"
    return [f"grad_x{_at(e)} = grad_out{over}  (each element of x counts once in the "
            f"{op.op.lower()}: the gradient is copied back over the reduced axes)"], value


def _pow(op, x, y, g, e, index):
    if index != 0:
        return ["grad_exponent = grad_out · y · log(x)"], None
    p = float(np.asarray(x[1]).reshape(-1)[0])
    value = g[e] * p * x[0][e] ** (p - 1)
    return [f"grad_x{_at(e)} = grad_out · p · x^(p-1)",
            f"= {_f(g[e])} · {_f(p)} · {_f(x[0][e])}^{_f(p - 1)}"], value  # fmt: skip


def _conv2d(op, x, y, g, e, index):
    inp, w = x[0], x[1]
    sh, sw = op.params["stride"]
    (pt, _), (pl, _) = op.params["padding"]
    _, _, kh, kw = w.shape
    if index == 0:
        n, c, i, j = e
        terms = []
        for o in range(w.shape[0]):
            for ki in range(kh):
                for kj in range(kw):
                    p, q = i + pt - ki, j + pl - kj
                    if p % sh or q % sw:
                        continue
                    p, q = p // sh, q // sw
                    if 0 <= p < g.shape[2] and 0 <= q < g.shape[3]:
                        weight, grad = w[o, c, ki, kj], g[n, o, p, q]
                        text = f"W[{o},{c},{ki},{kj}]·g[{n},{o},{p},{q}] ({_f(weight)}·{_f(grad)})"
                        terms.append((text, weight * grad))
        lines, total = _terms(terms, f"grad_x{_at(e)}")
        rule = ("grad_x[n,c,i,j] = Σ_{o,ki,kj} W[o,c,ki,kj] · grad_out[n,o,p,q] over the outputs "
                "(p,q) whose window holds (i,j): p·s + ki - pad = i")
        return [rule] + lines, total
    if index == 1:
        o, c, ki, kj = e
        padded = np.pad(inp, ((0, 0), (0, 0), op.params["padding"][0], op.params["padding"][1]))
        window = padded[:, c, ki : ki + sh * g.shape[2] : sh, kj : kj + sw * g.shape[3] : sw]
        products = window * g[:, o]
        terms = [(f"g[{n},{o},{p},{q}]·x[{n},{c},{p * sh + ki - pt},{q * sw + kj - pl}] "
                  f"({_f(g[n, o, p, q])}·{_f(window[n, p, q])})", products[n, p, q])
                 for n, p, q in np.ndindex(products.shape)]  # fmt: skip
        lines, total = _terms(terms, f"grad_W{_at(e)}")
        return ["grad_W[o,c,ki,kj] = Σ_{n,p,q} grad_out[n,o,p,q] · x_pad[n,c,p·s+ki,q·s+kj]"] + (
            lines
        ), total
    (o,) = e
    return [f"grad_b[{o}] = Σ_{{n,p,q}} grad_out[n,{o},p,q]  ({g[:, o].size} terms)"], g[:, o].sum()


def _max_pool(op, x, y, g, e, index):
    n, c, i, j = e
    (ys, ye), (xs, xe) = op.params["y_windows"], op.params["x_windows"]
    terms = []
    for p in range(len(ys)):
        for q in range(len(xs)):
            if ys[p] <= i < ye[p] and xs[q] <= j < xe[q]:
                window = x[0][n, c, ys[p] : ye[p], xs[q] : xe[q]]
                first = np.unravel_index(int(np.argmax(window)), window.shape)
                if (ys[p] + first[0], xs[q] + first[1]) == (i, j):
                    terms.append((f"g[{n},{c},{p},{q}] ({_f(g[n, c, p, q])})", g[n, c, p, q]))
    lines, total = _terms(terms, f"grad_x{_at(e)}")
    return [f"x{_at(e)} = {_f(x[0][e])} is the maximum of {len(terms)} window(s); "
            "grad_x = Σ grad_out of the windows it won"] + lines, total  # fmt: skip


def _avg_pool(op, x, y, g, e, index):
    n, c, i, j = e
    (ys, ye, yd), (xs, xe, xd) = op.params["y_windows"], op.params["x_windows"]
    terms = []
    for p in range(len(ys)):
        for q in range(len(xs)):
            if ys[p] <= i < ye[p] and xs[q] <= j < xe[q]:
                d = float(yd[p] * xd[q])
                terms.append((f"g[{n},{c},{p},{q}]/{d:g} ({_f(g[n, c, p, q])}/{d:g})",
                              g[n, c, p, q] / d))  # fmt: skip
    lines, total = _terms(terms, f"grad_x{_at(e)}")
    return ["grad_x = Σ grad_out[window] / window size, over the windows that hold x"] + (
        lines
    ), total


def _concat(op, x, y, g, e, index):
    dim = op.params["dim"]
    offset = sum(x[k].shape[dim] for k in range(index))
    source = list(e)
    source[dim] += offset
    return [f"grad_x{index}{_at(e)} = grad_out{_at(source)}  (the slice input {index} filled)",
            f"= {_f(g[tuple(source)])}"], g[tuple(source)]  # fmt: skip


def _batch_norm(op, x, y, g, e, index):
    inp, gamma = x[0], x[1]
    eps, c = op.params["eps"], e[1] if index == 0 else e[0]
    axes = (0,) + tuple(range(2, inp.ndim))
    if op.params["training"]:
        mu, var = inp.mean(axis=axes), inp.var(axis=axes)
    else:
        mu, var = np.asarray(op.params["running_mean"]), np.asarray(op.params["running_var"])
    sigma = np.sqrt(var[c] + eps)
    shape = [1] * inp.ndim
    shape[1] = -1
    x_hat = (inp - mu.reshape(shape)) / np.sqrt(var + eps).reshape(shape)
    if index == 1:
        total = (g[:, c] * x_hat[:, c]).sum()
        return [f"grad_γ[{c}] = Σ grad_out · x̂ over channel {c} ({g[:, c].size} terms)"], total
    if index == 2:
        return [f"grad_β[{c}] = Σ grad_out over channel {c} ({g[:, c].size} terms)"], g[:, c].sum()
    gamma_c = 1.0 if gamma is None else gamma[c]
    if not op.params["training"]:
        return [f"grad_x{_at(e)} = grad_out · γ/σ,  σ = sqrt(running_var + eps)",
                f"= {_f(g[e])} · {_f(gamma_c)}/{_f(sigma)}"], g[e] * gamma_c / sigma  # fmt: skip
    mean_g, mean_gx = g[:, c].mean(), (g[:, c] * x_hat[:, c]).mean()
    return ["grad_x = (γ/σ)·(grad_out - mean(grad_out) - x̂ · mean(grad_out · x̂)) per channel",
            f"= ({_f(gamma_c)}/{_f(sigma)})·({_f(g[e])} - {_f(mean_g)} - {_f(x_hat[e])}·"
            f"{_f(mean_gx)})"], gamma_c / sigma * (g[e] - mean_g - x_hat[e] * mean_gx)  # fmt: skip


def _lrn(op, x, y, g, e, index):
    size, alpha, beta, k = (op.params[key] for key in ("size", "alpha", "beta", "k"))
    inp = x[0]
    n, j, h, w = e
    column = inp[n, :, h, w]
    channels = len(column)
    squares = np.pad(column**2, (size // 2, (size - 1) // 2))
    s = k + alpha / size * np.array([squares[c : c + size].sum() for c in range(channels)])
    direct = g[n, j, h, w] * s[j] ** -beta
    window = range(max(0, j - (size - 1) // 2), min(channels, j + size // 2 + 1))
    cross = [(c, g[n, c, h, w] * column[c] * s[c] ** (-beta - 1)) for c in window]
    total = direct - 2 * alpha * beta / size * column[j] * sum(v for _, v in cross)
    return ["grad_x_j = g_j S_j^-β - (2αβ/n) x_j Σ_{c : j in W(c)} g_c x_c S_c^(-β-1),"
            "  S_c = k + α/n Σ_{c' in W(c)} x_c'²",
            f"j = {j}: g_j = {_f(g[n, j, h, w])}, S_j = {_f(s[j])}, x_j = {_f(column[j])}, "
            f"{len(cross)} channels c in the sum"], total  # fmt: skip


def _linear(op, x, y, g, e, index):
    inp, w = x[0], x[1]
    rows, grad_rows = inp.reshape(-1, inp.shape[-1]), g.reshape(-1, g.shape[-1])
    if index == 0:
        m, j = np.ravel_multi_index(e[:-1], inp.shape[:-1]) if inp.ndim > 1 else 0, e[-1]
        terms = [(f"g[{m},{i}]·W[{i},{j}] ({_f(grad_rows[m, i])}·{_f(w[i, j])})",
                  grad_rows[m, i] * w[i, j]) for i in range(w.shape[0])]  # fmt: skip
        lines, total = _terms(terms, f"grad_x{_at(e)}")
        return ["grad_x = grad_out · W:  grad_x[m,j] = Σ_i grad_out[m,i] · W[i,j]"] + lines, total
    if index == 1:
        i, j = e
        terms = [(f"g[{m},{i}]·x[{m},{j}] ({_f(grad_rows[m, i])}·{_f(rows[m, j])})",
                  grad_rows[m, i] * rows[m, j]) for m in range(len(rows))]  # fmt: skip
        lines, total = _terms(terms, f"grad_W{_at(e)}")
        return ["grad_W = grad_outᵀ · x:  grad_W[i,j] = Σ_m grad_out[m,i] · x[m,j]"] + lines, total
    return [f"grad_b[{e[0]}] = Σ_m grad_out[m,{e[0]}]"], grad_rows[:, e[0]].sum()


def _cross_entropy(op, x, y, g, e, index):
    logits = x[0]
    target = np.asarray(x[1]).astype(np.int64)
    smoothing, reduction = op.params["label_smoothing"], op.params["reduction"]
    n, k = e
    z = logits[n] - logits[n].max()
    p = np.exp(z) / np.exp(z).sum()
    q = smoothing / logits.shape[1] + (1 - smoothing) * (k == target[n])
    scale = g.reshape(-1)[0] / len(logits) if reduction == "mean" else g.reshape(-1)[
        n if reduction == "none" else 0
    ]
    per_row = " / N" if reduction == "mean" else ""
    return [f"grad_logits[n,k] = (softmax(logits)[n,k] - q[n,k]) · grad_out{per_row},"
            "  q = (1-ε)·onehot(target) + ε/C",
            f"n = {n}, k = {k}, target = {target[n]}: ({_f(p[k])} - {_f(q)}) · {_f(scale)}"], (
        p[k] - q
    ) * scale  # fmt: skip


def _reshape(op, x, y, g, e, index):
    flat = int(np.ravel_multi_index(e, x[0].shape))
    source = np.unravel_index(flat, g.shape)
    return [f"grad_x{_at(e)} = grad_out{_at(source)}  (the same element, reshaped: "
            f"flat index {flat})", f"= {_f(g[source])}"], g[source]  # fmt: skip


RULES = {
    "ReLU": _relu,
    "Add": _add,
    "Mul": _mul,
    "Pow": _pow,
    "Conv2d": _conv2d,
    "MaxPool2d": _max_pool,
    "AvgPool2d": _avg_pool,
    "AdaptiveAvgPool2d": _avg_pool,
    "Concat": _concat,
    "BatchNorm": _batch_norm,
    "LocalResponseNorm": _lrn,
    "Linear": _linear,
    "CrossEntropy": _cross_entropy,
    "Reshape": _reshape,
    "Sub": _sub,
    "Neg": _neg,
    "Div": _div,
    "Exp": _exp,
    "Log": _log,
    "Softmax": _softmax,
    "LogSoftmax": _log_softmax,
    "Sum": _reduce,
    "Mean": _reduce,
}
