//! How many SMS segments a message takes: GSM-7 when every character is in the GSM 03.38
//! alphabet (160 septets alone, 153 per part when concatenated; extension characters
//! count twice), otherwise UCS-2 (70 UTF-16 units alone, 67 per part).

/// The GSM 03.38 basic character set (without the escape character).
const GSM_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// The extension table: each takes an escape plus the character, two septets.
const GSM_EXTENDED: &str = "^{}\\[~]|€\u{c}";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Gsm7,
    Ucs2,
}

impl Encoding {
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Gsm7 => "GSM-7",
            Encoding::Ucs2 => "UCS-2",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segments {
    pub encoding: Encoding,
    /// Septets (GSM-7) or UTF-16 code units (UCS-2).
    pub units: usize,
    pub count: usize,
}

pub fn count(body: &str) -> Segments {
    let mut septets = 0;
    let mut gsm = true;
    for c in body.chars() {
        if GSM_BASIC.contains(c) {
            septets += 1;
        } else if GSM_EXTENDED.contains(c) {
            septets += 2;
        } else {
            gsm = false;
            break;
        }
    }
    let (encoding, units, single, multi) = if gsm {
        (Encoding::Gsm7, septets, 160, 153)
    } else {
        (Encoding::Ucs2, body.encode_utf16().count(), 70, 67)
    };
    let count = match units {
        0 => 0,
        n if n <= single => 1,
        n => n.div_ceil(multi),
    };
    Segments {
        encoding,
        units,
        count,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_table() {
        let cases: Vec<(String, Encoding, usize, usize)> = vec![
            ("".into(), Encoding::Gsm7, 0, 0),
            ("Thanks for calling!".into(), Encoding::Gsm7, 19, 1),
            ("a".repeat(160), Encoding::Gsm7, 160, 1),
            ("a".repeat(161), Encoding::Gsm7, 161, 2),
            ("a".repeat(306), Encoding::Gsm7, 306, 2),
            ("a".repeat(307), Encoding::Gsm7, 307, 3),
            ("€".repeat(80), Encoding::Gsm7, 160, 1),
            ("€".repeat(81), Encoding::Gsm7, 162, 2),
            ("Grüße aus Köln".into(), Encoding::Gsm7, 14, 1),
            ("Grüße aus Kraków".into(), Encoding::Ucs2, 16, 1),
            ("ß".repeat(160), Encoding::Gsm7, 160, 1),
            ("é".repeat(70), Encoding::Gsm7, 70, 1),
            ("ç".repeat(70), Encoding::Ucs2, 70, 1),
            ("ç".repeat(71), Encoding::Ucs2, 71, 2),
            ("ç".repeat(134), Encoding::Ucs2, 134, 2),
            ("ç".repeat(135), Encoding::Ucs2, 135, 3),
            ("👍".repeat(35), Encoding::Ucs2, 70, 1),
            ("👍".repeat(36), Encoding::Ucs2, 72, 2),
        ];
        for (body, enc, units, n) in cases {
            let s = count(&body);
            assert_eq!((s.encoding, s.units, s.count), (enc, units, n), "{body}");
        }
    }
}
