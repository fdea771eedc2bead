//! FETCH rendering: one message's content (as stored) and what a client asked for → the
//! items of its `* n FETCH` response: FLAGS, UID, INTERNALDATE, RFC822.SIZE, ENVELOPE,
//! BODYSTRUCTURE, BODY[section]<partial> and the RFC822 forms. The MIME structure comes from
//! `mail-parser`; section contents are byte ranges of the stored message, never re-encoded.
//! Pure: no I/O.

use crate::queue::inbox::Held;
use imap_next::imap_types::body::{BasicFields, Body, BodyStructure, SpecificFields};
use imap_next::imap_types::core::{AString, Atom, IString, Literal, NString, Vec1};
use imap_next::imap_types::datetime::DateTime;
use imap_next::imap_types::envelope::{Address, Envelope};
use imap_next::imap_types::fetch::{MessageDataItem, MessageDataItemName, Part, Section};
use imap_next::imap_types::flag::{Flag, FlagFetch};
use mail_parser::{Message, MessageParser, MessagePart, MimeHeaders, PartType};
use std::borrow::Cow;
use std::num::NonZeroU32;

/// Whether rendering `names` needs the message's content.
pub fn needs_content(names: &[MessageDataItemName]) -> bool {
    names.iter().any(|n| {
        !matches!(
            n,
            MessageDataItemName::Flags
                | MessageDataItemName::Uid
                | MessageDataItemName::InternalDate
                | MessageDataItemName::Rfc822Size
        )
    })
}

/// Whether fetching `names` sets `\Seen` (a body fetched without PEEK, RFC822, RFC822.TEXT).
pub fn marks_seen(names: &[MessageDataItemName]) -> bool {
    names.iter().any(|n| {
        matches!(
            n,
            MessageDataItemName::BodyExt { peek: false, .. }
                | MessageDataItemName::Rfc822
                | MessageDataItemName::Rfc822Text
        )
    })
}

/// The keyword of a message delivered to the primary, kept for `keep_after_delivery`.
pub const DELIVERED: &str = "$Delivered";

/// [`DELIVERED`] as a flag.
pub fn delivered() -> Flag<'static> {
    Flag::Keyword(Atom::try_from(DELIVERED).unwrap_or_else(|_| unreachable!("a valid atom")))
}

/// The flags of a message as FETCH shows them.
pub fn flags(m: &Held) -> Vec<FlagFetch<'static>> {
    let mut f = Vec::new();
    if m.seen {
        f.push(FlagFetch::Flag(Flag::Seen));
    }
    if m.flagged {
        f.push(FlagFetch::Flag(Flag::Flagged));
    }
    if m.deleted {
        f.push(FlagFetch::Flag(Flag::Deleted));
    }
    if m.delivered {
        f.push(FlagFetch::Flag(delivered()));
    }
    f
}

