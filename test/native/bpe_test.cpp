// bpe_test.cpp — sf::text::bpe_train (native/core/bpe.cpp) against a hand-worked example (Sennrich et al.'s
// low/lower/newest/widest) and against a naive reference on random corpora: count every adjacent pair again after
// each merge, take the most frequent (ties: the smaller (left, right) ids), merge it everywhere left to right. The two
// must agree merge for merge up to the first merge whose string is already a token (where the reference
// implementation's trainer, which bpe_train follows, carries a stale count: see bpe.h); most random corpora never
// reach one and are compared whole. Plus min_frequency, vocabulary limits and bad input.
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "check.h"
#include "core/bpe.h"
#include "core/error.h"

using namespace sf;
using sf::text::BpeMerge;
using sf::text::BpeWords;

namespace {

BpeWords make_words(const std::vector<std::pair<std::vector<int32_t>, uint64_t>>& ws) {
  BpeWords out;
  out.offsets.push_back(0);
  for (const auto& [syms, c] : ws) {
    out.symbols.insert(out.symbols.end(), syms.begin(), syms.end());
    out.offsets.push_back(static_cast<int64_t>(out.symbols.size()));
    out.counts.push_back(c);
  }
  return out;
}

struct Naive {
  std::vector<BpeMerge> merges;
  size_t reuse_at = SIZE_MAX;  // index of the first merge whose string was already a token
};

Naive naive_bpe(std::vector<std::pair<std::vector<int32_t>, uint64_t>> ws, std::vector<std::string> strings, int64_t vocab_size,
                uint64_t min_frequency) {
  Naive r;
  std::map<std::string, int32_t> id_of;
  for (size_t i = 0; i < strings.size(); ++i) id_of.emplace(strings[i], static_cast<int32_t>(i));
  int64_t vocab = static_cast<int64_t>(id_of.size());
  while (vocab < vocab_size) {
    std::map<std::pair<int32_t, int32_t>, uint64_t> counts;  // ordered: the first maximum is the smallest pair
    for (const auto& [s, c] : ws)
      for (size_t i = 0; i + 1 < s.size(); ++i) counts[{s[i], s[i + 1]}] += c;
    std::pair<int32_t, int32_t> best{-1, -1};
    uint64_t best_count = 0;
    for (const auto& [p, c] : counts)
      if (c > best_count) best = p, best_count = c;
    if (best_count < 1 || best_count < min_frequency) break;
    const std::string joined = strings[static_cast<size_t>(best.first)] + strings[static_cast<size_t>(best.second)];
    int32_t id;
    if (auto it = id_of.find(joined); it != id_of.end()) {
      id = it->second;
      if (r.reuse_at == SIZE_MAX) r.reuse_at = r.merges.size();
    } else {
      id = static_cast<int32_t>(strings.size());
      strings.push_back(joined);
      id_of.emplace(joined, id);
      ++vocab;
    }
    r.merges.push_back(BpeMerge{best.first, best.second, id});
    for (auto& [s, c] : ws) {
      std::vector<int32_t> out;
      for (size_t i = 0; i < s.size(); ++i) {
        if (i + 1 < s.size() && s[i] == best.first && s[i + 1] == best.second) {
          out.push_back(id);
          ++i;
        } else {
          out.push_back(s[i]);
        }
      }
      s = std::move(out);
    }
  }
  return r;
}

bool same(const BpeMerge& x, const BpeMerge& y) { return x.left == y.left && x.right == y.right && x.id == y.id; }

}  // namespace

