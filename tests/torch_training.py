"""Synthetic data and the plain training loop the PyTorch tests train real models with."""
import torch
import torch.nn.functional as F


def clusters(n, shape, classes, seed=0, noise=1.0):
    """Standardised Gaussian clusters, three per class: (x of shape (n, *shape), labels)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn((classes * 3,) + shape, generator=g)
    cid = torch.randint(0, classes * 3, (n,), generator=g)
    x = centres[cid] + noise * torch.randn((n,) + shape, generator=g)
    return (x - x.mean(0)) / x.std(0), cid % classes


def training_steps(model, opt, mon, x, y, steps: int, start: int = 0):
    """``steps`` ordinary steps on one batch, each closed by ``mon.step``; returns the last loss."""
    loss = None
    for step in range(start, start + steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        mon.step(step, loss=loss)
    return loss
