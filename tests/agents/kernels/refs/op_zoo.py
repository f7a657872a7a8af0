"""Many spellings of the same operators, for the capture's normalisation (not a benchmark)."""

import torch
import torch.nn as nn
import torch.nn.functional as F


class Model(nn.Module):
    def __init__(self, features: int):
        super().__init__()
        self.act = nn.ReLU()
        self.gelu = nn.GELU()
        self.hardtanh = nn.Hardtanh(-2.0, 2.0)
        self.drop0 = nn.Dropout(0.0)
        self.drop = nn.Dropout(0.5)
        self.softmax = nn.Softmax(dim=-1)
        self.ln = nn.LayerNorm(features, elementwise_affine=False)
        self.fc = nn.Linear(features, features)
        self.scale = nn.Parameter(torch.ones(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.add(x + 1.0, x).add(x)
        other_alpha = torch.add(a, x, alpha=2.0)
        r = self.act(F.relu(a).relu())
        g = self.gelu(F.gelu(r, approximate="tanh"))
        p = (g**2 / 2.0).clamp(min=-1.0, max=1.0)
        h = self.hardtanh(F.hardtanh(p, -0.5, 0.5)) + F.relu6(p)
        leaky = F.leaky_relu(h, 0.2)
        kept = self.drop0(leaky)
        dropped = self.drop(kept)
        sums = torch.sum(kept, dim=-1, keepdim=True) + kept.sum(1, keepdim=True) + torch.sum(kept)
        soft = F.softmax(kept, dim=1) * self.softmax(kept)
        as64 = (x.double() * 2.0).float()
        peak = torch.max(a, x) - torch.max(kept)
        values = torch.max(kept, dim=1)[0]
        spread = torch.var(kept, dim=1, unbiased=False, keepdim=True)
        fresh = x * 3.0
        fresh.relu_()
        flat = self.fc(self.ln(soft)).view(-1)
        capped = torch.clamp(x, min=0.0, max=float("inf"))
        return (
            other_alpha,
            dropped,
            sums,
            soft * self.scale,
            as64,
            peak,
            values,
            spread,
            fresh,
            flat,
            capped,
        )


def get_inputs():
    return [torch.randn(8, 16)]


def get_init_inputs():
    return [16]
