//! The built-in jobs every worker serves (CONTRACT.md, "Built-in jobs").
//!
//! - [`wordcount`]: counts words.
//! - [`index`]: an inverted index from words to the files that contain them.
//! - [`grep`]: lines that match a regular expression.
//! - [`tasks`]: the `echo` and `sleep` task handlers.

pub mod grep;
pub mod index;
pub mod tasks;
pub mod wordcount;

/// Calls `f` with every word of `line`: a maximal run of alphabetic characters
/// (`char::is_alphabetic`), lowercased with `str::to_lowercase`. Words that are already
/// lowercase are passed as slices of `line`, without allocating; ASCII is scanned byte by byte.
pub fn for_each_word(line: &str, mut f: impl FnMut(&str)) {
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let (c, len) = char_at(line, i);
        if !c.is_alphabetic() {
            i += len;
            continue;
        }
        let start = i;
        let mut is_lower = true;
        while i < bytes.len() {
            let b = bytes[i];
            if b.is_ascii() {
                if !b.is_ascii_alphabetic() {
                    break;
                }
                is_lower &= b.is_ascii_lowercase();
                i += 1;
            } else {
                let (c, len) = char_at(line, i);
                if !c.is_alphabetic() {
                    break;
                }
                is_lower &= lowercases_to_itself(c);
                i += len;
            }
        }
        let word = &line[start..i];
        if is_lower {
            f(word);
        } else {
            // `str::to_lowercase`, not per-char mapping: it treats a final sigma specially.
            f(&word.to_lowercase());
        }
    }
}

/// The char starting at byte `i` of `s` (a char boundary) and its length in bytes.
fn char_at(s: &str, i: usize) -> (char, usize) {
    let b = s.as_bytes()[i];
    if b.is_ascii() {
        return (char::from(b), 1);
    }
    // `i` is always a char boundary here, so there is a char.
    let c = s[i..].chars().next().unwrap_or(char::REPLACEMENT_CHARACTER);
    (c, c.len_utf8())
}

/// Whether lowercasing `c` leaves it as it is (true for most non-ASCII letters: CJK, already
/// lowercase Latin, ...). Σ is never: `str::to_lowercase` may turn it into ς.
fn lowercases_to_itself(c: char) -> bool {
    let mut lower = c.to_lowercase();
    lower.next() == Some(c) && lower.next().is_none() && c != 'Σ'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        let mut out = Vec::new();
        for_each_word(line, |w| out.push(w.to_string()));
        out
    }

    #[test]
    fn words_are_alphabetic_runs_lowercased() {
        assert_eq!(
            words("Hello, wörld! 42x ÉTÉ"),
            ["hello", "wörld", "x", "été"]
        );
        assert_eq!(words(""), Vec::<String>::new());
        assert_eq!(words("ΟΔΟΣ"), ["ΟΔΟΣ".to_lowercase()]);
        assert_eq!(words("日本語 テキスト"), ["日本語", "テキスト"]);
        assert_eq!(
            words("ǅemal İstanbul"),
            ["ǆemal", "İstanbul".to_lowercase().as_str()]
        );
        assert_eq!(words("a1b--c"), ["a", "b", "c"]);
        assert_eq!(words("Straße naïve\u{FFFD}x"), ["straße", "naïve", "x"]);
    }

    #[test]
    fn matches_the_contract_definition_on_mixed_text() {
        // The contract: maximal runs of `char::is_alphabetic`, lowercased with `str::to_lowercase`.
        let alphabet: Vec<char> = "aZé ÉßẞΣσς ǅǈİıK日本,.;1\t-ΟΔΟΣ Ωμέγα жИ\u{301}\u{FFFD}"
            .chars()
            .collect();
        let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..2000 {
            let len = (seed % 24) as usize;
            let line: String = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    alphabet[(seed % alphabet.len() as u64) as usize]
                })
                .collect();
            let expected: Vec<String> = line
                .split(|c: char| !c.is_alphabetic())
                .filter(|w| !w.is_empty())
                .map(str::to_lowercase)
                .collect();
            assert_eq!(words(&line), expected, "line {line:?}");
        }
    }
}
