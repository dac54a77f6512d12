//! Byte-level shortcuts for the router's validate-only pass over the common infer body:
//! they answer "certainly valid" or "don't know", never "invalid", so anything unusual
//! (escapes, extra fields, nesting, integer datatypes, huge numbers) takes the full
//! serde decode, which also words every error. Property-tested against that decode
//! (`shared/tests/decode.rs`).

use super::{InputSpec, check_shape};

/// Whether `body` is an infer request that [`super::decode_infer`] certainly accepts for
/// `input`: a JSON object with `inputs` (one tensor with exactly `name`, `shape`,
/// `datatype` and `data`, in any order) and optionally a plain `id`; the name is the
/// model's, the datatype a float one, the shape right for the model, and `data` a flat
/// array of as many plain numbers as the shape holds, each finite in `f32`. Strings must
/// be printable ASCII without escapes. `false` means "decode it to find out".
pub(super) fn plainly_valid(body: &[u8], input: &InputSpec<'_>) -> bool {
    envelope(&mut Cursor { b: body, i: 0 }, input).is_some()
}

fn envelope(c: &mut Cursor<'_>, input: &InputSpec<'_>) -> Option<()> {
    c.ws();
    c.eat(b'{')?;
    let (mut inputs, mut id) = (false, false);
    loop {
        let key = c.member_key()?;
        match key {
            b"inputs" if !inputs => {
                inputs = true;
                c.eat(b'[')?;
                c.ws();
                tensor(c, input)?;
                c.ws();
                c.eat(b']')?;
            }
            b"id" if !id => {
                id = true;
                c.string()?;
            }
            _ => return None,
        }
        if c.member_end()? {
            break;
        }
    }
    c.ws();
    (inputs && c.i == c.b.len()).then_some(())
}

/// One input tensor object; checks it against `input`.
fn tensor(c: &mut Cursor<'_>, input: &InputSpec<'_>) -> Option<()> {
    c.eat(b'{')?;
    let mut shape: Option<([i64; 2], usize)> = None;
    let (mut name, mut float, mut count) = (false, false, None);
    loop {
        let key = c.member_key()?;
        match key {
            b"name" if !name => {
                name = true;
                if c.string()? != input.name.as_bytes() {
                    return None;
                }
            }
            b"datatype" if !float => {
                float = matches!(c.string()?, b"FP32" | b"FP64" | b"FP16" | b"BF16");
                if !float {
                    return None;
                }
            }
            b"shape" if shape.is_none() => shape = Some(dims(c)?),
            b"data" if count.is_none() => {
                // Flat: the first `]` closes it (a nested or odd array fails the count).
                let start = c.i;
                let end = start + c.b[start..].iter().position(|&x| x == b']')?;
                // ASCII only is accepted, so no separate UTF-8 check is needed.
                count = Some(flat_finite_count(&c.b[start..=end])?);
                c.i = end + 1;
            }
            _ => return None,
        }
        if c.member_end()? {
            break;
        }
    }
    let (dims, n) = shape?;
    let rows = check_shape(&dims[..n], input).ok()?;
    (name && float && count? == rows.saturating_mul(input.dim)).then_some(())
}

