//! The DATA and BDAT reader on any input, split at any point: no panic, the same result, and
//! only CRLF line endings in what would be stored.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mx2::inbound::data::{Decoder, Mode};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, input)) = data.split_first() else { return };
    let at = usize::from(cut) % (input.len() + 1);
    for mode in [Mode::Dot, Mode::Chunks] {
        let mut whole = Decoder::new(mode, 1 << 16);
        let end = whole.feed(input);
        let whole = (end, whole.finish());
        let mut split = Decoder::new(mode, 1 << 16);
        let end = split.feed(&input[..at]).or_else(|| split.feed(&input[at..]).map(|n| n + at));
        assert_eq!(whole, (end, split.finish()));
        let body = &whole.1;
        for (i, &b) in body.iter().enumerate() {
            assert!(b != b'\n' || (i > 0 && body[i - 1] == b'\r'));
            assert!(b != b'\r' || body.get(i + 1) == Some(&b'\n'));
        }
    }
});
