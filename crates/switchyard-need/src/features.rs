//! The need model's features (`swneed-1`): the task segment of a prompt (few-shot
//! examples stripped), its kind (open or multiple choice), hashed word and byte
//! n-grams and thirty dense structural features. Everything works on the bytes
//! of the UTF-8 text, exactly as `docs/need-model.md` specifies, so a port in any
//! language gives the same indices and values.

/// Hash buckets per kind.
pub const BUCKETS: usize = 1 << 18;
/// Kinds: 0 open-ended, 1 multiple choice.
pub const KINDS: usize = 2;
/// Dense features per kind, the last being the kind's intercept.
pub const DENSE: usize = 31;
/// Length of the weight vector: hashed weights of both kinds, then both dense blocks.
pub const DIM: usize = KINDS * BUCKETS + KINDS * DENSE;
/// n-grams are taken from the first this many bytes of the normalised task text.
const MAX_NGRAM_BYTES: usize = 16_384;

/// Names of the dense features, in weight order.
pub const DENSE_NAMES: [&str; DENSE] = [
    "len_bytes",
    "len_words",
    "lines",
    "digit_ratio",
    "upper_ratio",
    "nonascii_ratio",
    "symbol_ratio",
    "fence",
    "code_line_ratio",
    "math_syms",
    "latex",
    "qmarks",
    "list_lines",
    "numbers",
    "fewshot",
    "words_per_sent",
    "avg_word_len",
    "max_line",
    "constraints",
    "url",
    "braces",
    "ends_q",
    "pct_frac",
    "max_para",
    "n_options",
    "opt_len",
    "stem_len",
    "neg_words",
    "statements",
    "quantities",
    "bias",
];

const CONSTRAINT_PHRASES: &[&[u8]] = &[
    b"must",
    b"should",
    b"exactly",
    b"at least",
    b"at most",
    b"no more than",
    b"without",
    b"only",
    b"ensure",
    b"include",
    b"each",
    b"every",
    b"don't",
    b"do not",
    b"never",
    b"always",
    b"require",
    b"constraint",
];
const NEG_PHRASES: &[&[u8]] = &[b"not", b"except", b"least", b"false", b"incorrect"];
const NUMBER_WORDS: &[&[u8]] = &[
    b"one",
    b"two",
    b"three",
    b"four",
    b"five",
    b"six",
    b"seven",
    b"eight",
    b"nine",
    b"ten",
    b"eleven",
    b"twelve",
    b"twenty",
    b"hundred",
    b"thousand",
    b"million",
    b"twice",
    b"half",
    b"double",
    b"triple",
    b"third",
    b"quarter",
    b"dozen",
    b"once",
];
/// The non-ASCII math characters (the ASCII ones, `= + * / ^ < >`, are counted bytewise).
const MATH_CHARS: &[char] = &['√', '∑', '∫', 'π', '≤', '≥', '≠', '∞', '±', '×', '÷'];

use std::sync::LazyLock;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a 64 of `data`, continuing from `h`.
pub const fn fnv1a_from(mut h: u64, data: &[u8]) -> u64 {
    let mut i = 0;
    while i < data.len() {
        h ^= data[i] as u64;
        h = h.wrapping_mul(FNV_PRIME);
        i += 1;
    }
    h
}

/// FNV-1a 64 of `data` from the standard offset basis.
pub const fn fnv1a(data: &[u8]) -> u64 {
    fnv1a_from(FNV_OFFSET, data)
}

/// The three n-gram families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Word unigrams.
    W1,
    /// Word bigrams.
    W2,
    /// Byte 4-grams of the padded normalised text.
    C4,
}

impl Family {
    const ALL: [Family; 3] = [Family::W1, Family::W2, Family::C4];

    fn seed(self) -> u64 {
        match self {
            Family::W1 => SEED_W1,
            Family::W2 => SEED_W2,
            Family::C4 => SEED_C4,
        }
    }

    /// Short name used in explanations.
    pub fn name(self) -> &'static str {
        match self {
            Family::W1 => "w1",
            Family::W2 => "w2",
            Family::C4 => "c4",
        }
    }
}