TEST(sennrich_example_by_hand) {
  // Alphabet d e i l n o r s t w = ids 0..9. Counts: es 9, st 9 (tie: (e, s) = (1, 7) is smaller), then est 9, then lo 7
  // and ow 7 (tie: (l, o) = (3, 5)), then low 7, then ne 6, ew 6, w+est 6 (tie: (e, w) = (1, 9)).
  const std::vector<std::string> alpha = {"d", "e", "i", "l", "n", "o", "r", "s", "t", "w"};
  auto ids = [&](const std::string& w) {
    std::vector<int32_t> v;
    for (char ch : w)
      for (size_t i = 0; i < alpha.size(); ++i)
        if (alpha[i][0] == ch) v.push_back(static_cast<int32_t>(i));
    return v;
  };
  const BpeWords words = make_words({{ids("low"), 5}, {ids("lower"), 2}, {ids("newest"), 6}, {ids("widest"), 3}});
  const auto m = sf::text::bpe_train(words, alpha, 15, 0);
  const std::vector<BpeMerge> want = {{1, 7, 10}, {10, 8, 11}, {3, 5, 12}, {12, 9, 13}, {1, 9, 14}};
  CHECK_EQ(m.size(), want.size());
  for (size_t i = 0; i < std::min(m.size(), want.size()); ++i) CHECK(same(m[i], want[i]));
  // min_frequency 8 stops after es, est (9 each); lo (7) is below it.
  CHECK_EQ(sf::text::bpe_train(words, alpha, 100, 8).size(), size_t{2});
  // A vocabulary no larger than the alphabet makes no merge.
  CHECK_EQ(sf::text::bpe_train(words, alpha, 10, 0).size(), size_t{0});
  CHECK_EQ(sf::text::bpe_train(words, alpha, 0, 0).size(), size_t{0});
  // No pair left: "low" x 1 merges twice, then stops short of the requested size.
  CHECK_EQ(sf::text::bpe_train(make_words({{ids("low"), 1}}), alpha, 1000, 0).size(), size_t{2});
}

TEST(random_corpora_against_the_naive_reference) {
  std::mt19937 g(1234);
  int whole = 0, prefix = 0;
  for (int trial = 0; trial < 300; ++trial) {
    const int A = 2 + static_cast<int>(g() % 7);
    std::vector<std::string> strings;
    for (int i = 0; i < A; ++i) strings.push_back(std::string(1, static_cast<char>('a' + i)));
    if (trial % 3 == 0) strings.push_back("<s>");  // a special token: never in a word
    const int n_words = 1 + static_cast<int>(g() % 40);
    std::vector<std::pair<std::vector<int32_t>, uint64_t>> ws;
    for (int w = 0; w < n_words; ++w) {
      std::vector<int32_t> s(1 + g() % 12);
      for (auto& x : s) x = static_cast<int32_t>(g() % static_cast<unsigned>(A));
      ws.emplace_back(s, 1 + g() % 5);
    }
    const int64_t vocab_size = static_cast<int64_t>(strings.size()) + static_cast<int64_t>(g() % 60);
    const uint64_t minf = trial % 5 == 0 ? 1 + g() % 6 : 0;
    const auto fast = sf::text::bpe_train(make_words(ws), strings, vocab_size, minf);
    const Naive ref = naive_bpe(ws, strings, vocab_size, minf);
    if (ref.reuse_at == SIZE_MAX) {
      ++whole;
      CHECK_EQ(fast.size(), ref.merges.size());
      for (size_t i = 0; i < std::min(fast.size(), ref.merges.size()); ++i) CHECK(same(fast[i], ref.merges[i]));
    } else {
      ++prefix;
      CHECK(fast.size() >= ref.reuse_at);
      for (size_t i = 0; i < std::min(fast.size(), ref.reuse_at + 1); ++i) CHECK(same(fast[i], ref.merges[i]));
    }
  }
  std::printf("  %d corpora compared whole, %d up to the first string formed twice\n", whole, prefix);
  CHECK(whole >= 150);
}

TEST(bad_input_is_a_range_error) {
  const std::vector<std::string> alpha = {"a", "b"};
  BpeWords w = make_words({{{0, 1}, 1}});
  w.symbols[1] = 2;
  CHECK_THROWS(sf::text::bpe_train(w, alpha, 10, 0), ErrorKind::Range);
  BpeWords o = make_words({{{0, 1}, 1}, {{1, 0}, 1}});
  o.offsets[1] = 5;
  CHECK_THROWS(sf::text::bpe_train(o, alpha, 10, 0), ErrorKind::Range);
  BpeWords ew = make_words({{{0, 1}, 1}});
  ew.offsets.pop_back();
  CHECK_THROWS(sf::text::bpe_train(ew, alpha, 10, 0), ErrorKind::Range);
  CHECK_THROWS(sf::text::bpe_train(make_words({{{0, 1}, 1}}), alpha, int64_t{1} << 40, 0), ErrorKind::Range);
}

TEST_MAIN()
