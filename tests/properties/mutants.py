"""Planted mistakes for the property suite's mutation score: each is a small, realistic slip in a recurrent layer, and
``CAUGHT_BY`` records which properties catch it (``benchmarks/properties_mutants.py`` runs every mutant against every
property and rewrites nothing: it prints the table and says where it differs from ``CAUGHT_BY``).

Most are :class:`tests.properties.mini.Mini` (a home-made NumPy layer on the custom adapter) with one ``bug=``; two
are ``torch.nn`` subclasses on the torch adapter. Every name below is a mistake a reference-free suite can see: a
consistent change of convention (a different gate order used by forward and backward alike) is another valid layer,
which no relation can tell apart, so the gate-order mutant here is the inconsistent one (the backward returns the
gate blocks in another order than the forward reads them).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from .mini import Mini


@dataclass(frozen=True)
class Mutant:
    name: str
    mistake: str
    factory: object
    adapter: str
    caught_by: tuple


def _mini(cell, bug, bidirectional=False, square=False):
    """A factory of Mini layers with one bug (``square``: input size = hidden size, whatever is asked)."""

    def factory(I, H):
        return Mini(cell, H if square else I, H, bidirectional=bidirectional, bug=bug)

    factory.__qualname__ = f"Mini[{cell}{', bidirectional' if bidirectional else ''}, {bug}]"
    return factory


def _torch_shared_h0(I, H):
    import torch

    class GRUSharedH0(torch.nn.GRU):
        """Every row starts from the batch's mean initial state (h0 averaged where it should be per row)."""

        def forward(self, input, hx=None):
            return super().forward(input, hx.mean(dim=1, keepdim=True).expand_as(hx).contiguous())

    return GRUSharedH0(I, H)


def _torch_half_outputs(I, H):
    import torch

    class LSTMHalfOutputs(torch.nn.LSTM):
        """In float32 the outputs pass through float16 (a mixed-precision cast left in)."""

        def forward(self, input, hx=None):
            out, state = super().forward(input, hx)
            if self.weight_ih_l0.dtype == torch.float32:
                if isinstance(out, torch.nn.utils.rnn.PackedSequence):
                    out = out._replace(data=out.data.half().float())
                else:
                    out = out.half().float()
            return out, state

    return LSTMHalfOutputs(I, H)


shared_h0_gru = _torch_shared_h0  # for the command line: tests.properties.mutants:shared_h0_gru
_torch_shared_h0.__qualname__ = "torch GRU, h0 averaged over the batch"
_torch_half_outputs.__qualname__ = "torch LSTM, float32 outputs through float16"

