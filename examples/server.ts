// server.ts — a shared-weight character language model that trains in the background of a node:http server and
// answers requests while it trains.
//
// Run it (no npm needed; `tsx` is a dev dependency in node_modules, and the addon must be built):
//
//   node --import tsx examples/server.ts                      # or: node_modules/.bin/tsx examples/server.ts
//   PORT=8080 STEPS=5000 SF_DATA=corpus.txt node --import tsx examples/server.ts
//
//   curl -s localhost:3000/status
//   curl -s localhost:3000/generate -d '{"prompt": "The river", "tokens": 120, "temperature": 0.8, "topK": 10, "seed": 7}'
//   curl -s 'localhost:3000/generate?prompt=The%20river&tokens=80'
//
// Environment: PORT (default 3000), HOST (default 127.0.0.1), STEPS (default 3000), SF_DATA (a UTF-8 text file to
// train on; default: the small built-in text below), THREADS (CPU kernel threads; default: one fewer than the cores,
// so that the event loop keeps a core to itself while the kernels use the rest). Ctrl-C (SIGINT) or SIGTERM stops training between two steps,
// waits for the requests in flight, closes the server and frees the model.
//
// Endpoints:
//   GET  /status    -> {step, steps, loss, tokensPerSec, training, valLoss?, ...}
//   POST /generate  {prompt, tokens?, temperature?, topK?, seed?} -> {text, step}
//   GET  /generate?prompt=...&tokens=...&temperature=...&topK=...&seed=...
// Bad input is a 400 with {error}; an unknown path a 404; a wrong method a 405; a body over the limit a 413.
//
// How training and serving share one thread: each Trainer step queues its kernels on the device's stream (they run
// off the JavaScript thread) and then awaits the loss, so the event loop keeps answering requests while a step
// computes. A generation must not see the weights change half-way, so training steps and generations take turns on
// a first-come first-served lock: a request waits at most for the step in flight, then training waits for it.
// Generation itself is Decoder.generate, which runs under noGrad (nothing is recorded on the training tape) over a KV
// cache and awaits each token's logits, so it does not block the event loop either.
//
// startServer() is exported so that tests can run all of this in-process: test/server.test.ts, which runs without npm
// as `node_modules/.bin/ava --verbose test/server.test.ts`. docs/server.md has the measured event-loop delay.
import http from 'node:http';
import { readFileSync, realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { availableParallelism } from 'node:os';
import type { AddressInfo } from 'node:net';
import {
  CharTokenizer, Decoder, TokenDataset, Trainer, memory, releaseTape, setNumThreads,
  type DecoderConfig, type DeviceMemory, type StepInfo, type EvalInfo, type SharingConfig,
} from '../lib/index.ts';

// ---- the built-in corpus ----------------------------------------------------------------------------------------------

/** A few short paragraphs, repeated: enough for a character model to pick up words within a few hundred steps. */
export const DEFAULT_TEXT = `The river runs past the old mill and under the stone bridge. In the morning the water is grey and slow; by noon it
is green and bright, and the children come down to the bank to throw sticks and watch them race to the bend.

The miller keeps a small boat tied to a post. He says the river remembers everything that falls into it, and that
it gives each thing back in its own time: a hat in the spring, a wheel in the summer, a letter in the autumn.

At night the town is quiet. The lamps burn along the road, the cats walk on the walls, and the river keeps talking
to itself under the bridge, the same soft story, over and over, until the sun comes up again.

`.repeat(24);

// ---- options ------------------------------------------------------------------------------------------------------

export interface ServerOptions {
  /** TCP port; 0 picks a free one. Default 3000. */
  port?: number;
  /** Address to listen on. Default '127.0.0.1' (this machine only). */
  host?: string;
  /** Training text. Default: the file at `dataPath`, else the file at env SF_DATA, else DEFAULT_TEXT. */
  text?: string;
  /** A UTF-8 text file to train on (when `text` is not given). Default: env SF_DATA. */
  dataPath?: string;
  /** Optimizer steps to train for; the server keeps answering after training ends. Default 3000. */
  steps?: number;
  batchSize?: number;
  /** Tokens per training sequence (at most model.maxSeq). Default model.maxSeq. */
  seqLen?: number;
  lr?: number;
  warmup?: number;
  /** Evaluate on the validation split every this many steps (0: only at the end). Default 200. */
  evalEvery?: number;
  evalBatches?: number;
  /** Model dimensions; vocab comes from the text. Default: 64 wide, 4 heads, 6 layers that all share one block. */
  model?: { dModel?: number; heads?: number; dFF?: number; layers?: number; maxSeq?: number; sharing?: Partial<SharingConfig>; seed?: number };
  /** Most tokens one /generate may ask for. Default 1000. */
  maxTokens?: number;
  /** Most characters a prompt may have. Default 2000. */
  maxPromptChars?: number;
  /** Largest request body, in bytes. Default 16 KiB. */
  maxBodyBytes?: number;
  /** CPU kernel threads (setNumThreads; process-wide). Default: leave as is. */
  threads?: number;
  /** Where progress lines go. Default: nowhere. */
  log?: (line: string) => void;
  /** Log a progress line every this many steps (0: never). Default 100. */
  logEvery?: number;
}

export interface Status {
  /** Optimizer steps completed. */
  step: number;
  /** Steps the training run aims for. */
  steps: number;
  /** Loss of the last step (nats per character); null before the first step. */
  loss: number | null;
  /** Training throughput since training started (pauses for generation included). */
  tokensPerSec: number;
  /** Whether the background training is still running. */
  training: boolean;
  /** The last validation loss (nats per character), once an evaluation has run. */
  valLoss?: number;
  /** The step of that evaluation. */
  valStep?: number;
  /** Why training stopped early, when it failed. */
  error?: string;
  /** Whether training was stopped (close()) before reaching `steps`. */
  aborted: boolean;
  /** Unique parameters of the model (every layer shares them). */
  parameters: number;
  /** The addon's live tensors and bytes on the model's device. */
  memory: DeviceMemory;
  uptimeMs: number;
}

export interface RunningServer {
  /** http://host:port */
  url: string;
  /** Stops training (between steps), stops accepting connections, waits for requests in flight, frees the model. */
  close(): Promise<void>;
  trainer: Trainer;
  model: Decoder;
  tokenizer: CharTokenizer;
  /** Resolves when background training ends (finished, aborted or failed; it never rejects). */
  trained: Promise<Status>;
  /** What GET /status answers. */
  status(): Status;
}

// ---- helpers -------------------------------------------------------------------------------------------------------

/** Thrown for a request the client got wrong; becomes a JSON error response with this status code. */
class HttpError extends Error {
  constructor(readonly status: number, message: string, readonly headers: Record<string, string> = {}) {
    super(message);
  }
}

/** A first-come first-served async lock: training steps and generations take turns on the model. */
class TurnLock {
  private tail: Promise<void> = Promise.resolve();
  /** Resolves with the release function once every earlier holder has released. */
  acquire(): Promise<() => void> {
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const prev = this.tail;
    this.tail = prev.then(() => held);
    return prev.then(() => release);
  }
}

function sendJson(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': String(Buffer.byteLength(text)),
    'cache-control': 'no-store',
    ...headers,
  });
  res.end(text);
}