const SEED_W1: u64 = fnv1a(b"w1\0");
const SEED_W2: u64 = fnv1a(b"w2\0");
const SEED_C4: u64 = fnv1a(b"c4\0");

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn trim_ws(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| !is_ws(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|&b| !is_ws(b)).map_or(start, |e| e + 1);
    &s[start..end]
}

fn trim_end_ws(s: &[u8]) -> &[u8] {
    let end = s.iter().rposition(|&b| !is_ws(b)).map_or(0, |e| e + 1);
    &s[..end]
}

fn trim_start_sp_tab(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(s.len());
    &s[start..]
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|&b| is_ws(b))
}

/// `answer: x` or `a: x` (ASCII case-insensitive), with 1..=40 bytes of answer.
fn short_answer_line(line: &[u8]) -> bool {
    let s = trim_ws(line);
    for key in [&b"answer"[..], &b"a"[..]] {
        if s.len() >= key.len() && s[..key.len()].eq_ignore_ascii_case(key) {
            let rest = trim_start_sp_tab(&s[key.len()..]);
            if let Some(after) = rest.strip_prefix(b":") {
                let answer = trim_ws(after);
                return (1..=40).contains(&answer.len());
            }
        }
    }
    false
}

/// The part of `text` a job is scored on, and the number of few-shot answers
/// before it. The segment is a suffix of `text`, so no copy is made.
pub fn task_segment(text: &str) -> (&str, u32) {
    let raw = text.as_bytes();
    // Byte offset where each line starts; the last non-blank line's index.
    let mut last_nonblank = None;
    let mut answers: Vec<(usize, usize)> = Vec::new(); // (line index, end offset incl. '\n')
    let mut start = 0;
    for (i, line) in raw.split(|&b| b == b'\n').enumerate() {
        let end = start + line.len();
        if !is_blank(line) {
            last_nonblank = Some(i);
        }
        if short_answer_line(line) {
            answers.push((i, end + 1));
        }
        start = end + 1;
    }
    let Some(last_nonblank) = last_nonblank else {
        return (text, 0);
    };
    let mut cut = None;
    let mut shots = 0u32;
    for (n, &(i, after)) in answers.iter().enumerate() {
        if i < last_nonblank {
            cut = Some(after);
            shots = u32::try_from(n + 1).unwrap_or(u32::MAX);
        }
    }
    let Some(mut from) = cut else {
        return (text, 0);
    };
    // Drop leading blank lines.
    loop {
        let rest = &raw[from..];
        let line_end = rest.iter().position(|&b| b == b'\n');
        match line_end {
            Some(e) if is_blank(&rest[..e]) => from += e + 1,
            _ => break,
        }
    }
    // `from` is just after a '\n', so it is a char boundary.
    (text.get(from..).unwrap_or(""), shots)
}

/// Multiple-choice options found in a task segment: per letter A..E, the
/// length of its option (first occurrence), and where the first option line starts.
#[derive(Debug, Default, Clone, Copy)]
struct Options {
    len: [Option<usize>; 5],
    first: Option<usize>,
}

impl Options {
    fn scan(t: &[u8]) -> Self {
        let mut o = Options::default();
        let mut pos = 0;
        for line in t.split(|&b| b == b'\n') {
            let s = trim_start_sp_tab(line);
            let indent = line.len() - s.len();
            let marker = if s.len() >= 3
                && s[0] == b'('
                && s[2] == b')'
                && (matches!(s[1], b'A'..=b'E') || matches!(s[1], b'a'..=b'e'))
            {
                Some((s[1] & 0xDF, 3))
            } else if s.len() >= 2
                && matches!(s[0], b'A'..=b'E')
                && matches!(s[1], b'.' | b')' | b':')
            {
                Some((s[0], 2))
            } else if s.len() >= 2 && matches!(s[0], b'a'..=b'e') && s[1] == b')' {
                Some((s[0] & 0xDF, 2))
            } else {
                None
            };
            if let Some((letter, mlen)) = marker {
                let after = &s[mlen..];
                let body = trim_start_sp_tab(after);
                if after.len() > body.len() && body.first().is_some_and(|&b| !is_ws(b)) {
                    let slot = &mut o.len[usize::from(letter - b'A')];
                    if slot.is_none() {
                        *slot = Some(s.len());
                    }
                    if o.first.is_none() {
                        o.first = Some(pos + indent);
                    }
                }
            }
            pos += line.len() + 1;
        }
        // Inline "(A) " options.
        for i in 0..t.len().saturating_sub(3) {
            if t[i] == b'('
                && t[i + 2] == b')'
                && (matches!(t[i + 1], b'A'..=b'E') || matches!(t[i + 1], b'a'..=b'e'))
                && matches!(t[i + 3], b' ' | b'\t')
                && (i == 0 || matches!(t[i - 1], b' ' | b'\t' | b'\n'))
            {
                let slot = &mut o.len[usize::from((t[i + 1] & 0xDF) - b'A')];
                if slot.is_none() {
                    *slot = Some(20);
                }
            }
        }
        o
    }

