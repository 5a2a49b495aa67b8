//! Protobuf wire format, by hand: varints, tags and length-delimited fields over byte slices.
//!
//! Why not generated code: etcd's messages are gogo-generated proto2 with "non-nullable" fields
//! that are always emitted (even when zero) and unpacked repeated fields; a byte-exact writer
//! needs that control anyway, and the handful of messages we touch fit in a few hundred lines.
//! Every length is checked against the bytes that are there, so decoding never over-reads and
//! never allocates more than its input.

/// What went wrong decoding, with the byte offset inside the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("protobuf byte {offset}: {problem}")]
pub struct WireError {
    pub offset: usize,
    pub problem: WireProblem,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireProblem {
    #[error("truncated varint")]
    TruncatedVarint,
    #[error("varint longer than 10 bytes")]
    VarintTooLong,
    /// A length-delimited field claims more bytes than remain.
    #[error("length {len} but only {remaining} bytes remain")]
    LengthBeyondEnd { len: u64, remaining: usize },
    #[error("truncated fixed-width field")]
    TruncatedFixed,
    /// Field number 0, or a group / reserved wire type (3, 4, 6, 7).
    #[error("invalid tag {0}")]
    BadTag(u64),
    /// A known field arrived with another wire type than its declaration.
    #[error("field {field} has unexpected wire type {wire_type}")]
    WrongWireType { field: u32, wire_type: u8 },
    /// A value does not fit its declared type (e.g. a bool that is not 0/1 is fine in protobuf,
    /// but an enum or u32 far out of range is not).
    #[error("field {field} out of range")]
    OutOfRange { field: u32 },
    /// Something the message requires is missing or inconsistent.
    #[error("{0}")]
    Invalid(&'static str),
}

impl WireError {
    /// The problem without the offset (for callers that report their own file offset).
    pub fn problem_text(&self) -> String {
        self.problem.to_string()
    }
}

/// One field's value as found on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

impl<'a> Value<'a> {
    pub fn wire_type(&self) -> u8 {
        match self {
            Value::Varint(_) => 0,
            Value::Fixed64(_) => 1,
            Value::Bytes(_) => 2,
            Value::Fixed32(_) => 5,
        }
    }
}

/// A decoded field: number, value, and where its tag started in the message.
#[derive(Debug, Clone, Copy)]
pub struct Field<'a> {
    pub number: u32,
    pub value: Value<'a>,
    pub offset: usize,
    /// Where the value itself starts (for a length-delimited field, its first data byte).
    pub value_offset: usize,
}

impl<'a> Field<'a> {
    fn wrong(&self) -> WireError {
        WireError {
            offset: self.offset,
            problem: WireProblem::WrongWireType {
                field: self.number,
                wire_type: self.value.wire_type(),
            },
        }
    }

    /// The value of a varint field (int32/int64/uint32/uint64/bool/enum).
    pub fn varint(&self) -> Result<u64, WireError> {
        match self.value {
            Value::Varint(v) => Ok(v),
            _ => Err(self.wrong()),
        }
    }

    pub fn u32(&self) -> Result<u32, WireError> {
        let v = self.varint()?;
        u32::try_from(v).map_err(|_| WireError {
            offset: self.offset,
            problem: WireProblem::OutOfRange { field: self.number },
        })
    }

    pub fn bool(&self) -> Result<bool, WireError> {
        Ok(self.varint()? != 0)
    }

    /// int64 is sent as the two's complement u64.
    pub fn i64(&self) -> Result<i64, WireError> {
        Ok(self.varint()? as i64)
    }

    pub fn bytes(&self) -> Result<&'a [u8], WireError> {
        match self.value {
            Value::Bytes(b) => Ok(b),
            _ => Err(self.wrong()),
        }
    }

    /// A string field; invalid UTF-8 is replaced (Go strings may hold any bytes).
    pub fn string(&self) -> Result<String, WireError> {
        Ok(String::from_utf8_lossy(self.bytes()?).into_owned())
    }

