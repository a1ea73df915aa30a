// corpus.ts — the embedded default corpus: short English-like stories from a small probabilistic grammar, generated
// on demand by code (no text is shipped or downloaded, so it can be redistributed with the package freely).
//
// The grammar has structure a character model can learn in a minute of CPU training — spelling of a few hundred words,
// subject-verb agreement ("the fisherman carries" / "the fishermen carry"), number agreement ("a red box", "an old
// box", "three red boxes", irregular plurals: wolves, geese, children), was/were, capitalised sentence starts,
// a story's protagonist reused by name and by the right pronoun (he/she, his/her), dialogue in quotes with "asked"
// after a question and "said" after a statement, titles, and blank lines between stories — while every choice is
// random enough that the text does not repeat: about 560 distinct words. Its unigram entropy is about 4.4 bits per
// character (English: about 4.1); the entropy of the generator itself (the sum of -log2 p over the choices it made,
// divided by the characters it wrote; an upper bound on the text's entropy rate) is about 0.5 bits per character, the
// floor a model can approach. A 6-layer model of width 64 gets from 5.8 bits (uniform) to under 3 bits per character
// in half a minute on two CPU cores, and keeps improving for many minutes.
//
// Deterministic: generateCorpus(chars, seed) is a pure function of its arguments, on every platform (a 32-bit
// integer PRNG; no floating-point arithmetic decides a choice).

/** [singular, plural] */
type Noun = readonly [string, string];
/** [base, third person singular, past] */
type Verb = readonly [string, string, string];
type Gender = 'he' | 'she';

// People and animals that can act. The gendered ones say which pronoun they take; the others take either.
const AGENTS: readonly (readonly [string, string, Gender | null])[] = [
  ['fisherman', 'fishermen', 'he'], ['fisherwoman', 'fisherwomen', 'she'], ['baker', 'bakers', null],
  ['farmer', 'farmers', null], ['sailor', 'sailors', null], ['woman', 'women', 'she'], ['man', 'men', 'he'],
  ['child', 'children', null], ['shepherd', 'shepherds', null], ['miller', 'millers', null], ['weaver', 'weavers', null],
  ['hunter', 'hunters', null], ['merchant', 'merchants', null], ['soldier', 'soldiers', null], ['teacher', 'teachers', null],
  ['king', 'kings', 'he'], ['queen', 'queens', 'she'], ['girl', 'girls', 'she'], ['boy', 'boys', 'he'],
  ['princess', 'princesses', 'she'], ['prince', 'princes', 'he'], ['witch', 'witches', 'she'], ['thief', 'thieves', null],
  ['smith', 'smiths', null], ['cook', 'cooks', null], ['traveller', 'travellers', null], ['stranger', 'strangers', null],
  ['neighbour', 'neighbours', null], ['doctor', 'doctors', null], ['gardener', 'gardeners', null], ['widow', 'widows', 'she'],
  ['wolf', 'wolves', null], ['fox', 'foxes', null], ['goose', 'geese', null], ['mouse', 'mice', null], ['horse', 'horses', null],
  ['dog', 'dogs', null], ['cat', 'cats', null], ['owl', 'owls', null], ['crow', 'crows', null], ['bear', 'bears', null],
  ['goat', 'goats', null], ['sheep', 'sheep', null], ['rabbit', 'rabbits', null], ['donkey', 'donkeys', null],
];