    fn letters(&self) -> usize {
        self.len.iter().filter(|l| l.is_some()).count()
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(hay, needle).is_some()
}

/// Whether a task segment is multiple choice (kind 1) or open (kind 0).
fn kind_of(opts: &Options, low: &[u8]) -> usize {
    let abcd = opts.len[..4].iter().filter(|l| l.is_some()).count();
    usize::from(abcd >= 3 || (contains(low, b"option 1") && contains(low, b"option 2")))
}

/// Occurrences of the phrases in ASCII-lowered `low`, each neither preceded
/// nor followed by a letter a..z. Every phrase starts with a letter, so only
/// word starts can begin one: one pass over them, trying only the phrases that
/// start with the word's letter.
fn count_phrases(low: &[u8], phrases: &PhraseIndex) -> usize {
    let mut n = 0;
    let mut prev_letter = false;
    for (i, &b) in low.iter().enumerate() {
        let letter = b.is_ascii_lowercase();
        if letter && !prev_letter {
            let rest = &low[i..];
            for p in &phrases[usize::from(b - b'a')] {
                if rest.starts_with(p) && !rest.get(p.len()).is_some_and(u8::is_ascii_lowercase) {
                    n += 1;
                }
            }
        }
        prev_letter = letter;
    }
    n
}

/// Phrases by their first letter.
type PhraseIndex = [Vec<&'static [u8]>; 26];

fn index(phrases: &[&'static [u8]]) -> PhraseIndex {
    let mut out: PhraseIndex = Default::default();
    for p in phrases {
        if let Some(slot) = p
            .first()
            .and_then(|b| out.get_mut(usize::from(b.wrapping_sub(b'a'))))
        {
            slot.push(p);
        }
    }
    out
}

static CONSTRAINTS: LazyLock<PhraseIndex> = LazyLock::new(|| index(CONSTRAINT_PHRASES));
static NEGATIONS: LazyLock<PhraseIndex> = LazyLock::new(|| index(NEG_PHRASES));
static QUANTITIES: LazyLock<PhraseIndex> = LazyLock::new(|| index(NUMBER_WORDS));

/// Maximal matches of `[0-9]+([.,][0-9]+)*`.
fn count_numbers(t: &[u8]) -> usize {
    let (mut n, mut i) = (0, 0);
    while i < t.len() {
        if t[i].is_ascii_digit() {
            while i < t.len() && t[i].is_ascii_digit() {
                i += 1;
            }
            while i + 1 < t.len() && matches!(t[i], b'.' | b',') && t[i + 1].is_ascii_digit() {
                i += 1;
                while i < t.len() && t[i].is_ascii_digit() {
                    i += 1;
                }
            }
            n += 1;
        } else {
            i += 1;
        }
    }
    n
}

const DIGIT: u8 = 1;
const UPPER: u8 = 2;
const NONASCII: u8 = 4;
const SYMBOL: u8 = 8;
const MATH: u8 = 16;
/// `? { % \ . !`: bytes with a rule of their own.
const OTHER: u8 = 32;

/// What each byte counts for in the dense features' byte scan.
static BYTE_CLASS: [u8; 256] = {
    let mut c = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let x = b as u8;
        let mut k = 0;
        if x.is_ascii_digit() {
            k |= DIGIT;
        }
        if x.is_ascii_uppercase() {
            k |= UPPER;
        }
        if x >= 0x80 {
            k |= NONASCII;
        }
        if matches!(
            x,
            b'{' | b'}'
                | b'['
                | b']'
                | b'('
                | b')'
                | b';'
                | b'='
                | b'<'
                | b'>'
                | b'_'
                | b'\\'
                | b'|'
                | b'`'
                | b'#'
                | b'@'
                | b'$'
                | b'%'
                | b'^'
                | b'&'
                | b'*'
                | b'~'
        ) {
            k |= SYMBOL;
        }
        if matches!(x, b'=' | b'+' | b'*' | b'/' | b'^' | b'<' | b'>') {
            k |= MATH;
        }
        if matches!(x, b'?' | b'{' | b'%' | b'\\' | b'.' | b'!') {
            k |= OTHER;
        }
        c[b] = k;
        b += 1;
    }
    c
};

fn log2p(x: f64) -> f64 {
    (1.0 + x).log2()
}

/// Whether a line, after its leading spaces and tabs, opens a list item.
fn list_line(line: &[u8]) -> bool {
    let s = trim_start_sp_tab(line);
    let m = if matches!(s.first(), Some(b'-' | b'*')) {
        1
    } else if s.starts_with("•".as_bytes()) {
        3
    } else {
        let k = s.iter().take(4).take_while(|b| b.is_ascii_digit()).count();
        if (1..=3).contains(&k) && matches!(s.get(k), Some(b'.' | b')')) {
            k + 1
        } else {
            0
        }
    };
    m > 0 && matches!(s.get(m), Some(b' ' | b'\t')) && !is_blank(&s[m..])
}

/// The 31 dense features of a task segment (SPEC §4).
fn dense_features(text: &str, low: &[u8], shots: u32, kind: usize, opts: &Options) -> [f64; DENSE] {
    let t = text.as_bytes();
    let n = t.len();
    let nz = n.max(1) as f64;
    let lines = LineCounts::scan(t);
    let b = ByteCounts::scan(text);
    let (mut nw, mut word_bytes) = (0usize, 0usize);
    for w in t.split(|&b| is_ws(b)).filter(|w| !w.is_empty()) {
        nw += 1;
        word_bytes += w.len();
    }
    let numbers = count_numbers(t);
    let statements = memchr::memmem::find_iter(low, b"statement ")
        .filter(|&i| low.get(i + 10).is_some_and(u8::is_ascii_digit))
        .count();
    let [n_options, opt_len, stem_len, neg_words] = if kind == 1 {
        options_features(low, opts)
    } else {
        [0.0; 4]
    };
    let f = |x: usize| x as f64;
    let flag = |x: bool| if x { 1.0 } else { 0.0 };
    [
        log2p(f(n)) / 8.0,
        log2p(f(nw)) / 7.0,
        log2p(f(lines.nonblank)) / 5.0,
        5.0 * f(b.digits) / nz,
        5.0 * f(b.upper) / nz,
        f(b.nonascii) / nz,
        5.0 * f(b.symbols) / nz,
        flag(contains(t, b"```")),
        f(lines.code) / f(lines.nonblank.max(1)),
        log2p(f(b.math)) / 4.0,
        log2p(f(b.latex)) / 3.0,
        log2p(f(b.qmarks)) / 3.0,
        log2p(f(lines.list)) / 3.0,
        log2p(f(numbers)) / 4.0,
        log2p(f64::from(shots)) / 3.0,
        (f(nw) / f(b.sentences.max(1))).min(60.0) / 30.0,
        (f(word_bytes) / f(nw.max(1))).min(12.0) / 6.0,
        log2p(f(lines.max_line)) / 10.0,
        log2p(f(count_phrases(low, &CONSTRAINTS))) / 3.0,
        flag(contains(low, b"http://") || contains(low, b"https://")),
        log2p(f(b.braces)) / 3.0,
        flag(trim_end_ws(t).last() == Some(&b'?')),
        log2p(f(b.percents)) / 3.0,
        log2p(f(lines.max_para)) / 10.0,
        n_options,
        opt_len,
        stem_len,
        neg_words,
        log2p(f(statements)) / 2.0,
        log2p(f(numbers + count_phrases(low, &QUANTITIES))) / 4.0,
        1.0,
    ]
}

/// `n_options`, `opt_len`, `stem_len` and `neg_words` of a multiple-choice segment.
fn options_features(low: &[u8], opts: &Options) -> [f64; 4] {
    let letters = opts.letters();
    let stem = &low[..opts.first.unwrap_or(low.len())];
    let total: usize = opts.len.iter().flatten().sum();
    [
        letters as f64 / 4.0,
        log2p(total as f64 / letters.max(1) as f64) / 6.0,
        log2p(stem.len() as f64) / 8.0,
        log2p(count_phrases(stem, &NEGATIONS) as f64) / 2.0,
    ]
}

/// What the lines of a task segment hold.
#[derive(Default)]
struct LineCounts {
    nonblank: usize,
    /// Non-blank lines that end in `;` `{` `}` or start indented by 4 spaces or a tab.
    code: usize,
    list: usize,
    max_line: usize,
    /// Bytes of the longest run of non-blank lines (with their newlines).
    max_para: usize,
}

impl LineCounts {
    fn scan(t: &[u8]) -> Self {
        let mut c = LineCounts::default();
        let (mut para, mut para_lines) = (0usize, 0usize);
        for line in t.split(|&b| b == b'\n') {
            c.list += usize::from(list_line(line));
            if is_blank(line) {
                if para_lines > 0 {
                    c.max_para = c.max_para.max(para + para_lines - 1);
                }
                para = 0;
                para_lines = 0;
                continue;
            }
            c.nonblank += 1;
            c.max_line = c.max_line.max(line.len());
            para += line.len();
            para_lines += 1;
            if matches!(trim_end_ws(line).last(), Some(b';' | b'{' | b'}'))
                || line.starts_with(b"    ")
                || line.starts_with(b"\t")
            {
                c.code += 1;
            }
        }
        if para_lines > 0 {
            c.max_para = c.max_para.max(para + para_lines - 1);
        }
        c
    }
}

/// Byte-level counts of a task segment.
#[derive(Default)]
struct ByteCounts {
    digits: usize,
    upper: usize,
    nonascii: usize,
    symbols: usize,
    math: usize,
    qmarks: usize,
    braces: usize,
    /// `%` signs and digit-slash-digit fractions.
    percents: usize,
    latex: usize,
    sentences: usize,
}

impl ByteCounts {
    fn scan(text: &str) -> Self {
        let t = text.as_bytes();
        let mut c = ByteCounts::default();
        for (i, &b) in t.iter().enumerate() {
            let class = BYTE_CLASS[usize::from(b)];
            if class == 0 {
                // Lowercase letters, spaces and most punctuation count for nothing here.
                continue;
            }
            c.digits += usize::from(class & DIGIT != 0);
            c.upper += usize::from(class & UPPER != 0);
            c.nonascii += usize::from(class & NONASCII != 0);
            c.symbols += usize::from(class & SYMBOL != 0);
            c.math += usize::from(class & MATH != 0);
            if class & OTHER != 0 {
                match b {
                    b'?' => c.qmarks += 1,
                    b'{' => c.braces += 1,
                    b'%' => c.percents += 1,
                    _ => {}
                }
                if b == b'\\' && t.get(i + 1).is_some_and(u8::is_ascii_alphabetic) {
                    c.latex += 1;
                }
                if matches!(b, b'.' | b'?' | b'!') && t.get(i + 1).is_none_or(|&x| is_ws(x)) {
                    c.sentences += 1;
                }
            }
        }
        let mut i = 0;
        while i + 2 < t.len() {
            if t[i].is_ascii_digit() && t[i + 1] == b'/' && t[i + 2].is_ascii_digit() {
                c.percents += 1;
                i += 3;
            } else {
                i += 1;
            }
        }
        if c.nonascii > 0 {
            c.math += text.chars().filter(|ch| MATH_CHARS.contains(ch)).count();
        }
        c
    }
}

/// One hashed entry: its global weight index and value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hashed {
    /// Index into the weight vector.
    pub index: u32,
    /// Feature value.
    pub value: f64,
    /// The gram that named it (family, and spans of the normalised text);
    /// filled when explaining.
    pub gram: Option<Gram>,
}

/// Where a gram sits in the normalised text, to name it in explanations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gram {
    /// Its family.
    pub family: Family,
    /// First span (the word, the first word of a bigram, or the 4-byte window
    /// of the padded text, offset by one).
    pub a: (u32, u32),
    /// Second word of a bigram.
    pub b: Option<(u32, u32)>,
}

