//! Request bodies: the chunked decoder (RFC 9112 §7.1).
//!
//! `Content-Length` bodies need no decoding, only counting (done by `wsgi::input`). Chunked
//! bodies are a sequence of `size [; extensions] CRLF data CRLF`, ended by a zero-size chunk,
//! optional trailer fields and a blank line. [`ChunkedDecoder`] is a state machine fed whatever
//! bytes have arrived; it hands back chunk data as ranges of its input (no copy) and never
//! needs to see more than one byte of framing at a time, so any split of the input works.

use super::error::Error;

/// Longest chunk-size line we accept, extensions included. Extensions carry nothing we use;
/// the bound keeps a client from streaming an endless one.
const MAX_SIZE_LINE: usize = 4096;
/// Most bytes of trailer fields.
const MAX_TRAILERS: usize = 16 * 1024;
/// Hex digits in a chunk size: 15 digits fit in 60 bits, so the size cannot overflow.
const MAX_SIZE_DIGITS: usize = 15;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits of the size.
    Size,
    /// After the size: optional whitespace and extensions until CR.
    Extension,
    /// Inside a quoted-string of an extension value.
    Quoted,
    /// After a backslash inside a quoted-string.
    QuotedEscape,
    /// Saw CR of the size line, want LF.
    SizeLf,
    /// Inside chunk data.
    Data,
    /// After data, want CR.
    DataCr,
    /// After data's CR, want LF.
    DataLf,
    /// At the start of a trailer line (or the final blank line).
    TrailerStart,
    /// Inside a trailer field's name.
    TrailerName,
    /// Inside a trailer field's value (after the colon).
    TrailerValue,
    /// Saw CR ending a trailer line, want LF.
    TrailerLf,
    /// Saw CR of the final blank line, want LF.
    EndLf,
    /// The body is complete.
    Done,
}

/// What one call to [`ChunkedDecoder::decode`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// Input bytes consumed (framing and data).
    pub consumed: usize,
    /// Chunk data within the consumed bytes: `input[data.0..data.1]`. Empty when none.
    pub data: (usize, usize),
}

/// Decodes `Transfer-Encoding: chunked` incrementally.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    /// Data bytes left in the current chunk.
    remaining: u64,
    /// Digits of the current size read so far.
    digits: usize,
    /// Bytes of the current size line.
    line: usize,
    /// Bytes of trailers so far.
    trailers: usize,
    /// Data bytes so far, checked against `limit`.
    total: u64,
    /// `--limit-request-body`; 0 = unlimited.
    limit: u64,
}

impl ChunkedDecoder {
    /// A decoder that refuses bodies over `limit` bytes (0 = no limit).
    pub fn new(limit: u64) -> ChunkedDecoder {
        ChunkedDecoder {
            state: State::Size,
            remaining: 0,
            digits: 0,
            line: 0,
            trailers: 0,
            total: 0,
            limit,
        }
    }