const OBJECTS: readonly Noun[] = [
  ['box', 'boxes'], ['basket', 'baskets'], ['stone', 'stones'], ['apple', 'apples'], ['loaf', 'loaves'], ['fish', 'fish'],
  ['knife', 'knives'], ['coin', 'coins'], ['letter', 'letters'], ['candle', 'candles'], ['lamp', 'lamps'], ['key', 'keys'],
  ['rope', 'ropes'], ['net', 'nets'], ['bottle', 'bottles'], ['cup', 'cups'], ['shoe', 'shoes'], ['hat', 'hats'],
  ['bell', 'bells'], ['book', 'books'], ['map', 'maps'], ['ring', 'rings'], ['egg', 'eggs'], ['feather', 'feathers'],
  ['shell', 'shells'], ['blanket', 'blankets'], ['jar', 'jars'], ['bucket', 'buckets'], ['leaf', 'leaves'],
  ['potato', 'potatoes'], ['flower', 'flowers'], ['spoon', 'spoons'], ['lantern', 'lanterns'], ['sack', 'sacks'],
  ['pear', 'pears'], ['cake', 'cakes'], ['brush', 'brushes'], ['dish', 'dishes'], ['glass', 'glasses'], ['watch', 'watches'],
  ['wheel', 'wheels'], ['bag', 'bags'], ['boot', 'boots'], ['scarf', 'scarves'], ['sword', 'swords'], ['pie', 'pies'],
  ['cherry', 'cherries'], ['berry', 'berries'], ['umbrella', 'umbrellas'], ['onion', 'onions'], ['orange', 'oranges'],
  ['envelope', 'envelopes'], ['anchor', 'anchors'], ['oar', 'oars'], ['acorn', 'acorns'], ['kettle', 'kettles'],
];

const PLACES: readonly string[] = [
  'harbour', 'market', 'forest', 'river', 'village', 'mountain', 'garden', 'kitchen', 'tower', 'bridge', 'mill', 'chapel',
  'school', 'castle', 'field', 'cave', 'well', 'inn', 'road', 'shore', 'lake', 'meadow', 'valley', 'island', 'bakery',
  'barn', 'library', 'station', 'square', 'hill', 'orchard', 'lighthouse', 'farm', 'cottage',
];

const TRAITS: readonly string[] = [
  'old', 'young', 'tall', 'small', 'quiet', 'brave', 'tired', 'happy', 'clever', 'kind', 'proud', 'shy', 'hungry', 'lonely',
  'cheerful', 'careful', 'lazy', 'honest', 'wise', 'poor', 'rich', 'angry', 'gentle', 'curious', 'grumpy', 'strong', 'sleepy',
  'humble', 'foolish', 'patient',
];

const QUALITIES: readonly string[] = [
  'red', 'blue', 'green', 'yellow', 'white', 'black', 'brown', 'grey', 'golden', 'silver', 'heavy', 'empty', 'broken',
  'wooden', 'little', 'big', 'round', 'shiny', 'strange', 'old', 'new', 'warm', 'wet', 'orange', 'iron', 'ugly', 'ancient',
];

const NUMBERS: readonly string[] = ['two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine', 'ten', 'eleven', 'twelve', 'many', 'some', 'a few'];

const NAMES: readonly (readonly [string, Gender])[] = [
  ['Mara', 'she'], ['Tom', 'he'], ['Elin', 'she'], ['Jonas', 'he'], ['Ada', 'she'], ['Piet', 'he'], ['Lena', 'she'],
  ['Oskar', 'he'], ['Nina', 'she'], ['Hugo', 'he'], ['Greta', 'she'], ['Felix', 'he'], ['Ida', 'she'], ['Bram', 'he'],
  ['Rosa', 'she'], ['Arne', 'he'], ['Vera', 'she'], ['Emil', 'he'], ['Tilda', 'she'], ['Anton', 'he'],
];

