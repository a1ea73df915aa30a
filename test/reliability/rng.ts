// A small seeded PRNG (mulberry32) for the reliability suite's generated cases, kill times and mutations: the same
// seed gives the same sequence in every process, so a failing case can be replayed.

/** Returns a function giving uniform numbers in [0, 1), determined by `seed`. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