    /// True once the terminating blank line has been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes framing from the front of `input` and returns the next run of chunk data.
    ///
    /// Stops after one run of data so the caller can hand it on; call again with the rest.
    /// `consumed == input.len()` with no data means "give me more bytes".
    pub fn decode(&mut self, input: &[u8]) -> Result<Decoded, Error> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Done => break,
                State::Data => {
                    let take =
                        (input.len() - i).min(self.remaining.min(usize::MAX as u64) as usize);
                    self.remaining -= take as u64;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                    return Ok(Decoded {
                        consumed: i + take,
                        data: (i, i + take),
                    });
                }
                State::Size => {
                    if let Some(d) = super::parse::hex(b) {
                        self.digits += 1;
                        if self.digits > MAX_SIZE_DIGITS {
                            return Err(Error::BadRequest("chunk size too large"));
                        }
                        self.remaining = self.remaining * 16 + u64::from(d);
                    } else if self.digits == 0 {
                        return Err(Error::BadRequest("invalid chunk size"));
                    } else {
                        match b {
                            b'\r' => self.state = State::SizeLf,
                            b';' | b' ' | b'\t' => self.state = State::Extension,
                            _ => return Err(Error::BadRequest("invalid chunk size")),
                        }
                    }
                    self.count_line()?;
                }
                State::Extension => {
                    match b {
                        b'\r' => self.state = State::SizeLf,
                        b'"' => self.state = State::Quoted,
                        b'\n' => return Err(Error::BadRequest("bare LF in chunk extension")),
                        b';' | b'=' | b' ' | b'\t' => {}
                        b if super::parse::is_token(b) => {}
                        _ => return Err(Error::BadRequest("invalid chunk extension")),
                    }
                    self.count_line()?;
                }
                State::Quoted => {
                    match b {
                        b'"' => self.state = State::Extension,
                        b'\\' => self.state = State::QuotedEscape,
                        b'\t' | b' '..=b'~' | 0x80.. => {}
                        _ => return Err(Error::BadRequest("invalid chunk extension")),
                    }
                    self.count_line()?;
                }
                State::QuotedEscape => {
                    if !(b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80) {
                        return Err(Error::BadRequest("invalid chunk extension"));
                    }
                    self.state = State::Quoted;
                    self.count_line()?;
                }
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(Error::BadRequest("chunk size line without CRLF"));
                    }
                    self.line = 0;
                    self.digits = 0;
                    if self.remaining == 0 {
                        self.state = State::TrailerStart;
                    } else {
                        self.total += self.remaining;
                        if self.limit > 0 && self.total > self.limit {
                            return Err(Error::BodyTooLarge);
                        }
                        self.state = State::Data;
                    }
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err(Error::BadRequest("chunk data not followed by CRLF"));
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(Error::BadRequest("chunk data not followed by CRLF"));
                    }
                    self.state = State::Size;
                }
                State::TrailerStart => {
                    self.count_trailer()?;
                    match b {
                        b'\r' => self.state = State::EndLf,
                        b' ' | b'\t' => return Err(Error::BadRequest("obsolete line folding")),
                        b if super::parse::is_token(b) => self.state = State::TrailerName,
                        _ => return Err(Error::BadRequest("invalid trailer field")),
                    }
                }
                // Trailer fields are field-lines (RFC 9112 §7.1.2): token ":" value.
                State::TrailerName => {
                    self.count_trailer()?;
                    match b {
                        b':' => self.state = State::TrailerValue,
                        b if super::parse::is_token(b) => {}
                        _ => return Err(Error::BadRequest("invalid trailer field")),
                    }
                }
                State::TrailerValue => {
                    self.count_trailer()?;
                    match b {
                        b'\r' => self.state = State::TrailerLf,
                        b'\n' => return Err(Error::BadRequest("bare LF in trailer")),
                        b'\t' | b' '..=b'~' | 0x80.. => {}
                        _ => return Err(Error::BadRequest("invalid trailer field")),
                    }
                }
                State::TrailerLf => {
                    if b != b'\n' {
                        return Err(Error::BadRequest("trailer line without CRLF"));
                    }
                    self.state = State::TrailerStart;
                }
                State::EndLf => {
                    if b != b'\n' {
                        return Err(Error::BadRequest("chunked body not ended by CRLF"));
                    }
                    self.state = State::Done;
                    return Ok(Decoded {
                        consumed: i + 1,
                        data: (i + 1, i + 1),
                    });
                }
            }
            i += 1;
        }
        Ok(Decoded {
            consumed: i,
            data: (i, i),
        })
    }

    fn count_line(&mut self) -> Result<(), Error> {
        self.line += 1;
        if self.line > MAX_SIZE_LINE {
            return Err(Error::BadRequest("chunk size line too long"));
        }
        Ok(())
    }

    fn count_trailer(&mut self) -> Result<(), Error> {
        self.trailers += 1;
        if self.trailers > MAX_TRAILERS {
            return Err(Error::BadRequest("trailer section too large"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `piece` bytes; returns the body and the bytes left over.
    fn decode_in_pieces(input: &[u8], piece: usize, limit: u64) -> Result<(Vec<u8>, usize), Error> {
        let mut dec = ChunkedDecoder::new(limit);
        let mut body = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        let mut fed = 0;
        loop {
            if !buf.is_empty() {
                let d = dec.decode(&buf)?;
                body.extend_from_slice(&buf[d.data.0..d.data.1]);
                buf.drain(..d.consumed);
                if dec.is_done() {
                    return Ok((body, buf.len() + input.len() - fed));
                }
                if d.consumed > 0 {
                    continue;
                }
            }
            if fed == input.len() {
                return Err(Error::Timeout);
            }
            let end = (fed + piece).min(input.len());
            buf.extend_from_slice(&input[fed..end]);
            fed = end;
        }
    }

    fn decode_all_ways(input: &[u8]) -> Result<(Vec<u8>, usize), Error> {
        let whole = decode_in_pieces(input, input.len(), 0);
        for piece in 1..6 {
            assert_eq!(decode_in_pieces(input, piece, 0), whole, "piece {piece}");
        }
        whole
    }

    #[test]
    fn decodes_chunks_with_extensions_and_trailers() {
        let input = b"5;name=\"q\\\"v\"\r\nhello\r\n6 ; a=b\r\n world\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        let (body, left) = decode_all_ways(input).expect("valid");
        assert_eq!(body, b"hello world");
        assert_eq!(left, 4);
    }

    #[test]
    fn rejects_bad_framing() {
        for bad in [
            &b"x\r\n"[..],
            b"5\r\nhelloXX",
            b"5\nhello\r\n0\r\n\r\n",
            b"1;a\nb\r\n",
            b"1234567890abcdef0\r\n",
            b"0\r\nX: a\nY: b\r\n\r\n",
            b"0\r\n folded\r\n\r\n",
            b"-1\r\n",
        ] {
            assert!(
                matches!(decode_all_ways(bad), Err(Error::BadRequest(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn enforces_the_body_limit() {
        assert_eq!(
            decode_in_pieces(b"a\r\n0123456789\r\n0\r\n\r\n", 3, 9),
            Err(Error::BodyTooLarge)
        );
        assert!(decode_in_pieces(b"a\r\n0123456789\r\n0\r\n\r\n", 3, 10).is_ok());
    }

    #[test]
    fn decodes_fuzz_corpus_edge_cases() {
        // Cases the chunked fuzz target (fuzz/) leans on: a quoted extension holding `;` and
        // an escaped quote, upper-case hex with leading zeros, data that looks like framing.
        let input = b"5;a=\"x;\\\"y\"\r\nhello\r\n00A\r\n\r\n0\r\n\r\nabc\r\n0\r\n\r\n";
        let (body, left) = decode_all_ways(input).expect("valid");
        assert_eq!(body, b"hello\r\n0\r\n\r\nabc");
        assert_eq!(left, 0);
        for bad in [
            &b"10000000000000005\r\n"[..],
            b"0x5\r\n",
            b"5;a=\"b\r\n",
            b"0\r\n\n",
        ] {
            assert!(
                matches!(decode_all_ways(bad), Err(Error::BadRequest(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn rejects_a_trailer_line_without_a_colon() {
        // RFC 9112 §7.1.2: trailer fields are field-lines (tests/requests/invalid/056).
        let got = decode_all_ways(b"0\r\nnot a field\r\n\r\n");
        assert!(matches!(got, Err(Error::BadRequest(_))), "got {got:?}");
    }
}
