//! A deterministic text corpus with Zipf-distributed words (some of them non-ASCII), for
//! benchmarks and tests: the same seed gives the same bytes.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SYLLABLES: &[&str] = &[
    "ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "an", "el", "or", "us", "ba", "de", "fi",
    "go", "hu", "ja", "pe", "qui", "str", "ße", "é", "ño", "ü", "日", "本", "ωμ", "жи",
];

/// The vocabulary and its Zipf cumulative distribution.
pub struct Zipf {
    words: Vec<String>,
    cdf: Vec<f64>,
}

impl Zipf {
    /// `n` distinct words with exponent `s` (1.0 is classic Zipf).
    pub fn new(n: usize, s: f64, seed: u64) -> Zipf {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut seen = std::collections::HashSet::new();
        let mut words = Vec::with_capacity(n);
        while words.len() < n {
            let len = rng.gen_range(1..=4);
            let word: String = (0..len)
                .map(|_| SYLLABLES[rng.gen_range(0..SYLLABLES.len())])
                .collect();
            if seen.insert(word.clone()) {
                words.push(word);
            }
        }
        let mut total = 0.0;
        let mut cdf = Vec::with_capacity(n);
        for rank in 1..=n {
            total += 1.0 / (rank as f64).powf(s);
            cdf.push(total);
        }
        for p in &mut cdf {
            *p /= total;
        }
        Zipf { words, cdf }
    }

    /// A word drawn from the distribution.
    pub fn sample(&self, rng: &mut impl Rng) -> &str {
        let x: f64 = rng.gen();
        let i = self
            .cdf
            .partition_point(|p| *p < x)
            .min(self.words.len() - 1);
        &self.words[i]
    }
}

/// Writes `files` files of about `bytes_per_file` bytes each into `dir` (named
/// `part-NNN.txt`), lines of 4–16 words with some capitalisation and punctuation. Files that
/// already exist with a size within 1% are kept (generation is deterministic).
///
/// # Errors
/// If the files cannot be written.
pub fn generate(
    dir: &Path,
    files: usize,
    bytes_per_file: u64,
    seed: u64,
) -> std::io::Result<Vec<PathBuf>> {
    fs::create_dir_all(dir)?;
    let zipf = Zipf::new(50_000, 1.0, seed);
    let mut paths = Vec::with_capacity(files);
    for f in 0..files {
        let path = dir.join(format!("part-{f:03}.txt"));
        if let Ok(meta) = fs::metadata(&path) {
            if meta.len().abs_diff(bytes_per_file) <= bytes_per_file / 100 {
                paths.push(path);
                continue;
            }
        }
        let mut rng =
            StdRng::seed_from_u64(seed ^ (f as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut out = BufWriter::with_capacity(1 << 20, fs::File::create(&path)?);
        let mut written = 0u64;
        let mut line = String::with_capacity(256);
        while written < bytes_per_file {
            line.clear();
            let words = rng.gen_range(4..=16);
            for i in 0..words {
                if i > 0 {
                    line.push(' ');
                }
                let word = zipf.sample(&mut rng);
                if rng.gen_ratio(1, 12) {
                    line.extend(word.chars().take(1).flat_map(char::to_uppercase));
                    line.extend(word.chars().skip(1));
                } else {
                    line.push_str(word);
                }
                if rng.gen_ratio(1, 10) {
                    line.push(
                        *[',', ';', '!', '?', '3']
                            .get(rng.gen_range(0..5))
                            .unwrap_or(&','),
                    );
                }
            }
            line.push_str(".\n");
            out.write_all(line.as_bytes())?;
            written += line.len() as u64;
        }
        out.flush()?;
        paths.push(path);
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_zipfian() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let pa = generate(a.path(), 2, 20_000, 42).unwrap();
        let pb = generate(b.path(), 2, 20_000, 42).unwrap();
        for (x, y) in pa.iter().zip(&pb) {
            assert_eq!(fs::read(x).unwrap(), fs::read(y).unwrap());
        }
        let zipf = Zipf::new(1000, 1.0, 1);
        let mut rng = StdRng::seed_from_u64(3);
        let top = (0..10_000)
            .filter(|_| zipf.sample(&mut rng) == zipf.words[0])
            .count();
        assert!(
            (1000..1700).contains(&top),
            "rank 1 should be ~13% of draws, got {top}"
        );
    }
}