/// The items for one message. `raw` is its content (None when no item needs it); `uid`
/// adds UID for UID FETCH.
pub fn render(
    m: &Held,
    names: &[MessageDataItemName],
    raw: Option<&[u8]>,
    uid: bool,
) -> Vec<MessageDataItem<'static>> {
    let parsed = raw.and_then(|r| MessageParser::default().parse(r).map(|p| (r, p)));
    let mut out = Vec::new();
    if uid && !names.contains(&MessageDataItemName::Uid) {
        out.push(MessageDataItem::Uid(nz(m.uid)));
    }
    for name in names {
        let item = match name {
            MessageDataItemName::Flags => MessageDataItem::Flags(flags(m)),
            MessageDataItemName::Uid => MessageDataItem::Uid(nz(m.uid)),
            MessageDataItemName::InternalDate => MessageDataItem::InternalDate(internal_date(m)),
            MessageDataItemName::Rfc822Size => {
                MessageDataItem::Rfc822Size(u32::try_from(m.size).unwrap_or(u32::MAX))
            }
            MessageDataItemName::Envelope => match &parsed {
                Some((_, p)) => MessageDataItem::Envelope(envelope(p)),
                None => continue,
            },
            MessageDataItemName::BodyStructure | MessageDataItemName::Body => match &parsed {
                Some((_, p)) => {
                    let s = structure(p, p.root_part());
                    if *name == MessageDataItemName::Body {
                        MessageDataItem::Body(s)
                    } else {
                        MessageDataItem::BodyStructure(s)
                    }
                }
                None => continue,
            },
            MessageDataItemName::BodyExt {
                section, partial, ..
            } => {
                let Some((r, p)) = &parsed else { continue };
                let bytes = section_bytes(r, p, section.as_ref());
                let (origin, bytes) = match partial {
                    Some((start, len)) => {
                        let s = (*start as usize).min(bytes.len());
                        let e = s.saturating_add(len.get() as usize).min(bytes.len());
                        (Some(*start), &bytes[s..e])
                    }
                    None => (None, &bytes[..]),
                };
                MessageDataItem::BodyExt {
                    section: section
                        .clone()
                        .map(|s| imap_next::imap_types::ToStatic::to_static(&s)),
                    origin,
                    data: nstring_bytes(bytes),
                }
            }
            MessageDataItemName::Rfc822 => match &parsed {
                Some((r, _)) => MessageDataItem::Rfc822(nstring_bytes(r)),
                None => continue,
            },
            MessageDataItemName::Rfc822Header => match &parsed {
                Some((r, _)) => MessageDataItem::Rfc822Header(nstring_bytes(header_of(r))),
                None => continue,
            },
            MessageDataItemName::Rfc822Text => match &parsed {
                Some((r, _)) => {
                    MessageDataItem::Rfc822Text(nstring_bytes(&r[super::mailbox::body_start(r)..]))
                }
                None => continue,
            },
            _ => continue,
        };
        out.push(item);
    }
    out
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

fn internal_date(m: &Held) -> DateTime {
    let t = chrono::DateTime::from_timestamp_millis(m.received_at_ms - m.received_at_ms % 1000)
        .unwrap_or_default()
        .fixed_offset();
    DateTime::try_from(t).unwrap_or_else(|_| {
        DateTime::try_from(chrono::DateTime::UNIX_EPOCH.fixed_offset())
            .unwrap_or_else(|_| unreachable!("the epoch is a valid IMAP date"))
    })
}

/// Bytes as a literal (NUL, which no IMAP4rev1 literal may hold, is sent as a space).
fn nstring_bytes(b: &[u8]) -> NString<'static> {
    let lit = Literal::try_from(b.to_vec()).unwrap_or_else(|_| {
        let clean: Vec<u8> = b.iter().map(|&c| if c == 0 { b' ' } else { c }).collect();
        Literal::try_from(clean).unwrap_or_else(|_| unreachable!("no NUL is left"))
    });
    NString(Some(IString::Literal(lit)))
}

/// Text as a string (quoted when it can be, else a literal); NIL for none.
fn nstring(s: Option<&str>) -> NString<'static> {
    match s {
        Some(s) => NString::try_from(s.replace('\0', " ")).unwrap_or(NString(None)),
        None => NString(None),
    }
}

fn istring(s: &str) -> IString<'static> {
    IString::try_from(s.replace('\0', " ")).unwrap_or_else(|_| {
        IString::try_from("x".to_string()).unwrap_or_else(|_| unreachable!("plain text"))
    })
}

/// The header of a message or part: up to and including the empty line.
fn header_of(raw: &[u8]) -> &[u8] {
    &raw[..super::mailbox::body_start(raw)]
}

fn envelope(p: &Message) -> Envelope<'static> {
    let raw = |name: &'static str| p.header_raw(name).map(str::trim);
    let addrs = |a: Option<&mail_parser::Address>| -> Vec<Address<'static>> {
        a.into_iter()
            .flat_map(|a| a.iter())
            .filter_map(|a| {
                let (mailbox, host) = a.address()?.rsplit_once('@')?;
                Some(Address {
                    name: nstring(a.name()),
                    adl: NString(None),
                    mailbox: nstring(Some(mailbox)),
                    host: nstring(Some(host)),
                })
            })
            .collect()
    };
    let from = addrs(p.from());
    let sender = match p.sender() {
        Some(s) => addrs(Some(s)),
        None => from.clone(),
    };
    let reply_to = match p.reply_to() {
        Some(r) => addrs(Some(r)),
        None => from.clone(),
    };
    Envelope {
        date: nstring(raw("Date")),
        subject: nstring(raw("Subject")),
        from,
        sender,
        reply_to,
        to: addrs(p.to()),
        cc: addrs(p.cc()),
        bcc: addrs(p.bcc()),
        in_reply_to: nstring(raw("In-Reply-To")),
        message_id: nstring(raw("Message-ID")),
    }
}

