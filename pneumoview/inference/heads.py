"""PneumoLLM's trainable heads: multi-token engine, visual projection ("neck"), classifier.

All three run in float32 whatever the frozen backbones' dtype. Names map one-to-one to the
reference implementation: ``engine.linear{1,2}`` = ``prompt_meta_net.linear{1,2}``,
``projection.linear{1,2}`` = ``adapter_proj.conv_{A,B}``, ``head.fc`` = ``adapter_output_cls``.
"""

from __future__ import annotations

from torch import Tensor, nn


class MultiTokenEngine(nn.Module):
    """Contextual multi-token engine: source tokens X [B, S, W] -> diagnosis tokens [B, K, W].

    An MLP scores each source token for each of the K diagnosis tokens ([B, S, K]); the scores
    are softmaxed over the S source tokens and used as weights of a mix of X.
    """

    def __init__(self, width: int, hidden: int = 12, num_tokens: int = 4) -> None:
        super().__init__()
        self.linear1 = nn.Linear(width, hidden)
        self.relu = nn.ReLU(inplace=False)
        self.linear2 = nn.Linear(hidden, num_tokens)

    def reset_parameters(self) -> None:
        """PyTorch's default Linear initialisation (the reference sets none of its own)."""
        self.linear1.reset_parameters()
        self.linear2.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        weights = self.linear2(self.relu(self.linear1(x)))  # [B, S, K]
        weights = weights.transpose(1, 2).softmax(dim=-1)  # [B, K, S], sums to 1 over sources
        return weights @ x  # [B, K, W]


class VisualProjection(nn.Module):
    """Linear(W -> hidden) - SiLU - Linear(hidden -> decoder hidden); Xavier-uniform weights, zero biases."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(in_dim, hidden)
        self.act = nn.SiLU()
        self.linear2 = nn.Linear(hidden, out_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for linear in (self.linear1, self.linear2):
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)

    def forward(self, x: Tensor) -> Tensor:
        """[B, N, W] -> [B, N, decoder hidden]."""
        return self.linear2(self.act(self.linear1(x)))


class ClassifierHead(nn.Module):
    """Mean over all token positions, then Linear(hidden -> classes, no bias): [B, N, H] -> logits [B, C]."""

    def __init__(self, hidden: int, num_classes: int = 2) -> None:
        super().__init__()
        self.fc = nn.Linear(hidden, num_classes, bias=False)

    def reset_parameters(self) -> None:
        self.fc.reset_parameters()

    def forward(self, hidden_states: Tensor) -> Tensor:
        return self.fc(hidden_states.mean(dim=1))
