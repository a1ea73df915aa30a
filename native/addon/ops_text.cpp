// ops_text.cpp — the binding of the BPE trainer (native/core/bpe.h), run off the JavaScript thread.
//
//   bpeTrain(symbols, offsets, counts, tokens, vocabSize, minFrequency) -> Promise<Int32Array>
//     symbols Int32Array: every distinct word's initial token ids, word after word; offsets Float64Array (words + 1
//     safe integers from 0 to symbols.length, not decreasing); counts Float64Array (words positive safe integers);
//     tokens: the initial tokens' strings (ids 0 .. tokens.length - 1; unique); vocabSize, minFrequency: integers
//     in [0, 2^31 - 1] and [0, 2^53). Resolves to the merges in rank order as (left, right, id) triples.
// The inputs are copied before the promise is returned (the caller may reuse its arrays at once); the work runs on
// libuv's thread pool, so the event loop stays free while a large vocabulary trains.
#include <cmath>
#include <string>
#include <unordered_set>
#include <vector>

#include "../core/bpe.h"
#include "ops.h"

namespace sf::js {

namespace {

constexpr double kMaxSafe = 9007199254740991.0;

class BpeWorker : public Napi::AsyncWorker {
 public:
  BpeWorker(Napi::Env env, text::BpeWords words, std::vector<std::string> tokens, int64_t vocab, uint64_t minf)
      : Napi::AsyncWorker(env, "sharedformer.bpeTrain"), deferred_(Napi::Promise::Deferred::New(env)),
        words_(std::move(words)), tokens_(std::move(tokens)), vocab_(vocab), minf_(minf) {}
  Napi::Promise promise() const { return deferred_.Promise(); }

  void Execute() override {
    try {
      merges_ = text::bpe_train(words_, tokens_, vocab_, minf_);
    } catch (const Error& e) {
      kind_ = e.kind();
      SetError(e.what());
    } catch (const std::bad_alloc&) {
      kind_ = ErrorKind::Range;
      SetError("bpeTrain: out of host memory");
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    auto out = Napi::Int32Array::New(env, merges_.size() * 3);
    for (size_t i = 0; i < merges_.size(); ++i) {
      out[3 * i] = merges_[i].left;
      out[3 * i + 1] = merges_[i].right;
      out[3 * i + 2] = merges_[i].id;
    }
    deferred_.Resolve(out);
  }
  void OnError(const Napi::Error& e) override {
    deferred_.Reject(to_js_error(Env(), kind_, e.Message().c_str()).Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  text::BpeWords words_;
  std::vector<std::string> tokens_;
  int64_t vocab_;
  uint64_t minf_;
  std::vector<text::BpeMerge> merges_;
  ErrorKind kind_ = ErrorKind::Generic;
};

double integer_arg(const Napi::Value& v, const char* name, double lo, double hi) {
  if (!v.IsNumber()) type_error("bpeTrain: ", name, " must be a number");
  const double x = v.As<Napi::Number>().DoubleValue();
  if (!(x >= lo && x <= hi) || std::floor(x) != x)
    range_error("bpeTrain: ", name, " must be an integer in [", lo, ", ", hi, "], got ", x);
  return x;
}

Napi::Value BpeTrain(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    if (info.Length() < 6) type_error("bpeTrain: expected 6 arguments, got ", info.Length());
    if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
      type_error("bpeTrain: symbols must be an Int32Array");
    for (int i : {1, 2})
      if (!info[i].IsTypedArray() || info[i].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array)
        type_error("bpeTrain: ", i == 1 ? "offsets" : "counts", " must be a Float64Array");
    if (!info[3].IsArray()) type_error("bpeTrain: tokens must be an array of strings");
    auto syms = info[0].As<Napi::Int32Array>();
    auto offs = info[1].As<Napi::Float64Array>();
    auto cnts = info[2].As<Napi::Float64Array>();
    auto toks = info[3].As<Napi::Array>();
    const int64_t vocab = static_cast<int64_t>(integer_arg(info[4], "vocabSize", 0, 2147483647.0));
    const uint64_t minf = static_cast<uint64_t>(integer_arg(info[5], "minFrequency", 0, kMaxSafe));
    if (offs.ElementLength() != cnts.ElementLength() + 1)
      range_error("bpeTrain: offsets has ", offs.ElementLength(), " entries for ", cnts.ElementLength(),
                  " words (expected words + 1)");
    text::BpeWords words;
    words.symbols.assign(syms.Data(), syms.Data() + syms.ElementLength());
    words.offsets.resize(offs.ElementLength());
    for (size_t i = 0; i < offs.ElementLength(); ++i) {
      const double o = offs[i];
      if (!(o >= 0 && o <= kMaxSafe) || std::floor(o) != o)
        range_error("bpeTrain: offsets[", i, "] = ", o, " is not a non-negative safe integer");
      words.offsets[i] = static_cast<int64_t>(o);
    }
    words.counts.resize(cnts.ElementLength());
    for (size_t i = 0; i < cnts.ElementLength(); ++i) {
      const double c = cnts[i];
      if (!(c >= 1 && c <= kMaxSafe) || std::floor(c) != c)
        range_error("bpeTrain: counts[", i, "] = ", c, " is not a positive safe integer");
      words.counts[i] = static_cast<uint64_t>(c);
    }
    std::vector<std::string> tokens(toks.Length());
    std::unordered_set<std::string> seen;
    for (uint32_t i = 0; i < toks.Length(); ++i) {
      Napi::Value t = toks.Get(i);
      if (!t.IsString()) type_error("bpeTrain: tokens[", i, "] is not a string");
      tokens[i] = t.As<Napi::String>().Utf8Value();
      if (!seen.insert(tokens[i]).second) range_error("bpeTrain: tokens[", i, "] = \"", tokens[i], "\" appears twice");
    }
    // The structure (offsets, symbol range) is checked here too, so that a bad call throws rather than rejects.
    if (!words.offsets.empty() && (words.offsets.front() != 0 || words.offsets.back() != static_cast<int64_t>(words.symbols.size())))
      range_error("bpeTrain: offsets must run from 0 to symbols.length = ", words.symbols.size());
    for (size_t w = 0; w + 1 < words.offsets.size(); ++w)
      if (words.offsets[w + 1] < words.offsets[w]) range_error("bpeTrain: offsets decrease at word ", w);
    for (size_t s = 0; s < words.symbols.size(); ++s)
      if (words.symbols[s] < 0 || static_cast<size_t>(words.symbols[s]) >= tokens.size())
        range_error("bpeTrain: symbols[", s, "] = ", words.symbols[s], " is outside the ", tokens.size(), " tokens");
    auto* worker = new BpeWorker(env, std::move(words), std::move(tokens), vocab, minf);  // deletes itself when done
    Napi::Promise p = worker->promise();
    worker->Queue();
    return p;
  });
}

}  // namespace

void register_text_ops(Napi::Env env, Napi::Object exports) {
  exports.Set("bpeTrain", Napi::Function::New(env, BpeTrain, "bpeTrain"));
}

}  // namespace sf::js