/** The request body as text, refusing (413) more than `limit` bytes. */
async function readBody(req: http.IncomingMessage, limit: number): Promise<string> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) throw new HttpError(413, `request body of ${declared} bytes exceeds the limit of ${limit} bytes`, { connection: 'close' });
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    n += chunk.length;
    if (n > limit) throw new HttpError(413, `request body exceeds the limit of ${limit} bytes`, { connection: 'close' });
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function describe(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? v.slice(0, 40) + '...' : v);
  if (Array.isArray(v)) return 'an array';
  if (v === null) return 'null';
  if (typeof v === 'object') return 'an object';
  return String(v);
}

function intIn(v: unknown, name: string, lo: number, hi: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) throw new HttpError(400, `${name} must be an integer in [${lo}, ${hi}], got ${describe(v)}`);
  return v;
}

/** Number(s) for a query-string value, refusing what is not a plain decimal number. */
function queryNumber(s: string, name: string): number {
  const v = s.trim() === '' ? NaN : Number(s);
  if (!Number.isFinite(v)) throw new HttpError(400, `${name} must be a number, got ${describe(s)}`);
  return v;
}

interface GenerateRequest {
  ids: Int32Array;
  tokens: number;
  temperature: number;
  topK?: number;
  seed?: number;
}

const GENERATE_KEYS = ['prompt', 'tokens', 'temperature', 'topK', 'seed'];