    /// Elements of a repeated varint field: unpacked (one varint) or packed (bytes).
    pub fn repeated_varint(&self, out: &mut Vec<u64>) -> Result<(), WireError> {
        match self.value {
            Value::Varint(v) => {
                out.push(v);
                Ok(())
            }
            Value::Bytes(b) => {
                let mut pos = 0;
                while pos < b.len() {
                    let (v, n) = read_varint(b, pos).map_err(|mut e| {
                        e.offset += self.offset;
                        e
                    })?;
                    out.push(v);
                    pos = n;
                }
                Ok(())
            }
            _ => Err(self.wrong()),
        }
    }
}

/// Reads the varint at `pos`; returns the value and the position after it.
pub fn read_varint(buf: &[u8], pos: usize) -> Result<(u64, usize), WireError> {
    let mut value: u64 = 0;
    for i in 0..10 {
        let Some(&b) = buf.get(pos + i) else {
            return Err(WireError {
                offset: pos,
                problem: WireProblem::TruncatedVarint,
            });
        };
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((value, pos + i + 1));
        }
    }
    Err(WireError {
        offset: pos,
        problem: WireProblem::VarintTooLong,
    })
}

/// The `N` bytes of a fixed-width value (fixed64, fixed32) at `pos`.
fn fixed<const N: usize>(buf: &[u8], pos: usize) -> Result<[u8; N], WireError> {
    buf.get(pos..pos + N)
        .and_then(|b| b.try_into().ok())
        .ok_or(WireError {
            offset: pos,
            problem: WireProblem::TruncatedFixed,
        })
}

/// Iterates the fields of one message.
pub struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
    failed: bool,
}

impl<'a> Fields<'a> {
    pub fn new(buf: &'a [u8]) -> Fields<'a> {
        Fields {
            buf,
            pos: 0,
            failed: false,
        }
    }

    fn next_field(&mut self) -> Result<Field<'a>, WireError> {
        let start = self.pos;
        let (tag, pos) = read_varint(self.buf, start)?;
        let number = tag >> 3;
        let wire_type = (tag & 7) as u8;
        if number == 0 || number > u64::from(u32::MAX >> 3) {
            return Err(WireError {
                offset: start,
                problem: WireProblem::BadTag(tag),
            });
        }
        let mut value_offset = pos;
        let (value, end) = match wire_type {
            0 => {
                let (v, end) = read_varint(self.buf, pos)?;
                (Value::Varint(v), end)
            }
            1 => (
                Value::Fixed64(u64::from_le_bytes(fixed(self.buf, pos)?)),
                pos + 8,
            ),
            2 => {
                let (len, data_start) = read_varint(self.buf, pos)?;
                let remaining = self.buf.len() - data_start;
                if len > remaining as u64 {
                    return Err(WireError {
                        offset: pos,
                        problem: WireProblem::LengthBeyondEnd { len, remaining },
                    });
                }
                let end = data_start + len as usize;
                value_offset = data_start;
                (Value::Bytes(&self.buf[data_start..end]), end)
            }
            5 => (
                Value::Fixed32(u32::from_le_bytes(fixed(self.buf, pos)?)),
                pos + 4,
            ),
            _ => {
                return Err(WireError {
                    offset: start,
                    problem: WireProblem::BadTag(tag),
                })
            }
        };
        self.pos = end;
        Ok(Field {
            number: number as u32,
            value,
            offset: start,
            value_offset,
        })
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<Field<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.buf.len() {
            return None;
        }
        let r = self.next_field();
        if r.is_err() {
            self.failed = true;
        }
        Some(r)
    }
}

/// Shifts the offset of an error from a nested message by where that message starts.
pub fn nested(base: usize) -> impl Fn(WireError) -> WireError {
    move |mut e| {
        e.offset += base;
        e
    }
}

// ---- writing ----

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn put_tag(out: &mut Vec<u8>, field: u32, wire_type: u8) {
    put_varint(out, (u64::from(field) << 3) | u64::from(wire_type));
}