/// Reused buffers: featurising a prompt allocates nothing once they have grown.
#[derive(Default)]
pub struct Scratch {
    /// Normalised task text.
    pub norm: Vec<u8>,
    lower: Vec<u8>,
    padded: Vec<u8>,
    words: Vec<(u32, u32)>,
    /// Grams per bucket of the family being counted.
    grams: BucketCounts,
    /// Hashed entries of the last featurisation (per family, in family order).
    pub hashed: Vec<Hashed>,
}

/// How many grams of one family fell in each bucket, in a table sized to the
/// family's grams (open addressing, twice as many slots as grams) rather than
/// one count per bucket: a 2^18-entry table is 512 KB, and counting into it
/// missed the cache on nearly every gram once the worker's other work had
/// evicted it (a third of the featuriser's time in the peer benchmark).
#[derive(Default)]
struct BucketCounts {
    /// Per slot, one plus the index of its bucket in `hits` (0: empty).
    slots: Vec<u32>,
    /// `32 - log2(slots.len())`: a bucket's home slot is its multiplicative hash's top bits.
    shift: u32,
    /// Buckets in first-hit order: the bucket, the position of its first
    /// gram and its count.
    hits: Vec<(u32, u32, u16)>,
}

impl BucketCounts {
    /// Empties the table for a family of `grams` grams.
    fn reset(&mut self, grams: usize) {
        let slots = (grams * 2).next_power_of_two().max(16);
        self.slots.clear();
        self.slots.resize(slots, 0);
        self.shift = 32 - slots.trailing_zeros();
        self.hits.clear();
    }