// ---- the server -------------------------------------------------------------------------------------------------------

export async function startServer(options: ServerOptions = {}): Promise<RunningServer> {
  const o = options;
  const log = o.log ?? (() => {});
  if (o.threads !== undefined) setNumThreads(o.threads);

  // Data: a character tokenizer over the whole text, 90% to train on, 10% to validate.
  const dataPath = o.dataPath ?? process.env.SF_DATA;
  const text = o.text ?? (dataPath ? readFileSync(dataPath, 'utf8') : DEFAULT_TEXT);
  const tokenizer = CharTokenizer.fromText(text);
  const data = new TokenDataset(tokenizer.encode(text), tokenizer.vocabSize);

  const m = o.model ?? {};
  const config: DecoderConfig = {
    vocab: tokenizer.vocabSize,
    dModel: m.dModel ?? 64,
    heads: m.heads ?? 4,
    dFF: m.dFF ?? 256,
    layers: m.layers ?? 6,
    maxSeq: m.maxSeq ?? 64,
    sharing: m.sharing ?? { strategy: 'all' },
    seed: m.seed ?? 1,
  };
  const seqLen = o.seqLen ?? config.maxSeq;
  if (data.val.length < seqLen + 1)
    throw new RangeError(`startServer: the text is too short: its validation tenth has ${data.val.length} characters, fewer than a window of ${seqLen + 1}`);
  const maxTokens = o.maxTokens ?? 1000;
  const maxPromptChars = o.maxPromptChars ?? 2000;
  const maxBodyBytes = o.maxBodyBytes ?? 16 * 1024;

  const model = new Decoder(config);
  const ac = new AbortController();
  let trainer: Trainer;
  try {
    trainer = new Trainer(model, data, {
      steps: o.steps ?? 3000,
      batchSize: o.batchSize ?? 16,
      seqLen,
      lr: o.lr ?? 3e-3,
      warmup: o.warmup ?? 50,
      evalEvery: o.evalEvery ?? 200,
      evalBatches: o.evalBatches ?? 10,
      signal: ac.signal,
    });
  } catch (e) {
    model.store.dispose();
    throw e;
  }

  // ---- background training -------------------------------------------------------------------------------------
  const lock = new TurnLock();
  const t0 = performance.now();
  let last: StepInfo | undefined;
  let val: EvalInfo | undefined;
  let training = true;
  let error: string | undefined;
  let closing = false;
  const logEvery = o.logEvery ?? 100;

  trainer.on('eval', (e: EvalInfo) => {
    val = e;
    log(`step ${e.step}: validation loss ${e.loss.toFixed(3)} (${e.bpc.toFixed(3)} bits/char)`);
  });

  const status = (): Status => ({
    step: trainer.step,
    steps: trainer.options.steps,
    loss: last ? last.loss : null,
    tokensPerSec: last ? Math.round(last.tokensPerSec) : 0,
    training,
    ...(val ? { valLoss: val.loss, valStep: val.step } : {}),
    ...(error !== undefined ? { error } : {}),
    aborted: !training && error === undefined && trainer.step < trainer.options.steps,
    parameters: model.numParameters,
    memory: memory()[model.store.device] ?? { tensors: 0, storages: 0, bytes: 0, peakBytes: 0, cachedBytes: 0 },
    uptimeMs: Math.round(performance.now() - t0),
  });

  /** The background training: a step per turn of the lock until done or aborted, then a final evaluation. */
  const train = async (): Promise<Status> => {
    const steps = trainer.steps();
    try {
      for (;;) {
        const release = await lock.acquire(); // one step (and any scheduled evaluation) per turn
        let r: IteratorResult<StepInfo>;
        try {
          r = await steps.next();
        } finally {
          release();
        }
        if (r.done) break;
        last = r.value;
        if (logEvery && r.value.step % logEvery === 0)
          log(`step ${r.value.step}/${trainer.options.steps}: loss ${r.value.loss.toFixed(3)}, ${Math.round(r.value.tokensPerSec)} tokens/s`);
      }
      if (!ac.signal.aborted && (val === undefined || val.step !== trainer.step)) {
        const release = await lock.acquire();
        try {
          await trainer.evaluate();
        } finally {
          release();
        }
      }
      log(ac.signal.aborted ? `training stopped at step ${trainer.step}` : `training finished: ${trainer.step} steps`);
    } catch (e) {
      error = e instanceof Error ? e.message : String(e);
      log(`training failed: ${error}`);
    } finally {
      training = false;
      releaseTape();
    }
    return status();
  };

  // ---- requests ----------------------------------------------------------------------------------------------------

  /** Validates /generate's parameters (from a JSON body or a query string, already typed). */
  function parseGenerate(p: Record<string, unknown>): GenerateRequest {
    for (const k of Object.keys(p))
      if (!GENERATE_KEYS.includes(k)) throw new HttpError(400, `unknown parameter '${k}' (the parameters are ${GENERATE_KEYS.join(', ')})`);
    const prompt = p.prompt;
    if (typeof prompt !== 'string' || prompt.length === 0) throw new HttpError(400, `prompt must be a non-empty string, got ${describe(prompt)}`);
    const chars = [...prompt].length;
    if (chars > maxPromptChars) throw new HttpError(400, `prompt has ${chars} characters, more than the limit of ${maxPromptChars}`);
    let ids: Int32Array;
    try {
      ids = tokenizer.encode(prompt);
    } catch (e) {
      throw new HttpError(400, `prompt: ${(e as Error).message.replace(/^CharTokenizer\.encode: /, '')} (the model knows ${tokenizer.vocabSize} characters, those of its training text)`);
    }
    const r: GenerateRequest = { ids, tokens: p.tokens === undefined ? 100 : intIn(p.tokens, 'tokens', 1, maxTokens), temperature: 0.8 };
    if (p.temperature !== undefined) {
      if (typeof p.temperature !== 'number' || !Number.isFinite(p.temperature) || p.temperature < 0 || p.temperature > 100)
        throw new HttpError(400, `temperature must be a number in [0, 100] (0 is greedy), got ${describe(p.temperature)}`);
      r.temperature = p.temperature;
    }
    if (p.topK !== undefined) r.topK = intIn(p.topK, 'topK', 1, tokenizer.vocabSize);
    if (p.seed !== undefined) r.seed = intIn(p.seed, 'seed', 0, Number.MAX_SAFE_INTEGER);
    return r;
  }

  /**
   * Generates r.tokens characters after the prompt. The model sees at most maxSeq positions, so longer outputs slide
   * a window: each round keeps the last half-window of context and generates into the rest (seeded rounds stay
   * reproducible: round i uses seed + i).
   */
  async function generateText(r: GenerateRequest): Promise<{ text: string; step: number }> {
    const release = await lock.acquire(); // the step in flight finishes first; the next one waits for this
    try {
      const maxSeq = model.config.maxSeq;
      const keep = Math.max(1, maxSeq >> 1);
      const all = Array.from(r.ids);
      const out: number[] = [];
      for (let round = 0; out.length < r.tokens; round++) {
        const context = all.slice(-Math.min(all.length, out.length === 0 ? maxSeq - 1 : keep));
        const n = Math.min(r.tokens - out.length, maxSeq - context.length);
        const seed = r.seed === undefined ? undefined : r.seed + round <= Number.MAX_SAFE_INTEGER ? r.seed + round : r.seed - round;
        const ids = await model.generate(context, { maxNewTokens: n, temperature: r.temperature, ...(r.topK !== undefined ? { topK: r.topK } : {}), ...(seed !== undefined ? { seed } : {}) });
        all.push(...ids);
        out.push(...ids);
      }
      return { text: tokenizer.decode(out), step: trainer.step };
    } finally {
      release();
    }
  }

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (closing) throw new HttpError(503, 'the server is shutting down', { connection: 'close' });
    if (url.pathname === '/status') {
      if (req.method !== 'GET' && req.method !== 'HEAD') throw new HttpError(405, `${req.method} is not allowed on /status (use GET)`, { allow: 'GET, HEAD' });
      sendJson(res, 200, status());
      return;
    }
    if (url.pathname === '/generate') {
      let params: Record<string, unknown>;
      if (req.method === 'POST') {
        const body = await readBody(req, maxBodyBytes);
        let parsed: unknown;
        try {
          parsed = JSON.parse(body);
        } catch (e) {
          throw new HttpError(400, `the body is not valid JSON: ${(e as Error).message}`);
        }
        if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
          throw new HttpError(400, `the body must be a JSON object like {"prompt": "The river"}, got ${describe(parsed)}`);
        params = parsed as Record<string, unknown>;
      } else if (req.method === 'GET') {
        params = {};
        for (const k of new Set(url.searchParams.keys())) {
          const all = url.searchParams.getAll(k);
          if (all.length > 1) throw new HttpError(400, `parameter '${k}' is given ${all.length} times`);
          params[k] = k === 'prompt' || !GENERATE_KEYS.includes(k) ? all[0] : queryNumber(all[0], k);
        }
      } else {
        throw new HttpError(405, `${req.method} is not allowed on /generate (use POST with a JSON body, or GET with a query)`, { allow: 'GET, POST' });
      }
      const r = parseGenerate(params);
      sendJson(res, 200, await generateText(r));
      return;
    }
    throw new HttpError(404, `no such endpoint: ${url.pathname} (try GET /status or POST /generate)`);
  }

  const inflight = new Set<Promise<void>>();
  const server = http.createServer((req, res) => {
    const p = handle(req, res)
      .catch((e: unknown) => {
        if (res.headersSent) {
          res.destroy();
          return;
        }
        if (e instanceof HttpError) {
          sendJson(res, e.status, { error: e.message }, e.headers);
          if (e.status === 413) req.resume(); // drain what is left, then the connection closes
        } else {
          log(`internal error on ${req.method} ${req.url}: ${e instanceof Error ? e.stack : String(e)}`);
          sendJson(res, 500, { error: `internal error: ${e instanceof Error ? e.message : String(e)}` });
        }
      })
      .finally(() => inflight.delete(p));
    inflight.add(p);
  });
  server.keepAliveTimeout = 5000;

  const port = o.port ?? 3000;
  const host = o.host ?? '127.0.0.1';
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (e) {
    trainer.dispose();
    model.io.clearCache();
    model.store.dispose();
    throw e;
  }
  const trained = train(); // runs in the background from here on
  const addr = server.address() as AddressInfo;
  const url = `http://${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}`;
  log(`sharedformer server: ${url} — ${model.plan.describe()}, ${model.numParameters.toLocaleString('en-US')} unique parameters, vocabulary ${tokenizer.vocabSize}, ${trainer.options.steps} steps`);

  let closed: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closed ??= (async () => {
      closing = true;
      const serverClosed = new Promise<void>((resolve) => server.close(() => resolve())); // stops accepting; idle sockets close
      ac.abort(); // the trainer stops before its next step
      await trained;
      while (inflight.size) await Promise.allSettled([...inflight]);
      server.closeAllConnections();
      await serverClosed;
      trainer.dispose();
      model.io.clearCache();
      model.store.dispose();
      releaseTape();
      log('server closed');
    })();
    return closed;
  };

  return { url, close, trainer, model, tokenizer, trained, status };
}