/// A varint field, always written (gogo non-nullable style).
pub fn put_uint(out: &mut Vec<u8>, field: u32, v: u64) {
    put_tag(out, field, 0);
    put_varint(out, v);
}

pub fn put_bool(out: &mut Vec<u8>, field: u32, v: bool) {
    put_uint(out, field, u64::from(v));
}

pub fn put_int(out: &mut Vec<u8>, field: u32, v: i64) {
    put_uint(out, field, v as u64);
}

pub fn put_bytes(out: &mut Vec<u8>, field: u32, v: &[u8]) {
    put_tag(out, field, 2);
    put_varint(out, v.len() as u64);
    out.extend_from_slice(v);
}

/// Number of bytes `put_varint` writes for `v`.
pub fn varint_len(v: u64) -> usize {
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip() {
        for v in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v));
            assert_eq!(read_varint(&b, 0).unwrap(), (v, b.len()));
        }
    }

    #[test]
    fn errors_say_where_and_what() {
        let e = |offset, problem| WireError { offset, problem };
        let cases = [
            (WireProblem::TruncatedVarint, "truncated varint"),
            (WireProblem::VarintTooLong, "varint longer than 10 bytes"),
            (
                WireProblem::LengthBeyondEnd {
                    len: 100,
                    remaining: 1,
                },
                "length 100 but only 1 bytes remain",
            ),
            (WireProblem::TruncatedFixed, "truncated fixed-width field"),
            (WireProblem::BadTag(3), "invalid tag 3"),
            (
                WireProblem::WrongWireType {
                    field: 2,
                    wire_type: 5,
                },
                "field 2 has unexpected wire type 5",
            ),
            (WireProblem::OutOfRange { field: 4 }, "field 4 out of range"),
            (WireProblem::Invalid("no term: x"), "no term: x"),
        ];
        for (problem, text) in cases {
            let err = e(7, problem);
            assert_eq!(err.to_string(), format!("protobuf byte 7: {text}"));
            assert_eq!(err.problem_text(), text);
        }
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert!(read_varint(&[0x80; 11], 0).is_err());
        assert!(read_varint(&[0x80], 0).is_err());
        // length 100 with 1 byte left
        let r: Vec<_> = Fields::new(&[0x0a, 100, 1]).collect();
        assert!(r[0].is_err());
        // group wire type
        let r: Vec<_> = Fields::new(&[0x0b]).collect();
        assert!(r[0].is_err());
        let r: Vec<_> = Fields::new(&[0x00, 0x01]).collect();
        assert!(r[0].is_err());
    }

    #[test]
    fn fixed_width_fields_are_read_little_endian_and_checked() {
        let mut buf = vec![0x09]; // field 1, fixed64
        buf.extend_from_slice(&0x0102_0304_0506_0708u64.to_le_bytes());
        buf.push(0x15); // field 2, fixed32
        buf.extend_from_slice(&0x0a0b_0c0du32.to_le_bytes());
        let values: Vec<_> = Fields::new(&buf).map(|f| f.unwrap().value).collect();
        assert_eq!(
            values,
            [
                Value::Fixed64(0x0102_0304_0506_0708),
                Value::Fixed32(0x0a0b_0c0d)
            ]
        );
        for cut in [buf.len() - 1, 8] {
            let r: Vec<_> = Fields::new(&buf[..cut]).collect();
            let err = r.last().unwrap().as_ref().unwrap_err();
            assert_eq!(err.problem, WireProblem::TruncatedFixed);
            assert_eq!(err.offset, if cut == 8 { 1 } else { 10 });
        }
    }

    #[test]
    fn packed_and_unpacked_repeated() {
        let mut out = Vec::new();
        for f in Fields::new(&[0x08, 0x01, 0x0a, 0x02, 0x02, 0x03]) {
            f.unwrap().repeated_varint(&mut out).unwrap();
        }
        assert_eq!(out, vec![1, 2, 3]);
    }
}
