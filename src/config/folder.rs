//! Walking the folder and reading its files, with the limits that keep one
//! odd entry from stalling a load: each directory is followed once (by
//! device and inode, so symlink loops end), a file is read only if it is a
//! regular file of at most [`MAX_FILE_BYTES`], and a document nested deeper
//! than [`MAX_NESTING`] is refused by a cheap linear pre-scan before any
//! YAML parser sees it (deep flow nesting makes parsing quadratic).

use std::collections::HashSet;
use std::io::Read as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use super::load::LoadError;
use super::locate::Position;

/// Largest definitions file read (1 MiB); a larger one is reported, not loaded.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Deepest nesting of collections (flow `[`/`{` and block levels) a file
/// may have; real push definitions stay far below it.
pub const MAX_NESTING: usize = 64;

/// Every `*.yaml` / `*.yml` file below `dir`, hidden entries skipped
/// (unsorted). Symlinks are followed, but every directory and every file
/// only once (by device and inode): a link back to the folder itself is
/// skipped instead of walked forever, and a file reachable twice loads once
/// (under the name that sorts first in its directory walk).
pub fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), LoadError> {
    let mut seen_dirs = HashSet::new();
    let mut seen_files = HashSet::new();
    if let Ok(m) = std::fs::metadata(dir) {
        seen_dirs.insert((m.dev(), m.ino()));
    }
    walk(dir, out, &mut seen_dirs, &mut seen_files)
}

fn walk(
    dir: &Path,
    out: &mut Vec<PathBuf>,
    seen_dirs: &mut HashSet<(u64, u64)>,
    seen_files: &mut HashSet<(u64, u64)>,
) -> Result<(), LoadError> {
    let folder_error = |source| LoadError::Folder {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(folder_error)? {
        let entry = entry.map_err(folder_error)?;
        if !entry.file_name().to_string_lossy().starts_with('.') {
            entries.push(entry.path());
        }
    }
    // A stable order, so that which name of a file reachable twice is used
    // does not depend on the directory's order on disk.
    entries.sort();
    for path in entries {
        // Follows symlinks; a dangling link is listed if its name says YAML
        // (its read error is then reported against it).
        let meta = std::fs::metadata(&path).ok();
        if meta.as_ref().is_some_and(|m| m.is_dir()) {
            let m = meta.expect("checked above");
            if seen_dirs.insert((m.dev(), m.ino())) {
                walk(&path, out, seen_dirs, seen_files)?;
            }
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml") | Some("yml")
        ) {
            if let Some(m) = &meta {
                if !seen_files.insert((m.dev(), m.ino())) {
                    continue;
                }
            }
            out.push(path);
        }
    }
    Ok(())
}

/// Reads one definitions file: a regular file (a FIFO or device would
/// block or never end), at most [`MAX_FILE_BYTES`], UTF-8. The error is
/// the diagnostic's text.
pub fn read_source(path: &Path) -> Result<String, String> {
    use std::os::unix::fs::OpenOptionsExt as _;
    // Non-blocking, so that opening a FIFO does not wait for a writer.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("cannot read file: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read file: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file: not loaded".to_owned());
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(too_large(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // Bounded even if the file grows while it is read.
    file.by_ref()
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read file: {e}"))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large(bytes.len() as u64));
    }
    String::from_utf8(bytes).map_err(|_| "file is not valid UTF-8".to_owned())
}

fn too_large(len: u64) -> String {
    format!(
        "file is {len} bytes, over the limit of {MAX_FILE_BYTES} bytes (1 MiB) for a definitions file: not loaded (split it into several files)"
    )
}

/// Whether `text` holds no content at all: only blanks, comments and
/// document markers (an empty or just-truncated file).
pub fn is_blank(text: &str) -> bool {
    text.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#') || t == "---" || t == "..."
    })
}

