//! Request path normalization as Istio's `meshConfig.pathNormalization` programs Envoy. `BASE`,
//! Istio's default, is Envoy's `normalize_path`: RFC 3986 §5.2.4 dot-segment removal,
//! percent-decoding of unreserved characters, `\` → `/`; percent-encoded slashes (`%2F`, `%5C`)
//! are kept as they are. `MERGE_SLASHES` also merges `//`; `DECODE_AND_MERGE_SLASHES` first
//! decodes `%2F` and `%5C` (Envoy's `UNESCAPE_AND_FORWARD`); `NONE` leaves the path alone. The
//! normalized path is what routes match and what is forwarded.

use std::borrow::Cow;

/// The path cannot be served (Envoy answers 400).
#[derive(Debug, PartialEq, Eq)]
pub struct InvalidPath;

/// Istio's `ProxyPathNormalization` modes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PathNormalization {
    None,
    /// Istio's default.
    #[default]
    Base,
    MergeSlashes,
    DecodeAndMergeSlashes,
}

impl PathNormalization {
    /// From Istio's name for it (`NONE`, `BASE`, `MERGE_SLASHES`, `DECODE_AND_MERGE_SLASHES`;
    /// `DEFAULT` is `BASE`).
    pub fn from_istio(name: &str) -> Option<PathNormalization> {
        Some(match name.to_ascii_uppercase().as_str() {
            "NONE" => PathNormalization::None,
            "BASE" | "DEFAULT" => PathNormalization::Base,
            "MERGE_SLASHES" => PathNormalization::MergeSlashes,
            "DECODE_AND_MERGE_SLASHES" => PathNormalization::DecodeAndMergeSlashes,
            _ => return None,
        })
    }
}

/// Normalize `path` (without the query). Borrows when nothing changes, the common case.
pub fn normalize(path: &str, mode: PathNormalization) -> Result<Cow<'_, str>, InvalidPath> {
    let b = path.as_bytes();
    if b.first() != Some(&b'/') {
        return Err(InvalidPath);
    }
    if mode == PathNormalization::None {
        // Istio refuses `%00` whatever the normalization.
        return if b.windows(3).any(|w| w == b"%00") { Err(InvalidPath) } else { Ok(Cow::Borrowed(path)) };
    }
    let merge_slashes = matches!(mode, PathNormalization::MergeSlashes | PathNormalization::DecodeAndMergeSlashes);
    if is_normal(b, merge_slashes) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(b, mode == PathNormalization::DecodeAndMergeSlashes)?;
    let mut out = remove_dot_segments(&decoded);
    if merge_slashes {
        out.dedup_by(|a, b| *a == b'/' && *b == b'/');
    }
    // Only ASCII was changed or removed, and decoding produced only ASCII, so this stays UTF-8.
    String::from_utf8(out).map(Cow::Owned).map_err(|_| InvalidPath)
}

