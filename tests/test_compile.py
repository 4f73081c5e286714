"""Under torch.compile the model traces into one graph: no host syncs or data-dependent
branches (entmax takes a fixed number of Newton steps), plain dropout and LayerNorm/MLP
modules instead of the CPU-tuned autograd functions."""

import pytest
import torch
import torch._dynamo

from stanhop import separation as S
from stanhop.model import STanHopNet
from test_model import tiny  # the model tests' tiny config


@pytest.mark.parametrize("separation, gate", [("entmax", False), ("softmax1", True), ("clipped", False)])
def test_a_training_forward_traces_into_one_graph(separation, gate):
    torch.manual_seed(0)
    model = STanHopNet(tiny(separation=separation, gate=gate, dropout=0.3)).train()
    x, y = torch.randn(4, 24, 3), torch.randn(4, 8, 3)
    explained = torch._dynamo.explain(lambda x: torch.nn.functional.mse_loss(model(x), y))(x)
    assert explained.graph_break_count == 0, [str(b.reason).splitlines()[0] for b in explained.break_reasons]
    assert explained.graph_count == 1


@pytest.mark.parametrize("alpha", [1.01, 1.2, 1.5, 1.8, 1.99])
@pytest.mark.parametrize("n, scale", [(7, 1.0), (28, 3.0), (120, 10.0)])
def test_the_compiled_fixed_newton_steps_reach_the_checked_solution(monkeypatch, alpha, n, scale):
    """The fixed step count is enough: the result equals the eager one, which stops only
    once every column's ‖y‖_q is within 1e-6 of 1."""
    scores = torch.randn(512, n, generator=torch.Generator().manual_seed(n)) * scale
    checked = S.entmax(scores, torch.tensor(alpha))
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    fixed = S.entmax(scores, torch.tensor(alpha))
    torch.testing.assert_close(fixed, checked, rtol=0, atol=1e-6)
