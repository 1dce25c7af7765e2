"""Inference plans: a model's eval forward traced once, rewritten and run without autograd.

    plan = tinynet.inference(model, example_input)
    outputs = plan(x)

See ``tinynet.inference.plan`` for what a plan promises, ``passes`` for the graph rewrites and
``program`` for where the values live.
"""

from tinynet.inference.plan import Plan, PlannedOp


def inference(
    model, example_input=None, passes=None, column_block=None, winograd=True, trace_on_call=1
) -> Plan:
    """A callable plan of ``model``'s eval-mode forward for inputs like ``example_input``:
    ``plan(x)`` returns what ``model.eval()(x)`` returns, computed from a snapshot of the
    weights taken now (see ``tinynet.inference.plan``). Without ``example_input`` the first
    call plans (and returns the traced forward's outputs): for a loop over batches.
    passes: the names of the rewrites to apply (default all of
    ``tinynet.inference.passes.PASSES``); column_block: GEMM columns per bias/ReLU epilogue
    block (default: one block per im2col chunk); winograd: run the 3x3 stride-1 padding-1
    convolutions where ``tinynet.inference.winograd.use_winograd`` measured it faster by
    Winograd's F(2x2, 3x3) (within that module's error bound of the direct convolution).
    trace_on_call: for each input shape, the call that traces and plans it; the calls before
    it run the snapshot eagerly. Tracing records the forward (a max pool then finds its
    winners, every op saves what its backward needs): the small GoogLeNet's traced forward at
    batch 256 took 1.35x its no_grad forward, so a shape met once (an evaluation's last,
    smaller batch, or its only one) is cheaper eager: evaluate() passes 2."""
    return Plan(
        model,
        example_input,
        passes=passes,
        column_block=column_block,
        winograd=winograd,
        trace_on_call=trace_on_call,
    )


__all__ = ["Plan", "PlannedOp", "inference"]