const CARRY: readonly Verb[] = [
  ['carry', 'carries', 'carried'], ['bring', 'brings', 'brought'], ['take', 'takes', 'took'], ['pull', 'pulls', 'pulled'],
  ['push', 'pushes', 'pushed'], ['send', 'sends', 'sent'], ['drag', 'drags', 'dragged'],
];
const HANDLE: readonly Verb[] = [
  ['find', 'finds', 'found'], ['see', 'sees', 'saw'], ['buy', 'buys', 'bought'], ['sell', 'sells', 'sold'],
  ['hide', 'hides', 'hid'], ['lose', 'loses', 'lost'], ['drop', 'drops', 'dropped'], ['wash', 'washes', 'washed'],
  ['paint', 'paints', 'painted'], ['mend', 'mends', 'mended'], ['catch', 'catches', 'caught'], ['count', 'counts', 'counted'],
  ['keep', 'keeps', 'kept'], ['open', 'opens', 'opened'], ['fill', 'fills', 'filled'], ['need', 'needs', 'needed'],
  ['want', 'wants', 'wanted'], ['make', 'makes', 'made'], ['steal', 'steals', 'stole'], ['throw', 'throws', 'threw'],
  ['fetch', 'fetches', 'fetched'], ['clean', 'cleans', 'cleaned'], ['hold', 'holds', 'held'], ['watch', 'watches', 'watched'],
  ['polish', 'polishes', 'polished'], ['borrow', 'borrows', 'borrowed'], ['forget', 'forgets', 'forgot'],
];
const MOVE: readonly Verb[] = [
  ['walk', 'walks', 'walked'], ['run', 'runs', 'ran'], ['go', 'goes', 'went'], ['ride', 'rides', 'rode'],
  ['sail', 'sails', 'sailed'], ['hurry', 'hurries', 'hurried'], ['climb', 'climbs', 'climbed'], ['wander', 'wanders', 'wandered'],
  ['march', 'marches', 'marched'], ['fly', 'flies', 'flew'], ['swim', 'swims', 'swam'], ['return', 'returns', 'returned'],
];
const REST: readonly Verb[] = [
  ['sleep', 'sleeps', 'slept'], ['laugh', 'laughs', 'laughed'], ['sing', 'sings', 'sang'], ['wait', 'waits', 'waited'],
  ['cry', 'cries', 'cried'], ['smile', 'smiles', 'smiled'], ['dance', 'dances', 'danced'], ['shout', 'shouts', 'shouted'],
  ['whisper', 'whispers', 'whispered'], ['sigh', 'sighs', 'sighed'], ['listen', 'listens', 'listened'], ['rest', 'rests', 'rested'],
  ['work', 'works', 'worked'], ['eat', 'eats', 'ate'], ['read', 'reads', 'read'], ['think', 'thinks', 'thought'],
];
const FEEL: readonly string[] = ['happy', 'sad', 'tired', 'afraid', 'proud', 'hungry', 'cold', 'surprised', 'glad', 'worried', 'calm', 'lost'];
const ADVERBS: readonly string[] = ['slowly', 'quickly', 'carefully', 'quietly', 'happily', 'at once', 'again', 'alone', 'together', 'sadly', 'bravely', 'in secret'];
const CONTAINERS: readonly string[] = ['bag', 'pocket', 'basket', 'coat', 'boat', 'cart', 'box', 'hat'];
const UNTIL: readonly string[] = ['night', 'morning', 'dark', 'noon', 'spring', 'supper', 'the rain stopped', 'the bells rang'];
const MOTION_PREP: readonly string[] = ['to', 'across', 'into', 'through', 'past', 'towards', 'around'];
const REST_PREP: readonly string[] = ['in', 'by', 'near', 'behind', 'at', 'beside'];
const WHEN_PAST: readonly string[] = [
  'In the morning', 'At dawn', 'One cold night', 'After the rain', 'Later that day', 'The next day', 'At noon',
  'In the evening', 'Before long', 'Suddenly', 'Soon', 'Then', 'That winter', 'After supper', 'At last',
];
const WHEN_HABIT: readonly string[] = ['Every morning', 'Every evening', 'Each winter', 'On Sundays', 'Every day', 'In spring', 'Most nights'];
const OPENINGS: readonly string[] = ['Once upon a time', 'Long ago', 'Many years ago', 'Not so long ago'];
const ENDINGS: readonly string[] = ['The end.', 'And that was that.', 'Nobody ever forgot it.', 'It was a good day.'];

/** sfc32: a small, fast 32-bit PRNG with a 128-bit state; integer arithmetic only, so identical everywhere. */
class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;
  /** Entropy of the choices made so far, in bits (sum of -log2 p). */
  bits = 0;
  constructor(seed: number) {
    this.a = 0x9e3779b9;
    this.b = 0x243f6a88;
    this.c = 0xb7e15162;
    this.d = seed >>> 0;
    for (let i = 0; i < 16; i++) this.next();
  }
  next(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }
  /** A uniform integer in [0, n). */
  int(n: number): number {
    this.bits += Math.log2(n);
    return this.next() % n;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)];
  }
  /** True with probability num / den. */
  chance(num: number, den: number): boolean {
    const yes = this.next() % den < num;
    this.bits -= Math.log2((yes ? num : den - num) / den);
    return yes;
  }
}

