//! A small deterministic source of hostile input for the parser tests that
//! stand in for fuzzing: no panic, whatever the bytes.
#![cfg(test)]

/// xorshift32: the same inputs on every run.
pub struct Noise(u32);

impl Noise {
    /// A source seeded with `seed`.
    pub fn new(seed: u32) -> Self {
        Noise(seed.max(1))
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        self.0 as usize % n.max(1)
    }

    /// One of `items`.
    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    /// `text` with a few random edits: characters deleted, repeated or
    /// replaced by ones that matter to TOML and to addresses (no letters, so
    /// no host name ever needs resolving).
    pub fn mutate(&mut self, text: &str) -> String {
        const INSERTS: &[&str] = &[
            "\"",
            "'",
            "[",
            "]",
            "{",
            "}",
            "=",
            "#",
            "\n",
            ":",
            "/",
            ",",
            ".",
            "-",
            "0",
            "9",
            "65536",
            "[[upstream]]\n",
            "\\",
            "\u{0}",
            "é",
            "\u{202e}",
            " ",
            "=\n",
            "\"\"\"",
        ];
        let mut chars: Vec<char> = text.chars().collect();
        for _ in 0..1 + self.below(4) {
            if chars.is_empty() {
                break;
            }
            let at = self.below(chars.len());
            match self.below(4) {
                0 => {
                    let len = self.below(8).min(chars.len() - at);
                    chars.drain(at..at + len);
                }
                1 => {
                    let end = (at + self.below(16)).min(chars.len());
                    let copy: Vec<char> = chars[at..end].to_vec();
                    chars.splice(at..at, copy);
                }
                _ => {
                    let insert: Vec<char> = self.pick(INSERTS).chars().collect();
                    chars.splice(at..at, insert);
                }
            }
        }
        chars.into_iter().collect()
    }
}
