// bpe.cpp — BPE merges as the Hugging Face `tokenizers` BpeTrainer makes them (see bpe.h).
#include "bpe.h"

#include <algorithm>
#include <queue>
#include <unordered_map>
#include <utility>

#include "error.h"

namespace sf::text {

namespace {

using PairKey = uint64_t;  // (left << 32) | right: ordering keys orders pairs as (left, right)

PairKey key_of(int32_t a, int32_t b) { return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b); }
int32_t left_of(PairKey k) { return static_cast<int32_t>(k >> 32); }
int32_t right_of(PairKey k) { return static_cast<int32_t>(k & 0xffffffffu); }

struct Entry {
  int64_t count;
  PairKey pair;
  std::vector<int32_t> words;  // where the pair was counted or formed (sorted, unique)
};

// The heap's order: the larger count first; on equal counts the smaller pair first.
struct Lower {
  bool operator()(const Entry& x, const Entry& y) const {
    if (x.count != y.count) return x.count < y.count;
    return x.pair > y.pair;
  }
};

using Changes = std::vector<std::pair<PairKey, int>>;

// Replaces every (a, b) in `w`, left to right, by `id`, and records the pair counts that change (the reference's
// Word::merge: the pair before and after each occurrence loses one, the pairs with the new token gain one).
void merge_word(std::vector<int32_t>& w, int32_t a, int32_t b, int32_t id, Changes& changes) {
  size_t i = 0;
  while (i < w.size()) {
    if (w[i] == a && i + 1 < w.size() && w[i + 1] == b) {
      if (i > 0) {
        changes.emplace_back(key_of(w[i - 1], a), -1);
        changes.emplace_back(key_of(w[i - 1], id), 1);
      }
      w[i] = id;
      w.erase(w.begin() + static_cast<std::ptrdiff_t>(i) + 1);
      if (i + 1 < w.size()) {
        changes.emplace_back(key_of(b, w[i + 1]), -1);
        changes.emplace_back(key_of(id, w[i + 1]), 1);
      }
    }
    ++i;
  }
}

std::vector<int32_t> sorted_unique(std::vector<int32_t> v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
  return v;
}

}  // namespace

std::vector<BpeMerge> bpe_train(const BpeWords& in, const std::vector<std::string>& token_strings, int64_t vocab_size,
                                uint64_t min_frequency) {
  const char* fn = "bpeTrain";
  const size_t n_words = in.counts.size();
  if (in.offsets.size() != n_words + 1)
    range_error(fn, ": ", in.offsets.size(), " offsets for ", n_words, " words (expected words + 1)");
  if (in.offsets[0] != 0 || in.offsets[n_words] != static_cast<int64_t>(in.symbols.size()))
    range_error(fn, ": offsets must run from 0 to the number of symbols (", in.symbols.size(), "), got ", in.offsets[0],
                " to ", in.offsets[n_words]);
  for (size_t w = 0; w < n_words; ++w)
    if (in.offsets[w + 1] < in.offsets[w]) range_error(fn, ": offsets decrease at word ", w);
  const int64_t n_initial = static_cast<int64_t>(token_strings.size());
  if (n_initial >= INT32_MAX) range_error(fn, ": ", n_initial, " initial tokens");
  for (size_t s = 0; s < in.symbols.size(); ++s)
    if (in.symbols[s] < 0 || in.symbols[s] >= n_initial)
      range_error(fn, ": symbol ", in.symbols[s], " at position ", s, " is outside the ", n_initial, " initial tokens");
  if (vocab_size < 0 || vocab_size > INT32_MAX) range_error(fn, ": vocab_size ", vocab_size, " is outside [0, 2^31 - 1]");

  std::vector<std::string> strings = token_strings;
  std::unordered_map<std::string, int32_t> id_of;
  for (int32_t i = 0; i < static_cast<int32_t>(strings.size()); ++i) id_of.emplace(strings[static_cast<size_t>(i)], i);
  int64_t vocab = static_cast<int64_t>(id_of.size());

  std::vector<std::vector<int32_t>> words(n_words);
  for (size_t w = 0; w < n_words; ++w)
    words[w].assign(in.symbols.begin() + in.offsets[w], in.symbols.begin() + in.offsets[w + 1]);

  // Pair counts and where each pair occurs.
  std::unordered_map<PairKey, int64_t> counts;
  std::unordered_map<PairKey, std::vector<int32_t>> where;
  for (size_t w = 0; w < n_words; ++w) {
    const auto& s = words[w];
    for (size_t i = 0; i + 1 < s.size(); ++i) {
      const PairKey k = key_of(s[i], s[i + 1]);
      counts[k] += static_cast<int64_t>(in.counts[w]);
      auto& list = where[k];
      if (list.empty() || list.back() != static_cast<int32_t>(w)) list.push_back(static_cast<int32_t>(w));
    }
  }
  std::priority_queue<Entry, std::vector<Entry>, Lower> heap;
  for (auto& [k, list] : where)
    if (counts[k] > 0) heap.push(Entry{counts[k], k, std::move(list)});
  where.clear();

  std::vector<BpeMerge> events;
  Changes changes;
  while (vocab < vocab_size && !heap.empty()) {
    Entry top = heap.top();
    heap.pop();
    const int64_t now = counts[top.pair];
    if (top.count != now) {  // a stale count: back in the heap with the current one
      top.count = now;
      heap.push(std::move(top));
      continue;
    }
    if (top.count < 1 || static_cast<uint64_t>(top.count) < min_frequency) break;
    const int32_t a = left_of(top.pair), b = right_of(top.pair);
    std::string joined = strings[static_cast<size_t>(a)] + strings[static_cast<size_t>(b)];
    int32_t id;
    if (auto it = id_of.find(joined); it != id_of.end()) {
      id = it->second;  // the string is a token already: its id, and no new token
    } else {
      id = static_cast<int32_t>(strings.size());
      strings.push_back(joined);
      id_of.emplace(std::move(joined), id);
      ++vocab;
    }
    events.push_back(BpeMerge{a, b, id});
    std::unordered_map<PairKey, std::vector<int32_t>> formed;
    for (int32_t w : top.words) {
      changes.clear();
      merge_word(words[static_cast<size_t>(w)], a, b, id, changes);
      const int64_t c = static_cast<int64_t>(in.counts[static_cast<size_t>(w)]);
      for (const auto& [k, delta] : changes) {
        counts[k] += delta * c;
        if (delta > 0) {
          auto& list = formed[k];
          if (list.empty() || list.back() != w) list.push_back(w);
        }
      }
    }
    for (auto& [k, list] : formed)
      if (counts[k] > 0) heap.push(Entry{counts[k], k, sorted_unique(std::move(list))});
  }

  // A pair merged twice (its string formed again) keeps the rank of its last merge, as the reference's map of merges
  // does; the list is in rank order.
  std::unordered_map<PairKey, size_t> last;
  for (size_t i = 0; i < events.size(); ++i) last[key_of(events[i].left, events[i].right)] = i;
  std::vector<BpeMerge> merges;
  merges.reserve(last.size());
  for (size_t i = 0; i < events.size(); ++i)
    if (last[key_of(events[i].left, events[i].right)] == i) merges.push_back(events[i]);
  return merges;
}

}  // namespace sf::text
