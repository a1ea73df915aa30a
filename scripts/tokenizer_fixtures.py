#!/usr/bin/env python3
"""Writes test/fixtures/tokenizers/: three small tokenizer.json files in the Hugging Face `tokenizers` format, one per
model family (byte-level BPE as GPT-2, WordPiece as BERT, Unigram with Metaspace as ALBERT/SentencePiece), built here
from the format's documentation, and expected.json: what the Python `tokenizers` library (the reference
implementation, Rust) gives for each of them on strings that exercise Unicode, spaces, merges, special and unknown
tokens. Tests read the files; neither they nor CI need Python.

Run: python3 -m venv /tmp/hfv && /tmp/hfv/bin/pip install tokenizers && /tmp/hfv/bin/python scripts/tokenizer_fixtures.py
"""
import json
import os
import subprocess
import tempfile

import tokenizers
from tokenizers import Tokenizer, decoders, pre_tokenizers, trainers
from tokenizers.models import BPE

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'test', 'fixtures', 'tokenizers')


def special(i, content):
    return {'id': i, 'content': content, 'single_word': False, 'lstrip': False, 'rstrip': False, 'normalized': False,
            'special': True}


def bytes_to_unicode():
    """GPT-2's byte -> printable character table (openai/gpt-2 encoder.py)."""
    bs = list(range(ord('!'), ord('~') + 1)) + list(range(ord('¡'), ord('¬') + 1)) + list(range(ord('®'), ord('ÿ') + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def cls_sep_template():
    """BERT's post-processor: [CLS] A [SEP] (and [CLS] A [SEP] B [SEP]), with [CLS] = 2 and [SEP] = 3."""
    cls, sep = {'SpecialToken': {'id': '[CLS]', 'type_id': 0}}, {'SpecialToken': {'id': '[SEP]', 'type_id': 0}}
    return {
        'type': 'TemplateProcessing',
        'single': [cls, {'Sequence': {'id': 'A', 'type_id': 0}}, sep],
        'pair': [cls, {'Sequence': {'id': 'A', 'type_id': 0}}, sep, {'Sequence': {'id': 'B', 'type_id': 1}},
                 {'SpecialToken': {'id': '[SEP]', 'type_id': 1}}],
        'special_tokens': {'[CLS]': {'id': '[CLS]', 'ids': [2], 'tokens': ['[CLS]']},
                           '[SEP]': {'id': '[SEP]', 'ids': [3], 'tokens': ['[SEP]']}},
    }


def byte_bpe():
    table = bytes_to_unicode()
    vocab = {table[b]: b for b in range(256)}  # byte b has id b
    merges = ['h e', 'l l', 'he ll', 'hell o', 'Ġ w', 'o r', 'Ġw or', 'Ġwor l', 'Ġworl d', 'Ã ©', 'Ġ t', 'h e',
              'Ġt he']
    merges = list(dict.fromkeys(merges))  # 'h e' once
    for m in merges:
        vocab.setdefault(m.replace(' ', ''), len(vocab))
    eot = len(vocab)
    vocab['<|endoftext|>'] = eot
    return {
        'version': '1.0', 'truncation': None, 'padding': None,
        'added_tokens': [special(eot, '<|endoftext|>')],
        'normalizer': None,
        'pre_tokenizer': {'type': 'ByteLevel', 'add_prefix_space': False, 'trim_offsets': True, 'use_regex': True},
        'post_processor': {'type': 'ByteLevel', 'add_prefix_space': True, 'trim_offsets': False, 'use_regex': True},
        'decoder': {'type': 'ByteLevel', 'add_prefix_space': True, 'trim_offsets': True, 'use_regex': True},
        'model': {'type': 'BPE', 'dropout': None, 'unk_token': None, 'continuing_subword_prefix': '',
                  'end_of_word_suffix': '', 'fuse_unk': False, 'byte_fallback': False, 'ignore_merges': False,
                  'vocab': vocab, 'merges': merges},
    }


def wordpiece():
    words = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', 'un', '##aff', '##able', 'run', '##ning', '!', 'cafe', '京',
             'the', '##s', 'a', ',', '.', 'e']
    return {
        'version': '1.0', 'truncation': None, 'padding': None,
        'added_tokens': [special(i, w) for i, w in enumerate(words[:5])],
        'normalizer': {'type': 'BertNormalizer', 'clean_text': True, 'handle_chinese_chars': True,
                       'strip_accents': None, 'lowercase': True},
        'pre_tokenizer': {'type': 'BertPreTokenizer'},
        'post_processor': cls_sep_template(),
        'decoder': {'type': 'WordPiece', 'prefix': '##', 'cleanup': True},
        'model': {'type': 'WordPiece', 'unk_token': '[UNK]', 'continuing_subword_prefix': '##',
                  'max_input_chars_per_word': 100, 'vocab': {w: i for i, w in enumerate(words)}},
    }


def unigram():
    pieces = [['<pad>', 0.0], ['<unk>', 0.0], ['[CLS]', 0.0], ['[SEP]', 0.0], ['▁', -2.0], ['▁a', -1.0], ['bc', -1.0],
              ['▁ab', -1.0], ['c', -5.0], ['a', -3.0], ['b', -3.0], ['▁hello', -5.5], ['▁he', -3.0], ['llo', -3.0],
              ['h', -4.0], ['e', -4.0], ['l', -4.0], ['o', -4.0], ['é', -4.0], ['▁the', -2.5], ['!', -3.5]]
    return {
        'version': '1.0', 'truncation': None, 'padding': None,
        'added_tokens': [special(i, p[0]) for i, p in enumerate(pieces[:4])],
        # ALBERT's normalizer, less its precompiled charsmap: `` and '' to ", NFKD, accents stripped, lower case
        'normalizer': {'type': 'Sequence', 'normalizers': [
            {'type': 'Replace', 'pattern': {'String': '``'}, 'content': '"'},
            {'type': 'Replace', 'pattern': {'String': "''"}, 'content': '"'},
            {'type': 'NFKD'}, {'type': 'StripAccents'}, {'type': 'Lowercase'}]},
        'pre_tokenizer': {'type': 'Metaspace', 'replacement': '▁', 'prepend_scheme': 'always', 'split': True},
        'post_processor': cls_sep_template(),
        'decoder': {'type': 'Metaspace', 'replacement': '▁', 'prepend_scheme': 'always', 'split': True},
        'model': {'type': 'Unigram', 'unk_id': 1, 'vocab': pieces, 'byte_fallback': False},
    }


STRINGS = [
    '', 'hello world', 'hello  world!', ' hello', 'hello ', 'the the', 'Unaffable running! Café 東京', 'unx the runs',
    'abc', 'Hello abc', 'xxy abc', 'a  b', 'e\u0301 é', 'é😀', '\t\nhello\r\n', "it's ``quoted''", 'ＡＢＣ',
    'hello<|endoftext|>world', '[CLS] a [SEP]', '1234 5', 'naïve façade — “quotes”', 'a\u0000b\u200bc',
]


# The training fixture: the embedded corpus (lib/data/corpus.ts, generateCorpus(60000, 1)) followed by this text,
# trained by the Python library's BpeTrainer as docs/tokenizers.md describes; test/bpe-train.test.ts trains on the same
# text with trainBpe and compares the vocabulary and the merges.
TRAIN_TAIL = ''.join(
    f'Line {i}: naïve café — 東京 {i * 37} 😀 e\u0301  \t tabs, CRLF\r\n' + ("    indented it's ok\n" if i % 3 == 0 else '\n')
    for i in range(40))
TRAIN_VOCAB = 700


def bpe_training_fixture():
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
    corpus = subprocess.run(
        ['npx', 'tsx', '-e', "import('./lib/data/corpus.ts').then((m) => process.stdout.write(m.generateCorpus(60000, 1)))"],
        cwd=root, check=True, capture_output=True).stdout.decode('utf-8')
    assert len(corpus) == 60000
    with tempfile.NamedTemporaryFile('w', encoding='utf-8', suffix='.txt', delete=False) as f:
        f.write(corpus + TRAIN_TAIL)
        path = f.name
    try:
        tok = Tokenizer(BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=TRAIN_VOCAB, min_frequency=0, special_tokens=['<|endoftext|>'],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        tok.train([path], trainer)
    finally:
        os.unlink(path)
    model = json.loads(tok.to_str())['model']
    merges = [m if isinstance(m, list) else m.split(' ') for m in model['merges']]
    return {'generator': f'tokenizers {tokenizers.__version__} (Python) BpeTrainer', 'corpus': 'generateCorpus(60000, 1)',
            'tail': TRAIN_TAIL, 'vocab_size': TRAIN_VOCAB, 'vocab': model['vocab'], 'merges': merges}


def main():
    os.makedirs(OUT, exist_ok=True)
    expected = {'generator': f'tokenizers {tokenizers.__version__} (Python)', 'cases': {}}
    for name, spec in (('byte-bpe', byte_bpe()), ('wordpiece', wordpiece()), ('unigram', unigram())):
        text = json.dumps(spec, ensure_ascii=False, indent=1)
        with open(os.path.join(OUT, f'{name}.json'), 'w', encoding='utf-8') as f:
            f.write(text + '\n')
        tok = Tokenizer.from_str(text)
        rows = []
        for s in STRINGS:
            plain = tok.encode(s, add_special_tokens=False)
            full = tok.encode(s, add_special_tokens=True)
            rows.append({
                'text': s, 'ids': plain.ids, 'tokens': plain.tokens, 'ids_special': full.ids,
                'decode': tok.decode(full.ids, skip_special_tokens=False),
                'decode_skip': tok.decode(full.ids, skip_special_tokens=True),
            })
        expected['cases'][name] = {'vocab_size': tok.get_vocab_size(with_added_tokens=True), 'rows': rows}
    with open(os.path.join(OUT, 'expected.json'), 'w', encoding='utf-8') as f:
        json.dump(expected, f, ensure_ascii=False, indent=1)
        f.write('\n')
    with open(os.path.join(OUT, 'bpe-train.json'), 'w', encoding='utf-8') as f:
        json.dump(bpe_training_fixture(), f, ensure_ascii=False)
        f.write('\n')


if __name__ == '__main__':
    main()
