// Issue 8, point 4 (first half): a child process that saves checkpoints in a loop is SIGKILLed at random moments, and
// the checkpoint on disk is always loadable and intact — exactly the content of the last save that completed, or of
// the one being written when the rename had already happened. Then truncated, bit-flipped, header-oversized and
// wrong-dtype checkpoints each give a clear error. (The seeded fuzzer over mutated files is fuzz.test.ts.)
import test from 'ava';
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { CharTokenizer, Decoder, SafetensorsError, TokenDataset, Trainer, loadSafetensors } from '../../lib/index.ts';
import { tensorsDigest } from '../../lib/io/checkpoint.ts';
import { FULL, record, script } from './child.ts';
import { Random } from '../helpers/random.ts';

const KILLS = FULL ? 60 : 20;


// The trainer writer's model, rebuilt here to load its checkpoints through Trainer.resume.
const text = 'checkpoints must survive a kill at any moment, the previous one intact. '.repeat(40);
const tok = CharTokenizer.fromText(text);
const data = new TokenDataset(tok.encode(text), tok.vocabSize);
const freshTrainer = () =>
  new Trainer(new Decoder({ vocab: tok.vocabSize, dModel: 64, heads: 4, dFF: 256, layers: 4, maxSeq: 32, seed: 3 }), data, { steps: 1_000_000, batchSize: 2, seqLen: 16, lr: 1e-3 });

/** What is on disk: its generation (raw) or step (trainer), and the digest to compare with what the writer printed. */
function inspect(mode: string, path: string): { gen: number; digest: string } {
  if (mode === 'raw') {
    const f = loadSafetensors(path);
    return { gen: Number(f.metadata.generation), digest: tensorsDigest(f.tensors) };
  }
  const tr = freshTrainer();
  try {
    const md = tr.resume(path); // verifies the checkpoint's checksum, config, plan and every shape
    const v = tr.model.store.values.dataSync() as Float32Array;
    return { gen: JSON.parse(md.trainer).step, digest: createHash('sha256').update(new Uint8Array(v.buffer, v.byteOffset, v.byteLength)).digest('hex') };
  } finally {
    tr.dispose();
    tr.model.store.dispose();
  }
}

