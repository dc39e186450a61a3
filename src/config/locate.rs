//! Maps a key path such as `clients[1].secret_hash` back to the line of the
//! file it came from, so every configuration problem names file, line and key.

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// One segment of a key path.
enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

fn segments(path: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Segment::Key(key));
        }
        for index in rest.split('[').filter(|s| !s.is_empty()) {
            if let Ok(i) = index.trim_end_matches(']').parse() {
                out.push(Segment::Index(i));
            }
        }
    }
    out
}

/// The 1-based line where the deepest existing part of `path` is written.
pub fn line_of(source: &str, table: &Spanned<DeTable<'_>>, path: &str) -> Option<usize> {
    let mut span = None;
    let mut current: Option<&DeValue<'_>> = None;
    let mut root = Some(table.get_ref());
    for segment in segments(path) {
        match segment {
            Segment::Key(key) => {
                let table = match (root.take(), current) {
                    (Some(t), _) => t,
                    (None, Some(DeValue::Table(t))) => t,
                    _ => break,
                };
                let Some((k, v)) = table.iter().find(|(k, _)| k.get_ref() == key) else {
                    break;
                };
                span = Some(k.span());
                current = Some(v.get_ref());
            }
            Segment::Index(i) => {
                let Some(DeValue::Array(items)) = current else {
                    break;
                };
                let Some(item) = items.get(i) else { break };
                span = Some(item.span());
                current = Some(item.get_ref());
            }
        }
    }
    span.map(|s| line_at(source, s.start))
}

/// The 1-based line of a byte offset.
pub fn line_at(source: &str, offset: usize) -> usize {
    let end = offset.min(source.len());
    source.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Turns serde_ignored's dotted path (`clients.0.secrethash`) into the
/// bracketed form used in messages (`clients[0].secrethash`).
pub fn display_path(dotted: &str) -> String {
    let mut out = String::new();
    for part in dotted.split('.') {
        if part.chars().all(|c| c.is_ascii_digit()) && !part.is_empty() {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(part);
        }
    }
    out
}
