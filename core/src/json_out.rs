//! JSON text written byte for byte as `orjson.dumps` (3.13) writes it: UTF-8 left as is, only `"`,
//! `\` and control characters escaped (`\b \t \n \f \r`, others `\u00xx`), floats in their shortest
//! round-trip digits, positional from 1e-5 up to below 1e16 (`100.0`, `0.00001`) and in exponent
//! form outside (`1e+16`, `1e-6`), not finite as null.

use crate::json_value::Value;

/// Which bytes a JSON string escapes: 0 none, else the letter of a short escape, or `u`.
static ESCAPES: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'u';
        b += 1;
    }
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table[b'\n' as usize] = b'n';
    table[b'\t' as usize] = b't';
    table[b'\r' as usize] = b'r';
    table[0x08] = b'b';
    table[0x0c] = b'f';
    table
};

pub fn write_str(out: &mut Vec<u8>, s: &str) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut run = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape = ESCAPES[b as usize];
        if escape == 0 {
            continue;
        }
        out.extend_from_slice(&bytes[run..i]);
        run = i + 1;
        if escape == b'u' {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            let (high, low) = (HEX[(b >> 4) as usize], HEX[(b & 15) as usize]);
            out.extend_from_slice(&[b'\\', b'u', b'0', b'0', high, low]);
        } else {
            out.extend_from_slice(&[b'\\', escape]);
        }
    }
    out.extend_from_slice(&bytes[run..]);
    out.push(b'"');
}

/// An integer's decimal digits.
pub fn write_int(out: &mut Vec<u8>, value: i128) {
    let mut digits = [0u8; 40];
    let mut at = digits.len();
    let mut rest = value.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if value < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&digits[at..]);
}

pub fn write_f64(out: &mut Vec<u8>, f: f64) {
    if !f.is_finite() {
        out.extend_from_slice(b"null");
        return;
    }
    let mut buffer = ryu::Buffer::new();
    let text = buffer.format_finite(f);
    if !text.contains('e') {
        // ryu writes positional notation exactly where orjson does, with the same digits
        out.extend_from_slice(text.as_bytes());
        return;
    }
    let (negative, digits, exp) = shortest_digits(text);
    let d = &digits.0[..digits.1];
    if negative {
        out.push(b'-');
    }
    out.push(d[0]);
    if d.len() > 1 {
        out.push(b'.');
        out.extend_from_slice(&d[1..]);
    }
    out.extend_from_slice(if exp >= 0 { b"e+" } else { b"e-" });
    write_int(out, exp.unsigned_abs() as i128);
}

/// Whether negative, the significant digits (no leading or trailing zero; "0" for zero) and the
/// decimal exponent of the first one, read from ryu's text ("1.5e-7", "123.45", "1e16", "-0.0").
pub(crate) fn shortest_digits(text: &str) -> (bool, ([u8; 24], usize), i32) {
    let (negative, text) = text.strip_prefix('-').map_or((false, text), |t| (true, t));
    let (mantissa, exp) = text.split_once(['e', 'E']).unwrap_or((text, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let int_len = mantissa.find('.').unwrap_or(mantissa.len()) as i32;
    let (mut digits, mut len, mut leading) = ([0u8; 24], 0, 0);
    for b in mantissa.bytes().filter(u8::is_ascii_digit) {
        if len == 0 && b == b'0' {
            leading += 1;
        } else if len < digits.len() {
            digits[len] = b;
            len += 1;
        }
    }
    while len > 0 && digits[len - 1] == b'0' {
        len -= 1;
    }
    if len == 0 {
        digits[0] = b'0';
        return (negative, (digits, 1), 0);
    }
    (negative, (digits, len), int_len - 1 - leading + exp)
}

/// A scalar as orjson writes it; an array or object (never asked for) as null.
pub fn write_scalar(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null | Value::Array(_) | Value::Object(_) => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Int(i) => write_int(out, *i as i128),
        Value::UInt(u) => write_int(out, *u as i128),
        Value::Float(f) => write_f64(out, *f),
        Value::Str(s) => write_str(out, s),
    }
}

/// The members of a JSON object written one after the other: `"key":` with the comma before it.
pub struct Members<'o> {
    pub out: &'o mut Vec<u8>,
    pub first: bool,
}

impl Members<'_> {
    pub fn key(&mut self, key: &str) -> &mut Vec<u8> {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        write_str(self.out, key);
        self.out.push(b':');
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(x: f64) -> String {
        let mut out = Vec::new();
        write_f64(&mut out, x);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn floats_as_orjson_writes_them() {
        let cases = [
            (1e16, "1e+16"),
            (1.5, "1.5"),
            (0.1, "0.1"),
            (1e-7, "1e-7"),
            (-0.0, "-0.0"),
            (1e15, "1000000000000000.0"),
            (1e-5, "0.00001"),
            (1e-6, "1e-6"),
            (1.2345678901234568e17, "1.2345678901234568e+17"),
            (5e-324, "5e-324"),
            (12345.678, "12345.678"),
            (100.0, "100.0"),
            (562949953421312.2, "562949953421312.2"),
            (0.0, "0.0"),
            (f64::NAN, "null"),
            (9999999999999998.0, "9999999999999998.0"),
            (0.000012345, "0.000012345"),
            (-1700000000.123456, "-1700000000.123456"),
            (-1e-7, "-1e-7"),
        ];
        for (x, want) in cases {
            assert_eq!(f(x), want);
        }
    }

    #[test]
    fn every_ascii_byte_escaped_as_orjson_escapes_it_anywhere_in_a_string() {
        for b in 0u8..0x80 {
            for at in 0..17 {
                let mut text = vec![b'a'; 17];
                text[at] = b;
                let s = std::str::from_utf8(&text).unwrap();
                let mut out = Vec::new();
                write_str(&mut out, s);
                let want: String = s
                    .chars()
                    .map(|c| match c {
                        '"' => "\\\"".to_string(),
                        '\\' => "\\\\".to_string(),
                        '\n' => "\\n".to_string(),
                        '\t' => "\\t".to_string(),
                        '\r' => "\\r".to_string(),
                        '\u{8}' => "\\b".to_string(),
                        '\u{c}' => "\\f".to_string(),
                        c if (c as u32) < 0x20 => format!("\\u{:04x}", c as u32),
                        c => c.to_string(),
                    })
                    .collect();
                assert_eq!(
                    String::from_utf8(out).unwrap(),
                    format!("\"{want}\""),
                    "byte {b:#x} at {at}"
                );
            }
        }
    }

    #[test]
    fn strings_as_orjson_writes_them() {
        let mut out = Vec::new();
        write_str(
            &mut out,
            "a\u{0}\u{8}\t\n\u{b}\u{c}\r\u{1f}\u{7f}\"\\/é\u{2028}",
        );
        assert_eq!(
            out,
            "\"a\\u0000\\b\\t\\n\\u000b\\f\\r\\u001f\u{7f}\\\"\\\\/é\u{2028}\"".as_bytes()
        );
    }
}