test(`SIGKILL at ${KILLS} random moments while saving: the checkpoint on disk stays loadable and intact`, async (t) => {
  t.timeout(FULL ? 1_200_000 : 110_000);
  const dir = mkdtempSync(join(tmpdir(), 'sf-crash-'));
  const rnd = new Random(0xc0ffee);
  const digests = { raw: new Map<number, string>(), trainer: new Map<number, string>() };
  const lastSaved = { raw: 0, trainer: 0 };
  let midWrite = 0, checks = 0;
  const t0 = performance.now();
  try {
    for (let k = 0; k < KILLS; k++) {
      const mode = k % 2 === 0 ? 'raw' : 'trainer';
      const path = join(dir, `${mode}.safetensors`);
      const delay = rnd.next() * 120; // after this run's first completed save
      const child = spawn(process.execPath, ['--import', 'tsx', script('crash-writer.ts'), mode, path], { stdio: ['ignore', 'pipe', 'pipe'] });
      let pending = '', stderr = '', lastLine: { saving?: number; saved?: number } = {};
      let timer: NodeJS.Timeout | undefined;
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('close', (code, signal) => resolve({ code, signal })));
      const watchdog = setTimeout(() => child.kill('SIGKILL'), 60_000);
      child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      child.stdout.setEncoding('utf8').on('data', (d: string) => {
        pending += d;
        const lines = pending.split('\n');
        pending = lines.pop()!;
        for (const l of lines) {
          const m = JSON.parse(l) as { saving?: number; digest?: string; saved?: number };
          lastLine = m;
          if (m.saving !== undefined) {
            const prev = digests[mode].get(m.saving);
            // A step recomputed after a resume must give the same parameters (bit-exact resume on the CPU).
            if (prev !== undefined && prev !== m.digest) t.fail(`${mode} generation ${m.saving} was saved with two different contents`);
            digests[mode].set(m.saving, m.digest!);
          }
          if (m.saved !== undefined) {
            lastSaved[mode] = m.saved;
            timer ??= setTimeout(() => child.kill('SIGKILL'), delay);
          }
        }
      });
      const { code, signal } = await exited;
      clearTimeout(timer);
      clearTimeout(watchdog);
      if (signal !== 'SIGKILL') t.fail(`run ${k} (${mode}) ended with code ${code} signal ${signal} before the kill: ${stderr.slice(-1500)}`);
      if (lastLine.saving !== undefined) midWrite++; // killed between "saving" and "saved"
      // The file: the last completed save, or the one in progress if its rename had already happened.
      const got = inspect(mode, path);
      const ok = got.gen === lastSaved[mode] || (lastLine.saving !== undefined && got.gen === lastLine.saving);
      t.true(ok, `run ${k} (${mode}): the file holds generation ${got.gen}; last completed save ${lastSaved[mode]}${lastLine.saving !== undefined ? `, killed while saving ${lastLine.saving}` : ''}`);
      t.is(got.digest, digests[mode].get(got.gen) ?? '(never printed)', `run ${k} (${mode}): generation ${got.gen} on disk has exactly the content that was saved`);
      if (got.gen !== lastSaved[mode]) lastSaved[mode] = got.gen;
      checks++;
    }
    const leftovers = readdirSync(dir).filter((f) => f.includes('.tmp-')).length;
    const ms = performance.now() - t0;
    t.is(checks, KILLS);
    t.true(midWrite > 0, 'some kills landed in the middle of a save');
    t.log(`${KILLS} kills (${midWrite} between "saving" and "saved") in ${(ms / 1000).toFixed(1)} s: the checkpoint loaded and matched every time; ` +
      `raw generations reached ${lastSaved.raw}, trainer steps ${lastSaved.trainer}; ${leftovers} temporary files left by killed writers (never read)`);
    await record('crash-safe', { kills: KILLS, midWrite, seconds: ms / 1000, rawGenerations: lastSaved.raw, trainerSteps: lastSaved.trainer, tempFilesLeft: leftovers });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('truncated, bit-flipped, header-oversized and wrong-dtype checkpoints each give a clear error', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'sf-corrupt-'));
  const tr = freshTrainer();
  try {
    const good = join(dir, 'good.safetensors');
    tr.saveSync(good);
    const bytes = readFileSync(good);
    const headerLen = Number(bytes.readBigUInt64LE(0));
    const write = (name: string, b: Uint8Array) => {
      const p = join(dir, name);
      writeFileSync(p, b);
      return p;
    };
    // Every failure is an Error with a message naming the loader and the file.
    const refuses = (p: string, what: string, re: RegExp = /safetensors|loadCheckpoint|Trainer\.resume/) => {
      const other = freshTrainer();
      try {
        const e = t.throws(() => other.resume(p), { instanceOf: Error }, what);
        if (e) t.regex(e.message, re, what);
        if (e) t.true(e.message.includes(p), `${what}: the message names the file`);
      } finally {
        other.dispose();
        other.model.store.dispose();
      }
    };
    // Truncated: inside the length field, the header, the data, one byte short.
    for (const at of [0, 4, 8, 8 + Math.floor(headerLen / 2), 8 + headerLen, 8 + headerLen + 100, bytes.length - 1])
      refuses(write(`trunc-${at}.safetensors`, bytes.subarray(0, at)), `truncated to ${at} bytes`, /safetensors/);
    // Bit flips anywhere: in the length, the JSON header (names, numbers, metadata, the checksum) and the data.
    const rnd = new Random(77);
    const flips = FULL ? 400 : 60;
    for (let k = 0; k < flips; k++) {
      const at = k < 8 ? k : k < flips / 2 ? 8 + rnd.below(headerLen) : 8 + headerLen + rnd.below(bytes.length - 8 - headerLen);
      const b = Buffer.from(bytes);
      b[at] ^= 1 << rnd.below(8);
      refuses(write('flip.safetensors', b), `bit flip at byte ${at}`, at >= 8 + headerLen ? /corrupt/ : /safetensors|loadCheckpoint|Trainer\.resume/);
    }
    // Header length oversized: past the file, past the 100 MB limit, 2^63.
    for (const n of [BigInt(bytes.length), 100_000_001n, 2n ** 63n]) {
      const b = Buffer.from(bytes);
      b.writeBigUInt64LE(n, 0);
      const e = t.throws(() => loadSafetensors(write('big.safetensors', b)), { instanceOf: SafetensorsError });
      t.regex(e!.message, /header length \d+ exceeds/);
    }
    // Wrong dtype: F32 parameters relabelled I32 (same size) or F64 (unsupported); the header edited consistently.
    const header = bytes.subarray(8, 8 + headerLen).toString('utf8');
    const relabel = (to: string) => {
      const h = header.replace('"dtype":"F32"', `"dtype":"${to}"`);
      return Buffer.concat([bytes.subarray(0, 8), Buffer.from(h), bytes.subarray(8 + headerLen)]);
    };
    refuses(write('i32.safetensors', relabel('I32')), 'an F32 tensor relabelled I32', /corrupt|expected F32/);
    const e64 = t.throws(() => loadSafetensors(write('f64.safetensors', relabel('F64'))), { instanceOf: SafetensorsError });
    t.regex(e64!.message, /dtype "F64" .*not supported/);
    // The good file still loads.
    t.notThrows(() => freshTrainer().resume(good));
  } finally {
    tr.dispose();
    tr.model.store.dispose();
    rmSync(dir, { recursive: true, force: true });
  }
});
