// The one seeded pseudo-random stream of the test suites (ava suites, the reliability runners and their child
// processes): the same seed gives the same numbers in every process and on every platform, so a failing case is
// replayed by its seed.
//
// The generator is mulberry32 (a 32-bit state advanced by a Weyl step, 0x6d2b79f5, and mixed by two multiply-xorshift
// rounds): every seed, 0 included, gives a full-period stream of 2^32 outputs; it passes the usual statistical
// batteries far better than a bare LCG (whose low bits cycle with short periods) or xorshift32 (which must avoid the
// zero seed), and it is a few lines of exact 32-bit integer arithmetic (Math.imul), so JavaScript reproduces it bit
// for bit. It was already the reliability suite's generator, so those suites' cases are unchanged by the move.

/** A seeded stream of uniform, normal and integer draws (mulberry32; see the file header). */
export class Random {
  private state: number;

  /** `seed` is taken modulo 2^32 (any integer, 0 included, is a valid seed). */
  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  /** The next uniform number in [0, 1) (a multiple of 2^-32). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** A uniform number in [lo, hi) (default [-1, 1)). */
  uniform(lo = -1, hi = 1): number {
    return lo + (hi - lo) * this.next();
  }

  /** A normal number (Box-Muller from two uniforms; never infinite: 1 - next() > 0). */
  normal(mean = 0, std = 1): number {
    return mean + std * Math.sqrt(-2 * Math.log(1 - this.next())) * Math.cos(2 * Math.PI * this.next());
  }

  /** A uniform integer in [0, n). */
  below(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** A uniform integer in [lo, hi], both ends included. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }

  /** A uniformly chosen element of `a`. */
  pick<T>(a: readonly T[]): T {
    return a[this.below(a.length)];
  }

  /** True with probability p. */
  chance(p: number): boolean {
    return this.next() < p;
  }

  /** n uniform float32 values in [-scale, scale). */
  floats(n: number, scale = 1): Float32Array {
    return Float32Array.from({ length: n }, () => scale * this.uniform());
  }

  /** n normal float32 values with standard deviation `scale`. */
  normals(n: number, scale = 1): Float32Array {
    return Float32Array.from({ length: n }, () => this.normal(0, scale));
  }

  /** n uniform int32 values in [0, hi). */
  ints(n: number, hi: number): Int32Array {
    return Int32Array.from({ length: n }, () => this.below(hi));
  }
}
