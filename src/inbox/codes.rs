//! One-time login codes (`mx2 inbox invite`): a random code of 100 bits, written in four
//! groups of five letters and digits that cannot be mistaken for each other
//! (`k7mqz-…`), mailed to the user's alternate address. The store keeps only its SHA-256
//! (hex) with an expiry: a code this random cannot be guessed from its hash, so a slow
//! password hash (argon2id) would add cost at every login and no safety (decision 34).

use rand_core::{OsRng, RngCore};

/// 32 symbols (5 bits each), without `l`, `o`, `0` and `1`.
const ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";
/// Groups and their length: 20 symbols, 100 bits.
const GROUPS: usize = 4;
const GROUP: usize = 5;

/// A new code, e.g. `k7mqz-a2bcd-xy9pe-rt4wn`.
pub fn generate() -> String {
    let mut bytes = [0u8; GROUPS * GROUP];
    OsRng.fill_bytes(&mut bytes);
    let groups: Vec<String> = bytes
        .chunks(GROUP)
        .map(|g| {
            // 256 is a multiple of 32: every symbol is equally likely.
            g.iter()
                .map(|b| char::from(ALPHABET[usize::from(b & 31)]))
                .collect()
        })
        .collect();
    groups.join("-")
}

/// Whether `password` has a code's shape (so a password is not looked up as a code).
pub fn looks_like(password: &[u8]) -> bool {
    password.len() == GROUPS * (GROUP + 1) - 1
        && password.split(|&b| b == b'-').all(|g| {
            g.len() == GROUP && g.iter().all(|b| ALPHABET.contains(&b.to_ascii_lowercase()))
        })
}

/// What the store keeps of a code: the SHA-256 of its lower-case text, in hex.
pub fn hash(code: &[u8]) -> String {
    let lower = code.to_ascii_lowercase();
    let digest = ring::digest::digest(&ring::digest::SHA256, &lower);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_their_shape_and_differ() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert_eq!(a.len(), 23);
        assert!(looks_like(a.as_bytes()) && looks_like(a.to_uppercase().as_bytes()));
        assert!(!looks_like(b"correct horse battery s"));
        assert!(!looks_like(b"abcde-abcde-abcde-abcd1"));
        assert!(!looks_like(b"abcde-abcde-abcde-abcde-"));
        assert_eq!(hash(a.as_bytes()), hash(a.to_uppercase().as_bytes()));
        assert_ne!(hash(a.as_bytes()), hash(b.as_bytes()));
        assert_eq!(
            hash(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
