//! Python's `ascii()` (and `str` of a float) of the JSON values a violation message quotes, so that
//! the engine words its messages exactly as the first (Python) rules did (`f"kind {ascii(kind)} …"`).
//! `ascii`, not `repr`: repr leaves alone the characters its Python's Unicode database calls
//! printable, which differs between Python versions; ascii escapes every non-ASCII character.

use crate::json_out::shortest_digits;
use serde_json::Value;

/// `ascii(value)` of the value orjson would have decoded.
pub fn py_ascii(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value);
    out
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => out.push_str(&i.to_string()),
            (_, Some(u)) => out.push_str(&u.to_string()),
            _ => out.push_str(&py_float(n.as_f64().unwrap_or(f64::NAN))),
        },
        Value::String(s) => out.push_str(&py_str_ascii(s)),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(entries) => {
            out.push('{');
            for (i, (key, item)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&py_str_ascii(key));
                out.push_str(": ");
                write_value(out, item);
            }
            out.push('}');
        }
    }
}

/// `str(value)` of a decoded JSON value as the rules use it: a string as itself, anything else as
/// its `ascii()` (the same as `str()` for numbers, booleans and None; a container is never what a
/// rule looks for).
pub fn py_str(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        _ => py_ascii(value),
    }
}

/// `ascii(s)` of a Python str: single quotes unless it holds a single quote and no double quote,
/// escapes for the quote, backslash, control and every non-ASCII character.
pub fn py_str_ascii(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        let code = c as u32;
        match c {
            _ if c == quote || c == '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            ' '..='~' => out.push(c),
            _ if code <= 0xff => out.push_str(&format!("\\x{code:02x}")),
            _ if code <= 0xffff => out.push_str(&format!("\\u{code:04x}")),
            _ => out.push_str(&format!("\\U{code:08x}")),
        }
    }
    out.push(quote);
    out
}

/// `repr(x)` (= `str(x)`) of a Python float: the shortest digits that round-trip, in positional
/// notation for exponents -4..16 (with ".0" when integral), else `d.ddde±XX`.
pub fn py_float(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.into();
    }
    // Shortest round-trip digits, a tie between two of them to the even one as Python does (std's
    // `{:e}` rounds it up: 562949953421312.25 is "…312.2" to Python, "…312.3" to std).
    let mut buffer = ryu::Buffer::new();
    let (negative, (digits, len), exp) = shortest_digits(buffer.format_finite(x));
    let sign = if negative { "-" } else { "" };
    let digits = std::str::from_utf8(&digits[..len]).expect("ASCII digits");
    if (-4..16).contains(&exp) {
        let point = exp + 1; // digits before the decimal point
        let body = if point <= 0 {
            format!("0.{}{digits}", "0".repeat((-point) as usize))
        } else if point as usize >= digits.len() {
            format!("{digits}{}.0", "0".repeat(point as usize - digits.len()))
        } else {
            format!(
                "{}.{}",
                &digits[..point as usize],
                &digits[point as usize..]
            )
        };
        return format!("{sign}{body}");
    }
    let mantissa = match digits.split_at(1) {
        (first, "") => first.to_owned(),
        (first, rest) => format!("{first}.{rest}"),
    };
    let esign = if exp < 0 { '-' } else { '+' };
    format!("{sign}{mantissa}e{esign}{:02}", exp.abs())
}

/// `f"{x:g}"` of a Python float: 6 significant digits without trailing zeros, in positional
/// notation for exponents -4..6, else `d.dddde±XX`.
pub fn py_format_g(x: f64) -> String {
    if !x.is_finite() {
        return py_float(x);
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0" } else { "0" }.into();
    }
    let sci = format!("{x:.5e}"); // rounded to 6 digits: its exponent is the one `g` decides by
    let (mantissa, exp) = sci.split_once('e').expect("LowerExp writes an exponent");
    let exp: i32 = exp.parse().expect("LowerExp writes an integer exponent");
    let trim = |digits: &str| -> String {
        if digits.contains('.') {
            digits
                .trim_end_matches('0')
                .trim_end_matches('.')
                .to_owned()
        } else {
            digits.to_owned()
        }
    };
    if (-4..6).contains(&exp) {
        return trim(&format!("{x:.*}", (5 - exp) as usize));
    }
    let esign = if exp < 0 { '-' } else { '+' };
    format!("{}e{esign}{:02}", trim(mantissa), exp.abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_as_python_quotes_them() {
        assert_eq!(py_str_ascii("req"), "'req'");
        assert_eq!(py_str_ascii("it's"), "\"it's\"");
        assert_eq!(py_str_ascii("'\""), "'\\'\"'");
        let controls = py_str_ascii("a\\b\tc\nd\re\u{1}\u{7f}");
        assert_eq!(controls, "'a\\\\b\\tc\\nd\\re\\x01\\x7f'");
        assert_eq!(py_str_ascii("é\u{a0}ü"), "'\\xe9\\xa0\\xfc'");
        assert_eq!(py_str_ascii("\u{200b}日本"), "'\\u200b\\u65e5\\u672c'");
        // Printable to Python 3.12 (Unicode 15), not to 3.11: ascii escapes it on both.
        assert_eq!(
            py_str_ascii("\u{31350}\u{1f600}"),
            "'\\U00031350\\U0001f600'"
        );
    }

    #[test]
    fn floats_as_python_prints_them() {
        for (x, text) in [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (-2.5, "-2.5"),
            (9e9, "9000000000.0"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (123456789012345.6, "123456789012345.6"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-1.7976931348623157e308, "-1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            // 562949953421312.25: "...312.2" and "...312.3" both read back as it; Python takes the
            // even one.
            (562_949_953_421_312.2, "562949953421312.2"),
            (1_152_921_504_606_846_976.0, "1.152921504606847e+18"),
        ] {
            assert_eq!(py_float(x), text, "{x}");
        }
    }

    #[test]
    fn g_and_fixed_formats_as_python_writes_them() {
        for (x, text) in [
            (60.0, "60"),
            (0.5, "0.5"),
            (30.0, "30"),
            (0.001, "0.001"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (123456.0, "123456"),
            (1234567.0, "1.23457e+06"),
            (1234565.0, "1.23456e+06"),
            (999999.5, "1e+06"),
            (1.844_674_407_370_955e16, "1.84467e+16"),
            (-2.5e-7, "-2.5e-07"),
            (0.0, "0"),
            (-0.0, "-0"),
            (f64::INFINITY, "inf"),
        ] {
            assert_eq!(py_format_g(x), text, "{x}");
        }
        // `{x:.1f}`: Rust's fixed precision rounds the exact binary value, ties to even, as Python.
        for (x, text) in [
            (0.25, "0.2"),
            (0.75, "0.8"),
            (-0.04, "-0.0"),
            (1e20, "100000000000000000000.0"),
        ] {
            assert_eq!(format!("{x:.1}"), text, "{x}");
        }
    }

    #[test]
    fn values_as_python_writes_them() {
        let value: Value =
            serde_json::from_str(r#"{"b": [1, 2.0, true, null], "a": {"x": "y"}}"#).unwrap();
        assert_eq!(
            py_ascii(&value),
            "{'b': [1, 2.0, True, None], 'a': {'x': 'y'}}"
        );
        let big: Value = serde_json::from_str("18446744073709551616").unwrap();
        assert_eq!(py_ascii(&big), "1.8446744073709552e+19");
    }
}
