#!/usr/bin/env python3
# fit_gelu_erf.py — the coefficients of the exact (erf) GELU and of the vector erf in native/cpu/simd.h.
#
#   /usr/bin/python3 scripts/fit_gelu_erf.py   (numpy and mpmath; prints the arrays of simd.h namespace erf_detail)
#
# Phi is the standard normal CDF, Phi(x) = 0.5 erfc(-x / sqrt 2); c = 1 / sqrt(2 pi). Two approximations, both fitted
# for the smallest maximum relative error (Lawson's iteratively reweighted least squares) on dense grids, with the
# reference computed by mpmath at 40 digits:
#   small |x| <= 1:      Phi(x) - 1/2 = x P(x^2),   P of degree 5
#   tail  0.5 <= a <= 15: Phi(-a) = exp(-a^2 / 2) c q(a) / (a q(a) + p(a)),   p of degree 4, q of degree 5 (q_0 = 1)
# The tail form is Phi(-a) = phi(a) / (a + s(a)) with s = p / q (Mills' ratio written as 1 / (a + s)): an error in s
# moves the result by at most s / (a + s) < 0.6 of it, and rounding errors in q cancel between numerator and
# denominator. s is fitted with that weight, i.e. for the relative error of Phi(-a) itself.
import mpmath as mp
import numpy as np

mp.mp.dps = 40
C = 1 / mp.sqrt(2 * mp.pi)


def phi_tail(a):  # Phi(-a) exp(a^2 / 2)
    a = mp.mpf(a)
    return mp.erfc(a / mp.sqrt(2)) / 2 * mp.exp(a * a / 2)


def small(x):  # (Phi(x) - 1/2) / x
    x = mp.mpf(x)
    return C if x == 0 else mp.erf(x / mp.sqrt(2)) / 2 / x


def lawson(t, f, scale, m, k, iters=400):
    """p (degree m) / q (degree k, q_0 = 1) ~ f, minimising max |p/q - f| / scale. k = 0: a polynomial."""
    w = np.full(len(t), 1.0 / len(t))
    q = np.ones_like(t)
    best = None
    for _ in range(iters):
        cols = [t**j for j in range(m + 1)] + [-f * t**j for j in range(1, k + 1)]
        A = np.stack(cols, axis=1)
        s = np.sqrt(w) / (scale * np.abs(q))
        c, *_ = np.linalg.lstsq(A * s[:, None], f * s, rcond=None)
        pc, qc = c[: m + 1], np.concatenate([[1.0], c[m + 1 :]])
        q = np.polyval(qc[::-1], t)
        err = (np.polyval(pc[::-1], t) / q - f) / scale
        e = np.max(np.abs(err))
        if best is None or e < best[0]:
            best = (e, pc, qc)
        w = w * np.abs(err)
        w /= w.sum()
    return best


def main():
    # small region: x in [0, 1], polynomial in u = x^2, relative error
    xs = np.unique(np.concatenate([np.linspace(0, 1, 3001), np.sin(np.linspace(0, np.pi / 2, 1001))]))
    f = np.array([float(small(x)) for x in xs])
    e_small, ps, _ = lawson(xs**2, f, np.abs(f), 5, 0)
    # tail: a in [0.5, 15], s(a) = c / M(a) - a with M = Phi(-a) exp(a^2/2), weighted by a + s (the error of M)
    lo, hi = 0.5, 15.0
    dense_low = lo + (hi - lo) * (1 - np.cos(np.linspace(0, np.pi / 2, 2001)))  # more points near lo
    a = np.unique(np.concatenate([np.linspace(lo, hi, 6001), dense_low]))
    M = [phi_tail(v) for v in a]
    s = np.array([float(C / m - mp.mpf(v)) for m, v in zip(M, a)])
    e_tail, pt, qt = lawson(a, s, a + s, 4, 5)
    assert np.all(np.polyval(qt[::-1], a) > 0)
    print(f"// small: max relative error of P {e_small:.3g}; tail: max relative error of Phi(-a) {e_tail:.3g}")
    fmt = lambda v: ", ".join(f"{x:.17g}" for x in v)
    print(f"constexpr double kSmall[6] = {{{fmt(ps)}}};")
    print(f"constexpr double kTailP[5] = {{{fmt(pt)}}};")
    print(f"constexpr double kTailQ[6] = {{{fmt(qt)}}};")


if __name__ == "__main__":
    main()
