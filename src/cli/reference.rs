//! The configuration reference as a man page: `mx2.toml(5)` is rendered from the README's
//! "Configuration reference" section (compiled in), so the page and the README cannot drift.
//! Owns reading that section (its paragraphs and its key table) and turning it into roff;
//! the test at the bottom checks the table against the keys the parser accepts.

const README: &str = include_str!("../../README.md");
const HEADING: &str = "## Configuration reference";

/// One row of the README's key table.
#[derive(Debug, PartialEq)]
pub struct Row {
    /// Full key names, e.g. `smtp.listen`, `domain.primary`, `hostname`.
    pub keys: Vec<String>,
    /// The key cell as written, e.g. `[smtp] listen`.
    pub label: String,
    pub default: String,
    pub meaning: String,
}

/// The section's text: from its heading to the next `## ` heading.
fn section() -> &'static str {
    let start = README.find(HEADING).map_or(0, |i| i + HEADING.len());
    let rest = &README[start..];
    let end = rest.find("\n## ").unwrap_or(rest.len());
    &rest[..end]
}

/// The keys a cell names: "`[[domain]] auth_user`, `auth_password_file`" →
/// `domain.auth_user`, `domain.auth_password_file` (a bare name takes the section before it).
fn keys(cell: &str) -> Vec<String> {
    let mut section = String::new();
    let mut out = Vec::new();
    for item in cell.split('`').skip(1).step_by(2) {
        let item = item.trim();
        let name = match item.rsplit_once(' ') {
            Some((sect, name)) => {
                section = sect.trim_matches(['[', ']']).to_string();
                name
            }
            None => item,
        };
        out.push(if section.is_empty() {
            name.to_string()
        } else {
            format!("{section}.{name}")
        });
    }
    out
}

/// The table's rows, in the README's order.
pub fn rows() -> Vec<Row> {
    section()
        .lines()
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
            let [label, default, meaning] = cells[..] else {
                return None;
            };
            Some(Row {
                keys: keys(label),
                label: label.replace('`', ""),
                default: default.to_string(),
                meaning: meaning.to_string(),
            })
        })
        .collect()
}

/// The section's prose paragraphs (everything but the table).
fn paragraphs() -> Vec<String> {
    section()
        .split("\n\n")
        .map(str::trim)
        .filter(|p| !p.is_empty() && !p.starts_with('|'))
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// Markdown inline text → roff: `code` and **strong** in bold, links as their text, roff's
/// special characters escaped.
fn inline(md: &str) -> String {
    let mut out = String::new();
    let mut bold = false;
    let mut chars = md.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '`' => {
                out.push_str(if bold { "\\fR" } else { "\\fB" });
                bold = !bold;
            }
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                out.push_str(if bold { "\\fR" } else { "\\fB" });
                bold = !bold;
            }
            '\\' => out.push_str("\\e"),
            '-' => out.push_str("\\-"),
            _ => out.push(c),
        }
    }
    if bold {
        out.push_str("\\fR");
    }
    strip_links(&out)
}