/// A linear pre-scan of `text` for collections nested deeper than
/// [`MAX_NESTING`]: flow collections (`[`, `{`, outside quotes and
/// comments) and block levels (indentation, `- ` entries). Block scalars
/// (`|`, `>`) are skipped. Errs with the position of the first level too
/// deep. An estimate that errs on the side of counting a level too many,
/// which real definitions are far from noticing.
pub fn check_nesting(text: &str) -> Result<(), (Position, String)> {
    let too_deep = |line: usize, column: usize| {
        Err((
            Position { line, column },
            format!(
                "collections nested more than {MAX_NESTING} levels deep: not parsed (nesting this deep is not a push definition)"
            ),
        ))
    };
    let mut flow = 0usize;
    let mut in_single = false;
    let mut in_double = false;
    let mut block: Vec<usize> = Vec::new();
    // The indentation of a line that opened a block scalar: deeper lines are its text.
    let mut scalar_indent: Option<usize> = None;
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let indent = line.chars().take_while(|c| *c == ' ').count();
        let content = line.trim();
        if let Some(n) = scalar_indent {
            if content.is_empty() || indent > n {
                continue;
            }
            scalar_indent = None;
        }
        let quoted = in_single || in_double;
        if flow == 0 && !quoted {
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            if content == "---" || content.starts_with("--- ") || content == "..." {
                block.clear();
                continue;
            }
            while block.last().is_some_and(|top| *top >= indent) {
                block.pop();
            }
            block.push(indent);
            // `- - - x`: each entry indicator on the line is one level more.
            let mut rest = &line[indent..];
            let mut column = indent;
            while let Some(after) = rest.strip_prefix("- ").or(rest.strip_prefix("-\t")) {
                let skipped = after.len() - after.trim_start().len();
                column += 2 + skipped;
                rest = after.trim_start();
                block.push(column);
            }
            if block.len() > MAX_NESTING {
                return too_deep(line_no, column + 1);
            }
        }
        let mut prev: Option<char> = None;
        let mut last_sig: Option<char> = None;
        let mut chars = line.chars().enumerate().peekable();
        while let Some((col, c)) = chars.next() {
            if in_double {
                match c {
                    '\\' => {
                        chars.next();
                    }
                    '"' => in_double = false,
                    _ => {}
                }
            } else if in_single {
                if c == '\'' {
                    if chars.peek().is_some_and(|(_, n)| *n == '\'') {
                        chars.next();
                    } else {
                        in_single = false;
                    }
                }
            } else {
                let node_start = match last_sig {
                    None => true,
                    Some('[' | '{' | ',') => true,
                    Some(':' | '-' | '?') => prev.is_some_and(char::is_whitespace),
                    _ => false,
                };
                // What the character was: an indicator, or part of a plain scalar.
                let mut sig = c;
                match c {
                    '#' if prev.is_none_or(char::is_whitespace) => break,
                    '"' if node_start => in_double = true,
                    '\'' if node_start => in_single = true,
                    '[' | '{' if flow > 0 || node_start => {
                        flow += 1;
                        if flow + block.len() > MAX_NESTING {
                            return too_deep(line_no, col + 1);
                        }
                    }
                    ']' | '}' if flow > 0 => flow -= 1,
                    ',' if flow > 0 => {}
                    '[' | '{' | ',' => sig = 'a',
                    _ => {}
                }
                if !c.is_whitespace() {
                    last_sig = Some(sig);
                }
            }
            prev = Some(c);
        }
        if flow == 0 && !in_single && !in_double && opens_block_scalar(line) {
            scalar_indent = Some(indent);
        }
    }
    Ok(())
}

/// Whether `line` ends in a block scalar header (`key: |`, `- >-`, `|2+`),
/// a trailing comment aside.
fn opens_block_scalar(line: &str) -> bool {
    let without_comment = match line.find(" #") {
        Some(i) => &line[..i],
        None => line,
    };
    let t = without_comment.trim_end();
    let head = t.trim_end_matches(|c: char| c == '+' || c == '-' || c.is_ascii_digit());
    let Some(rest) = head.strip_suffix(['|', '>']) else {
        return false;
    };
    let rest = rest.trim_end();
    rest.is_empty() || rest.ends_with(':') || rest.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_is_measured_in_flow_and_block_and_located() {
        let deep = "[".repeat(200_000);
        let (pos, message) = check_nesting(&format!("name: x\njson: {deep}")).unwrap_err();
        assert_eq!((pos.line, pos.column), (2, 6 + MAX_NESTING));
        assert!(message.contains("nested more than 64"), "{message}");
        let block: String = (0..100)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect();
        assert_eq!(check_nesting(&block).unwrap_err().0.line, MAX_NESTING + 1);
        let dashes = format!("{}x\n", "- ".repeat(100));
        assert!(check_nesting(&dashes).is_err());
    }

    #[test]
    fn ordinary_definitions_pass_the_nesting_scan() {
        let ok = "name: a [b] {c}\non: call.ended\nwhen: \"event.x in ['[', '{']\"\nhttp:\n  url: https://x/[y]\n  raw: |\n    [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\n  json: {a: [1, {b: [2]}]}\n# [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\n  subject: it's [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\n";
        for n in 1..=10 {
            let part: String = ok.lines().take(n).map(|l| format!("{l}\n")).collect();
            assert!(
                check_nesting(&part).is_ok(),
                "{n}: {:?}",
                check_nesting(&part)
            );
        }
        assert!(check_nesting("  subject: it's [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\n").is_ok());
        let nested64 = format!("json: {}{}", "[".repeat(60), "]".repeat(60));
        assert!(check_nesting(&nested64).is_ok());
    }

    proptest::proptest! {
        /// Any text: the scan ends without a panic, and nesting it reports
        /// is located inside the text.
        #[test]
        fn the_nesting_scan_never_panics(text in "[ \\-\\[\\]{}:,'\"#|>a\n\t]{0,400}") {
            if let Err((pos, _)) = check_nesting(&text) {
                proptest::prop_assert!(pos.line >= 1 && pos.line <= text.lines().count().max(1));
            }
        }
    }

    #[test]
    fn blank_files_are_recognised() {
        assert!(is_blank(""));
        assert!(is_blank("\n# only a comment\n---\n"));
        assert!(!is_blank("name: x\n"));
    }
}
