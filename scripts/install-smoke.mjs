// install-smoke.mjs — run by scripts/test-install.sh inside a temporary project where sharedformer was installed from
// its tarballs. It imports the package by name (so the `exports` map, dist/ and the loader are what is tested), then:
//
//   node install-smoke.mjs works EXPECTED_DIR CUDA_COMPILED   trains a small shared-weight decoder for a few steps on
//                                                             the CPU and generates from it; checks that the addon was
//                                                             loaded from EXPECTED_DIR and whether it has CUDA kernels
//   node install-smoke.mjs missing                            expects the loader's error (nothing installed or built)
//
// Prints one `ok - ...` / `not ok - ...` line per check and the backends() report; exits 1 if any check failed.
import * as sf from 'sharedformer';

const [mode, expectedDir, cudaCompiled] = process.argv.slice(2);
let failed = 0;
const check = (ok, what) => {
  console.log(`${ok ? 'ok' : 'not ok'} - ${what}`);
  if (!ok) failed++;
};

if (mode === 'missing') {
  let err;
  try {
    sf.backends();
  } catch (e) {
    err = e;
  }
  check(err instanceof Error, 'using the package without a binary throws');
  const msg = err?.message ?? '';
  console.log(msg.replace(/^/gm, '    | '));
  check(/could not load the native addon for linux-x64/.test(msg), 'the error says the addon could not be loaded, for which platform');
  check(/1\. package @sharedformer\/linux-x64-cuda: .*\n\s+not installed\n\s+fix: for NVIDIA GPUs: npm install @sharedformer\/linux-x64-cuda/.test(msg),
    'it names the CUDA package, not installed, and how to install it');
  check(/2\. package @sharedformer\/linux-x64: .*\n\s+not installed\n\s+fix: npm install @sharedformer\/linux-x64 /.test(msg),
    'it names the CPU package, not installed, and how to install it');
  check(/3\. local build: .*node_modules\/sharedformer\/build\/Release\/sharedformer\.node\n\s+not built\n\s+fix: build from source: .*npm run build.*cmake-js/.test(msg),
    'it names the local build, not built, and how to build it (npm run build, cmake-js)');
  process.exit(failed ? 1 : 0);
}

if (mode !== 'works') {
  console.error('usage: node install-smoke.mjs works EXPECTED_DIR true|false | missing');
  process.exit(2);
}

const info = sf.buildInfo();
const b = sf.backends();
console.log('buildInfo():', JSON.stringify(info));
console.log('backends():', JSON.stringify(b));
check(info.path.startsWith(expectedDir + '/'), `the addon was loaded from ${expectedDir} (${info.path})`);
check(String(info.cuda) === cudaCompiled && b.cuda.compiled === (cudaCompiled === 'true'), `CUDA kernels compiled in: ${cudaCompiled}`);
if (!b.cuda.available) check(typeof b.cuda.reason === 'string' && b.cuda.reason.length > 10, `backends().cuda.reason says why CUDA is not used: ${b.cuda.reason}`);

// A training run: a 4-layer decoder whose layers all share one block, AdamW, a fixed batch. The loss must fall.
const { Decoder, AdamW, backward, tensor } = sf;
const model = new Decoder({ vocab: 16, dModel: 32, heads: 4, dFF: 64, layers: 4, maxSeq: 8, sharing: { strategy: 'all' }, seed: 3 });
check(model.plan.uniqueAttention === 1 && model.plan.uniqueFfn === 1, 'the 4-layer decoder shares one block');
const ids = tensor(Int32Array.from({ length: 16 }, (_, i) => (i * 5) % 16), [2, 8]);
const targets = tensor(Int32Array.from({ length: 16 }, (_, i) => (i * 5 + 1) % 16), [2, 8]);
const opt = new AdamW(model.store, { lr: 1e-2 });
const losses = [];
for (let step = 0; step < 8; step++) {
  model.zeroGrad();
  const loss = model.loss(ids, targets);
  backward(loss);
  opt.update();
  losses.push((await loss.data())[0]);
  loss.dispose();
}
console.log('losses:', losses.map((l) => l.toFixed(4)).join(' '));
check(losses.every(Number.isFinite), 'every training loss is finite');
check(Math.abs(losses[0] - Math.log(16)) < 0.5, `the first loss is near ln(16) = 2.77 for an untrained model (${losses[0].toFixed(3)})`);
check(losses.at(-1) < losses[0] - 0.1, `8 AdamW steps lower the loss (${losses[0].toFixed(3)} -> ${losses.at(-1).toFixed(3)})`);

// Generation over the KV cache, greedy: deterministic, in the vocabulary, the requested length.
const g1 = await model.generate([0, 5, 10], { maxNewTokens: 5, temperature: 0 });
const g2 = await model.generate([0, 5, 10], { maxNewTokens: 5, temperature: 0 });
console.log('generated:', JSON.stringify(g1));
check(g1.length === 5 && g1.every((t) => Number.isInteger(t) && t >= 0 && t < 16), 'generate() returns 5 token ids in the vocabulary');
check(JSON.stringify(g1) === JSON.stringify(g2), 'greedy generation is deterministic');
opt.dispose();
process.exit(failed ? 1 : 0);
