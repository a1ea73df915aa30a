// ops_record.cpp — recording an op sequence once and replaying it (Stream::begin_capture / replay, stream.h), and
// writing host values into an existing tensor: what a decode step needs to run as one native call per token.
//
//   recordBegin(device)          the calling thread's ops on `device` are recorded from now on, not run
//   recordEnd(device) -> rec     ends the recording; rec (an opaque handle) holds the tasks and the tensors they use
//   recordAbort(device)          ends a recording, if one is open on this thread, dropping it (never throws)
//   recordTasks(rec) -> number   how many tasks rec holds
//   replay(rec)                  queues every recorded task again, in order (each one an ordinary stream task)
//   recordFree(rec)              drops what rec holds now (replays already queued keep their own references);
//                                replaying it afterwards throws
//   writeInto(dst, data)         dst[:] = data (a typed array of dst's dtype and element count), as a stream task
//                                after earlier work on dst's device; an int32 dst notes the values' bounds, as an
//                                upload does (Storage::note_ids)
// A recording is freed by recordFree or when its handle is garbage-collected (or with the addon).
#include <cstring>
#include <memory>

#include "ops.h"

namespace sf::js {

namespace {

// The type tag that marks a recording handle (napi_type_tag: an External made by anyone else is refused).
constexpr napi_type_tag kRecordingTag = {0x5f3c2a9e1d7b4c01ULL, 0x8e6a4f2b9c0d1e37ULL};

struct RecordingBox {
  std::shared_ptr<const Stream::Recording> rec;
  Backend* backend;
};

Stream& stream_of(const Napi::CallbackInfo& info, size_t i, const char* op) {
  Addon& a = *info.Env().GetInstanceData<Addon>();
  return a.ctx().backend(get_device(info[i], op), op).stream();
}

RecordingBox& recording_arg(const Napi::Value& v, const char* op, bool live = true) {
  if (!v.IsExternal() || !v.As<Napi::External<RecordingBox>>().CheckTypeTag(&kRecordingTag))
    type_error(op, ": expected a recording (the value recordEnd returns), got ", describe(v));
  RecordingBox& box = *v.As<Napi::External<RecordingBox>>().Data();
  if (live && !box.rec) error(op, ": the recording has been freed");
  return box;
}

Napi::Value RecordBegin(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    expect_args(info, 1, "recordBegin");
    stream_of(info, 0, "recordBegin").begin_capture("recordBegin");
    return info.Env().Undefined();
  });
}

Napi::Value RecordEnd(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    const char* op = "recordEnd";
    expect_args(info, 1, op);
    Addon& a = *info.Env().GetInstanceData<Addon>();
    Backend& b = a.ctx().backend(get_device(info[0], op), op);
    auto box = std::make_unique<RecordingBox>(RecordingBox{b.stream().end_capture(op), &b});
    auto ext = Napi::External<RecordingBox>::New(info.Env(), box.get(), [](Napi::Env, RecordingBox* p) { delete p; });
    box.release();  // owned by the External's finalizer now
    ext.TypeTag(&kRecordingTag);
    return ext;
  });
}

Napi::Value RecordAbort(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    expect_args(info, 1, "recordAbort");
    stream_of(info, 0, "recordAbort").abort_capture();
    return info.Env().Undefined();
  });
}

Napi::Value RecordTasks(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    expect_args(info, 1, "recordTasks");
    return Napi::Number::New(info.Env(), static_cast<double>(recording_arg(info[0], "recordTasks").rec->items.size()));
  });
}

Napi::Value Replay(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    expect_args(info, 1, "replay");
    const RecordingBox& r = recording_arg(info[0], "replay");
    r.backend->stream().replay(*r.rec);
    return info.Env().Undefined();
  });
}

Napi::Value RecordFree(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    expect_args(info, 1, "recordFree");
    recording_arg(info[0], "recordFree", false).rec.reset();
    return info.Env().Undefined();
  });
}

Napi::Value WriteInto(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    const char* op = "writeInto";
    expect_args(info, 2, op);
    Addon& a = *info.Env().GetInstanceData<Addon>();
    Tensor dst = a.unwrap(info[0], op, "dst");
    if (!info[1].IsTypedArray()) type_error(op, ": data must be a typed array, got ", describe(info[1]));
    Napi::TypedArray ta = info[1].As<Napi::TypedArray>();
    const napi_typedarray_type tt = ta.TypedArrayType();
    const bool ok = (dst.dtype == DType::f32 && tt == napi_float32_array) ||
                    (dst.dtype == DType::i32 && tt == napi_int32_array) ||
                    (dst.dtype == DType::bf16 && tt == napi_uint16_array);
    if (!ok)
      type_error(op, ": dst is ", dst.describe(), " and needs ",
                 dst.dtype == DType::i32 ? "an Int32Array" : dst.dtype == DType::f32 ? "a Float32Array" : "a Uint16Array (bf16 bits)",
                 ", got ", describe(info[1]));
    if (static_cast<int64_t>(ta.ElementLength()) != dst.numel())
      range_error(op, ": data has ", ta.ElementLength(), " elements but dst ", shape_str(dst.shape), " has ", dst.numel());
    if (dst.numel() == 0) return info[0];
    // Copied now: the JavaScript array may change after this call returns.
    const char* src = static_cast<const char*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
    auto buf = std::make_shared<std::vector<char>>(src, src + dst.nbytes());
    Backend* b = &a.ctx().backend(dst.device(), op);
    b->stream().submit(op, [b, dst, buf] { b->upload(dst, buf->data()); }, Effects{{}, {dst}}, Stream::Record::Allow);
    return info[0];
  });
}

}  // namespace

void register_record_ops(Napi::Env env, Napi::Object exports) {
  exports.Set("recordBegin", Napi::Function::New(env, RecordBegin, "recordBegin"));
  exports.Set("recordEnd", Napi::Function::New(env, RecordEnd, "recordEnd"));
  exports.Set("recordAbort", Napi::Function::New(env, RecordAbort, "recordAbort"));
  exports.Set("recordTasks", Napi::Function::New(env, RecordTasks, "recordTasks"));
  exports.Set("replay", Napi::Function::New(env, Replay, "replay"));
  exports.Set("recordFree", Napi::Function::New(env, RecordFree, "recordFree"));
  exports.Set("writeInto", Napi::Function::New(env, WriteInto, "writeInto"));
}

}  // namespace sf::js
