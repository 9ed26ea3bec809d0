"""Hand-written float64 references for every rule: the definitions, written out one shard, one
micro-batch and one parameter at a time, with plain Python lists (no samkit code).

``Reference`` holds what the optimizer would hold (SGD momentum buffer, F-SAM EMA) and applies
one step of the named rule to ``model`` in place: every pass reloads the step's starting BatchNorm
statistics, and the statistics of the first pass over each piece are merged with the piece's
weight (what ``train_step`` documents).
"""

from __future__ import annotations

import math

import torch
from optim_helpers import ce

EPS = 1e-12


def _dot(a, b):
    return sum((x * y).sum() for x, y in zip(a, b))


def _norm(a):
    return torch.sqrt(_dot(a, a))


def _centralize(t):
    return t - t.mean(dim=tuple(range(1, t.dim())), keepdim=True) if t.dim() > 1 else t


class Reference:
    def __init__(self, model, rule="sam", *, lr=0.1, rho=0.05, momentum=0.0, adaptive=False,
                 eta=0.0, alpha=0.0, gamma=0.5, decouple=False, steps=1, step_size=1.0,
                 sigma=1.0, lmbda=0.9, descent_gc=True, max_grad_norm=None, scope=None):
        self.model = model
        self.rule = rule
        self.lr, self.rho, self.momentum = lr, rho, momentum
        self.adaptive, self.eta = adaptive, eta
        self.alpha, self.gamma, self.decouple = alpha, gamma, decouple
        self.steps, self.step_size = steps, step_size
        self.sigma, self.lmbda, self.descent_gc = sigma, lmbda, descent_gc
        self.max_grad_norm = max_grad_norm
        self.params = list(model.parameters())
        # perturbation scope: per parameter, whether it is perturbed (the others get no ascent
        # gradient, no share of the norm, no perturbation)
        self.scope = [True] * len(self.params) if scope is None else list(scope)
        self.buf = None  # SGD momentum buffer
        self.ema = None  # F-SAM

    # ---- pieces of the definition ---------------------------------------------------------------
    def _geometry(self, d, w):
        """rho T^2 d / (||T d|| + eps), T = |w| + eta or 1."""
        t = [wi.abs() + self.eta if self.adaptive else torch.ones_like(wi) for wi in w]
        norm = _norm([ti * di for ti, di in zip(t, d)])
        return [self.rho * ti * ti * di / (norm + EPS) for ti, di in zip(t, d)], t

    def _grad_at(self, w, e, batch, bn0):
        with torch.no_grad():
            for p, wi, ei in zip(self.params, w, e):
                p.copy_(wi + ei)
        self.model.load_state_dict(bn0, strict=False)
        loss = ce(self.model, batch)
        return loss, list(torch.autograd.grad(loss, self.params))

    def _pieces(self, shard, micro):
        n = len(shard[1])
        if micro is None or micro >= n:
            return [(shard, 1.0)]
        count = -(-n // micro)  # as few pieces as the size allows, their sizes within one
        out, a = [], 0
        for j in range(count):
            size = n // count + (j < n % count)
            piece = tuple(t[a : a + size] for t in shard)
            out.append((piece, size / n))
            a += size
        return out

    def _in_scope(self, ts):
        return [t if keep else torch.zeros_like(t) for t, keep in zip(ts, self.scope)]

    def _perturbation(self, g, w, grad_at):
        g = self._in_scope(g)
        inner = grad_at

        def grad_at(e):
            return self._in_scope(inner(e))

        zero = [torch.zeros_like(x) for x in w]
        if self.rule in ("sam", "asam", "gsam", "wsam"):
            return self._geometry(g, w)[0]
        if self.rule == "gcsam":
            return self._geometry([_centralize(x) for x in g], w)[0]
        if self.rule == "fsam":
            d = g if self.ema is None else [gi - self.sigma * mi for gi, mi in zip(g, self.ema)]
            return self._geometry(self._in_scope(d), w)[0]
        if self.rule == "usam":
            t = [wi.abs() + self.eta if self.adaptive else torch.ones_like(wi) for wi in w]
            return [self.rho * ti * ti * gi for ti, gi in zip(t, g)]
        if self.rule == "multistep":
            e = zero
            for j in range(self.steps):
                gj = g if j == 0 else grad_at(e)
                step, t = self._geometry(gj, w)
                e = [ei + self.step_size * si for ei, si in zip(e, step)]
                radius = _norm([ei / ti for ei, ti in zip(e, t)]) / self.rho
                if j > 0 or self.step_size > 1:
                    e = [ei / max(1.0, float(radius)) for ei in e]
            return e
        if self.rule == "momentum":
            if self.buf is None:
                return zero
            return self._geometry(self._in_scope([-b for b in self.buf]), w)[0]
        raise ValueError(self.rule)

    # ---- one step -------------------------------------------------------------------------------
    def step(self, batch, sizes, micro=None):
        model, params = self.model, self.params
        n = sum(sizes)
        w = [p.detach().clone() for p in params]
        bn0 = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}
        merged = {k: torch.zeros_like(v) for k, v in bn0.items()}
        h = [torch.zeros_like(p) for p in params]
        g_full = [torch.zeros_like(p) for p in params]
        start, first = 0, True

        def merge(weight):
            nonlocal first
            for k in bn0:
                v = model.state_dict()[k]
                if "num_batches" in k:
                    merged[k] = v.clone() if first else merged[k]
                else:
                    merged[k] = merged[k] + weight * v
            first = False

        for m in sizes:
            shard = tuple(t[start : start + m] for t in batch)
            start += m
            ws = m / n
            pieces = self._pieces(shard, micro)
            zero = [torch.zeros_like(p) for p in params]
            g = [torch.zeros_like(p) for p in params]
            if self.rule != "momentum":
                for piece, v in pieces:
                    _, gp = self._grad_at(w, zero, piece, bn0)
                    merge(ws * v)
                    g = [a + v * b for a, b in zip(g, gp)]

            def grad_at(e, pieces=pieces):
                total = [torch.zeros_like(p) for p in params]
                for piece, v in pieces:
                    total = [a + v * b for a, b in zip(total, self._grad_at(w, e, piece, bn0)[1])]
                return total

            e = self._perturbation(g, w, grad_at)
            for piece, v in pieces:
                _, hp = self._grad_at(w, e, piece, bn0)
                if self.rule == "momentum":
                    merge(ws * v)
                h = [a + ws * v * b for a, b in zip(h, hp)]
            g_full = [a + ws * b for a, b in zip(g_full, g)]
        model.load_state_dict(merged, strict=False)

        # descent side
        sharpness = None
        if self.rule == "gsam":
            c = _dot(g_full, h) / (_dot(h, h) + EPS)
            h = [hi - self.alpha * (gi - c * hi) for hi, gi in zip(h, g_full)]
        elif self.rule == "wsam" and not self.decouple:
            a, b = self.gamma / (1 - self.gamma), (1 - 2 * self.gamma) / (1 - self.gamma)
            h = [a * hi + b * gi for hi, gi in zip(h, g_full)]
        elif self.rule == "wsam":
            sharpness = [hi - gi for hi, gi in zip(h, g_full)]
            h = g_full
        elif self.rule == "gcsam" and self.descent_gc:
            h = [_centralize(x) for x in h]
        if self.max_grad_norm is not None:
            total = float(_norm(h))
            h = [x * min(1.0, self.max_grad_norm / (total + 1e-6)) for x in h]

        # SGD (with momentum buffer)
        if self.momentum:
            self.buf = list(h) if self.buf is None else [self.momentum * b + x for b, x in zip(self.buf, h)]
            upd = self.buf
        else:
            upd = h
        new = [wi - self.lr * u for wi, u in zip(w, upd)]
        if sharpness is not None:
            a = self.gamma / (1 - self.gamma)
            new = [x - self.lr * a * s for x, s in zip(new, sharpness)]
        with torch.no_grad():
            for p, x in zip(params, new):
                p.copy_(x)
        if self.rule == "fsam":
            self.ema = g_full if self.ema is None else [
                self.lmbda * mi + (1 - self.lmbda) * fi for mi, fi in zip(self.ema, g_full)
            ]
        assert all(math.isfinite(float(x.abs().sum())) for x in new)
