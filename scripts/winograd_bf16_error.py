#!/usr/bin/env python3
"""How much Winograd's tile size costs in bf16: the error of F(m x m, r x r) when its transformed
inputs and weights are rounded to bf16 (as model/winograd.cpp rounds them), against a direct
bf16 convolution, which rounds only its output.

For each tile size it builds the transforms from interpolation points (A^T and G from the points,
B^T solved from the bilinear identity that makes A^T[(G g) * (B^T d)] a correlation), checks them
in float64, then convolves random bf16 inputs with random bf16 weights and prints the largest error
over the largest output. BENCHMARKS.md ("bf16 Winograd F(2x2, 3x3)") quotes its output.

    ~/.cache/alexnet/venv-pypi/bin/python scripts/winograd_bf16_error.py [--channels 256] [--tiles 400]
"""
import argparse

import numpy as np
import torch


def transforms(m, r, points):
    """A^T (m x a), G (a x r), B^T (a x a) of F(m, r) on finite `points` and infinity, a = m + r - 1."""
    a = m + r - 1
    assert len(points) == a - 1
    at = np.zeros((m, a))
    g = np.zeros((a, r))
    for j, p in enumerate(points):
        at[:, j] = [p**i for i in range(m)]
        f = np.prod([p - q for q in points if q != p])
        g[j] = [p**k / f for k in range(r)]
    at[m - 1, a - 1] = 1
    g[a - 1, r - 1] = 1
    # sum_j A^T[i, j] G[j, k] B^T[j, u] = [u == i + k] for every output i, tap k and input u.
    rows, rhs = [], []
    for i in range(m):
        for k in range(r):
            for u in range(a):
                row = np.zeros((a, a))
                row[:, u] = at[i, :] * g[:, k]
                rows.append(row.ravel())
                rhs.append(1.0 if u == i + k else 0.0)
    bt = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)[0].reshape(a, a)
    return at, g, bt


def bf16(x):
    return torch.tensor(x, dtype=torch.float32).bfloat16().double().numpy()


def relative_error(got, want):
    return np.abs(got - want).max() / np.abs(want).max()


def trial(m, r, points, channels, tiles, rng):
    at, g, bt = transforms(m, r, points)
    a = m + r - 1
    d = bf16(rng.standard_normal((tiles, channels, a, a)))
    w = bf16(rng.standard_normal((channels, r, r)) / np.sqrt(channels * r * r))
    exact = np.zeros((tiles, m, m))
    for y in range(m):
        for x in range(m):
            exact[:, y, x] = np.einsum("tcij,cij->t", d[:, :, y:y + r, x:x + r], w)
    u = np.einsum("ai,cij,bj->cab", g, w, g)
    v = np.einsum("ai,tcij,bj->tcab", bt, d, bt)

    def output(uq, vq):
        return bf16(np.einsum("ia,tab,jb->tij", at, np.einsum("cab,tcab->tab", uq, vq), at))

    float64 = relative_error(output(u, v), exact)
    rounded = relative_error(output(bf16(u), bf16(v)), exact)
    direct = relative_error(bf16(exact), exact)
    assert float64 <= direct * 1.01 + 1e-12, f"F({m},{r}): the transforms are wrong ({float64} in float64)"
    return rounded, direct


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", type=int, default=256, help="input channels summed (3x3 tiles)")
    parser.add_argument("--tiles", type=int, default=400, help="random tiles per trial")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print("| tiles | points | multiply-adds per output (direct 9 or 25) | error, bf16 transforms | error, direct bf16 | ratio |")
    print("|---|---|---|---|---|---|")
    for m, r, points, channels in [(2, 3, [0, 1, -1], args.channels),
                                   (3, 3, [0, 1, -1, 2], args.channels),
                                   (3, 3, [0, 1, -1, 0.5], args.channels),
                                   (4, 3, [0, 1, -1, 2, -2], args.channels),
                                   (4, 3, [0, 1, -1, 0.5, -0.5], args.channels),
                                   (2, 5, [0, 1, -1, 2, -2], args.channels // 4),
                                   (2, 5, [0, 1, -1, 2, -0.5], args.channels // 4)]:
        rounded, direct = trial(m, r, points, channels, args.tiles, rng)
        macs = (m + r - 1) ** 2 / m**2
        print(f"| F({m}x{m}, {r}x{r}) | {points} + inf | {macs:.2f} | {rounded:.4f} | {direct:.4f} | "
              f"{rounded / direct:.1f}x |")


if __name__ == "__main__":
    main()