    /// Counts one gram in `bucket`, first seen at `pos`.
    fn add(&mut self, bucket: u32, pos: u32) {
        let mask = self.slots.len() - 1;
        let mut slot = (bucket.wrapping_mul(0x9E37_79B1) >> self.shift) as usize;
        loop {
            match self.slots[slot] {
                0 => {
                    self.hits.push((bucket, pos, 1));
                    self.slots[slot] = self.hits.len() as u32;
                    return;
                }
                i => {
                    let hit = &mut self.hits[i as usize - 1];
                    if hit.0 == bucket {
                        hit.2 = hit.2.saturating_add(1);
                        return;
                    }
                }
            }
            slot = (slot + 1) & mask;
        }
    }
}

/// Everything the model reads from one prompt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    /// Bytes of the task segment.
    pub task_bytes: usize,
    /// Few-shot answers stripped.
    pub shots: u32,
    /// 0 open, 1 multiple choice.
    pub kind: usize,
    /// Dense features.
    pub dense: [f64; DENSE],
}

/// Featurises `text`: the dense shape is returned, the hashed entries are left
/// in `scratch.hashed`, grouped by family, each family's in first-hit order (so
/// scoring with or without names sums in the same order).
/// With `names`, each hashed entry records the gram that named it.
pub fn featurize(text: &str, scratch: &mut Scratch, names: bool) -> Shape {
    let (task, shots) = task_segment(text);
    let t = task.as_bytes();
    scratch.lower.clear();
    scratch.lower.extend(t.iter().map(u8::to_ascii_lowercase));
    let opts = Options::scan(t);
    let kind = kind_of(&opts, &scratch.lower);
    let dense = dense_features(task, &scratch.lower, shots, kind, &opts);
    hashed_features(t, kind, scratch, names);
    Shape {
        task_bytes: t.len(),
        shots,
        kind,
        dense,
    }
}

