//! Code point classes for the pre-tokenizers, and GPT-2's byte <-> character map.
//!
//! The category data is Unicode 15.1 (see `gen_tables.py`), the version llama.cpp's tables were
//! generated from, so `\p{L}`, `\p{N}`, ... split text exactly as llama.cpp does. Whitespace is the
//! Unicode `White_Space` property (what llama.cpp's `\s` means).

mod tables;

/// Per-code-point flags: the low 4 bits are the class (never 0 for a real code point), bit 4 is
/// whitespace. `0` means "outside the current piece" in the splitters.
pub(crate) type Flags = u8;

pub(crate) const OUTSIDE: Flags = 0;
pub(crate) const UNDEFINED: Flags = 1;
pub(crate) const NUMBER: Flags = 2;
pub(crate) const LETTER: Flags = 3;
pub(crate) const SEPARATOR: Flags = 4;
pub(crate) const MARK: Flags = 5;
pub(crate) const PUNCTUATION: Flags = 6;
pub(crate) const SYMBOL: Flags = 7;
pub(crate) const CONTROL: Flags = 8;
pub(crate) const WHITESPACE: Flags = 0x10;
pub(crate) const CLASS_MASK: Flags = 0x0f;

/// Table class index (as generated) -> class flag.
const CLASS_OF_INDEX: [Flags; 8] = [UNDEFINED, NUMBER, LETTER, SEPARATOR, MARK, PUNCTUATION, SYMBOL, CONTROL];

const fn ascii_flags() -> [Flags; 128] {
    let mut t = [0u8; 128];
    let mut c = 0usize;
    while c < 128 {
        let b = c as u8;
        t[c] = if b.is_ascii_digit() {
            NUMBER
        } else if b.is_ascii_alphabetic() {
            LETTER
        } else if b == b' ' {
            SEPARATOR | WHITESPACE
        } else if b < 0x20 || b == 0x7f {
            if b >= 0x09 && b <= 0x0d {
                CONTROL | WHITESPACE
            } else {
                CONTROL
            }
        } else {
            match b {
                b'$' | b'+' | b'<' | b'=' | b'>' | b'^' | b'`' | b'|' | b'~' => SYMBOL,
                _ => PUNCTUATION,
            }
        };
        c += 1;
    }
    t
}

static ASCII: [Flags; 128] = ascii_flags();

/// Unicode `White_Space`.
#[inline]
pub(crate) fn is_whitespace(cp: u32) -> bool {
    matches!(cp, 0x09..=0x0d | 0x20 | 0x85 | 0xa0 | 0x1680 | 0x2000..=0x200a | 0x2028 | 0x2029 | 0x202f | 0x205f | 0x3000)
}

/// The flags of a code point.
#[inline]
pub(crate) fn flags(cp: u32) -> Flags {
    if cp < 128 {
        return ASCII[cp as usize];
    }
    flags_slow(cp)
}

fn flags_slow(cp: u32) -> Flags {
    if cp >= 0x110000 {
        return UNDEFINED;
    }
    let r = &tables::RANGES;
    // Last range whose start <= cp (the first range starts at 0).
    let i = r.partition_point(|&e| (e >> 3) <= cp) - 1;
    let class = CLASS_OF_INDEX[(r[i] & 7) as usize];
    if is_whitespace(cp) {
        class | WHITESPACE
    } else {
        class
    }
}

#[inline]
pub(crate) fn class(f: Flags) -> Flags {
    f & CLASS_MASK
}

/// GPT-2's byte-level alphabet: byte -> the character that stands for it in token texts.
pub(crate) const fn byte_to_char_table() -> [char; 256] {
    let mut t = ['\0'; 256];
    let mut n = 0u32;
    let mut b = 0usize;
    while b < 256 {
        let printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
        t[b] = if printable {
            match char::from_u32(b as u32) {
                Some(c) => c,
                None => '\0',
            }
        } else {
            let c = match char::from_u32(256 + n) {
                Some(c) => c,
                None => '\0',
            };
            n += 1;
            c
        };
        b += 1;
    }
    t
}