const cap = (s: string): string => s[0].toUpperCase() + s.slice(1);
const article = (word: string): string => (/^([aeiou]|hon)/.test(word) ? 'an' : 'a');
const possessive = (g: Gender): string => (g === 'he' ? 'his' : 'her');

/** Who a story is about: referred to by name, by description, or by pronoun. */
interface Hero {
  name: string;
  gender: Gender;
  noun: string;
  trait: string;
  home: string;
  thing: Noun;
  thingQuality: string;
}

class Grammar {
  constructor(private readonly r: Rng) {}

  /** A noun phrase for objects, singular or plural: "a red box", "an old box", "three red boxes", "the key". */
  objects(allowPlural = true): { text: string; plural: boolean } {
    const r = this.r;
    const [sg, pl] = r.pick(OBJECTS);
    const adj = r.chance(2, 3) ? `${r.pick(QUALITIES)} ` : '';
    if (allowPlural && r.chance(2, 5)) return { text: `${r.pick(NUMBERS)} ${adj}${pl}`, plural: true };
    if (r.chance(1, 3)) return { text: `the ${adj}${sg}`, plural: false };
    const head = adj || sg;
    return { text: `${article(head)} ${adj}${sg}`, plural: false };
  }

  /** A noun phrase for people or animals, "the old fisherman" / "the fishermen", with its number. */
  agents(): { text: string; plural: boolean; gender: Gender | null } {
    const r = this.r;
    const [sg, pl, g] = r.pick(AGENTS);
    const adj = r.chance(1, 2) ? `${r.pick(TRAITS)} ` : '';
    if (r.chance(1, 3)) return { text: `the ${adj}${pl}`, plural: true, gender: null };
    return { text: `the ${adj}${sg}`, plural: false, gender: g };
  }

  place(): string {
    return `the ${this.r.pick(PLACES)}`;
  }

  /** How the hero is mentioned: by name, by description, or by pronoun once introduced. */
  ref(h: Hero, start: boolean): string {
    const r = this.r;
    const k = r.int(4);
    const s = k < 2 ? h.name : k === 2 ? `the ${h.trait} ${h.noun}` : h.gender;
    return start ? cap(s) : s;
  }

  /** A past-tense verb phrase with the hero as its subject: "carried three red boxes to the harbour". */
  pastVP(h: Hero): string {
    const r = this.r;
    const his = possessive(h.gender);
    const thing = `the ${h.thingQuality} ${h.thing[0]}`;
    const how = () => (r.chance(1, 4) ? ` ${r.pick(ADVERBS)}` : '');
    switch (r.int(8)) {
      case 0:
      case 1:
        return `${r.pick(CARRY)[2]} ${this.objects().text}${how()} ${r.pick(MOTION_PREP)} ${this.place()}`;
      case 2:
      case 3: {
        const o = r.chance(1, 3) ? thing : this.objects().text;
        return `${r.pick(HANDLE)[2]} ${o}${r.chance(1, 2) ? ` ${r.pick(REST_PREP)} ${this.place()}` : how()}`;
      }
      case 4:
        return `${r.pick(MOVE)[2]}${how()} ${r.pick(MOTION_PREP)} ${this.place()}`;
      case 5:
        return `put ${this.objects(false).text} in ${his} ${r.pick(CONTAINERS)}`;
      case 6:
        return `met ${this.agents().text} ${r.pick(REST_PREP)} ${this.place()}`;
      default:
        return `${r.pick(REST)[2]}${how()} ${r.pick(REST_PREP)} ${this.place()}${r.chance(1, 2) ? ` until ${r.pick(UNTIL)}` : ''}`;
    }
  }

