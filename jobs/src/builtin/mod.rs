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

/// Calls `f` with every word of `line`: a maximal run of alphabetic characters, lowercased.
/// Words that are already lowercase are passed without allocating.
pub fn for_each_word(line: &str, mut f: impl FnMut(&str)) {
    let mut lowered = String::new();
    let mut rest = line;
    while let Some(start) = rest.find(char::is_alphabetic) {
        rest = &rest[start..];
        let end = rest
            .find(|c: char| !c.is_alphabetic())
            .unwrap_or(rest.len());
        let word = &rest[..end];
        if word.bytes().all(|b| b.is_ascii_lowercase()) {
            f(word);
        } else {
            lowered.clear();
            lowered.extend(word.chars().flat_map(char::to_lowercase));
            // `str::to_lowercase` treats a final sigma specially; match it exactly.
            if word.contains('Σ') {
                lowered = word.to_lowercase();
            }
            f(&lowered);
        }
        rest = &rest[end..];
    }
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
    }
}
