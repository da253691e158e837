//! SHA-256 of short messages (a response id's fields, a learner id) in one
//! call to the block function, without the streaming hasher.
//!
//! Clean hashes every kept record twice (its response id and its learner's
//! partition), each message a few dozen bytes. Through `Sha256::new` /
//! `update` / `finalize`, the hasher's buffering and padding cost as much as
//! the compression itself (SHA-NI); here the message is laid out once on the
//! stack, padded, and handed to [`sha2::compress256`] block by block. The
//! digest is the same (tests compare with [`Sha256`] on random inputs), so
//! ids and partitions do not change. Messages too long for the stack buffer
//! go through [`Sha256`].

use sha2::digest::generic_array::GenericArray;
use sha2::{Digest, Sha256};

/// SHA-256's initial state (FIPS 180-4, 5.3.3).
const H0: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// Bytes of message plus padding handled on the stack (four blocks).
const STACK: usize = 4 * 64;

/// SHA-256 of the concatenation of `parts`.
pub(crate) fn sha256_parts(parts: &[&[u8]]) -> [u8; 32] {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    // Message, the 0x80 byte and the 8-byte bit length.
    if len + 9 > STACK {
        let mut h = Sha256::new();
        for p in parts {
            h.update(p);
        }
        return h.finalize().into();
    }
    let mut buf = [0u8; STACK];
    let mut at = 0;
    for p in parts {
        buf[at..at + p.len()].copy_from_slice(p);
        at += p.len();
    }
    buf[at] = 0x80;
    let end = (len + 9).div_ceil(64) * 64;
    buf[end - 8..end].copy_from_slice(&((len as u64) * 8).to_be_bytes());
    let mut state = H0;
    for block in buf[..end].chunks_exact(64) {
        sha2::compress256(
            &mut state,
            std::slice::from_ref(GenericArray::from_slice(block)),
        );
    }
    let mut out = [0u8; 32];
    for (o, w) in out.chunks_exact_mut(4).zip(state) {
        o.copy_from_slice(&w.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reference(parts: &[&[u8]]) -> [u8; 32] {
        let mut h = Sha256::new();
        for p in parts {
            h.update(p);
        }
        h.finalize().into()
    }

    #[test]
    fn known_answers() {
        // FIPS 180-4 examples: "abc" and the empty message.
        assert_eq!(
            hex::encode(sha256_parts(&[b"a", b"bc"])),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex::encode(sha256_parts(&[])),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn every_length_around_the_block_edges() {
        let bytes: Vec<u8> = (0..400u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in 0..bytes.len() {
            let (a, b) = bytes[..len].split_at(len / 3);
            assert_eq!(sha256_parts(&[a, b]), reference(&[a, b]), "length {len}");
        }
    }

    proptest! {
        #[test]
        fn equals_the_streaming_hasher(parts in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..120), 0..5)) {
            let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            prop_assert_eq!(sha256_parts(&parts), reference(&parts));
        }
    }
}