pub(crate) static BYTE_TO_CHAR: [char; 256] = byte_to_char_table();

/// The 68 non-printable bytes, in increasing order; they stand as U+0100..=U+0143.
const fn high_to_byte_table() -> [u8; 68] {
    let mut t = [0u8; 68];
    let mut n = 0usize;
    let mut b = 0usize;
    while b < 256 {
        let printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
        if !printable {
            t[n] = b as u8;
            n += 1;
        }
        b += 1;
    }
    t
}

static HIGH_TO_BYTE: [u8; 68] = high_to_byte_table();

/// The byte a byte-level character stands for.
#[inline]
pub(crate) fn char_to_byte(c: char) -> Option<u8> {
    let cp = c as u32;
    match cp {
        0x21..=0x7e | 0xa1..=0xac | 0xae..=0xff => Some(cp as u8),
        0x100..=0x143 => Some(HIGH_TO_BYTE[(cp - 0x100) as usize]),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(flags('a' as u32), LETTER);
        assert_eq!(flags('7' as u32), NUMBER);
        assert_eq!(flags(' ' as u32), SEPARATOR | WHITESPACE);
        assert_eq!(flags('\n' as u32), CONTROL | WHITESPACE);
        assert_eq!(flags('_' as u32), PUNCTUATION);
        assert_eq!(flags('~' as u32), SYMBOL);
        assert_eq!(class(flags('é' as u32)), LETTER);
        assert_eq!(class(flags('我' as u32)), LETTER);
        assert_eq!(class(flags('½' as u32)), NUMBER);
        assert_eq!(class(flags('٣' as u32)), NUMBER);
        assert_eq!(class(flags('\u{0301}' as u32)), MARK);
        assert_eq!(class(flags('।' as u32)), PUNCTUATION);
        assert_eq!(class(flags('🦙' as u32)), SYMBOL);
        assert_eq!(flags(0xa0), SEPARATOR | WHITESPACE);
        assert_eq!(flags(0x3000), SEPARATOR | WHITESPACE);
        assert_eq!(flags(0x85), CONTROL | WHITESPACE);
        assert_eq!(flags(0x200b), CONTROL); // ZERO WIDTH SPACE is Cf, not White_Space
        assert_eq!(flags(0xe000), CONTROL); // private use
        assert_eq!(flags(0xd800), CONTROL); // surrogate
        assert_eq!(flags(0x0378), UNDEFINED); // unassigned
        assert_eq!(flags(0x10ffff), UNDEFINED);
        assert_eq!(flags(0x2ffc), SYMBOL); // new in 15.1
        assert_eq!(flags(0x1c89), UNDEFINED); // new in 16.0
                                              // the ASCII fast path agrees with the table
        for cp in 0..128u32 {
            let slow = {
                let r = &tables::RANGES;
                let i = r.partition_point(|&e| (e >> 3) <= cp) - 1;
                let c = CLASS_OF_INDEX[(r[i] & 7) as usize];
                if is_whitespace(cp) {
                    c | WHITESPACE
                } else {
                    c
                }
            };
            assert_eq!(flags(cp), slow, "cp {cp:#x}");
        }
    }

    #[test]
    fn byte_map_round_trips() {
        let mut seen = std::collections::HashSet::new();
        for b in 0..=255u8 {
            let c = BYTE_TO_CHAR[b as usize];
            assert_ne!(c, '\0');
            assert!(seen.insert(c));
            assert_eq!(char_to_byte(c), Some(b));
        }
        assert_eq!(BYTE_TO_CHAR[b' ' as usize], 'Ġ');
        assert_eq!(BYTE_TO_CHAR[b'\n' as usize], 'Ċ');
        assert_eq!(char_to_byte('a'), Some(b'a'));
        assert_eq!(char_to_byte('\u{144}'), None);
        assert_eq!(char_to_byte(' '), None);
    }
}
