//! The RFC 8949 Appendix A and F data files.

/// Appendix A: `hex \t diagnostic` lines.
pub const APPENDIX_A: &str = include_str!("../data/rfc8949-appendix-a.tsv");
/// Appendix F.1: one hex item per line.
pub const APPENDIX_F: &str = include_str!("../data/rfc8949-appendix-f.txt");

/// The lines that are not comments.
pub fn data_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

/// Lowercase or uppercase hex to bytes.
pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}
