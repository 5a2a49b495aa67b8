//! Just enough protobuf for rollback: a bounds-checked field reader and a few writers.
//! (A private stand-in until `storage::proto` lands; every read is checked against the slice.)

/// One decoded field: number and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Val<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// Iterates the top-level fields of a message; yields `Err(offset)` on malformed input.
pub struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
}

pub fn fields(buf: &[u8]) -> Fields<'_> {
    Fields { buf, pos: 0 }
}

fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
    for shift in (0..70).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        if shift == 63 && b > 1 {
            return None;
        }
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Val<'a>), usize>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let start = self.pos;
        let r = (|| {
            let key = varint(self.buf, &mut self.pos)?;
            let num = u32::try_from(key >> 3).ok().filter(|n| *n > 0)?;
            let val = match key & 7 {
                0 => Val::Varint(varint(self.buf, &mut self.pos)?),
                1 => {
                    let b = self.buf.get(self.pos..self.pos + 8)?;
                    self.pos += 8;
                    Val::Fixed64(u64::from_le_bytes(b.try_into().ok()?))
                }
                2 => {
                    let len = usize::try_from(varint(self.buf, &mut self.pos)?).ok()?;
                    let end = self.pos.checked_add(len)?;
                    let b = self.buf.get(self.pos..end)?;
                    self.pos = end;
                    Val::Bytes(b)
                }
                5 => {
                    let b = self.buf.get(self.pos..self.pos + 4)?;
                    self.pos += 4;
                    Val::Fixed32(u32::from_le_bytes(b.try_into().ok()?))
                }
                _ => return None,
            };
            Some((num, val))
        })();
        match r {
            Some(f) => Some(Ok(f)),
            None => {
                self.pos = self.buf.len();
                Some(Err(start))
            }
        }
    }
}

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn put_uint(out: &mut Vec<u8>, field: u32, v: u64) {
    put_varint(out, u64::from(field) << 3);
    put_varint(out, v);
}

pub fn put_bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    put_varint(out, (u64::from(field) << 3) | 2);
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let mut b = Vec::new();
        put_uint(&mut b, 1, 300);
        put_bytes(&mut b, 2, b"abc");
        let got: Vec<_> = fields(&b).collect();
        assert_eq!(
            got,
            vec![Ok((1, Val::Varint(300))), Ok((2, Val::Bytes(b"abc")))]
        );
        assert!(fields(&b[..b.len() - 1]).any(|f| f.is_err()));
        // a length that points past the end is an error, not a panic
        assert!(fields(&[0x12, 0xff, 0xff, 0xff, 0xff, 0x0f]).any(|f| f.is_err()));
    }
}