/// `[text](target)` → `text`.
fn strip_links(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(open) = rest.find('[') {
        let after = &rest[open + 1..];
        match after.find("](") {
            Some(close) if !after[..close].contains('[') => {
                let target = &after[close + 2..];
                match target.find(')') {
                    Some(end) => {
                        out.push_str(&rest[..open]);
                        out.push_str(&after[..close]);
                        rest = &target[end + 1..];
                    }
                    None => break,
                }
            }
            _ => {
                out.push_str(&rest[..=open]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// A roff text line: one starting with `.` or `'` would be read as a request.
fn line(text: &str) -> String {
    if text.starts_with(['.', '\'']) {
        format!("\\&{text}")
    } else {
        text.to_string()
    }
}

/// `mx2.toml(5)` in roff.
pub fn man_page(version: &str) -> String {
    let mut out = format!(
        ".TH MX2.TOML 5 \"\" \"mx2 {version}\" \"File Formats\"\n\
         .SH NAME\nmx2.toml \\- configuration file of mx2, a secondary MX\n\
         .SH SYNOPSIS\n/etc/mx2/mx2.toml\n.SH DESCRIPTION\n"
    );
    let paragraphs = paragraphs();
    let (before, after) = paragraphs.split_at(paragraphs.len().min(1));
    for p in before {
        out.push_str(&format!("{}\n.PP\n", line(&inline(p))));
    }
    out.push_str(".SH KEYS\n");
    let mut section = None;
    for row in rows() {
        let sect = row
            .keys
            .first()
            .and_then(|k| k.split_once('.'))
            .map(|(s, _)| s.to_string());
        if sect != section {
            let title = match &sect {
                Some(s) if s == "domain" => "[[domain]] (one table per domain)".to_string(),
                Some(s) => format!("[{s}]"),
                None => "Top level".to_string(),
            };
            out.push_str(&format!(".SS {}\n", line(&title)));
            section = sect;
        }
        out.push_str(&format!(
            ".TP\n\\fB{}\\fR (default: {})\n{}\n",
            line(&inline(&row.label)),
            inline(&row.default),
            line(&inline(&row.meaning))
        ));
    }
    if !after.is_empty() {
        out.push_str(".SH NOTES\n");
        for p in after {
            out.push_str(&format!("{}\n.PP\n", line(&inline(p))));
        }
    }
    out.push_str(
        ".SH FILES\n/etc/mx2/mx2.toml\n.SH SEE ALSO\n\\fBmx2\\fR(8), \\fBmx2\\-config\\fR(8), \
         \\fBmx2\\-init\\fR(8)\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::collections::BTreeSet;
    use std::path::Path;

    /// The fields the parser accepts where `prefix` (a table header, or "" for the top
    /// level) is, read from its own "unknown field" error: serde lists them all.
    fn accepted(prefix: &str) -> Option<Vec<String>> {
        let text = format!("{prefix}\nzz_not_a_key = 1\n");
        let err = Config::parse(&text, "probe.toml", Path::new("/")).err()?;
        let msg = err.to_string();
        let (_, list) = msg.split_once("unknown field `zz_not_a_key`, expected ")?;
        Some(
            list.split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect(),
        )
    }

    /// Every key the code accepts, as `section.key` (`domain.` for `[[domain]]`).
    fn code_keys() -> BTreeSet<String> {
        let mut all = BTreeSet::new();
        for top in accepted("").expect("the parser names its top-level keys") {
            let header = if top == "domain" {
                "[[domain]]".to_string()
            } else {
                format!("[{top}]")
            };
            match accepted(&header) {
                Some(inner) => all.extend(inner.into_iter().map(|k| format!("{top}.{k}"))),
                None => {
                    all.insert(top);
                }
            }
        }
        all
    }

    #[test]
    fn the_keys_are_read_from_the_parser() {
        let keys = code_keys();
        for k in ["hostname", "smtp.listen", "domain.primary", "storage.url"] {
            assert!(keys.contains(k), "{k} missing from {keys:?}");
        }
        assert!(!keys.contains("smtp"), "a section is not a key");
    }

    #[test]
    fn readme_man_page_and_parser_name_the_same_keys() {
        let readme: BTreeSet<String> = rows().into_iter().flat_map(|r| r.keys).collect();
        let code = code_keys();
        let undocumented: Vec<_> = code.difference(&readme).collect();
        assert!(
            undocumented.is_empty(),
            "keys the parser accepts but the README's table lacks: {undocumented:?}"
        );
        let unknown: Vec<_> = readme.difference(&code).collect();
        assert!(
            unknown.is_empty(),
            "keys in the README's table the parser refuses: {unknown:?}"
        );
        let page = man_page("0");
        for row in rows() {
            let label = format!("\\fB{}\\fR", inline(&row.label));
            assert!(page.contains(&label), "mx2.toml(5) lacks {}", row.label);
        }
        for key in &code {
            let name = key.rsplit('.').next().unwrap_or(key);
            assert!(
                page.contains(&inline(name)),
                "mx2.toml(5) does not name {key}"
            );
        }
    }

    #[test]
    fn cells_name_their_keys() {
        assert_eq!(keys("`hostname`"), ["hostname"]);
        assert_eq!(
            keys("`[[domain]] auth_user`, `auth_password_file`"),
            ["domain.auth_user", "domain.auth_password_file"]
        );
        assert_eq!(keys("`[tls] cert`, `[tls] key`"), ["tls.cert", "tls.key"]);
    }

    #[test]
    fn markdown_becomes_roff() {
        assert_eq!(
            inline("see [Verifying](#verifying) and `a-b` **now**"),
            "see Verifying and \\fBa\\-b\\fR \\fBnow\\fR"
        );
        assert_eq!(line(".x"), "\\&.x");
    }
}
