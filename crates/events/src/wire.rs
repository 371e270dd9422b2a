//! The Confluent wire format: magic byte 0, the schema id as a 4-byte big-endian integer, then
//! the Avro binary datum. Any Confluent-compatible consumer (kcat, Java, Python) can read it.

const MAGIC: u8 = 0;
const HEADER_LEN: usize = 5;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("message of {0} bytes is too short for the Confluent wire format")]
    TooShort(usize),
    #[error("unknown magic byte {0} (expected 0)")]
    UnknownMagic(u8),
}

pub fn frame(schema_id: u32, datum: &[u8]) -> Vec<u8> {
    let mut framed = Vec::with_capacity(HEADER_LEN + datum.len());
    framed.push(MAGIC);
    framed.extend_from_slice(&schema_id.to_be_bytes());
    framed.extend_from_slice(datum);
    framed
}

/// Splits a framed message into its schema id and Avro datum.
pub fn unframe(message: &[u8]) -> Result<(u32, &[u8]), WireError> {
    if message.len() < HEADER_LEN {
        return Err(WireError::TooShort(message.len()));
    }
    if message[0] != MAGIC {
        return Err(WireError::UnknownMagic(message[0]));
    }
    let id = u32::from_be_bytes([message[1], message[2], message[3], message[4]]);
    Ok((id, &message[HEADER_LEN..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_round_trips() {
        let framed = frame(258, b"datum");
        assert_eq!(&framed[..5], &[0, 0, 0, 1, 2]);
        assert_eq!(unframe(&framed), Ok((258, &b"datum"[..])));
    }

    #[test]
    fn foreign_bytes_are_rejected() {
        assert_eq!(unframe(b"{}"), Err(WireError::TooShort(2)));
        assert_eq!(unframe(b"{\"a\":1}"), Err(WireError::UnknownMagic(b'{')));
    }
}