/// No `%`, no `\`, no `.` segment, no `//` (when merging).
fn is_normal(b: &[u8], merge_slashes: bool) -> bool {
    let mut prev = 0u8;
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'%' | b'\\' => return false,
            b'/' if merge_slashes && prev == b'/' => return false,
            b'.' if prev == b'/' => {
                // "/." or "/.." followed by "/" or the end is a dot segment.
                let rest = &b[i + 1..];
                let rest = rest.strip_prefix(b".").unwrap_or(rest);
                if rest.is_empty() || rest[0] == b'/' {
                    return false;
                }
            }
            _ => {}
        }
        prev = c;
    }
    true
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decode `%XX` of unreserved characters (ALPHA, DIGIT, `-`, `.`, `_`, `~`), and of `/` and `\`
/// when `slashes`; upper-case the hex digits of the others, reject `%00`, turn `\` into `/`.
fn decode_unreserved(b: &[u8], slashes: bool) -> Result<Vec<u8>, InvalidPath> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                let v = h * 16 + l;
                if v == 0 {
                    return Err(InvalidPath);
                }
                if slashes && matches!(v, b'/' | b'\\') {
                    out.push(b'/');
                } else if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') {
                    out.push(v);
                } else {
                    out.push(b'%');
                    out.push(b[i + 1].to_ascii_uppercase());
                    out.push(b[i + 2].to_ascii_uppercase());
                }
                i += 3;
                continue;
            }
        }
        out.push(if c == b'\\' { b'/' } else { c });
        i += 1;
    }
    Ok(out)
}

/// RFC 3986 §5.2.4 on an absolute path.
fn remove_dot_segments(input: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let rest = &input[i..];
        if rest.starts_with(b"/./") {
            i += 2;
        } else if rest == b"/." {
            out.push(b'/');
            break;
        } else if rest.starts_with(b"/../") {
            pop_segment(&mut out);
            i += 3;
        } else if rest == b"/.." {
            pop_segment(&mut out);
            out.push(b'/');
            break;
        } else {
            // Move "/segment" to the output.
            let end = rest[1..].iter().position(|&c| c == b'/').map_or(rest.len(), |p| p + 1);
            out.extend_from_slice(&rest[..end]);
            i += end;
        }
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

fn pop_segment(out: &mut Vec<u8>) {
    match out.iter().rposition(|&c| c == b'/') {
        Some(p) => out.truncate(p),
        None => out.clear(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(mode: PathNormalization, p: &str) -> String {
        normalize(p, mode).map(|c| c.into_owned()).unwrap_or_else(|_| "<invalid>".into())
    }

    fn n(p: &str) -> String {
        with(PathNormalization::MergeSlashes, p)
    }

    #[test]
    fn dot_segments() {
        assert_eq!(n("/a/../b"), "/b");
        assert_eq!(n("/a/./b"), "/a/b");
        assert_eq!(n("/a/b/.."), "/a/");
        assert_eq!(n("/a/b/."), "/a/b/");
        assert_eq!(n("/../../x"), "/x");
        assert_eq!(n("/.."), "/");
        assert_eq!(n("/a/%2e%2E/b"), "/b");
        assert_eq!(n("/a/.b/..c"), "/a/.b/..c");
        assert_eq!(n("/a/b.."), "/a/b..");
    }

    #[test]
    fn slashes_and_escapes() {
        assert_eq!(n("/a//b///c"), "/a/b/c");
        assert_eq!(with(PathNormalization::Base, "/a//b/../c"), "/a//c");
        assert_eq!(n("/a\\b"), "/a/b");
        assert_eq!(n("/%61%7e%2d"), "/a~-");
        assert_eq!(n("/a%2fb"), "/a%2Fb");
        assert_eq!(n("/a%zz"), "/a%zz");
        assert_eq!(n("/a%2"), "/a%2");
        assert_eq!(n("/a%00b"), "<invalid>");
        assert_eq!(n("a/b"), "<invalid>");
        assert_eq!(n(""), "<invalid>");
    }

    #[test]
    fn istio_modes() {
        use PathNormalization::*;
        let p = "/a//b/%2e%2e/c%2Fd%5cE\\f";
        assert_eq!(with(None, p), p, "NONE leaves it alone");
        assert_eq!(with(None, "/a%00b"), "<invalid>", "but %00 is refused in every mode");
        assert_eq!(with(Base, p), "/a//c%2Fd%5CE/f");
        assert_eq!(with(MergeSlashes, p), "/a/c%2Fd%5CE/f");
        assert_eq!(with(DecodeAndMergeSlashes, p), "/a/c/d/E/f");
        assert_eq!(with(DecodeAndMergeSlashes, "/a%2F..%2Fb"), "/b", "decoded before dot segments");
        assert_eq!(PathNormalization::from_istio("default"), Some(Base));
        assert_eq!(PathNormalization::from_istio("DECODE_AND_MERGE_SLASHES"), Some(DecodeAndMergeSlashes));
        assert_eq!(PathNormalization::from_istio("SOMETIMES"), Option::None);
    }

    #[test]
    fn unchanged_paths_borrow() {
        for p in ["/", "/a/b", "/a.b/c", "/reviews/1"] {
            assert!(matches!(normalize(p, PathNormalization::MergeSlashes), Ok(Cow::Borrowed(_))), "{p}");
        }
    }
}