/// BODYSTRUCTURE of a part and what it contains.
fn structure(p: &Message, part: &MessagePart) -> BodyStructure<'static> {
    let ct = part.content_type();
    let (ctype, subtype) = match ct {
        Some(c) => (
            c.ctype().to_ascii_lowercase(),
            c.subtype().unwrap_or("").to_ascii_lowercase(),
        ),
        None => ("text".into(), "plain".into()),
    };
    let params: Vec<(IString<'static>, IString<'static>)> = ct
        .and_then(|c| c.attributes())
        .into_iter()
        .flatten()
        .map(|a| (istring(&a.name.to_ascii_lowercase()), istring(&a.value)))
        .collect();
    if let PartType::Multipart(children) = &part.body {
        let bodies: Vec<BodyStructure<'static>> = children
            .iter()
            .filter_map(|id| p.parts.get(*id as usize))
            .map(|c| structure(p, c))
            .collect();
        if let Ok(bodies) = Vec1::try_from(bodies) {
            return BodyStructure::Multi {
                bodies,
                subtype: istring(if subtype.is_empty() {
                    "mixed"
                } else {
                    &subtype
                }),
                extension_data: None,
            };
        }
    }
    let raw = p.raw_message();
    let start = (part.offset_body as usize).min(raw.len());
    let end = (part.offset_end as usize).clamp(start, raw.len());
    let content = &raw[start..end];
    let encoding = part
        .content_transfer_encoding()
        .unwrap_or("7bit")
        .to_ascii_lowercase();
    let basic = BasicFields {
        parameter_list: params,
        id: nstring(part.content_id()),
        description: nstring(part.content_description()),
        content_transfer_encoding: istring(&encoding),
        size: u32::try_from(content.len()).unwrap_or(u32::MAX),
    };
    let lines = u32::try_from(content.iter().filter(|&&b| b == b'\n').count()).unwrap_or(u32::MAX);
    let specific = if ctype.as_str() == "text" || ct.is_none() {
        SpecificFields::Text {
            subtype: istring(if subtype.is_empty() {
                "plain"
            } else {
                &subtype
            }),
            number_of_lines: lines,
        }
    } else {
        SpecificFields::Basic {
            r#type: istring(&ctype),
            subtype: istring(if subtype.is_empty() {
                "octet-stream"
            } else {
                &subtype
            }),
        }
    };
    BodyStructure::Single {
        body: Body { basic, specific },
        extension_data: None,
    }
}

/// The part a section's part number names: `1.2` is the second child of the first; a
/// message that is not multipart is its own part 1.
fn find_part<'p>(p: &'p Message<'p>, number: &Part) -> Option<&'p MessagePart<'p>> {
    let mut part = p.root_part();
    for n in number.0.as_ref() {
        let i = n.get() as usize - 1;
        part = match &part.body {
            PartType::Multipart(children) => p.parts.get(*children.get(i)? as usize)?,
            _ if i == 0 => part,
            _ => return None,
        };
    }
    Some(part)
}

/// The bytes a section names (empty when the message has no such part).
fn section_bytes<'r>(raw: &'r [u8], p: &Message, section: Option<&Section>) -> Cow<'r, [u8]> {
    let whole = part_bytes(raw, p, section);
    match section {
        Some(Section::HeaderFields(_, names)) => {
            Cow::Owned(filter_header(whole, names.as_ref(), true))
        }
        Some(Section::HeaderFieldsNot(_, names)) => {
            Cow::Owned(filter_header(whole, names.as_ref(), false))
        }
        _ => Cow::Borrowed(whole),
    }
}

