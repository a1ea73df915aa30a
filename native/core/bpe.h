// bpe.h — training a BPE tokenizer's merges (the algorithm of the Hugging Face `tokenizers` library's BpeTrainer),
// host code with no device and no Node: the addon's bpeTrain (native/addon/ops_text.cpp) and test/native/bpe_test.cpp
// call it.
//
// Input: the distinct pre-tokenized words of a corpus as sequences of initial symbol ids (for byte-level BPE: each
// byte's id in the sorted alphabet), each with its count; the initial tokens' strings (special tokens and alphabet,
// ids 0 .. n_initial - 1), which identify tokens: a merge whose concatenated string is already a token reuses its id,
// as the reference does.
// Output: the merges in the order made, each (left id, right id, new id), until the vocabulary has vocab_size tokens
// or no pair occurs at least max(1, min_frequency) times.
//
// The loop is the reference's, step for step (docs/tokenizers.md): pair counts kept up to date by the changes each
// merge makes, a max-heap of (count, pair) with lazily refreshed counts, ties to the smaller (left, right) pair, each
// heap entry carrying the words where its pair was counted or formed, a merged pair's own count left as it was. Where
// no token string is formed twice, that is exactly: merge the most frequent adjacent pair (ties: the smaller ids)
// everywhere, left to right, and count again — the naive reference of the native test.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace sf::text {

struct BpeMerge {
  int32_t left, right, id;
};

struct BpeWords {
  std::vector<int32_t> symbols;  // every word's symbols, one word after the other
  std::vector<int64_t> offsets;  // word w is symbols[offsets[w], offsets[w + 1]); offsets.size() = words + 1
  std::vector<uint64_t> counts;  // occurrences of word w in the corpus
};

// Throws sf::Error (kind Range) for inconsistent input: offsets not increasing from 0 to symbols.size(), a symbol
// outside [0, token_strings.size()), vocab_size over 2^31 - 1.
std::vector<BpeMerge> bpe_train(const BpeWords& words, const std::vector<std::string>& token_strings, int64_t vocab_size,
                                uint64_t min_frequency);

}  // namespace sf::text