/// §3.1: ASCII lowercase, digits to `0`, whitespace runs to one space, trimmed,
/// then cut to the first 16 KiB.
fn normalise(t: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut space = true;
    for &x in t {
        if is_ws(x) {
            if !space {
                out.push(b' ');
            }
            space = true;
            continue;
        }
        space = false;
        out.push(match x {
            b'A'..=b'Z' => x + 32,
            b'0'..=b'9' => b'0',
            _ => x,
        });
    }
    if out.last() == Some(&b' ') {
        out.pop();
    }
    out.truncate(MAX_NGRAM_BYTES);
}

fn word_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b == b'0' || b >= 0x80
}

fn hashed_features(t: &[u8], kind: usize, s: &mut Scratch, names: bool) {
    normalise(t, &mut s.norm);
    s.words.clear();
    let mut start = None;
    for (i, &b) in s.norm.iter().enumerate() {
        match (word_byte(b), start) {
            (true, None) => start = Some(i),
            (false, Some(st)) => {
                s.words.push((st as u32, i as u32));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(st) = start {
        s.words.push((st as u32, s.norm.len() as u32));
    }
    s.hashed.clear();
    let offset = (kind * BUCKETS) as u32;
    let mask = (BUCKETS - 1) as u64;
    for family in Family::ALL {
        let seed = family.seed();
        let Scratch {
            norm,
            padded,
            words,
            grams,
            ..
        } = &mut *s;
        let bucket = |h: u64| (h & mask) as u32;
        match family {
            Family::W1 => {
                grams.reset(words.len());
                for (k, &(a, b)) in words.iter().enumerate() {
                    let h = fnv1a_from(seed, &norm[a as usize..b as usize]);
                    grams.add(bucket(h), k as u32);
                }
            }
            Family::W2 => {
                grams.reset(words.len().saturating_sub(1));
                for (k, pair) in words.windows(2).enumerate() {
                    let (a, b) = (pair[0], pair[1]);
                    let h = fnv1a_from(seed, &norm[a.0 as usize..a.1 as usize]);
                    let h = fnv1a_from(h, b" ");
                    let h = fnv1a_from(h, &norm[b.0 as usize..b.1 as usize]);
                    grams.add(bucket(h), k as u32);
                }
            }
            Family::C4 => {
                // Windows of " " + norm + " ".
                padded.clear();
                padded.push(b' ');
                padded.extend_from_slice(norm);
                padded.push(b' ');
                grams.reset(padded.len().saturating_sub(3));
                for (i, w) in padded.windows(4).enumerate() {
                    let mut h = seed;
                    for &b in w {
                        h ^= u64::from(b);
                        h = h.wrapping_mul(FNV_PRIME);
                    }
                    grams.add(bucket(h), i as u32);
                }
            }
        }
        if grams.hits.is_empty() {
            continue;
        }
        let first = s.hashed.len();
        let mut sum_sq = 0.0;
        for &(bucket, pos, c) in &s.grams.hits {
            // Most grams occur once: 1 + ln(1) = 1 without calling ln.
            let u = if c == 1 { 1.0 } else { 1.0 + f64::from(c).ln() };
            sum_sq += u * u;
            let gram = names.then(|| gram_at(family, pos as usize, &s.words));
            s.hashed.push(Hashed {
                index: offset + bucket,
                value: u,
                gram,
            });
        }
        let norm = sum_sq.sqrt();
        for h in &mut s.hashed[first..] {
            h.value /= norm;
        }
    }
}

fn gram_at(family: Family, pos: usize, words: &[(u32, u32)]) -> Gram {
    match family {
        Family::W1 => Gram {
            family,
            a: words[pos],
            b: None,
        },
        Family::W2 => Gram {
            family,
            a: words[pos],
            b: Some(words[pos + 1]),
        },
        Family::C4 => Gram {
            family,
            a: (pos as u32, pos as u32 + 4),
            b: None,
        },
    }
}

impl Gram {
    /// The gram's text, as hashed (lowercase, digits as `0`).
    pub fn text(&self, norm: &[u8]) -> String {
        let span = |(a, b): (u32, u32)| norm.get(a as usize..b as usize).unwrap_or(&[]);
        let bytes: Vec<u8> = match (self.family, self.b) {
            (Family::C4, _) => {
                // Padded text: position 0 and len+1 are spaces.
                let (a, b) = self.a;
                (a..b)
                    .map(|i| {
                        if i == 0 || i as usize == norm.len() + 1 {
                            b' '
                        } else {
                            norm[i as usize - 1]
                        }
                    })
                    .collect()
            }
            (_, Some(second)) => [span(self.a), b" ", span(second)].concat(),
            (_, None) => span(self.a).to_vec(),
        };
        String::from_utf8_lossy(&bytes).into_owned()
    }
}