// ---- run directly -----------------------------------------------------------------------------------------------------

function envInt(name: string, fallback: number): number {
  const s = process.env[name];
  if (s === undefined || s === '') return fallback;
  const v = Number(s);
  if (!Number.isInteger(v) || v < 0) throw new RangeError(`${name} must be a non-negative integer, got '${s}'`);
  return v;
}

function isMain(): boolean {
  if (!process.argv[1]) return false;
  try {
    return realpathSync(process.argv[1]) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isMain()) {
  const running = await startServer({
    port: envInt('PORT', 3000),
    host: process.env.HOST || '127.0.0.1',
    steps: envInt('STEPS', 3000),
    threads: envInt('THREADS', Math.max(1, availableParallelism() - 1)),
    log: (line) => console.log(`[${new Date().toISOString()}] ${line}`),
  });
  console.log(`listening on ${running.url} (GET /status, POST /generate); Ctrl-C stops`);
  let stopping = false;
  const shutdown = (signal: string): void => {
    if (stopping) {
      console.log(`${signal} again: exiting now`);
      process.exit(130);
    }
    stopping = true;
    console.log(`${signal}: stopping training and closing the server...`);
    running.close().then(
      () => {
        process.exitCode = 0;
      },
      (e: unknown) => {
        console.error(e);
        process.exitCode = 1;
      },
    );
  };
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGTERM', () => shutdown('SIGTERM'));
}