/// A shape of one or two plain non-negative integers.
fn dims(c: &mut Cursor<'_>) -> Option<([i64; 2], usize)> {
    c.eat(b'[')?;
    let mut dims = [0i64; 2];
    let mut n = 0;
    loop {
        c.ws();
        if n == dims.len() {
            return None;
        }
        dims[n] = c.small_uint()?;
        n += 1;
        c.ws();
        match c.next()? {
            b',' => {}
            b']' => return Some((dims, n)),
            _ => return None,
        }
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn ws(&mut self) {
        while matches!(self.b.get(self.i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn next(&mut self) -> Option<u8> {
        let x = *self.b.get(self.i)?;
        self.i += 1;
        Some(x)
    }

    fn eat(&mut self, want: u8) -> Option<()> {
        (self.next()? == want).then_some(())
    }

    /// An object member's key and its colon, with the spacing around them.
    fn member_key(&mut self) -> Option<&'a [u8]> {
        self.ws();
        let key = self.string()?;
        self.ws();
        self.eat(b':')?;
        self.ws();
        Some(key)
    }

    /// After a member's value: `true` at the object's closing brace, `false` after a
    /// comma (another member follows).
    fn member_end(&mut self) -> Option<bool> {
        self.ws();
        match self.next()? {
            b',' => Some(false),
            b'}' => Some(true),
            _ => None,
        }
    }

    /// A string of printable ASCII without escapes; its bytes between the quotes.
    fn string(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let start = self.i;
        loop {
            match self.next()? {
                b'"' => return Some(&self.b[start..self.i - 1]),
                b'\\' => return None,
                0x20..=0x7e => {}
                _ => return None,
            }
        }
    }

    /// A JSON integer without sign, fraction or exponent, of at most 18 digits.
    fn small_uint(&mut self) -> Option<i64> {
        let start = self.i;
        while self.b.get(self.i).is_some_and(u8::is_ascii_digit) {
            self.i += 1;
        }
        let digits = &self.b[start..self.i];
        if digits.is_empty() || digits.len() > 18 || (digits.len() > 1 && digits[0] == b'0') {
            return None;
        }
        Some(
            digits
                .iter()
                .fold(0i64, |v, &d| v * 10 + i64::from(d - b'0')),
        )
    }
}

/// How many numbers `b` holds when it is a flat JSON array of well-formed JSON numbers
/// each certainly finite when converted to `f32`; `None` for anything else (nested
/// arrays, other values, malformed numbers, numbers too large to tell at a glance).
///
/// A number with `i` digits before its point and exponent `e` is below `10^(i + e)`;
/// with `i + e ≤ 38` that is below `f32::MAX` (≈ 3.4 × 10^38), so it is finite in `f32`
/// whatever the rounding.
pub(super) fn flat_finite_count(b: &[u8]) -> Option<usize> {
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && matches!(b[*i], b' ' | b'\t' | b'\n' | b'\r') {
            *i += 1;
        }
    };
    skip_ws(&mut i);
    if b.get(i) != Some(&b'[') {
        return None;
    }
    i += 1;
    skip_ws(&mut i);
    if b.get(i) == Some(&b']') {
        return Some(0);
    }
    let mut count = 0usize;
    loop {
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        let int_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let int_digits = i - int_start;
        if int_digits == 0 || (int_digits > 1 && b[int_start] == b'0') {
            return None; // not a number (an array, a string, null, ...) or a leading zero
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            let frac_start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            if i == frac_start {
                return None;
            }
        }
        let mut exponent: i64 = 0;
        if matches!(b.get(i), Some(b'e' | b'E')) {
            i += 1;
            let negative = match b.get(i) {
                Some(b'-') => {
                    i += 1;
                    true
                }
                Some(b'+') => {
                    i += 1;
                    false
                }
                _ => false,
            };
            let exp_start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                exponent = exponent
                    .saturating_mul(10)
                    .saturating_add(i64::from(b[i] - b'0'));
                i += 1;
            }
            if i == exp_start {
                return None;
            }
            if negative {
                exponent = -exponent;
            }
        }
        if int_digits as i64 + exponent > 38 {
            return None;
        }
        count += 1;
        skip_ws(&mut i);
        match b.get(i) {
            Some(b',') => {
                i += 1;
                skip_ws(&mut i);
            }
            Some(b']') => {
                i += 1;
                skip_ws(&mut i);
                return (i == b.len()).then_some(count);
            }
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> InputSpec<'static> {
        InputSpec {
            name: "features",
            dim: 3,
            output_name: "score",
            max_rows: 4,
        }
    }

    #[test]
    fn common_bodies_are_plainly_valid() {
        for body in [
            r#"{"inputs":[{"name":"features","shape":[1,3],"datatype":"FP32","data":[0.5,-1,2e3]}]}"#,
            r#" { "id" : "r-1", "inputs" : [ { "data" : [ 1 , 2 , 3 , 4 , 5 , 6 ] , "datatype" : "FP64", "shape" : [ 2 , 3 ], "name" : "features" } ] } "#,
            r#"{"inputs":[{"name":"features","shape":[3],"datatype":"BF16","data":[0,0,0]}]}"#,
        ] {
            assert!(plainly_valid(body.as_bytes(), &spec()), "{body}");
        }
    }

    #[test]
    fn anything_unusual_is_left_to_the_decoder() {
        for body in [
            // Wrong name, datatype, shape, count, nesting; integer types; too many rows.
            r#"{"inputs":[{"name":"other","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]}"#,
            r#"{"inputs":[{"name":"features","shape":[1,3],"datatype":"INT32","data":[1,2,3]}]}"#,
            r#"{"inputs":[{"name":"features","shape":[1,4],"datatype":"FP32","data":[1,2,3]}]}"#,
            r#"{"inputs":[{"name":"features","shape":[1,3],"datatype":"FP32","data":[1,2]}]}"#,
            r#"{"inputs":[{"name":"features","shape":[1,3],"datatype":"FP32","data":[[1,2,3]]}]}"#,
            r#"{"inputs":[{"name":"features","shape":[5,3],"datatype":"FP32","data":[1,2,3]}]}"#,
            r#"{"inputs":[{"name":"features","shape":[01,3],"datatype":"FP32","data":[1,2,3]}]}"#,
            // Malformed numbers and JSON.
            r#"{"inputs":[{"name":"features","shape":[1,3],"datatype":"FP32","data":[01,2,3]}]}"#,
            r#"{"inputs":[{"name":"features","shape":[1,3],"datatype":"FP32","data":[1.,2,3]}]}"#,
            r#"{"inputs":[{"name":"features","shape":[1,3],"datatype":"FP32","data":[1,2,3e]}]}"#,
            r#"{"inputs":[{"name":"features","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]"#,
            r#"{"inputs":[{"name":"features","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]}x"#,
            // Beyond f32's range at a glance, escapes, extra or repeated fields.
            r#"{"inputs":[{"name":"features","shape":[1,3],"datatype":"FP32","data":[1,2,4e38]}]}"#,
            r#"{"inputs":[{"name":"feat\u0075res","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]}"#,
            r#"{"inputs":[{"name":"features","shape":[1,3],"datatype":"FP32","data":[1,2,3],"parameters":{}}]}"#,
            r#"{"inputs":[{"name":"features","shape":[1,3],"datatype":"FP32","data":[1,2,3]}],"outputs":[]}"#,
            r#"{"id":"a","id":"b","inputs":[{"name":"features","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]}"#,
            r#"{"inputs":[{"name":"features","name":"features","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]}"#,
            r#"{"inputs":[{"name":"features","shape":[1,3],"datatype":"FP32","data":[1,2,3]},{}]}"#,
            r#"{"id":"x"}"#,
        ] {
            assert!(!plainly_valid(body.as_bytes(), &spec()), "{body}");
        }
    }

    #[test]
    fn flat_counts() {
        assert_eq!(flat_finite_count(b"[]"), Some(0));
        assert_eq!(flat_finite_count(b" [ 1 , -0.5e-3 ,2E+5 ] "), Some(3));
        assert_eq!(flat_finite_count(b"[9e37, 99e36]"), Some(2));
        for odd in [
            "[1,]", "[,1]", "[-]", "[1e400]", "[[1]]", "[\"1\"]", "[00]", "[1.e2]", "[1",
        ] {
            assert_eq!(flat_finite_count(odd.as_bytes()), None, "{odd}");
        }
    }
}