  /** One past-tense sentence about the hero (or, sometimes, about others). */
  storySentence(h: Hero): string {
    const r = this.r;
    const when = r.chance(1, 3) ? `${r.pick(WHEN_PAST)}, ` : '';
    const start = (s: string) => (when ? s : cap(s));
    let s: string;
    switch (r.int(10)) {
      case 7: {
        const o = this.objects();
        s = start(`there ${o.plural ? 'were' : 'was'} ${o.text} ${r.pick(REST_PREP)} ${this.place()}`);
        break;
      }
      case 8: {
        const a = this.agents();
        s = `${start(a.text)} ${r.pick(HANDLE)[2]} ${possessive(h.gender)} ${h.thingQuality} ${h.thing[0]}`;
        break;
      }
      case 9:
        s = `${this.ref(h, !when)} was ${r.pick(FEEL)}, because ${h.gender} ${r.pick(HANDLE)[2]} the ${h.thingQuality} ${h.thing[0]}`;
        break;
      default: {
        s = `${this.ref(h, !when)} ${this.pastVP(h)}`;
        const k = r.int(6);
        if (k === 0) s += `, and then ${h.gender} ${this.pastVP(h)}`;
        else if (k === 1) s += ` and ${this.pastVP(h)}`;
        else if (k === 2) s += `, but ${this.agents().text} ${r.pick(REST)[2]}`;
      }
    }
    return `${when}${s}.`;
  }

  /** A line of dialogue: a question with "asked", or a statement with "said", and who said it. */
  speech(h: Hero): string {
    const r = this.r;
    const who = r.chance(1, 2) ? h.name : r.chance(1, 2) ? h.gender : `the ${h.trait} ${h.noun}`;
    const thing = `the ${h.thingQuality} ${h.thing[0]}`;
    let line: string;
    let question = false;
    switch (r.int(6)) {
      case 0:
        line = `Where is ${thing}?`;
        question = true;
        break;
      case 1: {
        const o = this.objects();
        line = `${o.plural ? 'Are' : 'Is'} ${o.text} ${r.pick(REST_PREP)} ${this.place()}?`;
        question = true;
        break;
      }
      case 2:
        line = `Who ${r.pick(HANDLE)[2]} ${thing}?`;
        question = true;
        break;
      case 3:
        line = `We must go to ${this.place()}.`;
        break;
      case 4: {
        const o = this.objects();
        line = `I can see ${o.text}.`;
        break;
      }
      default:
        line = `I am ${r.pick(FEEL)}.`;
    }
    // A statement's final period turns into a comma inside the quotes: "We must go," said Tom.
    const quoted = question ? line : `${line.slice(0, -1)},`;
    if (r.chance(1, 2)) return `"${cap(quoted)}" ${question ? 'asked' : 'said'} ${who}.`;
    return `${cap(who)} ${question ? 'asked' : 'said'}, "${cap(line)}"`;
  }

  /** A present-tense habit, where the verb agrees with its subject: "Every day the bakers sell bread." */
  habit(): string {
    const r = this.r;
    const a = this.agents();
    const when = r.chance(1, 2) ? `${r.pick(WHEN_HABIT)} ` : '';
    const subj = when ? a.text : cap(a.text);
    const form = (v: Verb) => (a.plural ? v[0] : v[1]);
    let s: string;
    switch (r.int(3)) {
      case 0:
        s = `${subj} ${form(r.pick(CARRY))} ${this.objects().text} ${r.pick(MOTION_PREP)} ${this.place()}`;
        break;
      case 1:
        s = `${subj} ${form(r.pick(MOVE))} ${r.pick(MOTION_PREP)} ${this.place()}`;
        break;
      default:
        s = `${subj} ${form(r.pick(REST))} ${r.pick(REST_PREP)} ${this.place()}`;
    }
    return `${when}${s}.`;
  }