M = partial(Mutant, adapter="custom")
MUTANTS = (
    M("rnn tanh' as 1 - h", "the tanh' factor written 1 - h instead of 1 - h^2",
      _mini("rnn", "tanh_grad_1_minus_h"), caught_by=("directional",)),
    M("rnn carried gradient dropped", "the gradient carried from step t+1 into step t is dropped",
      _mini("rnn", "no_h_carry"), caught_by=("split", "padding", "directional")),
    M("rnn dW_hh from h_t", "dW_hh built from the new state h_t instead of the state the step read, h_{t-1}",
      _mini("rnn", "dWhh_uses_h_t"), caught_by=("directional",)),
    M("rnn bias used twice", "the forward adds b_ih twice, the backward counts it once",
      _mini("rnn", "bias_twice"), caught_by=("directional",)),
    M("rnn input skips its weights", "x is added to the pre-activation beside W_ih x (a stray shortcut)",
      _mini("rnn", "input_skips_weights"), caught_by=("relabel", "zero-input")),
    M("rnn W_ih in the recurrence", "the recurrent term uses W_ih where W_hh belongs (copy-paste; I = H)",
      _mini("rnn", "recurrence_reads_wih", square=True), caught_by=("relabel", "zero-recurrent")),
    M("rnn batch coupling", "the recurrence reads the batch's mean state instead of each row's",
      _mini("rnn", "batch_coupled"), caught_by=("batch", "padding")),
    M("rnn padding lets gradient in", "the backward ignores the lengths (gradient flows at padded steps)",
      _mini("rnn", "padding_grad_leak"), caught_by=("padding", "directional")),
    M("rnn output halves swapped", "a bidirectional output is [reverse, forward] instead of [forward, reverse]",
      _mini("rnn", "output_halves_swapped", bidirectional=True), caught_by=("bidirectional", "relabel")),
    M("rnn reverse reads forward W_hh", "the reverse direction's recurrence uses the forward direction's W_hh",
      _mini("rnn", "reverse_uses_forward_whh", bidirectional=True), caught_by=("bidirectional", "relabel")),
    M("lstm sigmoid' of f missing", "the forget gate's sigmoid' factor f (1 - f) is left out",
      _mini("lstm", "no_sigmoid_grad_f"), caught_by=("directional",)),
    M("lstm tanh'(c) missing", "tanh'(c) is left out where dh reaches the cell state",
      _mini("lstm", "no_tanh_grad_c"), caught_by=("directional",)),
    M("lstm cell gradient not carried", "the cell-state gradient is not carried from step t+1 to step t",
      _mini("lstm", "no_c_carry"), caught_by=("split", "padding", "directional")),
    M("lstm dprev_c drops the dh path", "dprev_c = f * dnext_c, missing the part that came through h",
      _mini("lstm", "dprev_c_drops_dh_path"), caught_by=("directional",)),
    M("lstm gate order in backward", "the backward returns the gate blocks as (i, f, o, g); the forward reads "
      "(i, f, g, o)", _mini("lstm", "gate_order_in_backward"), caught_by=("directional",)),
    M("lstm bias gradient a mean", "the bias gradients are a mean over the batch where a sum belongs",
      _mini("lstm", "db_mean"), caught_by=("batch", "padding", "directional")),
    M("lstm c0 ignored", "the given initial cell state is replaced by zeros (dc0 returned as zeros)",
      _mini("lstm", "c0_ignored"), caught_by=("split",)),
    M("lstm padded outputs leak", "outputs past a row's length are the computed h, not zeros",
      _mini("lstm", "padded_outputs_leak"), caught_by=("padding", "directional")),
    M("lstm reverse not reversed", "the reverse direction runs forward in time",
      _mini("lstm", "reverse_not_reversed", bidirectional=True), caught_by=("bidirectional",)),
    M("lstm float16 gates", "in float32 the pre-activations are rounded to float16",
      _mini("lstm", "float16_gates"), caught_by=("dtype",)),
    M("lstm h0 rows reversed", "the initial state's rows are taken in reverse batch order",
      _mini("lstm", "h0_rows_reversed"), caught_by=("batch", "split", "padding")),
    M("gru W_hh reshaped", "h @ W_hh.reshape(H, 3H) where h @ W_hh.T belongs (same shape, units mixed)",
      _mini("gru", "whh_reshape"), caught_by=("relabel",)),
    M("gru padded steps update the state", "the state keeps changing at padded steps (outputs zeroed)",
      _mini("gru", "padding_state_leak"), caught_by=("padding", "directional")),
    M("gru reverse starts at T", "the reverse direction starts at step T-1, not at each row's last valid step",
      _mini("gru", "reverse_starts_at_T", bidirectional=True), caught_by=("padding", "bidirectional")),
    M("gru incoming gradient clipped", "the backward clips dout to [-0.5, 0.5]",
      _mini("gru", "clip_incoming"), caught_by=("linearity", "directional")),
    M("gru stale gradient buffer", "parameter gradients keep the previous call's (a buffer never cleared)",
      _mini("gru", "stale_gradients"), caught_by=("well-formed",)),
    M("gru h_n one step early", "h_n is the state before the last step",
      _mini("gru", "final_state_off_by_one"), caught_by=("split", "padding", "directional")),
    Mutant("torch GRU h0 shared", "a torch.nn.GRU subclass that starts every row from the batch's mean h0",
           _torch_shared_h0, "torch", caught_by=("batch", "split", "padding")),
    Mutant("torch LSTM float16 outputs", "a torch.nn.LSTM subclass whose float32 outputs pass through float16",
           _torch_half_outputs, "torch", caught_by=("dtype",)),
)


def CAUGHT_BY_README_ROW(mutant):
    """The mutant's row of the README's table: | mutant | the mistake | caught by |."""
    return f"| {mutant.name} | {mutant.mistake} | {', '.join(mutant.caught_by)} |"