/// The bytes of the part (or header) a section names.
fn part_bytes<'r>(raw: &'r [u8], p: &Message, section: Option<&Section>) -> &'r [u8] {
    let range = |from: u32, to: u32| {
        let s = (from as usize).min(raw.len());
        &raw[s..(to as usize).clamp(s, raw.len())]
    };
    let body = |part: &MessagePart| range(part.offset_body, part.offset_end);
    let header = |part: &MessagePart| range(part.offset_header, part.offset_body);
    let root = p.root_part();
    match section {
        None => raw,
        Some(Section::Header(None))
        | Some(Section::HeaderFields(None, _))
        | Some(Section::HeaderFieldsNot(None, _)) => header_of(raw),
        Some(Section::Text(None)) => body(root),
        Some(Section::Part(n)) => find_part(p, n).map_or(&[][..], body),
        Some(Section::Mime(n)) => find_part(p, n).map_or(&[][..], header),
        Some(Section::Header(Some(n)))
        | Some(Section::HeaderFields(Some(n), _))
        | Some(Section::HeaderFieldsNot(Some(n), _)) => find_part(p, n).map_or(&[][..], header),
        Some(Section::Text(Some(n))) => find_part(p, n).map_or(&[][..], body),
    }
}

/// HEADER.FIELDS and HEADER.FIELDS.NOT: the header lines (with their continuations) whose
/// names are (or are not) listed, and the empty line.
fn filter_header(header: &[u8], names: &[AString], keep: bool) -> Vec<u8> {
    let wanted: Vec<String> = names
        .iter()
        .map(|n| String::from_utf8_lossy(n.as_ref()).to_ascii_lowercase())
        .collect();
    let mut out = Vec::new();
    let mut taking = false;
    for line in header.split_inclusive(|&b| b == b'\n') {
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        if !matches!(line.first(), Some(b' ' | b'\t')) {
            let name = line
                .split(|&b| b == b':')
                .next()
                .map(|n| String::from_utf8_lossy(n).trim().to_ascii_lowercase())
                .unwrap_or_default();
            taking = wanted.contains(&name) == keep;
        }
        if taking {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The header fields of a message, unfolded and decoded, one `name: value` line each, in
/// lower case: what SEARCH compares.
pub fn search_headers(raw: &[u8]) -> String {
    let Some(p) = MessageParser::default().parse_headers(raw) else {
        return String::new();
    };
    let mut out = String::new();
    for h in p.headers() {
        let value = match h.value() {
            mail_parser::HeaderValue::Text(t) => t.to_string(),
            mail_parser::HeaderValue::TextList(l) => l.join(" "),
            mail_parser::HeaderValue::Address(a) => a
                .iter()
                .map(|a| format!("{} <{}>", a.name().unwrap_or(""), a.address().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(", "),
            _ => String::new(),
        };
        let rawv = p
            .raw_message()
            .get(h.offset_start() as usize..h.offset_end() as usize)
            .map(|b| String::from_utf8_lossy(b).replace(['\r', '\n'], ""))
            .unwrap_or_default();
        out.push_str(&format!(
            "{}: {} {}\n",
            h.name().to_ascii_lowercase(),
            value.to_lowercase(),
            rawv.trim().to_lowercase()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use imap_next::imap_types::core::AString;

    const MIXED: &[u8] = b"Received: from x\r\nFrom: \"Jo Doe\" <jo@x.test>\r\nTo: al@y.test\r\nSubject: Hi\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\npreamble\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhello\r\nthere\r\n--b\r\nContent-Type: application/pdf; name=\"a.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--b--\r\n";

    fn held() -> Held {
        Held {
            uid: 7,
            queue_id: "q".into(),
            received_at_ms: 1_700_000_000_123,
            size: MIXED.len() as u64,
            seen: false,
            flagged: true,
            delivered: false,
            deleted: false,
        }
    }

    fn body_item(section: Option<Section<'static>>, partial: Option<(u32, u32)>) -> Vec<u8> {
        let name = MessageDataItemName::BodyExt {
            section,
            partial: partial.map(|(a, b)| (a, NonZeroU32::new(b).unwrap())),
            peek: true,
        };
        match render(&held(), &[name], Some(MIXED), false).pop() {
            Some(MessageDataItem::BodyExt {
                data: NString(Some(s)),
                ..
            }) => s.as_ref().to_vec(),
            other => panic!("{other:?}"),
        }
    }

    fn part(n: &[u32]) -> Part {
        Part(
            Vec1::try_from(
                n.iter()
                    .map(|n| NonZeroU32::new(*n).unwrap())
                    .collect::<Vec<_>>(),
            )
            .unwrap(),
        )
    }

    #[test]
    fn sections_are_byte_ranges_of_the_stored_message() {
        assert_eq!(body_item(None, None), MIXED);
        assert_eq!(body_item(None, Some((0, 9))), b"Received:");
        assert_eq!(
            body_item(Some(Section::Part(part(&[1]))), None),
            b"hello\r\nthere"
        );
        assert_eq!(
            body_item(Some(Section::Part(part(&[2]))), None),
            b"JVBERi0="
        );
        assert!(body_item(Some(Section::Part(part(&[3]))), None).is_empty());
        let header = body_item(Some(Section::Header(None)), None);
        assert!(header.starts_with(b"Received:") && header.ends_with(b"\"b\"\r\n\r\n"));
        let names = Vec1::try_from(vec![
            AString::try_from("subject").unwrap(),
            AString::try_from("TO").unwrap(),
        ])
        .unwrap();
        let fields = body_item(Some(Section::HeaderFields(None, names)), None);
        assert_eq!(fields, b"To: al@y.test\r\nSubject: Hi\r\n\r\n");
        let mime = body_item(Some(Section::Mime(part(&[2]))), None);
        assert!(
            mime.starts_with(b"Content-Type: application/pdf"),
            "{}",
            String::from_utf8_lossy(&mime)
        );
    }

    #[test]
    fn structure_envelope_and_flags() {
        let names = [
            MessageDataItemName::Flags,
            MessageDataItemName::Envelope,
            MessageDataItemName::BodyStructure,
            MessageDataItemName::Rfc822Size,
        ];
        assert!(needs_content(&names) && !needs_content(&names[..1]));
        let items = render(&held(), &names, Some(MIXED), true);
        assert!(
            matches!(items[0], MessageDataItem::Uid(u) if u.get() == 7),
            "UID FETCH adds UID"
        );
        assert!(
            matches!(&items[1], MessageDataItem::Flags(f) if f == &vec![FlagFetch::Flag(Flag::Flagged)])
        );
        let MessageDataItem::Envelope(e) = &items[2] else {
            panic!()
        };
        assert_eq!(e.from[0].mailbox, NString::try_from("jo").unwrap());
        assert_eq!(e.from[0].name, NString::try_from("Jo Doe").unwrap());
        assert_eq!(e.subject, NString::try_from("Hi").unwrap());
        assert_eq!(e.sender, e.from, "Sender defaults to From");
        let MessageDataItem::BodyStructure(BodyStructure::Multi {
            bodies, subtype, ..
        }) = &items[3]
        else {
            panic!("{:?}", items[3])
        };
        assert_eq!(subtype, &IString::try_from("mixed").unwrap());
        let b = bodies.as_ref();
        assert!(
            matches!(&b[0], BodyStructure::Single { body: Body { specific: SpecificFields::Text { number_of_lines: 1, .. }, basic }, .. } if basic.size == 12)
        );
        assert!(
            matches!(&b[1], BodyStructure::Single { body: Body { specific: SpecificFields::Basic { .. }, basic }, .. } if basic.size == 8)
        );
        assert!(matches!(items[4], MessageDataItem::Rfc822Size(n) if n as usize == MIXED.len()));
    }

    #[test]
    fn what_marks_a_message_seen() {
        let body = |peek| MessageDataItemName::BodyExt {
            section: None,
            partial: None,
            peek,
        };
        assert!(!marks_seen(&[body(true), MessageDataItemName::Flags]));
        assert!(marks_seen(&[body(false)]));
        assert!(marks_seen(&[MessageDataItemName::Rfc822]));
    }

    #[test]
    fn search_headers_are_decoded_and_lower_case() {
        let h = search_headers(
            b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nFrom: Jo <JO@x.test>\r\n\r\nx",
        );
        assert!(h.contains("subject: grüße"), "{h}");
        assert!(h.contains("from: jo <jo@x.test>"), "{h}");
    }
}