  story(): string {
    const r = this.r;
    const [name, g0] = r.pick(NAMES);
    const gendered = AGENTS.filter(([, , g]) => g === null || g === g0);
    const [noun] = r.pick(gendered);
    const h: Hero = { name, gender: g0, noun, trait: r.pick(TRAITS), home: r.pick(PLACES), thing: r.pick(OBJECTS), thingQuality: r.pick(QUALITIES) };
    const title = `${name} the ${cap(noun)} and the ${cap(h.thingQuality)} ${cap(h.thing[0])}`;
    const intro = r.chance(1, 2)
      ? `${r.pick(OPENINGS)} there was ${article(h.trait)} ${h.trait} ${noun} called ${name}, who lived ${r.pick(REST_PREP)} the ${h.home}.`
      : `${r.pick(OPENINGS)}, ${article(h.trait)} ${h.trait} ${noun} called ${name} lived ${r.pick(REST_PREP)} the ${h.home}.`;
    const own = `${cap(h.gender)} had ${article(h.thingQuality)} ${h.thingQuality} ${h.thing[0]}.`;
    const lines = [intro, own];
    const n = 3 + r.int(6);
    for (let i = 0; i < n; i++) {
      const k = r.int(10);
      lines.push(k < 6 ? this.storySentence(h) : k < 8 ? this.speech(h) : this.habit());
    }
    lines.push(r.chance(1, 2) ? r.pick(ENDINGS) : `After that, ${name} never lost ${possessive(g0)} ${h.thingQuality} ${h.thing[0]} again.`);
    // Two or three sentences per line, as in a printed story.
    const out: string[] = [];
    for (let i = 0; i < lines.length; ) {
      const k = 2 + r.int(2);
      out.push(lines.slice(i, i + k).join(' '));
      i += k;
    }
    return `${title}\n\n${out.join('\n')}\n\n\n`;
  }
}

/** What describeCorpus() reports about a generated corpus. */
export interface CorpusInfo {
  /** The text, exactly `chars` characters long. */
  text: string;
  /** Stories begun (the last one is usually cut off). */
  stories: number;
  /** Distinct characters. */
  alphabet: number;
  /** Entropy of the character frequencies, bits per character. */
  unigramBitsPerChar: number;
  /** Entropy of the generator's choices per character written: an upper bound on the entropy rate of the text. */
  sourceBitsPerChar: number;
}

function check(chars: unknown, seed: unknown, who: string): void {
  if (typeof chars !== 'number' || !Number.isSafeInteger(chars) || chars < 1)
    throw new RangeError(`${who}: chars must be a positive integer, got ${String(chars)}`);
  // A JavaScript string holds at most 2^29 - 24 UTF-16 units: more is an error here, not an out-of-memory abort.
  if (chars > 2 ** 28) throw new RangeError(`${who}: chars must be at most 2^28 (${2 ** 28}), got ${chars}`);
  if (typeof seed !== 'number' || !Number.isInteger(seed) || seed < 0 || seed > 0xffffffff)
    throw new RangeError(`${who}: seed must be an integer in [0, 2^32), got ${String(seed)}`);
}

/** The default corpus and what is known about it: its unigram entropy and the generator's entropy rate. */
export function describeCorpus(chars = 400_000, seed = 1): CorpusInfo {
  check(chars, seed, 'describeCorpus');
  const r = new Rng(seed);
  const g = new Grammar(r);
  const parts: string[] = [];
  let n = 0;
  let stories = 0;
  while (n < chars) {
    const s = g.story();
    parts.push(s);
    n += s.length;
    stories++;
  }
  const full = parts.join('');
  const text = full.slice(0, chars);
  const counts = new Map<string, number>();
  for (const c of text) counts.set(c, (counts.get(c) ?? 0) + 1);
  let unigram = 0;
  for (const k of counts.values()) unigram -= (k / text.length) * Math.log2(k / text.length);
  return { text, stories, alphabet: counts.size, unigramBitsPerChar: unigram, sourceBitsPerChar: r.bits / full.length };
}

/**
 * `chars` characters of English-like stories from a small probabilistic grammar (see the top of this file), the same
 * for the same (chars, seed) everywhere. The default, 400,000 characters, takes a few tens of milliseconds.
 */
export function generateCorpus(chars = 400_000, seed = 1): string {
  check(chars, seed, 'generateCorpus');
  return describeCorpus(chars, seed).text;
}
